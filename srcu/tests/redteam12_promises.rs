//! Red team (round 12): documented promises of `Srcu`'s public API, as a
//! host author would check them: the stats fields' definitions, `barrier`
//! from inside an own callback, `call_srcu_used` across a cleanup, polled
//! grace periods, and `cleanup` refusing with pending callbacks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::{Cookie, Srcu};

/// `SrcuStats::possible_cpus`, `runtime_bytes`, `percpu_bytes`: "0 while
/// not attached" (srcu/src/stats.rs).
#[test]
fn stats_of_unattached_domain_are_zero() {
    let d = Srcu::new("rt12-unattached");
    let s = d.stats();
    if !d.is_attached() {
        assert_eq!(s.possible_cpus, 0, "{s:?}");
        assert_eq!(s.runtime_bytes, 0, "{s:?}");
        assert_eq!(s.percpu_bytes, 0, "{s:?}");
        assert_eq!(s.percpu_chunks, 0, "{s:?}");
    }
}

/// `barrier`: "Returns at once, without touching the runtime, if
/// `call_srcu` was never used"; `barriers_skipped` counts it,
/// `barriers_issued` does not (srcu/src/stats.rs).
#[test]
fn barrier_on_unused_domain_counts_as_skipped() {
    let d = Srcu::new("rt12-skip");
    d.barrier();
    assert!(d.barrier_timeout(Duration::ZERO));
    let s = d.stats();
    assert_eq!(s.barriers_issued, 0, "{s:?}");
    assert_eq!(s.barriers_skipped, 2, "{s:?}");
    assert!(!d.call_srcu_used());
}

/// `callbacks_queued` / `callbacks_invoked`: "once a `barrier` returns, this
/// counts every callback queued before it" — a panicking callback was
/// invoked too, and reported as `CallbackPanicked` for the domain.
#[test]
fn stats_count_every_callback_after_barrier_including_a_panicking_one() {
    let cap = Capture::start();
    let d = Srcu::new("rt12-count");
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..4 {
        let ran = ran.clone();
        d.call_srcu(move || {
            ran.fetch_add(1, Ordering::Relaxed);
        });
    }
    d.call_srcu(|| panic!("rt12 deliberate callback panic"));
    d.barrier();
    assert_eq!(ran.load(Ordering::Relaxed), 4);
    let s = d.stats();
    assert_eq!(s.callbacks_queued, 5, "{s:?}");
    assert_eq!(s.callbacks_invoked, 5, "{s:?}");
    assert_eq!(s.barriers_issued, 1, "{s:?}");
    assert_eq!(s.barriers_skipped, 0, "{s:?}");
    assert!(
        cap.find("rt12-count", WarningKind::CallbackPanicked)
            .iter()
            .any(|w| w.message.contains("rt12 deliberate callback panic")),
        "{:?}",
        cap.for_domain("rt12-count")
    );
}

/// `barrier` from an own callback: "reports an IllegalSynchronize warning
/// and returns at once ... (`barrier_timeout` returns false there), and does
/// not count in `barriers_issued`" (srcu/src/domain.rs, `Srcu::barrier`).
#[test]
fn barrier_from_own_callback_is_refused_and_not_counted() {
    let cap = Capture::start();
    let d = Arc::new(Srcu::new("rt12-own-barrier"));
    let (tx, rx) = mpsc::channel();
    let d2 = d.clone();
    d.call_srcu(move || {
        let before = d2.stats().barriers_issued;
        d2.barrier();
        let timed = d2.barrier_timeout(Duration::from_secs(5));
        let after = d2.stats().barriers_issued;
        let _ = tx.send((before, after, timed, usrcu::diagnostics::current_tid()));
    });
    let (before, after, timed, cb_tid) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("barrier from an own callback did not return within 30 s");
    assert!(!timed, "barrier_timeout from an own callback must return false");
    assert_eq!(before, after, "barrier from an own callback counted in barriers_issued");
    let w = cap.find("rt12-own-barrier", WarningKind::IllegalSynchronize);
    assert!(w.len() >= 2, "one IllegalSynchronize per refused barrier: {w:?}");
    assert!(w.iter().all(|w| w.tid == cb_tid), "warning tid is the invoker's: {w:?}");
    d.barrier();
    assert_eq!(d.stats().barriers_issued, after + 1);
}

/// `call_srcu_used`: "Set by the first `call_srcu`, never cleared" — not
/// even by a successful cleanup.
#[test]
fn call_srcu_used_survives_cleanup() {
    let d = Srcu::new("rt12-used-cleanup");
    d.call_srcu(|| {});
    d.barrier();
    // SAFETY: no other thread uses `d`.
    unsafe { d.cleanup() }.expect("cleanup after barrier");
    assert!(d.call_srcu_used());
    // "After a successful cleanup a later use attaches fresh state."
    let ran = Arc::new(AtomicUsize::new(0));
    let r2 = ran.clone();
    d.call_srcu(move || {
        r2.fetch_add(1, Ordering::Relaxed);
    });
    d.barrier();
    assert_eq!(ran.load(Ordering::Relaxed), 1);
}

/// Polled grace periods: `start_poll` "make[s] sure that grace period runs"
/// with nobody calling `synchronize`; a `get_state` cookie completes after
/// a `synchronize`; cookies round-trip through `as_u64`.
#[test]
fn polled_cookies_complete() {
    let d = Srcu::new("rt12-poll");
    let c = d.start_poll();
    assert_eq!(Cookie::from_u64(c.as_u64()), c);
    let mut waited = 0;
    while !d.poll_state(c) {
        std::thread::sleep(Duration::from_millis(5));
        waited += 1;
        assert!(waited < 6000, "start_poll's grace period never completed (30 s)");
    }
    let g = d.get_state();
    assert!(g >= c);
    d.synchronize();
    assert!(d.poll_state(g));
    assert!(d.poll_state(c));
}

/// `cleanup`: "callbacks pending (a missed barrier) ... give a
/// [`CleanupError`] and warnings, and the state is leaked ...; the domain
/// stays usable".
#[test]
fn cleanup_with_pending_callback_refuses_and_domain_stays_usable() {
    let cap = Capture::start();
    let d = Srcu::new("rt12-pending");
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let ran = Arc::new(AtomicUsize::new(0));
    let r2 = ran.clone();
    d.call_srcu(move || {
        let _ = go_rx.recv_timeout(Duration::from_secs(30));
        r2.fetch_add(1, Ordering::Relaxed);
    });
    // SAFETY: no other thread uses `d` (the runtime holds its own references).
    let e = unsafe { d.cleanup() }.expect_err("a pending callback must refuse cleanup");
    assert!(e.callbacks_pending >= 1 || e.grace_period_in_flight, "{e:?}");
    assert!(
        !cap.find("rt12-pending", WarningKind::MissedBarrier).is_empty()
            || !cap.find("rt12-pending", WarningKind::GracePeriodInFlight).is_empty(),
        "{:?}",
        cap.for_domain("rt12-pending")
    );
    go_tx.send(()).unwrap();
    d.barrier();
    assert_eq!(ran.load(Ordering::Relaxed), 1);
    let g = d.read_lock();
    drop(g);
    d.synchronize();
}

/// `synchronize_timeout`: "On a time out nothing is left blocked: the
/// runtime finishes the grace period in the background" — with nobody
/// calling anything after the reader leaves, the grace period completes.
#[test]
fn timed_out_synchronize_is_finished_in_the_background() {
    let d = Srcu::new("rt12-sync-bg");
    let idx = d.read_lock_raw();
    assert!(!d.synchronize_timeout(Duration::from_millis(1)));
    let g0 = d.stats().grace_periods;
    // SAFETY: `idx` came from `d.read_lock_raw()` and is ended once.
    unsafe { d.read_unlock_raw(idx) };
    let mut waited = 0;
    while d.stats().grace_periods == g0 {
        std::thread::sleep(Duration::from_millis(5));
        waited += 1;
        assert!(
            waited < 6000,
            "the timed-out grace period was not finished in the background (30 s)"
        );
    }
}

/// README.md:11: "a domain used on 2 of 4096 possible CPUs holds 4.7 KiB,
/// and its scans read 65 slots"; `SrcuStats::slots_scanned`: "reader
/// checks (2 per slot visited: the fallback slot and the slots of allocated
/// chunks)". The machines here have CPUs in chunk 0 only.
#[test]
fn a_wide_domain_used_on_few_cpus_holds_one_chunk_and_scans_65_slots() {
    if std::thread::available_parallelism().map_or(0, |n| n.get()) > 64 {
        return; // readers may run in other chunks
    }
    static WIDE: Srcu = Srcu::new_static_with("rt12-wide", usrcu::SrcuConfig::new().possible_cpus(4096));
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| drop(WIDE.read_lock()));
        }
    });
    let before = WIDE.stats();
    WIDE.synchronize();
    let after = WIDE.stats();
    assert_eq!(after.percpu_chunks, 1, "{after:?}");
    assert!(
        (4096..=4096 + 512 + 8 + 128 + 256).contains(&after.percpu_bytes),
        "about 4.7 KiB: {after:?}"
    );
    let scanned = after.slots_scanned - before.slots_scanned;
    assert!(
        scanned > 0 && scanned % 130 == 0,
        "{scanned} slots read: not checks of 65 slots, 2 each"
    );
}
