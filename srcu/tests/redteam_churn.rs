//! Red-team: domains created, hammered and dropped in rounds by threads that
//! hop between CPUs while they queue small and large closures, end raw
//! sections on other threads and barrier. Every callback runs exactly once,
//! every drop after a barrier frees (no leak warning), and the closure slots
//! of each CPU survive their owner's migration.

#[path = "common/cpus.rs"]
#[allow(dead_code)] // `on_cpu` is not used here
mod cpus;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::Srcu;

#[test]
fn domains_hammered_by_migrating_threads_run_every_callback_once_and_drop_clean() {
    const THREADS: usize = 6;
    const ROUNDS: usize = 12;
    const PER: usize = 1500;
    let cap = Capture::start();
    let cpus = cpus::two_allowed_cpus();
    for round in 0..ROUNDS {
        let d = Arc::new(Srcu::new(&format!("rt-churn-mig-{round}")));
        let ran = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(THREADS));
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let (d, ran, start, cpus) = (d.clone(), ran.clone(), start.clone(), cpus.clone());
                thread::spawn(move || {
                    start.wait();
                    let mut raw = Vec::new();
                    for i in 0..PER {
                        if i % 97 == 0 {
                            cpus::pin_to(cpus[(i / 97 + t) % cpus.len()]);
                        }
                        let r = ran.clone();
                        match i % 4 {
                            0 => d.call_srcu(move || {
                                r.fetch_add(1, Ordering::Relaxed);
                            }),
                            1 => {
                                let big = [1usize; 40];
                                d.call_srcu(move || {
                                    r.fetch_add(big[39], Ordering::Relaxed);
                                })
                            }
                            2 => {
                                let _g = d.read_lock();
                                d.call_srcu(move || {
                                    r.fetch_add(1, Ordering::Relaxed);
                                });
                            }
                            _ => {
                                raw.push(d.read_lock_raw());
                                d.call_srcu(move || {
                                    r.fetch_add(1, Ordering::Relaxed);
                                });
                                if raw.len() > 3 {
                                    let idx = raw.remove(0);
                                    // SAFETY: from `d.read_lock_raw()`, ended once.
                                    unsafe { d.read_unlock_raw(idx) };
                                }
                            }
                        }
                        if i % 500 == 499 {
                            for idx in raw.drain(..) {
                                // SAFETY: as above.
                                unsafe { d.read_unlock_raw(idx) };
                            }
                            d.barrier();
                        }
                    }
                    raw
                })
            })
            .collect();
        // Raw sections left open by the workers end here, on another thread.
        for h in hs {
            for idx in h.join().unwrap() {
                // SAFETY: from `d.read_lock_raw()`, ended once.
                unsafe { d.read_unlock_raw(idx) };
            }
        }
        d.barrier();
        assert_eq!(ran.load(Ordering::Relaxed), THREADS * PER, "round {round}");
        let s = d.stats();
        assert_eq!(
            (s.callbacks_queued, s.callbacks_invoked),
            ((THREADS * PER) as u64, (THREADS * PER) as u64)
        );
        d.synchronize();
        drop(Arc::into_inner(d).expect("the last reference"));
        let leaks = cap.find(&format!("rt-churn-mig-{round}"), WarningKind::Leak);
        assert!(leaks.is_empty(), "round {round}: {:?}", leaks[0].message);
    }
}
