//! A plugin whose `DT_NEEDED` C library creates a pthread key with a
//! destructor in that library: the library is part of the object for every
//! proof, its key goes with the plugin, and it leaves the address space with
//! it. Without counting such libraries (a test switch), the library is
//! unmapped while its key is alive and the host dies when the thread that
//! holds a value exits (seen in a child process).

use std::os::unix::process::ExitStatusExt;
use std::sync::mpsc;

use usrcu_module_loader::{ModuleHandle, ModuleLoader};
use usrcu_tests::{fixture_path, in_child, rerun_in_child};

type HoldFn = extern "C" fn() -> u32;

fn library_mapped() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .contains("libfxneeded.so")
}

/// A host thread that has a value under the library's key and stays alive
/// until told to exit.
fn holder(loader: &ModuleLoader, m: ModuleHandle) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    // SAFETY: the fixture exports it with this signature.
    let hold = unsafe { loader.symbol::<HoldFn>(m, "fx_needed_hold").unwrap() };
    let (held_tx, held) = mpsc::channel();
    let (go, wait) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        hold.call(|f| f.call()).unwrap();
        drop(hold);
        held_tx.send(()).unwrap();
        let _ = wait.recv();
    });
    held.recv().unwrap();
    (go, t)
}

#[test]
fn needed_library_key_goes_with_the_plugin_and_the_library_leaves() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("needed-lib")) }.unwrap();
    assert!(library_mapped());
    let (go, t) = holder(&loader, m);

    let report = loader.unload(m).unwrap();

    assert!(report.pthread_keys_deleted >= 1, "{report:?}");
    assert!(report.unmapped, "{report:?}");
    assert!(report.libraries_still_mapped.is_empty());
    assert!(!library_mapped());
    // Its destructor would be called here, in the unmapped library.
    go.send(()).unwrap();
    t.join().unwrap();
}

#[test]
fn without_counting_needed_libraries_their_key_kills_the_host() {
    if in_child() {
        let loader = ModuleLoader::new();
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(fixture_path("needed-lib")) }.unwrap();
        let (go, t) = holder(&loader, m);
        let report = loader.unload(m).unwrap();
        assert!(!library_mapped(), "{report:?}");
        go.send(()).unwrap();
        let _ = t.join();
        std::process::exit(0);
    }
    let status = rerun_in_child(
        "without_counting_needed_libraries_their_key_kills_the_host",
        &[("USRCU_LOADER_TEST_SKIP_PROOFS", "needed")],
    );
    assert!(
        matches!(status.signal(), Some(libc::SIGSEGV | libc::SIGBUS | libc::SIGILL)),
        "the child should have died in the unmapped library's destructor: {status:?}"
    );
}
