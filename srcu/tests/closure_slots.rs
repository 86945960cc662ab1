//! Small `call_srcu` closures live in runtime-owned slots (`slab.rs`): every
//! one runs exactly once, each thread's in the order it queued them, across
//! many blocks and while blocks are recycled; their captures are dropped
//! once; a panicking one is reported and the runtime goes on. Large closures
//! take the boxed path with the same guarantees. Counters and flags decide
//! every assertion, never timing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use usrcu::Srcu;

struct Shared {
    last: Vec<AtomicU64>,
    ran: AtomicUsize,
    out_of_order: AtomicUsize,
}

const THREADS: usize = 4;
const PER_THREAD: u64 = 20_000;

fn run_closures(d: &Arc<Srcu>, large: bool) -> Arc<Shared> {
    let sh = Arc::new(Shared {
        last: (0..THREADS).map(|_| AtomicU64::new(0)).collect(),
        ran: AtomicUsize::new(0),
        out_of_order: AtomicUsize::new(0),
    });
    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (d, sh) = (d.clone(), sh.clone());
            thread::spawn(move || {
                for seq in 1..=PER_THREAD {
                    let s = sh.clone();
                    let check = move |s: &Shared| {
                        if s.last[t].swap(seq, Ordering::Relaxed) != seq - 1 {
                            s.out_of_order.fetch_add(1, Ordering::Relaxed);
                        }
                        s.ran.fetch_add(1, Ordering::Relaxed);
                    };
                    if large {
                        let pad = [seq; 8];
                        let f = move || {
                            std::hint::black_box(pad);
                            check(&s)
                        };
                        assert!(std::mem::size_of_val(&f) > 24, "meant for the boxed path");
                        d.call_srcu(f);
                    } else {
                        let f = move || check(&s);
                        // An Arc, a thread index and a sequence number: 24 bytes,
                        // the most a slot holds.
                        assert_eq!(std::mem::size_of_val(&f), 24, "meant for a slot");
                        d.call_srcu(f);
                    }
                    if seq % 1000 == 0 {
                        // Let other threads interleave on the intake stacks.
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    d.barrier();
    sh
}

fn check(sh: Arc<Shared>) {
    assert_eq!(sh.ran.load(Ordering::Relaxed), THREADS * PER_THREAD as usize);
    assert_eq!(
        sh.out_of_order.load(Ordering::Relaxed),
        0,
        "a thread's callbacks ran out of order"
    );
    for l in &sh.last {
        assert_eq!(l.load(Ordering::Relaxed), PER_THREAD);
    }
    // Every closure dropped its capture: only ours is left.
    assert_eq!(Arc::strong_count(&sh), 1, "a closure's capture was not dropped");
}

#[test]
fn small_closures_of_each_thread_run_once_in_queue_order_and_drop_their_captures() {
    let d = Arc::new(Srcu::new("closure-slots-small"));
    // Twice: the second round reuses recycled blocks.
    for _ in 0..2 {
        check(run_closures(&d, false));
    }
}

#[test]
fn large_closures_take_the_boxed_path_with_the_same_guarantees() {
    let d = Arc::new(Srcu::new("closure-slots-large"));
    check(run_closures(&d, true));
}

#[test]
fn a_burst_of_small_closures_leaves_at_most_the_recycling_cap_of_blocks_behind() {
    // A block is 960 bytes; a domain keeps at most 256 free blocks, and one
    // current block per intake stack (at most 32).
    const BOUND: u64 = (256 + 32) * 960;
    let d = Srcu::new("closure-slots-bounded");
    let ran = Arc::new(AtomicUsize::new(0));
    let base = d.stats().runtime_bytes;
    for _ in 0..3 {
        // Queued far faster than one invoker runs them, so that many blocks
        // are in flight and come back at once.
        for _ in 0..200_000 {
            let r = ran.clone();
            d.call_srcu(move || {
                r.fetch_add(1, Ordering::Relaxed);
            });
        }
        d.barrier();
        let held = d.stats().runtime_bytes - base;
        assert!(
            held <= BOUND,
            "the domain kept {held} bytes of slot blocks, more than {BOUND}"
        );
    }
    assert_eq!(ran.load(Ordering::Relaxed), 600_000);
    drop(d);
    assert_eq!(Arc::strong_count(&ran), 1, "a closure's capture was not dropped");
}

#[test]
fn a_panicking_small_closure_is_reported_and_its_capture_dropped() {
    let d = Srcu::new("closure-slots-panic");
    let cap = Arc::new(7u64);
    let c = cap.clone();
    d.call_srcu(move || {
        let _keep = c;
        panic!("closure-slots: deliberate");
    });
    let after = Arc::new(AtomicUsize::new(0));
    let a = after.clone();
    d.call_srcu(move || {
        a.fetch_add(1, Ordering::Relaxed);
    });
    d.barrier();
    assert_eq!(after.load(Ordering::Relaxed), 1, "the runtime went on after the panic");
    assert_eq!(
        Arc::strong_count(&cap),
        1,
        "the panicking closure's capture was dropped"
    );
}
