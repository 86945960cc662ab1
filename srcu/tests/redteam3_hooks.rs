//! Red-team (round 3) of `HookSlot` and `tasks::quiescent`.
//!
//! The installer of a hook promises, for the function "and everything it
//! calls", that it never blocks, never faults on non-resident memory and
//! that nobody stores the pointer. `tasks::quiescent()` is a safe function
//! whose doc reads "the calling thread is not inside any hook here", yet
//! nothing in the hook's contract forbids calling it, and nothing checks:
//! a hook that calls it (directly, or through a library routine that
//! "politely" passes quiescent points) lets `clear_sync` return while the
//! hook is still running, so whatever the caller frees or unmaps next is
//! still in use.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use usrcu::tasks::HookSlot;

static SLOT: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
static ENTERED: AtomicBool = AtomicBool::new(false);
static CLEARED: AtomicBool = AtomicBool::new(false);
/// Set by the hook if it saw `clear_sync` return while it was still inside.
static SAW_CLEARED_INSIDE: AtomicBool = AtomicBool::new(false);
static SPINS: AtomicU64 = AtomicU64::new(0);

/// Spins (never blocks) for at most 5 s, passing quiescent points.
extern "C" fn polite_hook(x: u64) -> u64 {
    ENTERED.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        usrcu::tasks::quiescent();
        SPINS.fetch_add(1, Ordering::Relaxed);
        if CLEARED.load(Ordering::SeqCst) {
            SAW_CLEARED_INSIDE.store(true, Ordering::SeqCst);
            break;
        }
        std::hint::spin_loop();
    }
    x
}

#[test]
#[ignore = "defect (contract): tasks::quiescent() called inside a hook ends the Tasks grace period while the hook runs; the HookSlot contract does not forbid it (tasks/hook_slot.rs:83-101, tasks/mod.rs:179-190)"]
fn clear_sync_does_not_return_while_a_hook_that_passes_quiescent_points_is_still_running() {
    // SAFETY: `polite_hook` never blocks, is in the executable's text, and
    // nothing else stores the pointer; it passes `tasks::quiescent()`, which
    // the contract does not forbid.
    unsafe { SLOT.set_sync(Some(polite_hook)) };
    let caller = std::thread::spawn(|| SLOT.call(7));
    while !ENTERED.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    SLOT.clear_sync();
    CLEARED.store(true, Ordering::SeqCst);
    assert_eq!(caller.join().unwrap(), Some(7));
    assert!(
        !SAW_CLEARED_INSIDE.load(Ordering::SeqCst),
        "clear_sync returned while the hook was still running ({} spins)",
        SPINS.load(Ordering::Relaxed)
    );
}

/// `tasks::idle` with a `synchronize` held by a thread that spins without
/// passing a quiescent point: a grace period is running, so it must read
/// false.
#[test]
fn tasks_idle_is_false_while_a_synchronize_waits_for_a_spinning_thread() {
    use std::sync::Arc;
    let spinning = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st) = (Arc::clone(&spinning), Arc::clone(&stop));
    let spinner = std::thread::spawn(move || {
        s.store(true, Ordering::SeqCst);
        while !st.load(Ordering::Relaxed) {
            std::hint::spin_loop();
        }
    });
    while !spinning.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    let waiter = std::thread::spawn(move || {
        usrcu::tasks::synchronize();
        d.store(true, Ordering::SeqCst);
    });
    let mut saw_idle = 0;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(1));
        if usrcu::tasks::idle() && !done.load(Ordering::SeqCst) {
            saw_idle += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    spinner.join().unwrap();
    waiter.join().unwrap();
    assert_eq!(saw_idle, 0, "tasks::idle() was true while synchronize waited");
}
