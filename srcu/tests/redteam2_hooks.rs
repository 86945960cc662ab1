//! Red-team (round 2) of `HookSlot` against the loader's unload path
//! (`tasks::clear_hooks_into`) racing installers, clearers, callers and
//! slots being dropped, and of the flavors' statistics under concurrent
//! producers. Claims: a call only ever runs an installed function or
//! returns `None`; a slot emptied by an unload clear is forgotten by the
//! host and registered again when set again; after an unload clear and a
//! grace period no caller runs the cleared function; `callbacks_invoked`
//! equals `callbacks_queued` once a barrier after the last `call` returned.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use usrcu::tasks::{self, HookSlot};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

type Hook = extern "C" fn(u64) -> u64;

static SLOT: HookSlot<Hook> = HookSlot::new();

/// Calls of `unloaded` still running once its unload clear had been
/// followed by a grace period (must stay 0).
static LATE_CALLS: AtomicUsize = AtomicUsize::new(0);
/// Set by the unloader while `unloaded` must no longer be called.
static UNLOADED: AtomicBool = AtomicBool::new(false);

extern "C" fn kept(x: u64) -> u64 {
    x + 1
}

extern "C" fn unloaded(x: u64) -> u64 {
    // Stay inside a while (never blocking), so that a grace period that
    // ends too early finds callers still in here.
    for _ in 0..20_000 {
        std::hint::spin_loop();
    }
    if UNLOADED.load(SeqCst) {
        LATE_CALLS.fetch_add(1, SeqCst);
    }
    x + 2
}

fn range_of(f: Hook) -> std::ops::Range<usize> {
    let a = f as usize;
    a..a + 1
}

#[test]
fn unload_clears_racing_installers_callers_and_dropped_slots_leave_only_valid_calls() {
    let _s = serial();
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(SeqCst) {
                    match SLOT.call(10) {
                        None | Some(11) | Some(12) => {}
                        Some(x) => panic!("hook returned {x}"),
                    }
                    n += 1;
                    if n % 64 == 0 {
                        tasks::quiescent();
                    }
                }
            })
        })
        .collect();
    // Slots in boxes, set and dropped while the unloader clears: the host
    // must never write to a slot that was dropped.
    let churn = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(SeqCst) {
                let b: Box<HookSlot<Hook>> = Box::new(HookSlot::new());
                // SAFETY: `unloaded` never blocks, lives in the test
                // binary's text, and is stored nowhere else; the slot is
                // boxed and dropped in place.
                unsafe { b.set(Some(unloaded)) };
                drop(b);
                // A thread that never blocks holds every Tasks grace period
                // unless it passes quiescent points (documented).
                tasks::quiescent();
            }
        })
    };
    for round in 0..40 {
        // An installer of the function the unloader is about to remove.
        UNLOADED.store(false, SeqCst);
        // SAFETY: as above; `SLOT` is a static.
        unsafe { SLOT.set(Some(if round % 2 == 0 { unloaded } else { kept })) };
        // The unload: empty every slot whose target is `unloaded`, then a
        // grace period, after which nobody may be running it.
        // SAFETY: every slot ever set is live or was dropped in place
        // (`SLOT` is a static; the churned slots are dropped, not leaked).
        let cleared = unsafe { tasks::clear_hooks_into(&[range_of(unloaded)]) };
        tasks::synchronize();
        UNLOADED.store(true, SeqCst);
        if round % 2 == 0 {
            assert!(cleared >= 1, "round {round}: the static slot held `unloaded`");
            assert!(!SLOT.is_set(), "round {round}: an unload clear empties the slot");
        } else {
            assert_eq!(SLOT.call(1), Some(2), "round {round}: a slot elsewhere is kept");
        }
        // Cleared by the unload, the slot is set and cleared again through
        // its own API: the host registered it again.
        // SAFETY: as above.
        unsafe { SLOT.set_sync(Some(kept)) };
        assert_eq!(SLOT.call(1), Some(2));
        SLOT.clear_sync();
        assert_eq!(SLOT.call(1), None);
    }
    stop.store(true, SeqCst);
    for h in callers {
        h.join().unwrap();
    }
    churn.join().unwrap();
    // Only callers call through `SLOT` (the churned slots are never
    // called): a count here is a caller still inside `unloaded` after its
    // unload clear and a grace period.
    assert_eq!(LATE_CALLS.load(SeqCst), 0, "a Tasks grace period ended under a caller");
    assert!(tasks::hooks_ever_set());
}

#[test]
fn trace_and_tasks_stats_count_every_callback_queued_by_eight_threads_once_a_barrier_returned() {
    let _s = serial();
    let before_trace = usrcu::trace::stats();
    let ran = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let ran = ran.clone();
            thread::spawn(move || {
                for _ in 0..500 {
                    let r = ran.clone();
                    usrcu::trace::call(move || {
                        r.fetch_add(1, SeqCst);
                    });
                    let r = ran.clone();
                    tasks::call(move || {
                        r.fetch_add(1, SeqCst);
                    });
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    usrcu::trace::barrier();
    tasks::barrier();
    assert_eq!(ran.load(SeqCst), 8 * 500 * 2);
    let t = usrcu::trace::stats();
    assert_eq!(t.callbacks_queued - before_trace.callbacks_queued, 4000, "{t:?}");
    assert_eq!(t.callbacks_invoked, t.callbacks_queued, "{t:?}");
    assert!(t.grace_periods > before_trace.grace_periods, "{t:?}");
    assert_eq!(tasks::callbacks_pending(), 0);
}
