//! Red-team (round 3) of the SRCU public API: polled cookies across
//! `cleanup` and re-attach (the side round 1 did not test: a cookie taken
//! *after* the re-attach), the debug self-deadlock check after a guard was
//! forgotten, and domains that a callback drops from inside their own
//! callback, in a loop.

#[path = "common/bounded.rs"]
mod bounded;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usrcu::Srcu;

/// Cleanup and re-attach `rounds` times, with grace periods in between.
fn churn_state(d: &Srcu, rounds: usize) {
    for _ in 0..rounds {
        for _ in 0..5 {
            d.synchronize_expedited();
        }
        // SAFETY: no reader is inside and nothing else uses `d`.
        unsafe { d.cleanup() }.expect("an idle domain cleans up");
        d.attach();
    }
}

#[test]
fn a_poll_started_after_cleanup_and_reattach_waits_for_a_reader_of_the_new_state() {
    let d = Srcu::new("redteam3-poll-after-reattach");
    d.attach();
    churn_state(&d, 3);
    // A reader of the new state, then a poll: its grace period must wait
    // for that reader, however the cookie is offset from the old state's.
    let idx = d.read_lock_raw();
    let c = d.start_poll();
    let g = d.get_state();
    assert!(!d.synchronize_timeout(Duration::from_millis(20)));
    assert!(!d.poll_state(c), "cookie {c:?} complete while a reader is inside");
    assert!(!d.poll_state(g), "cookie {g:?} complete while a reader is inside");
    // SAFETY: `idx` came from `d.read_lock_raw()` and is ended once.
    unsafe { d.read_unlock_raw(idx) };
    bounded::wait_until("the poll completes after the reader left", || d.poll_state(c));
    d.synchronize();
    assert!(d.poll_state(g));
}

#[test]
fn cookies_are_monotonic_across_cleanup_and_reattach() {
    let d = Srcu::new("redteam3-cookie-monotonic");
    d.attach();
    let mut last = d.get_state();
    for round in 0..4 {
        for _ in 0..3 {
            d.synchronize_expedited();
            let c = d.get_state();
            assert!(c.as_u64() >= last.as_u64(), "round {round}: {c:?} < {last:?}");
            last = c;
        }
        // SAFETY: no reader is inside and nothing else uses `d`.
        unsafe { d.cleanup() }.expect("an idle domain cleans up");
        // Detached: the cookie still must not go back.
        let c = d.get_state();
        assert!(c.as_u64() >= last.as_u64(), "detached, round {round}: {c:?} < {last:?}");
        d.attach();
        let c = d.start_poll();
        assert!(
            c.as_u64() >= last.as_u64(),
            "re-attached, round {round}: {c:?} < {last:?}"
        );
        last = c;
    }
}

/// `mem::forget` of a guard is safe. The domain then refuses cleanup (a
/// reader is inside) and leaks, as documented. A new domain moved into the
/// same place is another domain with no reader: its `synchronize` must
/// complete, not panic as a same-domain self-deadlock.
#[test]
#[cfg(debug_assertions)]
fn a_forgotten_guard_does_not_make_a_new_domain_in_the_same_place_refuse_synchronize() {
    let mut d = Srcu::new("redteam3-forgotten-guard-old");
    std::mem::forget(d.read_lock());
    // Drops the old domain (which warns and leaks) and puts a new one at
    // the same address.
    d = Srcu::new("redteam3-forgotten-guard-new");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.synchronize()));
    assert!(r.is_ok(), "synchronize on a fresh domain with no reader panicked");
}

/// A callback that drops the last `Arc` of its own domain: the drop runs
/// inside the domain's own callback, its cleanup sees that callback and
/// leaks (documented). Repeated, the leaked states must not stay attached
/// for ever: once their callbacks ran, nothing can use them.
#[test]
fn domains_dropped_from_their_own_callback_do_not_accumulate() {
    const N: usize = 200;
    let ran = Arc::new(AtomicUsize::new(0));
    let before = usrcu::runtime::inventory::domains_attached();
    for i in 0..N {
        let d = Arc::new(Srcu::new(&format!("redteam3-self-drop-{i}")));
        let inner = Arc::clone(&d);
        let r = Arc::clone(&ran);
        d.call_srcu(move || {
            drop(inner);
            r.fetch_add(1, Ordering::SeqCst);
        });
        drop(d);
    }
    bounded::wait_until("every self-dropping callback ran", || ran.load(Ordering::SeqCst) == N);
    // Give the runtime every chance to reap: grace periods on another
    // domain, and wait for the SRCU runtime to go idle.
    let other = Srcu::new("redteam3-self-drop-other");
    other.call_srcu(|| {});
    other.barrier();
    bounded::wait_until("the runtime goes idle", usrcu::runtime::idle);
    let after = usrcu::runtime::inventory::domains_attached();
    eprintln!("domains attached: before {before}, after {N} self-drops {after}");
    assert!(
        after < before + N / 2,
        "{} of {N} self-dropped domains still attached",
        after.saturating_sub(before)
    );
}
