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
use usrcu::{ReadIndex, Srcu, SrcuConfig};

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
    cross_thread_sections(&D);
}

/// One slot for every CPU: every reader shares it, on every CPU.
#[test]
fn raw_sections_ended_on_other_threads_with_one_possible_cpu_are_waited_for() {
    static D: Srcu = Srcu::new_static_with("redteam3-raw-one-cpu", SrcuConfig::new().possible_cpus(1));
    cross_thread_sections(&D);
}

/// The SeqCst fence pair instead of membarrier.
#[test]
fn raw_sections_ended_on_other_threads_with_seqcst_fences_are_waited_for() {
    static D: Srcu = Srcu::new_static_with("redteam3-raw-seqcst", SrcuConfig::new().force_seqcst_fence(true));
    cross_thread_sections(&D);
}

fn cross_thread_sections(d: &'static Srcu) {
    let ptr: &'static AtomicPtr<Node> = Box::leak(Box::new(AtomicPtr::new(node())));
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
                // SAFETY: `idx` came from `read_lock_raw()` on this domain and is ended
                // once, here.
                unsafe { d.read_unlock_raw(idx) };
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
                let idx = d.read_lock_raw();
                let p = ptr.load(Ordering::Acquire) as usize;
                if txs[k % txs.len()].send((idx, p)).is_err() {
                    break;
                }
                k += 1;
            }
        }));
    }
    drop(senders);

    // Updaters: a third retire after synchronize, a third after an expedited one,
    // a third in a callback. They start only once sections are flowing, and keep
    // going until many sections have overlapped them: on a loaded machine the
    // starters may not be scheduled before 300 reader-free grace periods are over,
    // and a run with no section inside it proves nothing.
    while sections.load(Ordering::Relaxed) < 64 {
        std::thread::yield_now();
    }
    let first = sections.load(Ordering::Relaxed);
    let mut round = 0usize;
    while round < 300 || sections.load(Ordering::Relaxed) < first + 2000 {
        round += 1;
        let old = ptr.swap(node(), Ordering::AcqRel) as usize;
        let retire = move || {
            // SAFETY: nodes are never freed.
            unsafe { &*(old as *const Node) }.retired.store(true, Ordering::SeqCst)
        };
        match round % 3 {
            0 => {
                d.synchronize();
                retire();
            }
            1 => {
                d.synchronize_expedited();
                retire();
            }
            _ => d.call_srcu(retire),
        }
    }
    d.barrier();
    stop.store(true, Ordering::SeqCst);
    for s in starters {
        s.join().unwrap();
    }
    for e in enders {
        e.join().unwrap();
    }
    d.synchronize();
    assert!(sections.load(Ordering::Relaxed) >= first + 2000);
    assert_eq!(
        violations.load(Ordering::SeqCst),
        0,
        "a section ended on another thread saw a retired object ({} sections)",
        sections.load(Ordering::Relaxed)
    );
    let st = d.stats();
    assert_eq!(st.callbacks_queued, st.callbacks_invoked);
}
