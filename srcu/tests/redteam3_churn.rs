//! Red-team (round 3): domain churn by many threads at once, each domain
//! dropped right after the call the kernel's contract asks for before a
//! cleanup (`barrier` after `call_srcu`; nothing after plain readers and
//! `synchronize`, a completed poll, or a `synchronize_timeout` that
//! returned true). None may warn or leak, the registry of attached domains
//! must come back down, and the runtime's threads stay bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::runtime::inventory::domains_attached;
use usrcu::Srcu;

#[path = "common/bounded.rs"]
mod bounded;
use bounded::wait_until;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

#[test]
fn domains_churned_by_eight_threads_and_dropped_after_barrier_or_synchronize_never_leak() {
    const THREADS: usize = 8;
    const PER: usize = 300;
    let cap = Capture::start();
    {
        let d = Srcu::new("redteam3-churn-warm");
        d.call_srcu(|| {});
        d.barrier();
    }
    let before_domains = domains_attached();
    let before_threads = threads();
    let ran = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let ran = Arc::clone(&ran);
            std::thread::spawn(move || {
                for i in 0..PER {
                    let d = Srcu::new(&format!("redteam3-churn-{t}-{i}"));
                    {
                        let _g = d.read_lock();
                    }
                    match i % 5 {
                        0 => {
                            let r = Arc::clone(&ran);
                            d.call_srcu(move || {
                                r.fetch_add(1, Ordering::Relaxed);
                            });
                            d.barrier();
                        }
                        1 => d.synchronize_expedited(),
                        2 => d.synchronize(),
                        3 => {
                            let c = d.start_poll();
                            while !d.poll_state(c) {
                                std::thread::yield_now();
                            }
                        }
                        _ => assert!(d.synchronize_timeout(std::time::Duration::MAX)),
                    }
                    drop(d);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let expected = THREADS * PER.div_ceil(5);
    assert_eq!(ran.load(Ordering::Relaxed), expected);
    let bad: Vec<_> = cap
        .warnings()
        .into_iter()
        .filter(|w| w.domain.starts_with("redteam3-churn-"))
        .filter(|w| {
            matches!(
                w.kind,
                WarningKind::Leak
                    | WarningKind::MissedBarrier
                    | WarningKind::GracePeriodInFlight
                    | WarningKind::ReadersActive
            )
        })
        .collect();
    assert!(bad.is_empty(), "{} warnings, first: {:?}", bad.len(), bad.first());
    let after_domains = domains_attached();
    assert!(
        after_domains < before_domains + 50,
        "{before_domains} -> {after_domains} attached domains"
    );
    let after_threads = threads();
    assert!(
        after_threads < before_threads + 64,
        "{before_threads} -> {after_threads} threads"
    );
}

/// A domain may be moved after its first use (its state stays put); a raw
/// section begun before the move is ended through the moved domain.
#[test]
fn a_raw_section_begun_before_the_domain_moved_is_ended_after_and_the_drop_is_clean() {
    let cap = Capture::start();
    let d = Srcu::new("redteam3-moved-raw");
    let idx = d.read_lock_raw();
    let mut v = vec![d];
    // Force a reallocation: the domain moves again.
    v.reserve(1024);
    let d = &v[0];
    assert!(!d.synchronize_timeout(std::time::Duration::from_millis(5)));
    // SAFETY: `idx` came from this domain's `read_lock_raw` and is ended
    // once.
    unsafe { d.read_unlock_raw(idx) };
    d.synchronize();
    d.call_srcu(|| {});
    d.barrier();
    let moved = v.pop().unwrap();
    drop(moved);
    let bad: Vec<_> = cap.for_domain("redteam3-moved-raw");
    assert!(bad.is_empty(), "{bad:?}");
}

/// `runtime::idle` with a `synchronize` blocked behind a reader: a grace
/// period is in progress, so a fork now would leave the child's grace
/// periods of that domain unable to run. It must read false.
#[test]
fn runtime_idle_is_false_while_a_synchronize_waits_for_a_reader() {
    use std::sync::atomic::AtomicBool;
    static D: Srcu = Srcu::new_static("redteam3-idle-sync");
    let idx = D.read_lock_raw();
    let done = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let (d, st) = (Arc::clone(&done), Arc::clone(&started));
    let waiter = std::thread::spawn(move || {
        st.store(true, Ordering::SeqCst);
        D.synchronize();
        d.store(true, Ordering::SeqCst);
    });
    // The waiter thread may not have reached `synchronize` yet (a spawn
    // under load takes milliseconds; `idle` is rightly true until then):
    // wait until it is about to call it, then until D's grace period is
    // requested (D's own state: `idle` turning false could be another
    // test's domain, as this binary runs tests side by side).
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let a = &D as *const Srcu as usize;
    wait_until("synchronize to request a grace period of D", || {
        usrcu::runtime::inventory::query(std::slice::from_ref(&(a..a + 1)))
            .domains
            .iter()
            .any(|u| u.grace_period_in_flight)
    });
    // Until the reader leaves, the waiter cannot return; sample `idle`
    // while it waits.
    let mut saw_idle = 0;
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(1));
        if usrcu::runtime::idle() && !done.load(Ordering::SeqCst) {
            saw_idle += 1;
        }
    }
    // SAFETY: `idx` came from `D.read_lock_raw()` and is ended once.
    unsafe { D.read_unlock_raw(idx) };
    waiter.join().unwrap();
    assert_eq!(saw_idle, 0, "runtime::idle() was true while synchronize waited");
}
