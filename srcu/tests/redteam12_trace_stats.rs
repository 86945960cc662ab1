//! Red team (round 12): `usrcu::trace::TraceStats` as documented
//! (srcu/src/trace/mod.rs): `callbacks_queued` counts callbacks queued by
//! `call`, `callbacks_invoked` the ones invoked, and thread records "are
//! reused after their thread exits, so this stays near the peak number of
//! live reader threads". One test: the counters are process-wide.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use usrcu::trace;

#[test]
fn trace_stats_count_calls_and_reuse_records() {
    let s0 = trace::stats();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        let ran = ran.clone();
        trace::call(move || {
            ran.fetch_add(1, Ordering::Relaxed);
        });
    }
    trace::call(|| panic!("rt12 deliberate trace callback panic"));
    trace::barrier();
    assert!(trace::barrier_timeout(std::time::Duration::from_secs(60)));
    assert_eq!(ran.load(Ordering::Relaxed), 5);
    let s1 = trace::stats();
    assert_eq!(s1.callbacks_queued - s0.callbacks_queued, 6, "{s0:?} -> {s1:?}");
    assert_eq!(s1.callbacks_invoked - s0.callbacks_invoked, 6, "{s0:?} -> {s1:?}");
    assert!(s1.grace_periods > s0.grace_periods, "{s0:?} -> {s1:?}");

    // Forty reader threads, one at a time: records are reused.
    for _ in 0..40 {
        std::thread::spawn(|| {
            let _g = trace::read_lock();
        })
        .join()
        .unwrap();
    }
    let s2 = trace::stats();
    let grown = s2.records_allocated - s1.records_allocated;
    assert!(
        grown <= 8,
        "40 sequential reader threads (at most 2 live readers) allocated {grown} records: {s1:?} -> {s2:?}"
    );
    assert!(s2.records_in_use <= s1.records_in_use + 1, "{s1:?} -> {s2:?}");
}
