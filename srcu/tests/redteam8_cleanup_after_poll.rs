//! Red team (round 8): `cleanup` right after a polled grace period was
//! seen complete. `poll_state(c) == true` says the grace period `c` names
//! is over; the documented causes of a refused cleanup are readers inside,
//! callbacks pending, or "a grace period in flight". A host that polls its
//! cookie to completion and then drops (or cleans up) the domain has none
//! of these, and must not get a warning and a leaked state.

#[path = "common/bounded.rs"]
mod bounded;

use std::sync::Arc;
use std::time::Duration;

use usrcu::diagnostics::Capture;
use usrcu::Srcu;

#[test]
fn cleanup_right_after_start_poll_completes_succeeds() {
    bounded::finishes("cleanup after start_poll", || {
        let cap = Capture::start();
        let mut failures = Vec::new();
        for i in 0..300 {
            let d = Srcu::new("rt8-poll-then-cleanup");
            let c = d.start_poll();
            while !d.poll_state(c) {
                std::hint::spin_loop();
            }
            // SAFETY: no other thread uses `d`.
            if let Err(e) = unsafe { d.cleanup() } {
                failures.push((i, e));
                // Let the runtime finish before dropping.
                d.synchronize();
            }
        }
        assert!(
            failures.is_empty(),
            "cleanup refused right after poll_state said the grace period completed ({} of 300): first {:?}; warnings: {:?}",
            failures.len(),
            failures.first(),
            cap.for_domain("rt8-poll-then-cleanup").first()
        );
    });
}

#[test]
fn cleanup_right_after_a_timed_out_synchronize_then_a_complete_one_succeeds() {
    bounded::finishes("cleanup after timeouts", || {
        let mut failures = Vec::new();
        for i in 0..50 {
            let d = Arc::new(Srcu::new("rt8-timeout-then-cleanup"));
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let (in_tx, in_rx) = std::sync::mpsc::channel::<()>();
            let d2 = d.clone();
            let t = std::thread::spawn(move || {
                let g = d2.read_lock();
                in_tx.send(()).unwrap();
                let _ = rx.recv();
                drop(g);
            });
            in_rx.recv().unwrap();
            assert!(!d.synchronize_timeout(Duration::from_millis(1)));
            tx.send(()).unwrap();
            t.join().unwrap();
            let c = d.get_state();
            while !d.synchronize_timeout(Duration::from_millis(1)) {}
            assert!(d.poll_state(c));
            // SAFETY: the reader thread is joined; nothing else uses `d`.
            if let Err(e) = unsafe { d.cleanup() } {
                failures.push((i, e));
                d.synchronize();
            }
        }
        assert!(
            failures.is_empty(),
            "cleanup refused after a completed synchronize_timeout: {failures:?}"
        );
    });
}

#[test]
fn dropping_a_domain_right_after_its_polled_grace_period_completes_warns_nothing() {
    bounded::finishes("drop after poll", || {
        let cap = Capture::start();
        for _ in 0..300 {
            let d = Srcu::new("rt8-poll-then-drop");
            let _g = d.read_lock();
            drop(_g);
            let c = d.start_poll();
            while !d.poll_state(c) {
                std::thread::yield_now();
            }
            drop(d);
        }
        let ws = cap.for_domain("rt8-poll-then-drop");
        assert!(
            ws.is_empty(),
            "{} warning(s) dropping a domain whose polled grace period was complete: {:?}",
            ws.len(),
            ws.first()
        );
    });
}
