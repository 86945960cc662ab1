//! Intake: the loader opens a private, sealed copy of the file and checks
//! the copy's ELF structure before `dlopen` sees it, so a truncated or
//! foreign file is a typed error, not a dead host.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use usrcu_module_loader::{ElfDefect, LoadError, LoaderConfig, ModuleLoader};
use usrcu_tests::{fixture_path, Child};

type AddFn = extern "C" fn(u64, u64) -> u64;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("usrcu-intake-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The loader still loads, calls and unloads a good plugin.
fn good_plugin_still_works(loader: &ModuleLoader) {
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    // SAFETY: the fixture exports it with this signature.
    let add = unsafe { loader.symbol::<AddFn>(m, "fx_add") }.unwrap();
    assert_eq!(add.call(|f| f.call(40, 2)), Ok(42));
    assert!(loader.unload(m).unwrap().unmapped);
}

const CHILD_DLOPEN: &str = "USRCU_INTAKE_TEST_BARE_DLOPEN";

#[test]
fn truncated_plugin_kills_a_bare_dlopen_but_is_a_typed_error_through_the_loader() {
    if let Some(path) = std::env::var_os(CHILD_DLOPEN) {
        // The child: what the loader did before intake, a bare dlopen.
        let c = std::ffi::CString::new(path.as_bytes()).unwrap();
        // SAFETY: deliberately unsound input; this is the child process
        // whose death the parent observes.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        println!("dlopen returned {h:?}");
        std::process::exit(0);
    }
    let whole = std::fs::read(fixture_path("callbacks")).unwrap();
    let truncated = write("truncated-4k.so", &whole[..4096]);

    Child::new("truncated_plugin_kills_a_bare_dlopen_but_is_a_typed_error_through_the_loader")
        .env(CHILD_DLOPEN, &truncated)
        .run()
        .assert_died_of(
            &[libc::SIGBUS],
            "a bare dlopen of the first 4 KiB of a plugin should die of SIGBUS",
        );

    let loader = ModuleLoader::new();
    // SAFETY: a truncated copy of a fixture that upholds the contract.
    let err = unsafe { loader.load(&truncated) }.unwrap_err();
    match &err {
        LoadError::MalformedElf {
            path,
            defect: ElfDefect::SegmentPastEndOfFile { file_len, .. },
        } => {
            assert_eq!(path, &truncated);
            assert_eq!(*file_len, 4096);
        }
        e => panic!("expected a PT_LOAD past the end of the file, got {e}"),
    }
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(loader.list().is_empty());
    good_plugin_still_works(&loader);
}

#[test]
fn a_directory_is_not_a_regular_file() {
    let loader = ModuleLoader::new();
    let dir = scratch("a-directory.so");
    std::fs::create_dir_all(&dir).unwrap();
    // SAFETY: nothing is loaded.
    let err = unsafe { loader.load(&dir) }.unwrap_err();
    assert!(
        matches!(&err, LoadError::NotARegularFile { kind, .. } if *kind == "a directory"),
        "{err}"
    );
    good_plugin_still_works(&loader);
}

fn patched(name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(fixture_path("callbacks")).unwrap();
    patch(&mut bytes);
    write(name, &bytes)
}

#[test]
fn a_plugin_for_another_machine_or_class_names_both_sides() {
    let loader = ModuleLoader::new();
    let host_machine = u16::from_le_bytes(
        std::fs::read(fixture_path("callbacks")).unwrap()[18..20]
            .try_into()
            .unwrap(),
    );
    // EM_AARCH64 (183), or EM_X86_64 (62) on an aarch64 host.
    let other: u16 = if host_machine == 183 { 62 } else { 183 };
    let arm = patched("other-machine.so", |b| b[18..20].copy_from_slice(&other.to_le_bytes()));
    // SAFETY: refused before dlopen.
    let err = unsafe { loader.load(&arm) }.unwrap_err();
    match &err {
        LoadError::ForeignObject { what, plugin, host, .. } => {
            assert!(what.contains("machine"), "{err}");
            assert_eq!(plugin, &other.to_string());
            assert_eq!(host, &host_machine.to_string());
        }
        e => panic!("expected ForeignObject, got {e}"),
    }
    let class32 = patched("other-class.so", |b| b[4] = 1);
    // SAFETY: refused before dlopen.
    let err = unsafe { loader.load(&class32) }.unwrap_err();
    assert!(
        matches!(&err, LoadError::ForeignObject { what: "ELF class", plugin, host, .. }
            if plugin.contains("32") && host.contains("64")),
        "{err}"
    );
    let big_endian = patched("other-endian.so", |b| b[5] = 2);
    // SAFETY: refused before dlopen.
    let err = unsafe { loader.load(&big_endian) }.unwrap_err();
    assert!(
        matches!(&err, LoadError::ForeignObject { what: "byte order", .. }),
        "{err}"
    );
    good_plugin_still_works(&loader);
}

#[test]
fn the_default_copy_is_a_sealed_memfd_closed_after_unmap_and_no_temp_dir_is_made() {
    // Without reuse: with it (the default) the copy of an unchanged source
    // is kept, sealed, for the next load (`loader_reuse.rs`).
    let loader = ModuleLoader::with_config(LoaderConfig {
        reuse_copies: false,
        ..Default::default()
    });
    // The directory an old loader made, by this process's pid: a leftover
    // of an earlier process with the same pid may exist already.
    let predictable = std::env::temp_dir().join(format!("usrcu-modules-{}", std::process::id()));
    let existed = predictable.exists();
    // SAFETY: the fixture upholds the plugin contract.
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    let loaded = loader.info(m).unwrap().loaded_path;
    let fd: i32 = loaded
        .strip_prefix("/proc/self/fd")
        .expect("a memfd opened through /proc/self/fd")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let target = std::fs::read_link(&loaded).unwrap();
    assert!(
        target.as_os_str().as_bytes().starts_with(b"/memfd:usrcu-module:"),
        "{target:?}"
    );
    // SAFETY: F_GET_SEALS on a descriptor of this process only reads.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    let want = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    assert_eq!(seals & want, want, "seals {seals:#x}");
    assert!(std::fs::OpenOptions::new().write(true).open(&loaded).is_err() || seals & libc::F_SEAL_WRITE != 0);
    assert!(
        existed || !predictable.exists(),
        "{} was created",
        predictable.display()
    );

    assert!(loader.unload(m).unwrap().unmapped);
    // The memfd is closed once the object is gone: the descriptor number no
    // longer names our copy.
    let after = std::fs::read_link(&loaded).map(|t| t.as_os_str().as_bytes().starts_with(b"/memfd:usrcu-module:"));
    assert!(!matches!(after, Ok(true)), "the memfd of an unmapped module stays open");
}

#[test]
fn a_copy_dir_that_is_a_symlink_or_shared_is_refused() {
    let real = scratch("private-dir");
    std::fs::create_dir_all(&real).unwrap();
    let link = scratch("link-to-private-dir");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let shared = scratch("shared-dir");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();

    for dir in [&link, &shared] {
        let loader = ModuleLoader::with_config(LoaderConfig {
            copy_dir: Some(dir.clone()),
            ..Default::default()
        });
        // SAFETY: refused before dlopen.
        let err = unsafe { loader.load(fixture_path("callbacks")) }.unwrap_err();
        assert!(
            matches!(&err, LoadError::UnsafeCopyDir { .. }),
            "{}: {err}",
            dir.display()
        );
    }
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0, "nothing was copied");
}

#[test]
fn a_copy_dir_is_created_private_and_a_planted_file_is_never_followed() {
    let dir = scratch("fresh-copy-dir");
    let _ = std::fs::remove_dir_all(&dir);
    let loader = ModuleLoader::with_config(LoaderConfig {
        copy_dir: Some(dir.clone()),
        ..Default::default()
    });
    // SAFETY: the fixture upholds the plugin contract.
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let loaded = loader.info(m).unwrap().loaded_path;
    assert_eq!(loaded.parent(), Some(dir.as_path()));
    assert!(loader.unload(m).unwrap().unmapped);
    assert!(!loaded.exists(), "the copy is removed after unload");

    // Symlinks planted where the next copies go are an error, never followed
    // (handles are process-wide: plant the next hundred names).
    let h = loaded_handle(&loaded);
    let victim = scratch("victim");
    std::fs::write(&victim, b"do not overwrite").unwrap();
    let stem = format!(".{}.{h}.so", std::process::id());
    let planted: Vec<PathBuf> = (h + 1..h + 100)
        .map(|k| {
            let name = loaded
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(&stem, &format!(".{}.{k}.so", std::process::id()));
            let p = dir.join(name);
            std::os::unix::fs::symlink(&victim, &p).unwrap();
            p
        })
        .collect();
    // SAFETY: refused before dlopen.
    let err = unsafe { loader.load(fixture_path("callbacks")) }.unwrap_err();
    assert!(
        matches!(&err, LoadError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{err}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not overwrite");
    for p in planted {
        std::fs::remove_file(p).unwrap();
    }
}

/// The handle number in a copy's name `<stem>.<pid>.<handle>.so`.
fn loaded_handle(p: &Path) -> u64 {
    let name = p.file_name().unwrap().to_string_lossy().into_owned();
    let mut parts = name.rsplit('.');
    parts.next();
    parts.next().unwrap().parse().unwrap()
}
