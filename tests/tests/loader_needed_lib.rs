//! A plugin whose `DT_NEEDED` C library creates a pthread key with a
//! destructor in that library: the library is part of the object for every
//! proof, its key goes with the plugin, and it leaves the address space with
//! it. Without counting such libraries (a test switch), the library is
//! unmapped while its key is alive and the host dies when the thread that
//! holds a value exits (seen in a child process).

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::{fixture_path, fxneeded_holder, fxneeded_mapped, in_child, Child, CHILD_ENV};

#[test]
fn needed_library_key_goes_with_the_plugin_and_the_library_leaves() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("needed-lib")) }.unwrap();
    assert!(fxneeded_mapped());
    let (go, t) = fxneeded_holder(&loader, m);

    let report = loader.unload(m).unwrap();

    assert!(report.pthread_keys_deleted >= 1, "{report:?}");
    assert!(report.unmapped, "{report:?}");
    assert!(report.libraries_still_mapped.is_empty());
    assert!(!fxneeded_mapped());
    // Its destructor would be called here, in the unmapped library.
    go.send(()).unwrap();
    t.join().unwrap();
}

#[test]
fn without_counting_needed_libraries_their_key_kills_the_host() {
    if in_child(CHILD_ENV, None) {
        let loader = ModuleLoader::new();
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(fixture_path("needed-lib")) }.unwrap();
        let (go, t) = fxneeded_holder(&loader, m);
        let report = loader.unload(m).unwrap();
        assert!(!fxneeded_mapped(), "{report:?}");
        go.send(()).unwrap();
        let _ = t.join();
        std::process::exit(0);
    }
    Child::new("without_counting_needed_libraries_their_key_kills_the_host")
        .env("USRCU_LOADER_TEST_SKIP_PROOFS", "needed")
        .run()
        .assert_died_of(
            &[libc::SIGSEGV, libc::SIGBUS, libc::SIGILL],
            "the child should have died in the unmapped library's destructor",
        );
}
