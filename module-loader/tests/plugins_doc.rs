//! `docs/plugins.md` holds: its plugin, written from `cargo new` with the
//! page's snippets, builds, is loaded through the typed interface, and
//! hot-reloads after the edit the page describes. (The host snippet is
//! compiled by the loader's doc tests.)

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{edit, load, plugins_target_dir};
use usrcu_module_loader::plugin_build::PluginBuild;
use usrcu_module_loader::usrcu_registry::example::Calc;
use usrcu_module_loader::ModuleLoader;

/// The fenced block after `<!-- snippet: NAME -->` in the page.
fn snippet(page: &str, name: &str) -> String {
    let marker = format!("<!-- snippet: {name} -->");
    let at = page.find(&marker).unwrap_or_else(|| panic!("no snippet {name}"));
    let mut lines = page[at + marker.len()..].lines().skip_while(|l| !l.starts_with("```"));
    lines.next().expect("an opening fence");
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    body.join("\n") + "\n"
}

#[test]
fn tutorial_plugin_builds_loads_through_its_interface_and_hot_reloads() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
    let page = fs::read_to_string(repo.join("docs/plugins.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // 1. cargo new, then the page's Cargo.toml lines (the repository's path
    // where the page has ../usrcu).
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(&cargo)
        .args(["new", "--lib", "--vcs", "none", "hello-plugin"])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "cargo new failed");
    let krate = dir.path().join("hello-plugin");
    let manifest = krate.join("Cargo.toml");
    let mut toml = fs::read_to_string(&manifest).unwrap();
    // Appended as the page says, after the empty [dependencies] table that
    // `cargo new` leaves (no line of it removed).
    toml += &snippet(&page, "plugin/Cargo.toml").replace("../usrcu", &repo.display().to_string());
    // Its own workspace (the temp dir may sit inside another).
    toml += "\n[workspace]\n";
    fs::write(&manifest, toml).unwrap();
    // Pin the dependencies' versions to the example plugin's (no resolution
    // against the index, and shared builds in the plugins target dir).
    fs::copy(
        repo.join("module-loader/demo-plugin/Cargo.lock"),
        krate.join("Cargo.lock"),
    )
    .unwrap();

    // 2. The page's plugin code, which it says is under 15 lines.
    let code = snippet(&page, "plugin/src/lib.rs");
    let lines = code.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines < 15, "the tutorial plugin has {lines} lines of code");
    let lib = krate.join("src/lib.rs");
    fs::write(&lib, code).unwrap();

    let build = PluginBuild::new(&krate).target_dir(plugins_target_dir());
    let artifact = build.build_artifact("hello_plugin").unwrap_or_else(|e| panic!("{e}"));

    // Loaded, checked and called through the typed interface.
    let loader = ModuleLoader::new();
    loader.require_interface::<dyn Calc>("hello");
    load(&loader, &artifact).unwrap();
    let hello = loader.interface::<dyn Calc>("hello");
    assert_eq!(hello.compute(21), Ok(42));
    assert_eq!(hello.version(), Ok(2));

    // 3. The page's edit, rebuilt and reloaded: the same handle serves the
    // new copy.
    edit(&lib, "const FACTOR: u64 = 2;", "const FACTOR: u64 = 3;");
    build.build().unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: the tutorial plugin upholds the plugin contract (docs/abi.md).
    let (_, report) = unsafe { loader.reload("hello", &artifact) }.unwrap();
    assert!(report.unmapped, "{report}");
    assert_eq!(hello.compute(21), Ok(63));
    for (_, r) in loader.unload_all() {
        assert!(r.unwrap().unmapped);
    }
}
