//! `runtime::inventory::deferred` against a Tasks Trace batch that is still
//! running: a callback of the batch that has returned is not counted, even
//! while a later callback of the same batch runs. A loader that takes the
//! snapshot right after `trace::barrier` (whose marker wakes it in the
//! middle of a batch) must not find callbacks that already ran. Alone in its
//! binary: the Tasks Trace flavor is one per process.
//!
//! Seen failing ("counted after it returned: 1") with `Queue::count_in`
//! counting the whole running batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[path = "common/bounded.rs"]
mod bounded;
use bounded::wait_until;
use usrcu::runtime::inventory;
use usrcu::CallbackHead;

static FIRST_STARTED: AtomicBool = AtomicBool::new(false);
static FIRST_RELEASE: AtomicBool = AtomicBool::new(false);
static LAST_STARTED: AtomicBool = AtomicBool::new(false);
static LAST_RELEASE: AtomicBool = AtomicBool::new(false);

fn block(started: &AtomicBool, release: &AtomicBool) {
    started.store(true, Ordering::SeqCst);
    while !release.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

unsafe extern "C" fn first(_: *mut CallbackHead) {
    block(&FIRST_STARTED, &FIRST_RELEASE);
}

unsafe extern "C" fn last(_: *mut CallbackHead) {
    block(&LAST_STARTED, &LAST_RELEASE);
}

/// Returns at once; its address is the range asked about.
unsafe extern "C" fn quick(_: *mut CallbackHead) {}

fn snapshot(f: unsafe extern "C" fn(*mut CallbackHead)) -> inventory::Deferred {
    let a = f as usize;
    inventory::deferred(std::slice::from_ref(&(a..a + 1)))
}

fn count(f: unsafe extern "C" fn(*mut CallbackHead)) -> usize {
    snapshot(f).trace_callbacks
}

#[test]
fn a_callback_that_returned_is_not_counted_while_the_rest_of_its_batch_runs() {
    let heads: Vec<*mut CallbackHead> = (0..3).map(|_| Box::into_raw(Box::new(CallbackHead::new()))).collect();
    // SAFETY: fresh heads, not touched again until their callbacks ran (the
    // barrier at the end); the functions ignore them.
    unsafe { usrcu::trace::call_raw(heads[0], first) };
    // The thread holds `first`: what follows piles up behind it.
    wait_until("the first callback to start", || FIRST_STARTED.load(Ordering::SeqCst));
    // SAFETY: as above.
    unsafe { usrcu::trace::call_raw(heads[1], quick) };
    // A marker between them, left behind by a barrier that gives up.
    assert!(!usrcu::trace::barrier_timeout(Duration::from_millis(1)));
    // SAFETY: as above.
    unsafe { usrcu::trace::call_raw(heads[2], last) };
    // Both callbacks' grace periods are over: the next batch takes all three.
    usrcu::trace::synchronize();
    assert_eq!(count(quick), 1, "queued behind `first`");
    FIRST_RELEASE.store(true, Ordering::SeqCst);
    wait_until("the last callback to start", || LAST_STARTED.load(Ordering::SeqCst));
    // `quick` returned before `last` began (one thread, in order).
    assert_eq!(count(quick), 0, "counted after it returned: {}", count(quick));
    assert_eq!(count(last), 1, "the running callback is counted");
    LAST_RELEASE.store(true, Ordering::SeqCst);
    assert!(usrcu::trace::barrier_timeout(Duration::from_secs(60)));
    assert!(snapshot(last).is_idle() && snapshot(quick).is_idle());
    for h in heads {
        // SAFETY: every callback ran (the barrier); the heads are ours again.
        drop(unsafe { Box::from_raw(h) });
    }
}
