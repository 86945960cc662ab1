//! A host thread that exits *during* an unload, while glibc runs a plugin
//! key destructor on it: the loader waits for it (bounded) and keeps the
//! object mapped as a Zombie naming the key, instead of unmapping the code
//! the thread is running. Without the key interposer (the loader only
//! deleting the key from glibc's table) the host dies (seen in a child).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use usrcu_module_loader::{LoaderConfig, ModuleHandle, ModuleLoader, ModuleState, ZombieCause};
use usrcu_tests::{fixture_path, in_child, leak, object_is_mapped, Child, CHILD_ENV};

type HoldFn = unsafe extern "C" fn(*const AtomicUsize, *const AtomicBool, *const AtomicUsize) -> u32;
type NameFn = unsafe extern "C" fn(*mut u8, usize) -> usize;

fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(60);
    while !f() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

struct Probe {
    entered: &'static AtomicUsize,
    gate: &'static AtomicBool,
    finished: &'static AtomicUsize,
}

/// Load the fixture and leave a host thread exiting inside its key
/// destructor; returns the key, the probe and the thread.
fn thread_inside_destructor(loader: &ModuleLoader, m: ModuleHandle) -> (u32, Probe, std::thread::JoinHandle<()>) {
    let p = Probe {
        entered: leak(AtomicUsize::new(0)),
        gate: leak(AtomicBool::new(false)),
        finished: leak(AtomicUsize::new(0)),
    };
    // SAFETY: the fixture exports it with this signature.
    let hold = unsafe { loader.symbol::<HoldFn>(m, "fx_key_hold").unwrap() };
    let (tx, rx) = std::sync::mpsc::channel();
    let (e, g, f) = (p.entered, p.gate, p.finished);
    let t = std::thread::spawn(move || {
        // SAFETY: the atomics live for the process.
        tx.send(hold.call(|h| unsafe { h.call(e, g, f) }).unwrap()).unwrap();
        // The thread exits: glibc runs the plugin's destructor, which waits.
    });
    let key = rx.recv().unwrap();
    assert!(eventually(|| p.entered.load(Ordering::SeqCst) == 1));
    (key, p, t)
}

#[test]
fn thread_exiting_inside_a_plugin_key_destructor_during_unload_keeps_it_mapped_naming_the_key() {
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_millis(300),
        ..Default::default()
    });
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("key-destructor")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    let (key, p, t) = thread_inside_destructor(&loader, m);

    let report = loader.unload(m).unwrap();

    assert_eq!(report.state, ModuleState::Zombie, "{report}");
    assert_eq!(report.zombie_cause, Some(ZombieCause::KeyDestructorRunning { key }));
    assert!(object_is_mapped(&path));
    // The destructor finishes, in mapped code.
    p.gate.store(true, Ordering::SeqCst);
    t.join().unwrap();
    assert_eq!(p.finished.load(Ordering::SeqCst), 1);
    let retry = loader.unload(m).unwrap();
    assert!(retry.unmapped, "{retry}");
    assert!(!object_is_mapped(&path));
}

#[test]
fn without_the_key_interposer_a_thread_exiting_during_unload_kills_the_host() {
    if in_child(CHILD_ENV, None) {
        let loader = ModuleLoader::new();
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(fixture_path("key-destructor")) }.unwrap();
        let (_key, p, _t) = thread_inside_destructor(&loader, m);
        let report = loader.unload(m).unwrap();
        assert!(report.unmapped, "{report}");
        p.gate.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(5));
        std::process::exit(0);
    }
    Child::new("without_the_key_interposer_a_thread_exiting_during_unload_kills_the_host")
        .env("USRCU_LOADER_TEST_SKIP_PROOFS", "key-interposer")
        .run()
        .assert_died_of(
            &[libc::SIGSEGV, libc::SIGBUS, libc::SIGILL],
            "the child should have died in the unmapped destructor",
        );
}

/// Host threads that used `std::thread::current()` inside the plugin exit
/// while it is unloaded, load after load: nothing crashes, and every unload
/// ends unmapped or as a Zombie that a retry unmaps.
#[test]
fn host_threads_exiting_while_thread_current_plugins_unload_never_crash() {
    let loader = ModuleLoader::new();
    let path = fixture_path("thread-current");
    for round in 0..40 {
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(&path) }.unwrap();
        // SAFETY: the fixture exports it with this signature.
        let name = unsafe { loader.symbol::<NameFn>(m, "fx_thread_name").unwrap() };
        let start = leak(AtomicBool::new(false));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let name = name.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 32];
                    // SAFETY: 32 writable bytes.
                    let _ = name.call(|f| unsafe { f.call(buf.as_mut_ptr(), buf.len()) });
                    drop(name);
                    while !start.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                    // Exit at staggered moments around the unload.
                    for _ in 0..(i * 2000 + round * 97) % 9000 {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        drop(name);
        start.store(true, Ordering::SeqCst);
        let mut report = loader.unload(m).unwrap();
        for t in threads {
            t.join().unwrap();
        }
        while report.state == ModuleState::Zombie {
            report = loader.unload(m).unwrap();
        }
        assert!(report.unmapped, "{report}");
    }
}
