//! A plugin's function installed into a host `HookSlot` with the module's
//! lifetime attached: unload empties the slot and waits for a Tasks grace
//! period before `dlclose`, while two threads call the hook in a loop; 200
//! cycles, no crash, every cycle unmapped. With the clearing switched off,
//! the host crashes (shown in a child process).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::thread;

use usrcu::tasks::{self, HookSlot};
use usrcu_module_loader::ModuleLoader;
use usrcu_tests::{fixture_path, Child};

static HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

const CHILD_ENV: &str = "USRCU_HOOK_CRASH_CHILD";

/// Load, install, let the callers hit the plugin's hook, unload; `cycles`
/// times. Returns the hits.
fn cycles(cycles: usize, check_report: bool) -> u64 {
    let loader = ModuleLoader::new();
    let path = fixture_path("hook");
    let stop = AtomicBool::new(false);
    let hits = AtomicU64::new(0);
    thread::scope(|s| {
        for t in 0..2u64 {
            let (stop, hits) = (&stop, &hits);
            s.spawn(move || {
                let mut x = t;
                while !stop.load(SeqCst) {
                    if let Some(y) = HOOK.call(x) {
                        assert_eq!(y, x + 1, "the hook returned garbage");
                        hits.fetch_add(1, SeqCst);
                    }
                    x = x.wrapping_add(2);
                    // A caller that never blocks passes quiescent points.
                    tasks::quiescent();
                }
            });
        }
        for i in 0..cycles {
            // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
            let h = unsafe { loader.load(&path) }.unwrap();
            // SAFETY: the fixture exports `fx_hook_add: extern "C" fn(u64) -> u64`,
            // which never blocks, touches only a static, stores no pointer.
            unsafe { loader.install_hook(h, &HOOK, "fx_hook_add") }.unwrap();
            let before = hits.load(SeqCst);
            while hits.load(SeqCst) < before + 2 {
                thread::yield_now();
            }
            let r = loader.unload(h).unwrap();
            if check_report {
                assert!(r.unmapped, "cycle {i}: not unmapped: {r:?}");
                assert_eq!(r.hook_slots.cleared, 1, "cycle {i}: {:?}", r.hook_slots);
                assert!(r.hook_slots.waited_grace_period && !r.hook_slots.timed_out);
                assert!(!HOOK.is_set());
            }
        }
        stop.store(true, SeqCst);
    });
    hits.load(SeqCst)
}

#[test]
fn unload_clears_the_plugins_hook_while_two_threads_call_it_for_200_cycles() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let hits = cycles(200, true);
    assert!(hits >= 400);
}

/// The child: with the clearing switched off, one unload leaves the slot
/// pointing into the unmapped object, and the next call of the hook (before
/// any later load could map code at the same address again) crashes. Then,
/// should it somehow survive, the racing cycles.
#[test]
fn hook_crash_child_entry() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    usrcu_module_loader::__set_skip_hook_clearing(true);
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(fixture_path("hook")) }.unwrap();
    // SAFETY: as in `cycles`.
    unsafe { loader.install_hook(h, &HOOK, "fx_hook_add") }.unwrap();
    assert_eq!(HOOK.call(1), Some(2));
    let r = loader.unload(h).unwrap();
    println!("unloaded, unmapped: {}", r.unmapped);
    // The slot still holds the plugin's function: this call runs unmapped code.
    let _ = std::hint::black_box(HOOK.call(1));
    cycles(200, false);
    println!("child survived");
}

#[test]
fn without_the_clearing_the_host_crashes_calling_the_unmapped_hook() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    // Build the fixture here so that the child does not race a build.
    let _ = fixture_path("hook");
    Child::new("hook_crash_child_entry")
        .env(CHILD_ENV, "1")
        .must_die_of(&[libc::SIGSEGV, libc::SIGBUS]);
}

#[test]
fn install_hook_refuses_a_symbol_the_module_does_not_export() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    static OTHER: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(fixture_path("hook")) }.unwrap();
    // SAFETY: the call fails before anything is installed.
    let e = unsafe { loader.install_hook(h, &OTHER, "no_such_symbol") }.unwrap_err();
    assert!(matches!(e, usrcu_module_loader::HookError::NotFound { .. }), "{e}");
    assert!(!OTHER.is_set());
    loader.unload(h).unwrap();
}

#[test]
fn a_plugins_copy_of_usrcu_uses_the_hosts_tasks_engine_and_records() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(fixture_path("hook")) }.unwrap();
    // A callback queued by the plugin's copy runs on the host's engine: the
    // host's barrier waits for it.
    let ran = usrcu_tests::leak(AtomicU64::new(0));
    // SAFETY: the fixture exports these with these types.
    let (queue, qs) = unsafe {
        (
            loader
                .symbol::<unsafe extern "C" fn(*const AtomicU64)>(h, "fx_tasks_call")
                .unwrap(),
            loader.symbol::<extern "C" fn()>(h, "fx_quiescent").unwrap(),
        )
    };
    // SAFETY: `ran` is leaked.
    queue.call(|f| unsafe { f.call(ran) }).unwrap();
    tasks::barrier();
    assert_eq!(
        ran.load(SeqCst),
        1,
        "the host's barrier did not wait for the plugin's callback"
    );
    // A thread that never blocks and passes quiescent points only through
    // the plugin's copy: a host grace period must see them.
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(SeqCst) {
                qs.call(|f| f.call()).unwrap();
            }
        });
        let ended = (0..3).all(|_| tasks::start_poll().wait_timeout(std::time::Duration::from_secs(30)));
        stop.store(true, SeqCst);
        assert!(ended, "the plugin's quiescent points did not reach the host's records");
    });
    drop((queue, qs));
    assert!(loader.unload(h).unwrap().unmapped);
}

/// A host Tasks callback that blocks, unrelated to the plugin, does not
/// keep the plugin's hook: the unload empties the slot, waits for a Tasks
/// grace period (run by `usrcu-tasks`, not behind the callback on
/// `usrcu-tasks-cb`) and unmaps. Before Tasks callbacks got a thread of
/// their own, the grace period waited behind the callback; and while the
/// unload waited for a Tasks barrier (every callback, not the object's),
/// it ended as a Zombie (`HooksBusy`) after its whole timeout (seen
/// failing). Nothing releases the host callback before the unload returns.
#[test]
fn a_plugins_hook_unloads_while_an_unrelated_host_tasks_callback_blocks() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let started = std::sync::Arc::new(AtomicBool::new(false));
    {
        let started = started.clone();
        tasks::call(move || {
            started.store(true, SeqCst);
            let _ = rx.recv_timeout(std::time::Duration::from_secs(120));
        });
    }
    while !started.load(SeqCst) {
        thread::sleep(std::time::Duration::from_millis(1));
    }
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(fixture_path("hook")) }.unwrap();
    // SAFETY: as in `cycles`.
    unsafe { loader.install_hook(h, &HOOK, "fx_hook_add") }.unwrap();
    assert_eq!(HOOK.call(1), Some(2));
    let t0 = std::time::Instant::now();
    let r = loader.unload(h).unwrap();
    let took = t0.elapsed();
    println!("unload with a blocked host Tasks callback: {took:?}, {r:?}");
    assert!(r.unmapped, "not unmapped: {r:?}");
    assert_eq!(r.hook_slots.cleared, 1, "{:?}", r.hook_slots);
    assert!(
        r.hook_slots.waited_grace_period && !r.hook_slots.timed_out,
        "{:?}",
        r.hook_slots
    );
    assert!(!HOOK.is_set());
    tx.send(()).unwrap();
    tasks::barrier();
}
