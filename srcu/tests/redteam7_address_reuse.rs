//! Red team (round 7): the runtime keeps the callbacks a domain left behind
//! when it was cleaned up from inside its own callback ("orphans"), and
//! finds them again by the *address* of the `Srcu` (`orphans_of(st.srcu)`),
//! so that a re-use of the same domain keeps callback order. A different,
//! unrelated domain allocated at the same address (the freed `Arc<Srcu>`'s
//! memory handed out again, as malloc does at once on the same thread) is
//! taken for the old one.
//!
//! FINDING if it fails: an unrelated new domain's `barrier` waits for the
//! old domain's left-behind callbacks.

#[path = "common/bounded.rs"]
mod bounded;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use usrcu::Srcu;

#[test]
fn a_new_domain_allocated_where_an_orphaned_domain_lived_is_not_held_by_its_leftover_callbacks() {
    let gate: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let left_ran: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    let (tx, rx) = mpsc::channel::<(usize, usize, Arc<Srcu>)>();
    let a = Arc::new(Srcu::new("rt7-orphan-a"));
    let a_addr = Arc::as_ptr(&a) as usize;
    // First callback: drops the last reference to `a` (cleanup from inside
    // its own callback: the remaining callback is left behind), then makes
    // an unrelated domain `b` on the same thread, where malloc hands the
    // freed block out again.
    let a1 = a.clone();
    a.call_srcu(move || {
        drop(a1);
        let b = Arc::new(Srcu::new("rt7-unrelated-b"));
        let b_addr = Arc::as_ptr(&b) as usize;
        tx.send((a_addr, b_addr, b)).unwrap();
    });
    // Second callback of `a`: blocks until the test opens the gate.
    a.call_srcu(move || {
        while !gate.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        left_ran.fetch_add(1, Ordering::SeqCst);
    });
    drop(a);
    let (a_addr, b_addr, b) = rx.recv_timeout(bounded::HANG).expect("the first callback ran");
    eprintln!("a at {a_addr:#x}, b at {b_addr:#x} (same: {})", a_addr == b_addr);
    if a_addr != b_addr {
        gate.store(true, Ordering::SeqCst);
        eprintln!("allocator did not reuse the address; nothing shown");
        return;
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    b.call_srcu(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let done = b.barrier_timeout(Duration::from_secs(5));
    let ran_b = ran.load(Ordering::SeqCst);
    gate.store(true, Ordering::SeqCst);
    bounded::wait_until("a's leftover callback runs once the gate opens", || {
        left_ran.load(Ordering::SeqCst) == 1
    });
    assert!(
        done && ran_b == 1,
        "unrelated domain 'rt7-unrelated-b' (at the freed address of 'rt7-orphan-a') was held by a's \
         left-behind callback: barrier_timeout(5 s) = {done}, its callback ran {ran_b} time(s)"
    );
}
