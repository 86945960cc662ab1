//! `runtime::inventory::deferred` never misses a chain of an object's
//! callbacks that hops from Tasks Trace into SRCU and back: the trace
//! callback spins a while, pushes its head onto an SRCU domain (a lock-free
//! push, which the snapshot's lock of the Tasks Trace queue does not stop)
//! and returns; the SRCU callback queues it on Tasks Trace again. At every
//! instant one of them is queued or running, so no snapshot may be idle.
//!
//! The snapshot leaves out the callbacks of a running Tasks Trace batch
//! that have returned (`Queue::count_in`). It must decide which have
//! returned *before* it walks SRCU: a callback that pushes onto a domain
//! already walked and returns before a late decision is seen nowhere.
//! Seen failing (idle snapshots) with `invoked` loaded after the SRCU walk.
//! Domains with callbacks pending behind a reader make the walk long. Alone
//! in its binary: the Tasks Trace flavor is one per process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "common/bounded.rs"]
mod bounded;
use bounded::wait_until;
use usrcu::runtime::inventory;
use usrcu::{CallbackHead, Srcu};

/// Walked first (attached before the fillers).
static X: Srcu = Srcu::new_static("trace-hops-x");

static STOP: AtomicBool = AtomicBool::new(false);
static HOPS: AtomicU64 = AtomicU64::new(0);
static ENDED: AtomicBool = AtomicBool::new(false);

/// The object's Tasks Trace callback: spins (so that snapshots find it
/// running), then pushes its head onto `X` and returns.
unsafe extern "C" fn hop_trace(h: *mut CallbackHead) {
    if STOP.load(Ordering::Acquire) {
        // SAFETY: `h` is the `Box<CallbackHead>` leaked by the test.
        drop(unsafe { Box::from_raw(h) });
        ENDED.store(true, Ordering::Release);
        return;
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_micros(400) {
        std::hint::spin_loop();
    }
    // Relaxed: a progress count.
    HOPS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the head is ours again (its callback is running) and stays
    // valid until `hop_srcu` is called with it.
    unsafe { X.call_srcu_raw(h, hop_srcu) };
}

/// The object's SRCU callback: queues the head on Tasks Trace again.
unsafe extern "C" fn hop_srcu(h: *mut CallbackHead) {
    // SAFETY: as above.
    unsafe { usrcu::trace::call_raw(h, hop_trace) };
}

#[test]
fn a_chain_hopping_between_tasks_trace_and_srcu_is_never_missed() {
    // X first, so that the walk reaches it early.
    X.call_srcu(|| {});
    X.barrier();
    // Fillers: a callback pending behind a reader each, walked one by one.
    let fillers: Vec<&'static Srcu> = (0..300)
        .map(|i| &*Box::leak(Box::new(Srcu::new(&format!("trace-hops-filler-{i}")))))
        .collect();
    let readers: Vec<_> = fillers
        .iter()
        .map(|d| {
            let idx = d.read_lock_raw();
            d.call_srcu(|| {});
            idx
        })
        .collect();
    let fns: [unsafe extern "C" fn(*mut CallbackHead); 2] = [hop_trace, hop_srcu];
    let ranges: Vec<std::ops::Range<usize>> = fns.iter().map(|&f| f as usize..f as usize + 1).collect();
    let head = Box::into_raw(Box::new(CallbackHead::new()));
    // SAFETY: a fresh head, handed to the chain, freed by its last hop.
    unsafe { usrcu::trace::call_raw(head, hop_trace) };
    wait_until("the chain to hop", || HOPS.load(Ordering::Relaxed) > 5);

    let (mut idle, mut snapshots) = (0u32, 0u32);
    let t0 = Instant::now();
    while snapshots < 3_000 || HOPS.load(Ordering::Relaxed) < 200 {
        assert!(t0.elapsed() < bounded::HANG, "hang: the chain stopped hopping");
        std::thread::sleep(Duration::from_micros(50));
        idle += inventory::deferred(&ranges).is_idle() as u32;
        snapshots += 1;
    }
    let hops = HOPS.load(Ordering::Relaxed);
    STOP.store(true, Ordering::Release);
    wait_until("the chain to end", || ENDED.load(Ordering::Acquire));
    println!("{snapshots} snapshots: {idle} idle; {hops} hops");
    assert_eq!(idle, 0, "{idle} of {snapshots} snapshots missed the hopping chain");
    for (d, idx) in fillers.iter().zip(readers) {
        // SAFETY: `idx` came from this domain's `read_lock_raw`, ended once.
        unsafe { d.read_unlock_raw(idx) };
        d.barrier();
    }
}
