//! Red team (round 8): dropping a dynamic domain right after a
//! `synchronize_timeout` that timed out (its reader since gone). The
//! timed-out call is documented to leave nothing blocked ("the runtime
//! finishes the grace period in the background"); dropping the domain then
//! must not leak its state for the rest of the process.

#[path = "common/bounded.rs"]
mod bounded;

use std::sync::{mpsc, Arc};
use std::time::Duration;

use usrcu::diagnostics::Capture;
use usrcu::Srcu;

#[test]
fn dropping_a_domain_after_a_timed_out_synchronize_does_not_leak_it() {
    bounded::finishes("drop after timeout", || {
        let cap = Capture::start();
        let before = usrcu::runtime::inventory::domains_attached();
        let mut errs = Vec::new();
        for _ in 0..20 {
            let d = Arc::new(Srcu::new("rt8-drop-after-timeout"));
            let (in_tx, in_rx) = mpsc::channel();
            let (out_tx, out_rx) = mpsc::channel::<()>();
            let d2 = d.clone();
            let t = std::thread::spawn(move || {
                let g = d2.read_lock();
                in_tx.send(()).unwrap();
                let _ = out_rx.recv();
                drop(g);
            });
            in_rx.recv().unwrap();
            assert!(!d.synchronize_timeout(Duration::from_millis(1)));
            out_tx.send(()).unwrap();
            t.join().unwrap();
            let Ok(d) = Arc::try_unwrap(d) else {
                panic!("sole owner")
            };
            // What Drop does, with the result visible.
            // SAFETY: no other thread uses `d`.
            if let Err(e) = unsafe { d.cleanup() } {
                errs.push(e);
            }
            drop(d);
        }
        let after = usrcu::runtime::inventory::domains_attached();
        let ws = cap.for_domain("rt8-drop-after-timeout");
        assert!(
            errs.is_empty() && after <= before,
            "{} of 20 domains refused cleanup after a timed-out synchronize whose reader had left (first: {:?}); domains attached {before} -> {after}; {} warning(s), first: {:?}",
            errs.len(),
            errs.first(),
            ws.len(),
            ws.first().map(|w| &w.message)
        );
    });
}
