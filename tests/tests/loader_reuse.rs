//! Reuse of idle sealed copies (`LoaderConfig::reuse_copies`): a load of an
//! unchanged source opens the sealed memfd an earlier load copied and
//! checked; any change to the source, even one that keeps its size, gets a
//! fresh copy of the new bytes; two live modules never share a copy; and
//! the pool of idle copies stays within its bounds.
//!
//! Which copy a load opened is seen from outside the loader: the memfd's
//! inode (`fstat` of `/proc/self/fd/N`) and its bytes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use usrcu_module_loader::{LoaderConfig, ModuleHandle, ModuleLoader};
use usrcu_tests::fixture_path;

type AddFn = extern "C" fn(u64, u64) -> u64;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("usrcu-reuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Wait until `path`'s change time is older than the quiet period a source
/// needs before its copy is pooled (a precondition, not a timing assertion).
fn wait_until_quiet(path: &Path) {
    let m = std::fs::metadata(path).unwrap();
    let ctime = UNIX_EPOCH + Duration::new(m.ctime() as u64, m.ctime_nsec() as u32);
    let quiet = ctime + usrcu_module_loader::__REUSE_QUIET + Duration::from_millis(50);
    if let Ok(left) = quiet.duration_since(SystemTime::now()) {
        std::thread::sleep(left);
    }
}

/// Load, check the plugin answers, and return the copy it was loaded from:
/// (handle, inode of the memfd, its bytes).
fn load(loader: &ModuleLoader, path: &Path) -> (ModuleHandle, u64, Vec<u8>) {
    // SAFETY: the fixture (or a byte-for-byte copy of it with a changed
    // comment byte) upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(path) }.unwrap();
    // SAFETY: the fixture exports it with this signature.
    let add = unsafe { loader.symbol::<AddFn>(m, "fx_add") }.unwrap();
    assert_eq!(add.call(|f| f.call(40, 2)), Ok(42));
    drop(add);
    let loaded = loader.info(m).unwrap().loaded_path;
    assert!(loaded.starts_with("/proc/self/fd"), "{}", loaded.display());
    let ino = std::fs::metadata(&loaded).unwrap().ino();
    let bytes = std::fs::read(&loaded).unwrap();
    (m, ino, bytes)
}

fn unload(loader: &ModuleLoader, m: ModuleHandle) {
    assert!(loader.unload(m).unwrap().unmapped);
}

/// A private, quiet source with the fixture's bytes.
fn quiet_source(name: &str) -> PathBuf {
    let p = scratch(name);
    std::fs::copy(fixture_path("callbacks"), &p).unwrap();
    wait_until_quiet(&p);
    p
}

/// Offset of a byte of the `.comment` section (not loaded, not checked
/// beyond its bounds): changing it changes the file but not what it does.
/// Read from the 64-bit little-endian section headers by hand (a few
/// fields; the fixture is built here for this machine).
fn comment_byte(b: &[u8]) -> usize {
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let sh = |i: usize| shoff + i * shentsize;
    let names = u64_at(sh(shstrndx) + 0x18);
    (0..shnum)
        .find_map(|i| {
            let name = &b[names + u32_at(sh(i))..];
            let (offset, size) = (u64_at(sh(i) + 0x18), u64_at(sh(i) + 0x20));
            (name.starts_with(b".comment\0") && size > 1).then_some(offset + 1)
        })
        .expect("a .comment section in the fixture")
}

#[test]
fn an_unchanged_source_loads_from_its_idle_sealed_copy() {
    let src = quiet_source("unchanged.so");
    let loader = ModuleLoader::new();
    let (m, first, bytes) = load(&loader, &src);
    assert_eq!(bytes, std::fs::read(&src).unwrap());
    unload(&loader, m);
    let (m, second, bytes) = load(&loader, &src);
    unload(&loader, m);
    assert_eq!(first, second, "the second load opened the first load's sealed copy");
    assert_eq!(bytes, std::fs::read(&src).unwrap());
}

#[test]
fn with_reuse_off_every_load_opens_a_fresh_copy() {
    let src = quiet_source("reuse-off.so");
    let loader = ModuleLoader::with_config(LoaderConfig {
        reuse_copies: false,
        ..Default::default()
    });
    let (m, first, _) = load(&loader, &src);
    unload(&loader, m);
    let (m, second, _) = load(&loader, &src);
    unload(&loader, m);
    assert_ne!(first, second);
}

#[test]
fn a_source_changed_in_place_with_the_same_size_gets_a_fresh_copy_of_its_new_bytes() {
    let src = quiet_source("changed.so");
    let loader = ModuleLoader::new();
    let (m, first, _) = load(&loader, &src);
    unload(&loader, m);
    // Same inode, same size, one byte different, written through the
    // same file (no rename): only the change time tells.
    let mut bytes = std::fs::read(&src).unwrap();
    let at = comment_byte(&bytes);
    bytes[at] ^= 0x20;
    std::fs::write(&src, &bytes).unwrap();
    let (m, second, loaded) = load(&loader, &src);
    unload(&loader, m);
    assert_ne!(first, second, "a changed source must not load from the old copy");
    assert_eq!(loaded, bytes, "the copy holds the source's new bytes");
    // Until the source has been quiet for a while, its copies are not
    // pooled either: a file being rewritten is copied at every load.
    let (m, third, loaded) = load(&loader, &src);
    unload(&loader, m);
    assert_ne!(second, third);
    assert_eq!(loaded, bytes);
}

#[test]
fn two_live_modules_of_one_source_never_share_a_copy() {
    let src = quiet_source("two-live.so");
    let loader = ModuleLoader::new();
    let (m, _, _) = load(&loader, &src);
    unload(&loader, m); // its copy is now idle
    let (a, ia, _) = load(&loader, &src);
    let (b, ib, _) = load(&loader, &src);
    assert_ne!(ia, ib, "the second live module got a copy of its own");
    unload(&loader, a);
    unload(&loader, b);
}

#[test]
fn idle_copies_stay_within_their_bounds() {
    let n = usrcu_module_loader::__REUSE_MAX_IDLE + 3;
    let srcs: Vec<PathBuf> = (0..n)
        .map(|i| {
            let p = scratch(&format!("bounded-{i}.so"));
            std::fs::copy(fixture_path("callbacks"), &p).unwrap();
            p
        })
        .collect();
    wait_until_quiet(srcs.last().unwrap());
    let loader = ModuleLoader::new();
    for src in &srcs {
        let (m, _, _) = load(&loader, src);
        unload(&loader, m);
        let (count, bytes) = usrcu_module_loader::__idle_copies();
        assert!(count <= usrcu_module_loader::__REUSE_MAX_IDLE, "{count} idle copies");
        assert!(
            bytes <= usrcu_module_loader::__REUSE_MAX_IDLE_BYTES,
            "{bytes} idle bytes"
        );
    }
}
