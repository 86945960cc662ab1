//! Red team (round 8): tracepoint updates from many threads at once while
//! others fire: the normal tracepoint's probe limit under a race (exactly
//! `MAX_NORMAL_PROBES` admitted, the rest refused with the typed error),
//! `probe_count` from inside probes, and `unregister_deferred` + a later
//! `unregister` of the same handle.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use usrcu_registry::define_tracepoint;
use usrcu_registry::tracepoint::{ProbeHandle, TracepointError, MAX_NORMAL_PROBES};
use usrcu_tests::bounded;

define_tracepoint!(static RACE_NORMAL: Tracepoint<u64> = normal "rt8-race-normal");
define_tracepoint!(static RACE_FAULTABLE: Tracepoint<u64> = faultable "rt8-race-faultable");
define_tracepoint!(static COUNTING: Tracepoint<u64> = faultable "rt8-counting");

static HITS: AtomicU64 = AtomicU64::new(0);
fn hit(c: &AtomicU64, _: &u64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn the_probe_limit_holds_under_racing_registrations_while_firing() {
    bounded("probe limit race", || {
        let stop = Arc::new(AtomicBool::new(false));
        let firers: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        RACE_NORMAL.fire(&1);
                        RACE_FAULTABLE.fire(&1);
                        usrcu::tasks::quiescent();
                    }
                })
            })
            .collect();
        let start = Arc::new(Barrier::new(8));
        let got: Arc<Mutex<Vec<ProbeHandle<u64>>>> = Arc::default();
        let refused = Arc::new(AtomicUsize::new(0));
        let ts: Vec<_> = (0..8)
            .map(|_| {
                let (start, got, refused) = (start.clone(), got.clone(), refused.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..8 {
                        match RACE_NORMAL.register(hit, &HITS) {
                            Ok(h) => got.lock().unwrap().push(h),
                            Err(TracepointError::TooManyProbes { tracepoint }) => {
                                assert_eq!(tracepoint, "rt8-race-normal");
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => panic!("unexpected {e}"),
                        }
                        // Faultable: no limit.
                        let h = RACE_FAULTABLE.register(hit, &HITS).unwrap();
                        assert!(h.unregister_deferred());
                        assert!(!h.unregister(), "a handle unregistered twice reported found");
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        let hs = std::mem::take(&mut *got.lock().unwrap());
        assert_eq!(hs.len(), MAX_NORMAL_PROBES);
        assert_eq!(refused.load(Ordering::SeqCst), 64 - MAX_NORMAL_PROBES);
        assert_eq!(RACE_NORMAL.probe_count(), MAX_NORMAL_PROBES);
        assert_eq!(RACE_FAULTABLE.probe_count(), 0);
        stop.store(true, Ordering::Relaxed);
        for f in firers {
            f.join().unwrap();
        }
        for h in hs {
            assert!(h.unregister());
        }
        assert_eq!(RACE_NORMAL.probe_count(), 0);
        assert!(!RACE_NORMAL.enabled());
    });
}

static SEEN_COUNT: AtomicUsize = AtomicUsize::new(usize::MAX);
fn counts_probes(c: &AtomicUsize, _: &u64) {
    c.store(COUNTING.probe_count(), Ordering::SeqCst);
    // Register a may-block probe from inside a faultable probe, and drop it
    // deferred at once.
    let h = COUNTING.register_may_block(hit, &HITS).unwrap();
    assert!(h.unregister_deferred());
}

#[test]
fn probe_count_and_updates_from_inside_a_faultable_probe() {
    bounded("probe_count inside probe", || {
        let h = COUNTING.register_may_block(counts_probes, &SEEN_COUNT).unwrap();
        for _ in 0..100 {
            COUNTING.fire(&0);
        }
        assert_eq!(SEEN_COUNT.load(Ordering::SeqCst), 1);
        assert!(h.unregister());
        assert_eq!(COUNTING.probe_count(), 0);
    });
}
