//! Red-team of the diagnostics API and `Srcu::stats` as a test author uses
//! them: captures side by side, waits that never succeed, missed-barrier
//! warnings at drop, panicking callbacks, counters after known workloads.

#[path = "common/bounded.rs"]
mod bounded;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;
use usrcu::diagnostics::{capture, Capture, WarningKind};
use usrcu::{Srcu, SrcuStats};

#[test]
fn two_captures_open_at_once_each_see_every_warning_as_documented() {
    let a = Capture::start();
    let b = Capture::start();
    let d = Srcu::new("rtd-two-captures");
    let g = d.read_lock_raw();
    // SAFETY: nothing else touches `d`; cleanup refuses while a reader is inside.
    assert!(unsafe { d.cleanup() }.is_err());
    // SAFETY: `g` came from `d.read_lock_raw()` and is ended once.
    unsafe { d.read_unlock_raw(g) };
    assert_eq!(a.find("rtd-two-captures", WarningKind::ReadersActive).len(), 1);
    assert_eq!(b.find("rtd-two-captures", WarningKind::ReadersActive).len(), 1);
    drop(a);
    // b still open after a closed; warnings still reach it exactly once more.
    let g = d.read_lock_raw();
    // SAFETY: as above.
    assert!(unsafe { d.cleanup() }.is_err());
    // SAFETY: as above.
    unsafe { d.read_unlock_raw(g) };
    assert_eq!(b.find("rtd-two-captures", WarningKind::ReadersActive).len(), 2);
}

#[test]
fn captures_in_parallel_threads_do_not_lose_each_others_warnings() {
    let go = Arc::new(Barrier::new(4));
    let hs: Vec<_> = (0..4)
        .map(|i| {
            let go = go.clone();
            thread::spawn(move || {
                let name = format!("rtd-par-{i}");
                let cap = Capture::start();
                go.wait();
                let d = Srcu::new(&name);
                for _ in 0..20 {
                    let g = d.read_lock_raw();
                    // SAFETY: only this thread uses `d`; cleanup refuses
                    // while a reader is inside (one warning per call).
                    assert!(unsafe { d.cleanup() }.is_err());
                    // SAFETY: `g` came from `d.read_lock_raw()`, ended once.
                    unsafe { d.read_unlock_raw(g) };
                }
                cap.find(&name, WarningKind::ReadersActive).len()
            })
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), 20);
    }
}

#[test]
fn a_capture_dropped_while_runtime_threads_emit_does_not_deadlock_or_panic() {
    let stop = Arc::new(AtomicUsize::new(0));
    let emitter = {
        let stop = stop.clone();
        thread::spawn(move || {
            let d = Srcu::new("rtd-drop-while-emit");
            while stop.load(Ordering::SeqCst) == 0 {
                d.call_srcu(|| panic!("rtd noise"));
                d.barrier();
            }
        })
    };
    for _ in 0..200 {
        let c = Capture::start();
        drop(c);
    }
    let c = Capture::start();
    assert!(c
        .wait_for("rtd-drop-while-emit", WarningKind::CallbackPanicked, bounded::HANG)
        .is_some());
    stop.store(1, Ordering::SeqCst);
    emitter.join().unwrap();
}

#[test]
fn wait_for_a_warning_that_never_comes_returns_none_for_zero_and_small_timeouts() {
    let cap = Capture::start();
    assert!(cap.wait_for("rtd-never", WarningKind::Stall, Duration::ZERO).is_none());
    assert!(cap
        .wait_for("rtd-never", WarningKind::Stall, Duration::from_millis(20))
        .is_none());
}

#[test]
fn wait_for_with_duration_max_returns_a_warning_that_arrives_later() {
    let cap = Capture::start();
    let h = thread::spawn(|| {
        thread::sleep(Duration::from_millis(20));
        let d = Srcu::new("rtd-max-wait");
        // Pending for sure at the drop (a callback with nothing to wait for
        // may have run already if this thread was preempted in between).
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        d.call_srcu(move || {
            let _ = rx.recv_timeout(Duration::from_secs(60));
        });
        drop(d);
        tx.send(()).unwrap();
    });
    let w = bounded::finishes("wait_for(MAX)", move || {
        cap.wait_for("rtd-max-wait", WarningKind::MissedBarrier, Duration::MAX)
    });
    assert!(w.is_some());
    h.join().unwrap();
}

#[test]
fn dropping_a_dynamic_domain_with_callbacks_pending_warns_missed_barrier_once_with_its_name() {
    let cap = Capture::start();
    let d = Srcu::new("rtd-missed-barrier");
    // A reader left inside holds the grace period: the callback stays
    // pending at drop (the domain's state is leaked, so the guard may be).
    let _g = d.read_lock_raw();
    d.call_srcu(|| {});
    drop(d);
    let w = cap.find("rtd-missed-barrier", WarningKind::MissedBarrier);
    assert_eq!(w.len(), 1, "{:?}", cap.warnings());
    assert!(w[0].message.contains("rtd-missed-barrier"), "{}", w[0].message);
    assert_eq!(w[0].domain, "rtd-missed-barrier");
    assert_eq!(cap.find("rtd-missed-barrier", WarningKind::Leak).len(), 1);
}

#[test]
fn dropping_a_dynamic_domain_after_barrier_warns_nothing() {
    let cap = Capture::start();
    let d = Srcu::new("rtd-barrier-then-drop");
    for _ in 0..10 {
        d.call_srcu(|| {});
    }
    d.barrier();
    drop(d);
    assert!(
        cap.for_domain("rtd-barrier-then-drop").is_empty(),
        "{:?}",
        cap.warnings()
    );
}

#[test]
fn a_panicking_callback_warning_names_the_domain_and_quotes_the_payload() {
    let cap = Capture::start();
    let d = Srcu::new("rtd-panic-text");
    d.call_srcu(|| std::panic::panic_any(String::from("owned payload 42")));
    d.call_srcu(|| std::panic::panic_any(7u32));
    d.barrier();
    let w = cap.find("rtd-panic-text", WarningKind::CallbackPanicked);
    assert_eq!(w.len(), 2, "{:?}", cap.warnings());
    assert!(w[0].message.contains("owned payload 42"), "{}", w[0].message);
    assert!(w[1].message.contains("non-string payload"), "{}", w[1].message);
}

#[test]
fn a_panicking_callback_counts_as_invoked_so_queued_equals_invoked_after_barrier() {
    let d = Srcu::new("rtd-panic-count");
    let (_, _) = capture(|| {
        d.call_srcu(|| panic!("rtd counted"));
        d.call_srcu(|| {});
        d.barrier();
    });
    let s = d.stats();
    assert_eq!(s.callbacks_queued, 2, "{s:?}");
    assert_eq!(s.callbacks_invoked, 2, "{s:?}");
}

#[test]
fn stats_of_a_never_attached_domain_are_all_zero_and_reading_them_does_not_attach() {
    let d = Srcu::new("rtd-never-attached");
    assert_eq!(d.stats(), SrcuStats::default());
    assert!(!d.is_attached());
    static S: Srcu = Srcu::new_static("rtd-never-attached-static");
    assert_eq!(S.stats(), SrcuStats::default());
    assert!(!S.is_attached());
}

#[test]
fn barrier_without_call_srcu_is_counted_as_skipped_not_issued() {
    let d = Srcu::new("rtd-skip");
    d.barrier();
    assert!(d.barrier_timeout(Duration::ZERO));
    let s = d.stats();
    assert_eq!((s.barriers_skipped, s.barriers_issued), (2, 0), "{s:?}");
    d.call_srcu(|| {});
    d.barrier();
    let s = d.stats();
    assert_eq!((s.barriers_skipped, s.barriers_issued), (2, 1), "{s:?}");
    assert_eq!(s.callbacks_queued, 1);
    assert_eq!(s.callbacks_invoked, 1);
}

#[test]
fn each_synchronize_completes_at_least_one_grace_period_and_scans_slots() {
    let d = Srcu::new("rtd-gp-count");
    drop(d.read_lock()); // attach
    let before = d.stats();
    for _ in 0..5 {
        d.synchronize();
    }
    let s = d.stats();
    assert!(s.grace_periods >= before.grace_periods + 5, "{before:?} {s:?}");
    assert!(s.slots_scanned > before.slots_scanned, "{s:?}");
    assert!(s.possible_cpus > 0);
    assert!(s.expedited_grace_periods <= s.grace_periods, "{s:?}");
}

#[test]
fn expedited_grace_periods_never_exceed_grace_periods_with_concurrent_callers() {
    let d = Arc::new(Srcu::new("rtd-exp-count"));
    drop(d.read_lock());
    for _ in 0..20 {
        let go = Arc::new(Barrier::new(4));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (d, go) = (d.clone(), go.clone());
                thread::spawn(move || {
                    go.wait();
                    d.synchronize_expedited();
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let s = d.stats();
        assert!(s.expedited_grace_periods <= s.grace_periods, "{s:?}");
    }
}

#[test]
fn a_timed_out_barrier_marker_is_not_counted_as_a_callback() {
    let d = Arc::new(Srcu::new("rtd-marker"));
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (leave_tx, leave_rx) = std::sync::mpsc::channel::<()>();
    let reader = {
        let d = d.clone();
        thread::spawn(move || {
            let _g = d.read_lock();
            entered_tx.send(()).unwrap();
            leave_rx.recv().unwrap();
        })
    };
    entered_rx.recv().unwrap();
    d.call_srcu(|| {});
    // The reader holds the callback's grace period: the barrier times out.
    assert!(!d.barrier_timeout(Duration::from_millis(1)));
    leave_tx.send(()).unwrap();
    reader.join().unwrap();
    d.barrier();
    let s = d.stats();
    assert_eq!((s.callbacks_queued, s.callbacks_invoked), (1, 1), "{s:?}");
    assert_eq!(s.barriers_issued, 2, "{s:?}");
}

#[test]
fn one_synchronize_expedited_on_an_idle_domain_counts_one_expedited_grace_period() {
    let d = Srcu::new("rtd-exp-one");
    drop(d.read_lock());
    for i in 1..=3 {
        d.synchronize_expedited();
        let s = d.stats();
        assert_eq!(s.expedited_grace_periods, i, "{s:?}");
        assert_eq!(s.grace_periods, i, "{s:?}");
    }
    d.synchronize();
    let s = d.stats();
    assert_eq!((s.expedited_grace_periods, s.grace_periods), (3, 4), "{s:?}");
}

/// Holds a guard of `d` on another thread until the returned sender is used.
fn reader_on_another_thread(d: &Arc<Srcu>) -> (std::sync::mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (leave_tx, leave_rx) = std::sync::mpsc::channel::<()>();
    let d = d.clone();
    let h = thread::spawn(move || {
        let _g = d.read_lock();
        entered_tx.send(()).unwrap();
        leave_rx.recv().unwrap();
    });
    entered_rx.recv().unwrap();
    (leave_tx, h)
}

#[test]
fn missed_barrier_counts_callbacks_not_the_markers_of_timed_out_barriers() {
    let cap = Capture::start();
    let d = Arc::new(Srcu::new("rtd-missed-markers"));
    let (leave, h) = reader_on_another_thread(&d);
    d.call_srcu(|| {});
    assert!(!d.barrier_timeout(Duration::from_millis(1)));
    assert!(!d.barrier_timeout(Duration::ZERO));
    // SAFETY: no other thread enters, synchronizes or queues on `d` during
    // the call; the reader already inside is detected and refused.
    let e = unsafe { d.cleanup() }.unwrap_err();
    assert_eq!(e.callbacks_pending, 1, "{e:?}");
    let w = cap.find("rtd-missed-markers", WarningKind::MissedBarrier);
    assert_eq!(w.len(), 1, "{:?}", cap.warnings());
    assert!(w[0].message.contains(" 1 callback(s)"), "{}", w[0].message);
    leave.send(()).unwrap();
    h.join().unwrap();
    d.barrier();
}

#[test]
fn a_refused_cleanup_scans_four_slot_reads_per_slot_like_one_grace_period() {
    let d = Arc::new(Srcu::new("rtd-scan-cost"));
    drop(d.read_lock());
    d.synchronize();
    let a = d.stats();
    d.synchronize();
    let b = d.stats();
    let per_gp = b.slots_scanned - a.slots_scanned;
    assert_eq!(b.grace_periods - a.grace_periods, 1);
    assert_eq!(per_gp % 4, 0, "{per_gp}");
    let (leave, h) = reader_on_another_thread(&d);
    let c = d.stats();
    // SAFETY: as in the test above.
    assert!(unsafe { d.cleanup() }.is_err());
    let e = d.stats();
    assert_eq!(e.slots_scanned - c.slots_scanned, per_gp, "{c:?} {e:?}");
    leave.send(()).unwrap();
    h.join().unwrap();
}

#[test]
fn captured_warnings_carry_the_emitting_threads_tid() {
    let cap = Capture::start();
    let d = Srcu::new("rtd-tid");
    let g = d.read_lock_raw();
    // SAFETY: nothing else touches `d`; cleanup refuses while a reader is inside.
    assert!(unsafe { d.cleanup() }.is_err());
    // SAFETY: `g` came from `d.read_lock_raw()` and is ended once.
    unsafe { d.read_unlock_raw(g) };
    let w = cap.find("rtd-tid", WarningKind::ReadersActive);
    assert_eq!(w[0].tid, usrcu::diagnostics::current_tid());
    d.call_srcu(|| panic!("rtd tid"));
    d.barrier();
    let p = cap.find("rtd-tid", WarningKind::CallbackPanicked);
    assert_eq!(p.len(), 1);
    assert_ne!(
        p[0].tid,
        usrcu::diagnostics::current_tid(),
        "callbacks run on a runtime thread"
    );
}

#[test]
fn a_stall_with_only_callbacks_waiting_is_reported_by_the_runtime_and_again_on_a_later_grace_period() {
    let cap = Capture::start();
    let name = "rtd-cb-stall";
    let d = Arc::new(Srcu::with_config(name, usrcu::SrcuConfig::new().stall_timeout_ms(20)));
    for round in 1..=2 {
        let (leave, h) = reader_on_another_thread(&d);
        d.call_srcu(|| {}); // nobody synchronizes: the runtime drives this one
        bounded::wait_until("a stall warning from the runtime", || {
            cap.find(name, WarningKind::Stall).len() >= round
        });
        leave.send(()).unwrap();
        h.join().unwrap();
        d.barrier();
        let w = cap.find(name, WarningKind::Stall);
        assert!(w.iter().all(|w| w.message.contains("'rtd-cb-stall'")), "{w:?}");
    }
}

#[test]
fn stall_reports_follow_doubling_thresholds_and_a_cleared_stall_is_not_reported_on_the_next_grace_period() {
    let cap = Capture::start();
    let name = "rtd-stall-once";
    let d = Arc::new(Srcu::with_config(name, usrcu::SrcuConfig::new().stall_timeout_ms(20)));
    let (leave, h) = reader_on_another_thread(&d);
    // Two waiters and the runtime all watch the same grace period.
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let d = d.clone();
            thread::spawn(move || d.synchronize())
        })
        .collect();
    d.call_srcu(|| {});
    bounded::wait_until("three stall warnings", || cap.find(name, WarningKind::Stall).len() >= 3);
    leave.send(()).unwrap();
    h.join().unwrap();
    for w in waiters {
        w.join().unwrap();
    }
    d.barrier();
    // One report per threshold, the thresholds doubling: the k-th report
    // (from 0) waited at least 20 << k ms, whichever waiter reported it.
    let w = cap.find(name, WarningKind::Stall);
    let mut ms: Vec<u64> = w
        .iter()
        .map(|w| {
            let t = w.message.split("waited ").nth(1).unwrap();
            t.split(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    ms.sort();
    for (k, m) in ms.iter().enumerate() {
        assert!(*m >= 20 << k, "report {k} waited {m} ms: {w:?}");
    }
}
