//! Red team of libraries that two live modules share, through the public
//! API. Two copies of the `needed-lib` fixture both link `libfxneeded.so`
//! (whose pthread key has a destructor in that library): the dynamic linker
//! maps the library once, for the first, and unmaps it with the last. So
//! the proofs of idleness must look at it on the unload that unmaps it,
//! whichever module was loaded first; and the unload of the other reports
//! its own object gone, with no invented cause.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use usrcu_module_loader::{ModuleLoader, UnloadReport};
use usrcu_tests::{fixture_path, fxneeded_holder, fxneeded_mapped, in_child, Child, CHILD_ENV};

fn own_object_gone(r: &UnloadReport) {
    assert!(r.unmapped, "{r}; still mapped: {:?}", r.libraries_still_mapped);
    assert!(r.resident_cause.is_none(), "{r}");
}

#[test]
fn the_later_copy_proves_the_shared_library_idle_and_a_thread_exit_never_crashes_the_host() {
    if in_child(CHILD_ENV, None) {
        let loader = ModuleLoader::new();
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let first = unsafe { loader.load(fixture_path("needed-lib")) }.unwrap();
        // SAFETY: as above.
        let second = unsafe { loader.load(fixture_path("needed-lib")) }.unwrap();
        // The first goes first: the library stays, for the second.
        let r_first = loader.unload(first).unwrap();
        assert!(fxneeded_mapped());
        // The library makes its key and sets a value, through the second.
        let (go, t) = fxneeded_holder(&loader, second);
        let r = loader.unload(second).unwrap();
        // Its destructor would run here, in the unmapped library (checked
        // before the reports, so that a wrong one cannot hide the crash).
        go.send(()).unwrap();
        t.join().unwrap();
        own_object_gone(&r_first);
        own_object_gone(&r);
        assert!(
            r.pthread_keys_deleted >= 1,
            "the library's key goes with the last user: {r:?}"
        );
        assert!(!fxneeded_mapped());
        std::process::exit(0);
    }
    Child::new("the_later_copy_proves_the_shared_library_idle_and_a_thread_exit_never_crashes_the_host")
        .run()
        .assert_passed("", "the host died or a check failed in the child");
}

#[test]
fn two_copies_unloaded_newest_first_both_report_their_objects_gone() {
    if in_child(CHILD_ENV, None) {
        let loader = ModuleLoader::new();
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let first = unsafe { loader.load(fixture_path("needed-lib")) }.unwrap();
        // SAFETY: as above.
        let second = unsafe { loader.load(fixture_path("needed-lib")) }.unwrap();
        let (go, t) = fxneeded_holder(&loader, first);
        own_object_gone(&loader.unload(second).unwrap());
        let r = loader.unload(first).unwrap();
        own_object_gone(&r);
        assert!(r.pthread_keys_deleted >= 1, "{r:?}");
        assert!(!fxneeded_mapped());
        go.send(()).unwrap();
        t.join().unwrap();
        std::process::exit(0);
    }
    Child::new("two_copies_unloaded_newest_first_both_report_their_objects_gone")
        .run()
        .assert_passed("", "the child failed");
}

#[test]
fn copies_loaded_by_racing_threads_each_unload_with_their_object_gone_and_the_library_leaves() {
    if in_child(CHILD_ENV, None) {
        let loader: &'static ModuleLoader = Box::leak(Box::new(ModuleLoader::new()));
        let (tx, rx) = mpsc::channel();
        let loaders: Vec<_> = (0..4)
            .map(|_| {
                let tx = tx.clone();
                thread::spawn(move || {
                    for _ in 0..4 {
                        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
                        tx.send(unsafe { loader.load(fixture_path("needed-lib")) }.unwrap())
                            .unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        // Unloaded as they arrive, while other threads are still loading.
        let mut holders = Vec::new();
        for (i, m) in rx.iter().enumerate() {
            if i % 5 == 0 {
                holders.push(fxneeded_holder(loader, m));
            }
            own_object_gone(&loader.unload(m).unwrap());
        }
        for t in loaders {
            t.join().unwrap();
        }
        assert!(!fxneeded_mapped());
        for (go, t) in holders {
            go.send(()).unwrap();
            t.join().unwrap();
        }
        std::process::exit(0);
    }
    // A bounded wait: a hang fails the test.
    let ran = Child::new("copies_loaded_by_racing_threads_each_unload_with_their_object_gone_and_the_library_leaves")
        .timeout(Duration::from_secs(120))
        .run();
    assert!(!ran.timed_out, "the child hung\n{}", ran.describe());
    ran.assert_passed("", "the child failed");
}
