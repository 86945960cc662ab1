//! Red team (round 7): `tasks::idle`'s own doc example waits with
//! `while !usrcu::tasks::idle() { std::thread::yield_now(); }`. A thread
//! that spins on `sched_yield` stays runnable and never switches
//! voluntarily, so to Tasks RCU it is never quiescent: if a Tasks grace
//! period is in progress when the loop starts (another thread queued a
//! Tasks callback, say), the loop itself holds that grace period, and
//! `idle()` never becomes true.
//!
//! FINDING if it fails: the documented wait loop does not end (bounded
//! here at 20 s, checked on the vDSO clock inside the loop).

use std::time::{Duration, Instant};

#[test]
fn the_documented_idle_wait_loop_ends_while_another_thread_uses_tasks_rcu() {
    // Start the flavor.
    usrcu::tasks::call(|| {});
    usrcu::tasks::barrier();
    // Another thread queues a Tasks callback: a grace period starts, which
    // the calling thread below must be seen quiescent for.
    let t = std::thread::spawn(|| usrcu::tasks::call(|| {}));
    t.join().unwrap();
    // The doc example, verbatim but for the bound.
    let t0 = Instant::now();
    while !usrcu::tasks::idle() {
        std::thread::yield_now();
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "`while !tasks::idle() {{ yield_now() }}` (tasks::idle's doc example) still spinning after 20 s: \
             the spinning thread holds the Tasks grace period it waits for"
        );
    }
}
