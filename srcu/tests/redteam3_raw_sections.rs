//! Red-team (round 3): raw read sections begun on one thread and ended on
//! another, at scale, against grace periods and callbacks. Each section
//! checks, just before another thread ends it, that the object it loaded
//! has not been retired: retiring happens after `synchronize` or in a
//! `call_srcu` callback, so a retired object seen inside a section is a
//! grace period that was too short. Objects are never freed (only marked),
//! so a failure is an assertion, not undefined behaviour.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use usrcu::{ReadIndex, Srcu};

struct Node {
    retired: AtomicBool,
}

fn node() -> *mut Node {
    Box::into_raw(Box::new(Node {
        retired: AtomicBool::new(false),
    }))
}

#[test]
fn raw_sections_ended_on_other_threads_are_waited_for_by_every_grace_period() {
    static D: Srcu = Srcu::new_static("redteam3-raw-cross-thread");
    static PTR: AtomicPtr<Node> = AtomicPtr::new(std::ptr::null_mut());
    PTR.store(node(), Ordering::SeqCst);
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(AtomicUsize::new(0));
    let sections = Arc::new(AtomicUsize::new(0));

    // Enders: end sections begun by the starters, after checking them.
    let mut senders = Vec::new();
    let mut enders = Vec::new();
    for _ in 0..4 {
        let (tx, rx) = mpsc::sync_channel::<(ReadIndex, usize)>(64);
        senders.push(tx);
        let v = Arc::clone(&violations);
        let n = Arc::clone(&sections);
        enders.push(std::thread::spawn(move || {
            for (i, (idx, p)) in rx.into_iter().enumerate() {
                if i % 7 == 0 {
                    std::thread::yield_now();
                }
                // SAFETY: nodes are never freed.
                if unsafe { &*(p as *const Node) }.retired.load(Ordering::SeqCst) {
                    v.fetch_add(1, Ordering::SeqCst);
                }
                // SAFETY: `idx` came from `D.read_lock_raw()` and is ended
                // once, here.
                unsafe { D.read_unlock_raw(idx) };
                n.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Starters: begin a section, load, hand both to an ender.
    let mut starters = Vec::new();
    for t in 0..4 {
        let txs = senders.clone();
        let stop = Arc::clone(&stop);
        starters.push(std::thread::spawn(move || {
            let mut k = t;
            while !stop.load(Ordering::Relaxed) {
                let idx = D.read_lock_raw();
                let p = PTR.load(Ordering::Acquire) as usize;
                if txs[k % txs.len()].send((idx, p)).is_err() {
                    break;
                }
                k += 1;
            }
        }));
    }
    drop(senders);

    // Updaters: half retire after synchronize, half in a callback.
    for round in 0..300 {
        let old = PTR.swap(node(), Ordering::AcqRel) as usize;
        let retire = move || {
            // SAFETY: nodes are never freed.
            unsafe { &*(old as *const Node) }.retired.store(true, Ordering::SeqCst)
        };
        match round % 3 {
            0 => {
                D.synchronize();
                retire();
            }
            1 => {
                D.synchronize_expedited();
                retire();
            }
            _ => D.call_srcu(retire),
        }
    }
    D.barrier();
    stop.store(true, Ordering::SeqCst);
    for s in starters {
        s.join().unwrap();
    }
    for e in enders {
        e.join().unwrap();
    }
    D.synchronize();
    assert!(sections.load(Ordering::Relaxed) > 0);
    assert_eq!(
        violations.load(Ordering::SeqCst),
        0,
        "a section ended on another thread saw a retired object ({} sections)",
        sections.load(Ordering::Relaxed)
    );
    let st = D.stats();
    assert_eq!(st.callbacks_queued, st.callbacks_invoked);
}
