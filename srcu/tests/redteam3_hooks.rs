//! Red-team (round 3) of `HookSlot` and `tasks`: `tasks::idle` while a
//! grace period waits. (A hook that calls `tasks::quiescent` ends the
//! grace period while it still runs: the hook contract now forbids it,
//! `tasks/hook_slot.rs`, so that scenario has no test.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
    // Until the waiter's grace period has started, idle() is rightly true.
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while usrcu::tasks::idle() {
        assert!(std::time::Instant::now() < give_up, "the grace period never started");
        std::thread::sleep(Duration::from_millis(1));
    }
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
