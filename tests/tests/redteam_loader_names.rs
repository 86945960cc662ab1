//! Red team of plugin file names through the public API: any name the file
//! system accepts is a plugin's name. A file whose name is as long as a name
//! can be (255 bytes), or made of bytes that are not UTF-8, loads, runs and
//! unloads like any other, into the default sealed memfd and into a
//! `copy_dir` (the private copy's name is derived from the file's, and must
//! fit the memfd's and the directory's limits).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::fixture_path;

type AddFn = extern "C" fn(u64, u64) -> u64;

fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("usrcu-rt-names-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn loads_calls_and_unmaps(loader: &ModuleLoader, plugin: &Path) {
    // SAFETY: a byte-for-byte copy of a fixture that upholds the plugin contract.
    let m = unsafe { loader.load(plugin) }.unwrap_or_else(|e| panic!("{}: {e}", plugin.display()));
    // SAFETY: the fixture exports it with this signature.
    let add = unsafe { loader.symbol::<AddFn>(m, "fx_add") }.unwrap();
    assert_eq!(add.call(|f| f.call(40, 2)).unwrap(), 42);
    let report = loader.unload(m).unwrap();
    assert!(report.unmapped, "{report}");
}

fn named(dir: &Path, name: &[u8]) -> PathBuf {
    let p = dir.join(OsStr::from_bytes(name));
    std::fs::copy(fixture_path("callbacks"), &p).unwrap();
    p
}

#[test]
fn a_plugin_whose_file_name_is_255_bytes_long_loads_and_unloads() {
    let dir = scratch("long");
    let mut name = vec![b'p'; 252];
    name.extend_from_slice(b".so");
    let plugin = named(&dir, &name);
    loads_calls_and_unmaps(&ModuleLoader::new(), &plugin);
    let copies = dir.join("copies");
    let loader = ModuleLoader::with_config(LoaderConfig {
        copy_dir: Some(copies.clone()),
        ..LoaderConfig::default()
    });
    loads_calls_and_unmaps(&loader, &plugin);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_plugin_whose_file_name_is_not_utf8_loads_and_unloads() {
    let dir = scratch("bytes");
    // 250 bytes that are not UTF-8: each becomes a 3-byte U+FFFD when the
    // name is read lossily.
    let mut name = vec![0xff; 250];
    name.extend_from_slice(b".so");
    let plugin = named(&dir, &name);
    loads_calls_and_unmaps(&ModuleLoader::new(), &plugin);
    let loader = ModuleLoader::with_config(LoaderConfig {
        copy_dir: Some(dir.join("copies")),
        ..LoaderConfig::default()
    });
    loads_calls_and_unmaps(&loader, &plugin);
    let _ = std::fs::remove_dir_all(&dir);
}
