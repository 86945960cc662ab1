//! Tracepoints: probes attached, fired, detached under Tasks Trace (faultable)
//! and the Tasks seam (normal), with threads really racing.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use usrcu_registry::define_tracepoint;
use usrcu_registry::tracepoint::{TracepointError, TracepointKind};

const HANG: Duration = Duration::from_secs(60);

fn wait_flag(flag: &AtomicBool) {
    let t0 = Instant::now();
    // Acquire: pairs with the Release store of the flag.
    while !flag.load(Ordering::Acquire) {
        assert!(t0.elapsed() < HANG, "flag never set");
        thread::sleep(Duration::from_millis(1));
    }
}

define_tracepoint!(static SLOW_EVENT: Tracepoint<u64> = faultable);

/// What the slow probe and the test share.
struct Gate {
    inside: AtomicBool,
    unregister_returned: AtomicBool,
    seen_unregistered_while_inside: AtomicBool,
    left: AtomicBool,
}

static GATE: Gate = Gate {
    inside: AtomicBool::new(false),
    unregister_returned: AtomicBool::new(false),
    seen_unregistered_while_inside: AtomicBool::new(false),
    left: AtomicBool::new(false),
};

fn slow_probe(g: &Gate, _: &u64) {
    // Release: pairs with the test's wait.
    g.inside.store(true, Ordering::Release);
    // A faultable probe may sleep; give `unregister` every chance to return.
    thread::sleep(Duration::from_millis(150));
    // Acquire: pairs with the unregistering thread's Release store.
    let early = g.unregister_returned.load(Ordering::Acquire);
    // Relaxed: read after join.
    g.seen_unregistered_while_inside.store(early, Ordering::Relaxed);
    // Release: read by the test after unregister returns.
    g.left.store(true, Ordering::Release);
}

#[test]
fn a_probe_unregistered_while_a_thread_is_inside_it_is_not_released_until_that_thread_leaves() {
    let h = SLOW_EVENT.register_may_block(slow_probe, &GATE).unwrap();
    let firer = thread::spawn(|| SLOW_EVENT.fire(&7));
    wait_flag(&GATE.inside);
    assert!(h.unregister(), "the probe was not attached");
    // Release: pairs with the probe's Acquire load.
    GATE.unregister_returned.store(true, Ordering::Release);
    // Acquire: pairs with the probe's Release store.
    assert!(
        GATE.left.load(Ordering::Acquire),
        "unregister returned while a thread was inside the probe"
    );
    firer.join().unwrap();
    // Relaxed: joined.
    assert!(!GATE.seen_unregistered_while_inside.load(Ordering::Relaxed));
    assert!(!SLOW_EVENT.enabled());
}

define_tracepoint!(static HOT_EVENT: Tracepoint<u64> = normal "hot_event");

fn blocking_probe(_: &(), _: &u64) {}

#[test]
fn a_may_block_probe_on_a_normal_tracepoint_is_refused_with_a_typed_error() {
    assert_eq!(HOT_EVENT.kind(), TracepointKind::Normal);
    let e = HOT_EVENT.register_may_block(blocking_probe, &()).unwrap_err();
    assert_eq!(
        e,
        TracepointError::MayBlockOnNormal {
            tracepoint: "hot_event"
        }
    );
    assert_eq!(HOT_EVENT.probe_count(), 0);
}

define_tracepoint!(static CHURN_EVENT: Tracepoint<u64> = normal);

static COUNTS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];

fn counting_probe(c: &AtomicU64, _: &u64) {
    // Relaxed: a count read after the threads joined.
    c.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn firing_with_zero_one_and_many_probes_while_probes_are_added_and_removed() {
    // Zero probes: nothing runs.
    CHURN_EVENT.fire(&0);
    assert!(COUNTS.iter().all(|c| c.load(Ordering::Relaxed) == 0));
    // One probe that stays attached the whole run: it must see every fire.
    let sentinel = CHURN_EVENT.register(counting_probe, &COUNTS[8]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let fires = Arc::new(AtomicUsize::new(0));
    let firers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, fires) = (stop.clone(), fires.clone());
            thread::spawn(move || {
                let mut n = 0u64;
                // Relaxed: a stop flag.
                while !stop.load(Ordering::Relaxed) {
                    CHURN_EVENT.fire(&n);
                    n += 1;
                }
                // Relaxed: read after join.
                fires.fetch_add(n as usize, Ordering::Relaxed);
            })
        })
        .collect();
    // Many probes coming and going.
    for round in 0..200 {
        let hs: Vec<_> = (0..8)
            .map(|i| CHURN_EVENT.register(counting_probe, &COUNTS[i]).unwrap())
            .collect();
        assert_eq!(CHURN_EVENT.probe_count(), 9);
        for (i, h) in hs.into_iter().enumerate() {
            if (i + round) % 2 == 0 {
                assert!(h.unregister());
            } else {
                assert!(h.unregister_deferred());
            }
        }
    }
    // Relaxed: a stop flag.
    stop.store(true, Ordering::Relaxed);
    for f in firers {
        f.join().unwrap();
    }
    assert!(sentinel.unregister());
    // Relaxed: every thread joined.
    let fired = fires.load(Ordering::Relaxed) as u64;
    assert_eq!(
        COUNTS[8].load(Ordering::Relaxed),
        fired,
        "a probe that stayed attached missed fires (or ran twice) while others came and went"
    );
    let before: Vec<u64> = COUNTS.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    CHURN_EVENT.fire(&0);
    let after: Vec<u64> = COUNTS.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert_eq!(before, after, "a removed probe still ran");
    assert!(!CHURN_EVENT.enabled());
    usrcu_registry::usrcu::trace::barrier();
}

#[test]
fn remove_probes_in_detaches_probes_by_code_or_data_address() {
    define_tracepoint!(static RANGE_EVENT: Tracepoint<u64> = faultable);
    static HERE: AtomicU64 = AtomicU64::new(0);
    let _kept = RANGE_EVENT.register(counting_probe, &COUNTS[0]).unwrap();
    let _gone = RANGE_EVENT.register(counting_probe, &HERE).unwrap();
    let at = &HERE as *const AtomicU64 as usize;
    let removed = usrcu_registry::tracepoint::remove_probes_in(&|a| a == at);
    assert_eq!(removed.len(), 1);
    assert_eq!((removed[0].tracepoint, removed[0].data), ("RANGE_EVENT", at));
    assert_eq!(RANGE_EVENT.probe_count(), 1);
    assert!(usrcu_registry::tracepoint::tracepoints().any(|t| t.name() == "RANGE_EVENT"));
}
