//! A domain whose last `Arc<Srcu>` is dropped by one of its own callbacks
//! (a natural way to tie a domain's life to its last deferred free): the
//! callbacks queued after that one still run, no missed-barrier or leak
//! warning is emitted, and the runtime releases the domain's state once they
//! have (before, each such domain leaked its state with two warnings).
//! In a file of its own: it counts the process's attached domains.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::runtime::inventory::domains_attached;
use usrcu::Srcu;

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < give_up, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_domain_dropped_by_its_own_callback_runs_the_rest_and_is_released_without_warnings() {
    const N: usize = 200;
    let cap = Capture::start();
    let base = domains_attached();
    let ran = Arc::new(AtomicUsize::new(0));
    for i in 0..N {
        let d = Arc::new(Srcu::new(&format!("own-drop-{i}")));
        let (last, r) = (d.clone(), ran.clone());
        d.call_srcu(move || {
            r.fetch_add(1, Ordering::Relaxed);
            // The last reference to the domain goes here, on its own
            // invoker, with the callback below still queued.
            drop(last);
        });
        let r = ran.clone();
        d.call_srcu(move || {
            r.fetch_add(1, Ordering::Relaxed);
        });
        drop(d);
    }
    wait_for("every callback to run", || ran.load(Ordering::Relaxed) == 2 * N);
    wait_for("the domains' states to be released", || domains_attached() == base);
    let bad: Vec<_> = cap
        .warnings()
        .into_iter()
        .filter(|w| w.domain.starts_with("own-drop-"))
        .filter(|w| matches!(w.kind, WarningKind::MissedBarrier | WarningKind::Leak))
        .collect();
    assert!(
        bad.is_empty(),
        "warnings for domains dropped by their own callback: {bad:?}"
    );
}
