//! Red team (round 9): `LoaderConfig::copy_dir` values a host might set by
//! mistake: empty, a path with an interior NUL, a character device, a
//! procfs directory owned by this user with mode 0500 (`/proc/self/fd`),
//! the sticky world-writable `/tmp`, a regular file, and a directory inside
//! a regular file. Each load must be a typed `LoadError` (no panic),
//! leave nothing in the directory, and a default loader must go on loading.

use std::path::PathBuf;

use usrcu_module_loader::{LoadError, LoaderConfig, ModuleLoader};
use usrcu_tests::fixture_path;

#[test]
fn bad_copy_dirs_are_typed_errors() {
    let so = fixture_path("callbacks");
    let base = std::env::temp_dir().join(format!("usrcu-rt9-copydirs-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let file = base.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let dirs: Vec<PathBuf> = vec![
        PathBuf::new(),
        PathBuf::from("a\0b"),
        PathBuf::from("/dev/null"),
        PathBuf::from("/proc/self/fd"),
        PathBuf::from("/tmp"),
        file.clone(),
        file.join("sub"),
    ];
    for dir in dirs {
        let before: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        let loader = ModuleLoader::with_config(LoaderConfig {
            copy_dir: Some(dir.clone()),
            ..LoaderConfig::default()
        });
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { loader.load(&so) }));
        match r {
            Err(_) => panic!("load with copy_dir {dir:?} panicked"),
            Ok(Ok(m)) => panic!(
                "load with copy_dir {dir:?} succeeded: {:?}",
                loader.info(m).map(|i| i.loaded_path)
            ),
            Ok(Err(e)) => {
                assert!(
                    matches!(e, LoadError::UnsafeCopyDir { .. } | LoadError::Io { .. }),
                    "copy_dir {dir:?}: {e:?}"
                );
                println!("copy_dir {dir:?}: {e}");
            }
        }
        let after: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if dir.as_path() != std::path::Path::new("/tmp") && dir.as_path() != std::path::Path::new("/proc/self/fd") {
            assert_eq!(before, after, "copy_dir {dir:?}: the failed load left files");
        }
    }
    assert!(!PathBuf::from("a\0b").exists());
    let loader = ModuleLoader::new();
    // SAFETY: as above.
    let m = unsafe { loader.load(&so) }.unwrap();
    assert!(loader.unload(m).unwrap().unmapped);
    let _ = std::fs::remove_dir_all(&base);
}
