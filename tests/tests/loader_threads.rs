//! Threads a plugin started and left running: the object stays mapped as a
//! `Zombie` naming each thread (tid and name) until they exit; unloading it
//! again afterwards unmaps it. With the thread proof switched off, the
//! host dies when such a thread returns into the unmapped object (seen in a
//! child process).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use usrcu_module_loader::{ModuleLoader, ModuleState, ZombieCause};
use usrcu_tests::{fixture_path, in_child, leak, object_is_mapped, Child, CHILD_ENV};

type SpawnFn = unsafe extern "C" fn(*const AtomicBool, *const AtomicUsize);

/// Wait (bounded, generously) until `f` holds.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(60);
    while !f() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

fn spawn(
    loader: &ModuleLoader,
    m: usrcu_module_loader::ModuleHandle,
    which: &str,
) -> (&'static AtomicBool, &'static AtomicUsize) {
    let (gate, done) = (leak(AtomicBool::new(false)), leak(AtomicUsize::new(0)));
    // SAFETY: the fixture exports it with this signature.
    let f = unsafe { loader.symbol::<SpawnFn>(m, which).unwrap() };
    // SAFETY: both atomics live for the process.
    f.call(|f| unsafe { f.call(gate, done) }).unwrap();
    (gate, done)
}

fn zombie_names_then_unmaps(which: &str, thread_name: &str) {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("plugin-thread")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    // Spawned from a host thread that then exits: the plugin's std leaves
    // thread-local destructors on the thread that spawns (they would pin the
    // object while that thread lives, a case of its own in
    // loader_thread_locals.rs).
    let (gate, done) = std::thread::scope(|s| s.spawn(|| spawn(&loader, m, which)).join().unwrap());

    let report = loader.unload(m).unwrap();

    assert_eq!(report.state, ModuleState::Zombie, "{report}");
    match &report.zombie_cause {
        Some(ZombieCause::ThreadsInObject { threads }) => {
            assert_eq!(threads.len(), 1, "{threads:?}");
            assert!(threads[0].tid > 0);
            assert_eq!(threads[0].name, thread_name);
        }
        c => panic!("expected the plugin's thread named, got {c:?}"),
    }
    assert!(object_is_mapped(&path));
    // The thread still runs the plugin's code, mapped.
    gate.store(true, Ordering::SeqCst);
    assert!(eventually(|| done.load(Ordering::SeqCst) == 1));
    // Once it has exited, the zombie unloads.
    let mut last = None;
    assert!(
        eventually(|| {
            let r = loader.unload(m).unwrap();
            let ok = r.unmapped;
            last = Some(r);
            ok
        }),
        "{last:?}"
    );
    assert!(!object_is_mapped(&path));
}

#[test]
fn plugin_std_thread_running_at_unload_keeps_module_as_zombie_naming_it() {
    zombie_names_then_unmaps("fx_spawn_std", "fx-worker");
}

#[test]
fn plugin_raw_pthread_running_at_unload_keeps_module_as_zombie_naming_it() {
    zombie_names_then_unmaps("fx_spawn_raw", "fx-raw");
}

/// The same plugin with the thread proof off: the object is unmapped under
/// its running thread, and the host dies when that thread returns from its
/// sleep into the unmapped code.
#[test]
fn without_the_thread_proof_a_plugin_thread_kills_the_host() {
    if in_child(CHILD_ENV, None) {
        let loader = ModuleLoader::new();
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(fixture_path("plugin-thread")) }.unwrap();
        let (gate, _done) = spawn(&loader, m, "fx_spawn_raw");
        let report = loader.unload(m).unwrap();
        assert!(report.unmapped, "{report}");
        gate.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(5));
        // Still alive: the defense was not needed after all.
        std::process::exit(0);
    }
    Child::new("without_the_thread_proof_a_plugin_thread_kills_the_host")
        .env("USRCU_LOADER_TEST_SKIP_PROOFS", "threads")
        .run()
        .assert_died_of(
            &[libc::SIGSEGV, libc::SIGBUS, libc::SIGILL],
            "the child should have died of the unmapped thread",
        );
}
