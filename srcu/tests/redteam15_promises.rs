//! Red team 15: promises of `Srcu`'s public API a host author relies on,
//! through the public API only: polled cookies against callbacks, zero
//! timeouts when nothing is left to wait for, per-thread `call_srcu`
//! order, and a `barrier` facing a self-requeueing callback chain. Every
//! wait runs under `bounded`.

#[path = "common/bounded.rs"]
mod bounded;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use usrcu::Srcu;

/// `get_state`: "A cookie for the grace period that starts after this
/// call"; `call_srcu`: "Run `f` ... after a grace period". A callback
/// queued after `get_state` waits for a grace period that starts after
/// the `call_srcu`, so the cookie's grace period has completed when the
/// callback runs (the kernel's `poll_state_synchronize_srcu` promise).
#[test]
fn a_get_state_cookie_is_complete_in_a_callback_queued_after_it() {
    bounded::finishes("cookie in later callback", || {
        let d = Arc::new(Srcu::new("rt15-cookie-cb"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..200 {
            let c = d.get_state();
            let (d2, seen2) = (d.clone(), seen.clone());
            d.call_srcu(move || seen2.lock().unwrap().push(d2.poll_state(c)));
            if seen.lock().unwrap().len() % 7 == 0 {
                std::thread::yield_now();
            }
        }
        d.barrier();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 200);
        let bad = seen.iter().filter(|ok| !**ok).count();
        assert_eq!(
            bad, 0,
            "{bad} of 200 callbacks ran before the grace period of a cookie taken before them"
        );
    });
}

/// `barrier_timeout`: "true if every callback queued before the call has
/// run". Once a `barrier` has returned and nothing was queued since, every
/// callback has run; a zero timeout has nothing to wait for.
#[test]
fn barrier_timeout_zero_after_everything_ran() {
    bounded::finishes("barrier_timeout(0) when done", || {
        let d = Srcu::new("rt15-barrier-zero");
        d.call_srcu(|| {});
        d.barrier();
        let r = d.barrier_timeout(Duration::ZERO);
        println!("barrier_timeout(0) with nothing pending: {r}");
        assert!(
            r,
            "barrier_timeout(0) said a callback queued before it had not run, though none was pending"
        );
    });
}

/// `call_srcu`: "Callbacks run in grace-period order". Callbacks queued by
/// one thread on one domain run in the order queued (a later one never
/// waits for an earlier grace period), with several threads queueing at
/// once.
#[test]
fn callbacks_of_each_thread_run_in_the_order_queued() {
    bounded::finishes("per-thread order", || {
        const T: usize = 4;
        const N: u64 = 20_000;
        let d = Arc::new(Srcu::new("rt15-order"));
        let last: Arc<Vec<AtomicU64>> = Arc::new((0..T).map(|_| AtomicU64::new(0)).collect());
        let bad = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for t in 0..T {
                let (d, last, bad) = (d.clone(), last.clone(), bad.clone());
                s.spawn(move || {
                    for i in 1..=N {
                        let (last, bad) = (last.clone(), bad.clone());
                        d.call_srcu(move || {
                            if last[t].swap(i, Ordering::Relaxed) != i - 1 {
                                bad.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                        if i % 1000 == 0 {
                            let _g = d.read_lock();
                            std::thread::yield_now();
                        }
                    }
                });
            }
        });
        d.barrier();
        assert_eq!(
            bad.load(Ordering::SeqCst),
            0,
            "callbacks of one thread ran out of order"
        );
        for l in last.iter() {
            assert_eq!(l.load(Ordering::SeqCst), N);
        }
    });
}

/// `barrier`: "Wait until every callback queued before this call has run"
/// — not the ones queued after it: a callback that queues its successor,
/// forever, does not keep a `barrier` from returning.
#[test]
fn barrier_returns_while_a_callback_chain_keeps_requeueing() {
    bounded::finishes("barrier vs chain", || {
        let d = Arc::new(Srcu::new("rt15-chain"));
        let stop = Arc::new(AtomicBool::new(false));
        let links = Arc::new(AtomicU64::new(0));
        fn link(d: Arc<Srcu>, stop: Arc<AtomicBool>, links: Arc<AtomicU64>) {
            let d2 = d.clone();
            d.call_srcu(move || {
                links.fetch_add(1, Ordering::SeqCst);
                if !stop.load(Ordering::SeqCst) {
                    link(d2, stop, links);
                }
            });
        }
        link(d.clone(), stop.clone(), links.clone());
        bounded::wait_until("the chain runs", || links.load(Ordering::SeqCst) > 3);
        for _ in 0..5 {
            d.barrier();
        }
        let during = links.load(Ordering::SeqCst);
        assert!(!stop.load(Ordering::SeqCst));
        stop.store(true, Ordering::SeqCst);
        // The chain ends at its next link; a barrier queued after that
        // link waits for it.
        bounded::wait_until("the chain stops", || {
            let a = links.load(Ordering::SeqCst);
            d.barrier();
            a == links.load(Ordering::SeqCst)
        });
        println!("links while the barriers ran: {during}");
    });
}

/// `synchronize_timeout`: "true if every reader that began before the call
/// has ended". With no reader at all (none ever entered), a zero timeout
/// has nothing to wait for.
#[test]
fn synchronize_timeout_zero_with_no_reader() {
    bounded::finishes("synchronize_timeout(0) without readers", || {
        let d = Srcu::new("rt15-sync-zero");
        d.synchronize();
        let r = d.synchronize_timeout(Duration::ZERO);
        println!("synchronize_timeout(0) with no reader: {r}");
        assert!(r, "synchronize_timeout(0) reported a reader that does not exist");
    });
}
