//! Helpers shared by the module-loader's integration tests: the example
//! plugin built once, and throw-away copies of its crate to edit.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use usrcu_module_loader::plugin_build::{workspace_target_dir, PluginBuild};
use usrcu_module_loader::{LoadError, ModuleHandle, ModuleLoader};

/// `module-loader/demo-plugin`.
pub fn demo_crate() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("demo-plugin")
}

/// One target directory for every plugin build of the tests (the demo
/// plugin and its copies share their dependencies' builds).
pub fn plugins_target_dir() -> PathBuf {
    workspace_target_dir(Path::new(env!("CARGO_MANIFEST_DIR"))).join("plugins")
}

/// The example plugin, built once per test binary.
pub fn demo_plugin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            PluginBuild::new(demo_crate())
                .target_dir(plugins_target_dir())
                .build_artifact("usrcu_demo_plugin")
                .unwrap_or_else(|e| panic!("building the example plugin: {e}"))
        })
        .clone()
}

/// Copy the example plugin's crate into `dir` (sources, manifest with the
/// registry's path made absolute, lock file) as package `package`, so that
/// a test can edit it and build it into the shared target directory without
/// overwriting another copy's artifact.
pub fn copy_demo_crate(dir: &Path, package: &str) {
    let src = demo_crate();
    fs::create_dir_all(dir.join("src")).unwrap();
    for f in ["build.rs", "Cargo.lock", "src/lib.rs", "src/api.rs"] {
        fs::copy(src.join(f), dir.join(f)).unwrap_or_else(|e| panic!("copying {f}: {e}"));
    }
    let registry = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../registry")
        .canonicalize()
        .unwrap();
    let manifest = fs::read_to_string(src.join("Cargo.toml"))
        .unwrap()
        .replace("\"../../registry\"", &format!("{:?}", registry.display().to_string()))
        .replace("name = \"usrcu-demo-plugin\"", &format!("name = {package:?}"));
    fs::write(dir.join("Cargo.toml"), manifest).unwrap();
}

/// Replace `from` by `to` in the file `path` (which must contain it).
pub fn edit(path: &Path, from: &str, to: &str) {
    let s = fs::read_to_string(path).unwrap();
    assert!(s.contains(from), "{} has no {from:?}", path.display());
    fs::write(path, s.replacen(from, to, 1)).unwrap();
}

/// Load a plugin (the test's own plugins: built from this workspace).
pub fn load(loader: &ModuleLoader, path: &Path) -> Result<ModuleHandle, LoadError> {
    // SAFETY: the plugins these tests load are built from this workspace
    // against the same registry, and do nothing unsound in init or exit.
    unsafe { loader.load(path) }
}
