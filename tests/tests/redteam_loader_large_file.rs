//! Red team of very large input files through the public API. The loader
//! copies a plugin file into private memory before it checks it; a file
//! whose size is absurd for a plugin (a sparse file of a terabyte, a log
//! that grew) must be a typed error before the copy fills memory or disk,
//! and must leave the host and its loader as they were.

use std::path::PathBuf;

use usrcu_module_loader::{LoadError, ModuleLoader};
use usrcu_tests::fixture_path;

type AddFn = extern "C" fn(u64, u64) -> u64;

fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("usrcu-rt-large-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of a real plugin, extended (sparse: no disk used) to `len` bytes.
fn padded_plugin(dir: &std::path::Path, len: u64) -> PathBuf {
    let p = dir.join("huge.so");
    std::fs::copy(fixture_path("callbacks"), &p).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len)
        .unwrap();
    p
}

fn still_works(loader: &ModuleLoader) {
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    // SAFETY: the fixture exports it with this signature.
    let add = unsafe { loader.symbol::<AddFn>(m, "fx_add") }.unwrap();
    assert_eq!(add.call(|f| f.call(1, 2)).unwrap(), 3);
    assert!(loader.unload(m).unwrap().unmapped);
}

#[test]
fn a_plugin_file_just_over_the_default_size_bound_is_a_typed_error_naming_both_sizes() {
    let dir = scratch("over");
    let limit = usrcu_module_loader::LoaderConfig::default().max_file_size;
    let p = padded_plugin(&dir, limit + 1);
    let loader = ModuleLoader::new();
    // SAFETY: refused before dlopen (and a copy of a sound fixture otherwise).
    match unsafe { loader.load(&p) } {
        Err(LoadError::TooLarge { path, size, limit: l }) => {
            assert_eq!((path, size, l), (p.clone(), limit + 1, limit));
        }
        r => panic!("expected TooLarge, got {r:?}"),
    }
    assert!(loader.list().is_empty());
    still_works(&loader);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sparse_terabyte_file_is_refused_at_once_into_a_memfd_or_a_copy_dir_leaving_nothing() {
    let dir = scratch("tera");
    let p = padded_plugin(&dir, 1 << 40);
    let copies = dir.join("copies");
    for loader in [
        ModuleLoader::new(),
        ModuleLoader::with_config(usrcu_module_loader::LoaderConfig {
            copy_dir: Some(copies.clone()),
            ..Default::default()
        }),
    ] {
        // The bounded wait: refused from the file's size, nothing copied.
        let (tx, rx) = std::sync::mpsc::channel();
        let q = p.clone();
        let t = std::thread::spawn(move || {
            // SAFETY: refused before dlopen.
            let r = unsafe { loader.load(&q) };
            let _ = tx.send(matches!(r, Err(LoadError::TooLarge { size, .. }) if size == 1 << 40));
            loader
        });
        let refused = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("a terabyte file is still being copied after 60 s");
        assert!(refused, "expected TooLarge naming the file's size");
        let loader = t.join().unwrap();
        assert!(loader.list().is_empty());
        still_works(&loader);
    }
    // The copy directory holds no partial copy.
    let left: Vec<_> = std::fs::read_dir(&copies)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_size_bound_is_the_hosts_to_set_and_a_file_at_the_bound_loads() {
    let dir = scratch("bound");
    let plugin = fixture_path("callbacks");
    let size = std::fs::metadata(&plugin).unwrap().len();
    let at = |limit: u64| {
        ModuleLoader::with_config(usrcu_module_loader::LoaderConfig {
            max_file_size: limit,
            reuse_copies: false,
            ..Default::default()
        })
    };
    still_works(&at(size));
    // SAFETY: refused before dlopen.
    match unsafe { at(size - 1).load(&plugin) } {
        Err(e @ LoadError::TooLarge { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&size.to_string()) && msg.contains(&(size - 1).to_string()),
                "{msg}"
            );
        }
        r => panic!("expected TooLarge, got {r:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_whose_stat_size_understates_it_is_bounded_while_it_is_copied() {
    // procfs reports size 0 and reads much more: the copy stops one byte
    // past the bound.
    let loader = ModuleLoader::with_config(usrcu_module_loader::LoaderConfig {
        max_file_size: 16,
        ..Default::default()
    });
    // SAFETY: refused before dlopen.
    match unsafe { loader.load("/proc/self/maps") } {
        Err(LoadError::TooLarge { size, limit, .. }) => assert_eq!((size, limit), (17, 16)),
        r => panic!("expected TooLarge, got {r:?}"),
    }
}
