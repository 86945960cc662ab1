//! Red team (round 8): paths a host might pass by mistake: empty, a
//! directory, the root, a path with an interior NUL, `/proc/self/exe`, a
//! `/proc` pseudo-file, a path ending in a slash. Each must be a typed
//! `LoadError` (never a panic), and the loader must go on loading.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::{bounded, fixture_path};

#[test]
fn odd_paths_are_typed_errors_and_the_loader_goes_on() {
    let so = fixture_path("callbacks");
    bounded("odd paths", move || {
        let loader = ModuleLoader::new();
        let dir = std::env::temp_dir();
        let mut with_slash = so.as_os_str().to_owned();
        with_slash.push("/");
        let paths: Vec<PathBuf> = vec![
            PathBuf::new(),
            PathBuf::from("/"),
            dir.clone(),
            PathBuf::from("."),
            PathBuf::from(OsStr::from_bytes(b"/tmp/a\0b.so")),
            PathBuf::from(OsStr::from_bytes(b"\0")),
            PathBuf::from("/proc/self/exe"),
            PathBuf::from("/proc/self/status"),
            PathBuf::from("/proc/self/fd/0"),
            PathBuf::from(with_slash),
            PathBuf::from(OsStr::from_bytes(b"/tmp/\xff\xfe-not-utf8.so")),
        ];
        for p in &paths {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // SAFETY: none of these is a plugin; each must be refused.
                unsafe { loader.load(p) }
            }));
            match r {
                Ok(Err(e)) => {
                    let _ = e.to_string();
                }
                Ok(Ok(h)) => panic!("{p:?} loaded as {h}"),
                Err(_) => panic!("load({p:?}) panicked instead of returning a LoadError"),
            }
        }
        // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(&so) }.unwrap();
        assert!(loader.unload(m).unwrap().unmapped);
        assert!(loader.list().is_empty());
    });
}

#[test]
fn a_relative_path_to_a_plugin_loads() {
    let so = fixture_path("callbacks");
    let cwd = std::env::current_dir().unwrap();
    let rel = pathdiff(&so, &cwd);
    let loader = ModuleLoader::new();
    // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(&rel) }.unwrap_or_else(|e| panic!("relative path {rel:?}: {e}"));
    assert!(loader.unload(m).unwrap().unmapped);
}

/// `to` relative to `from` (both absolute), with `..` as needed.
fn pathdiff(to: &std::path::Path, from: &std::path::Path) -> PathBuf {
    let t: Vec<_> = to.components().collect();
    let f: Vec<_> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut p = PathBuf::new();
    for _ in common..f.len() {
        p.push("..");
    }
    for c in &t[common..] {
        p.push(c);
    }
    p
}
