//! `trace::barrier_timeout` and the cross-flavor snapshot
//! `runtime::inventory::deferred` that a plugin loader takes before it
//! unmaps an object: a Tasks Trace callback whose function lies in the
//! ranges is counted while it is queued and while it runs, and not after;
//! a bounded trace barrier gives up while a callback ahead of it blocks,
//! and completes once it returns. Flags order every assertion; the only
//! clock is a watchdog and the barrier's own bound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use usrcu::runtime::inventory;
use usrcu::CallbackHead;

static STARTED: AtomicBool = AtomicBool::new(false);
static RELEASE: AtomicBool = AtomicBool::new(false);

/// Says it started, then blocks until released.
unsafe extern "C" fn blocking(_: *mut CallbackHead) {
    // Release/Acquire: the test reads `STARTED`, then the engine's state.
    STARTED.store(true, Ordering::Release);
    while !RELEASE.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A callback that does nothing (its address is the range asked about).
unsafe extern "C" fn idle_cb(_: *mut CallbackHead) {}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < give_up, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn range_of(f: unsafe extern "C" fn(*mut CallbackHead)) -> Vec<std::ops::Range<usize>> {
    let a = f as usize;
    std::iter::once(a..a + 1).collect()
}

#[test]
fn the_snapshot_counts_a_trace_callback_queued_and_running_and_a_bounded_barrier_gives_up_behind_it() {
    let blocking_head = Box::into_raw(Box::new(CallbackHead::new()));
    let idle_head = Box::into_raw(Box::new(CallbackHead::new()));
    // SAFETY: fresh heads, never touched again by this test until the
    // callbacks have run (the barrier below); the functions ignore them.
    unsafe {
        usrcu::trace::call_raw(blocking_head, blocking);
        usrcu::trace::call_raw(idle_head, idle_cb);
    }
    // Queued behind the blocked one: counted, by its function's address.
    let queued = inventory::deferred(&range_of(idle_cb));
    assert_eq!(queued.trace_callbacks, 1, "{queued:?}");
    assert!(!queued.is_idle());
    wait_for("the blocking callback to start", || STARTED.load(Ordering::Acquire));
    // Running (taken off the queue): still counted.
    let running = inventory::deferred(&range_of(blocking));
    assert_eq!(
        running.trace_callbacks, 1,
        "the running callback is not counted: {running:?}"
    );
    // Nothing else lies in the range of a function never queued.
    static ELSEWHERE: u8 = 0;
    let a = &ELSEWHERE as *const u8 as usize;
    assert_eq!(
        inventory::deferred(std::slice::from_ref(&(a..a + 1))).trace_callbacks,
        0
    );
    // The bounded barrier gives up: the callback ahead of its marker blocks.
    assert!(
        !usrcu::trace::barrier_timeout(Duration::from_millis(20)),
        "the barrier completed while a callback ahead of it was blocked"
    );
    RELEASE.store(true, Ordering::Release);
    assert!(usrcu::trace::barrier_timeout(Duration::from_secs(60)));
    let after = inventory::deferred(&range_of(idle_cb));
    assert_eq!(after.trace_callbacks, 0, "{after:?}");
    assert!(inventory::deferred(&range_of(blocking)).is_idle());
    // SAFETY: both callbacks ran (the barrier); the heads are ours again.
    unsafe {
        drop(Box::from_raw(blocking_head));
        drop(Box::from_raw(idle_head));
    }
}

#[test]
fn a_trace_barrier_timeout_from_inside_a_trace_callback_refuses_with_false() {
    let (tx, rx) = std::sync::mpsc::channel();
    usrcu::trace::call(move || {
        let _ = tx.send(usrcu::trace::barrier_timeout(Duration::from_secs(1)));
    });
    let r = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the callback never ran");
    assert!(!r, "a barrier from inside a trace callback claimed to complete");
}
