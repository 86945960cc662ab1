//! Red team (round 8): a host that polls `barrier_timeout(ZERO)` /
//! `synchronize_timeout(ZERO)` in a loop while a reader is held on another
//! thread. Each timed-out call is documented to leave nothing that blocks,
//! and repeated timed-out barriers with no `call_srcu` in between to share
//! one marker: the domain's runtime memory must stay bounded.

#[path = "common/bounded.rs"]
mod bounded;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use usrcu::Srcu;

fn hold_reader(d: Arc<Srcu>) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (in_tx, in_rx) = mpsc::channel();
    let (out_tx, out_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let g = d.read_lock();
        in_tx.send(()).unwrap();
        let _ = out_rx.recv();
        drop(g);
    });
    in_rx.recv().unwrap();
    (out_tx, t)
}

#[test]
fn repeated_zero_timeouts_keep_runtime_memory_bounded() {
    bounded::finishes("zero timeouts", || {
        let d = Arc::new(Srcu::new("rt8-zero-timeouts"));
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let (tx, t) = hold_reader(d.clone());
        d.call_srcu(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        for _ in 0..1000 {
            assert!(!d.barrier_timeout(Duration::ZERO));
            assert!(!d.synchronize_timeout(Duration::ZERO));
        }
        let before = d.stats().runtime_bytes;
        for _ in 0..50_000 {
            assert!(!d.barrier_timeout(Duration::ZERO));
            assert!(!d.synchronize_timeout(Duration::ZERO));
        }
        let after = d.stats().runtime_bytes;
        assert!(
            after <= before + 64 * 1024,
            "runtime bytes grew from {before} to {after} over 50 000 timed-out barriers and synchronizes"
        );
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        tx.send(()).unwrap();
        t.join().unwrap();
        d.barrier();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        let s = d.stats();
        assert_eq!(s.callbacks_invoked, 1, "{s:?}");
        // The timed-out grace periods all finish in the background: a cleanup
        // after one complete synchronize succeeds.
        d.synchronize();
        // SAFETY: the reader thread is joined; nothing else uses `d`.
        bounded::wait_until("cleanup succeeds", || unsafe { d.cleanup() }.is_ok());
    });
}

#[test]
fn zero_timeouts_interleaved_with_call_srcu_run_every_callback_once() {
    bounded::finishes("zero timeouts with call_srcu", || {
        let d = Arc::new(Srcu::new("rt8-zero-timeouts-cbs"));
        let ran = Arc::new(AtomicUsize::new(0));
        let (tx, t) = hold_reader(d.clone());
        for _ in 0..5000 {
            let r = ran.clone();
            d.call_srcu(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
            assert!(!d.barrier_timeout(Duration::ZERO));
        }
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        tx.send(()).unwrap();
        t.join().unwrap();
        assert!(d.barrier_timeout(Duration::from_secs(50)));
        assert_eq!(ran.load(Ordering::SeqCst), 5000);
        let s = d.stats();
        assert_eq!(s.callbacks_invoked, 5000, "barrier markers counted as callbacks? {s:?}");
        assert_eq!(s.callbacks_queued, 5000, "{s:?}");
    });
}

/// After timed-out barriers, one complete `barrier` is what the cleanup
/// contract asks for: the first `cleanup` after it must succeed (not only
/// a retried one), with no missed-barrier warning.
#[test]
fn the_first_cleanup_after_a_complete_barrier_succeeds_despite_earlier_timed_out_barriers() {
    bounded::finishes("cleanup after timed-out barriers", || {
        let cap = usrcu::diagnostics::Capture::start();
        let mut errs = Vec::new();
        for i in 0..50 {
            let d = Arc::new(Srcu::new("rt8-cleanup-after-markers"));
            let (tx, t) = hold_reader(d.clone());
            d.call_srcu(|| {});
            for _ in 0..(i % 5 + 1) {
                assert!(!d.barrier_timeout(Duration::ZERO));
            }
            tx.send(()).unwrap();
            t.join().unwrap();
            if i % 2 == 0 {
                d.barrier();
            } else {
                while !d.barrier_timeout(Duration::ZERO) {
                    std::thread::yield_now();
                }
            }
            // SAFETY: the reader thread is joined; nothing else uses `d`.
            if let Err(e) = unsafe { d.cleanup() } {
                errs.push((i, e));
                d.barrier();
                d.synchronize();
            }
        }
        assert!(
            errs.is_empty(),
            "cleanup refused right after a complete barrier ({} of 50): {:?}; warning: {:?}",
            errs.len(),
            errs.first(),
            cap.for_domain("rt8-cleanup-after-markers").first().map(|w| &w.message)
        );
    });
}
