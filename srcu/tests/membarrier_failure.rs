//! A `membarrier(PRIVATE_EXPEDITED)` that fails at run time never leaves a
//! membarrier-mode domain with a SeqCst fence that pairs with nothing: the
//! heavy fence switches, with a warning, to `MEMBARRIER_CMD_GLOBAL`, grace
//! periods stay correct, and later domains take the SeqCst pair.
//!
//! The failure is forced with `USRCU_FAULT_MEMBARRIER_FAILS=1` in a child
//! process of this binary (the switch is read once per process).

#[path = "common/race.rs"]
mod race;

use std::sync::Arc;
use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::fence::FenceMode;
use usrcu::Srcu;

#[path = "common/child.rs"]
mod child;

#[test]
#[ignore = "run by a_failing_membarrier_falls_back_to_global_and_grace_periods_stay_correct in a child process"]
fn child_membarrier_fails() {
    assert_eq!(std::env::var("USRCU_FAULT_MEMBARRIER_FAILS").as_deref(), Ok("1"));
    let cap = Capture::start();
    let d = Arc::new(Srcu::new("membarrier-fails"));
    assert_eq!(
        d.fence_mode(),
        FenceMode::Membarrier,
        "registration must still succeed under the switch"
    );
    assert!(!usrcu::fence::membarrier_failed_at_run_time());
    // Grace periods that wait for readers, with every heavy fence going
    // through the fallback.
    let seen = race::stale_sightings(&d, 2, 20);
    assert_eq!(seen, 0, "a reader saw an object poisoned after a grace period");
    assert!(
        usrcu::fence::membarrier_failed_at_run_time(),
        "the failure was not noticed"
    );
    let w: Vec<_> = cap
        .warnings()
        .into_iter()
        .filter(|w| w.kind == WarningKind::Other && w.message.contains("MEMBARRIER_CMD_GLOBAL"))
        .collect();
    assert_eq!(w.len(), 1, "expected one warning about the fallback: {w:?}");
    // A domain attached after the failure takes the SeqCst pair.
    let later = Srcu::new("after-the-failure");
    assert_eq!(later.fence_mode(), FenceMode::SeqCst);
    later.synchronize();
}

#[test]
fn a_failing_membarrier_falls_back_to_global_and_grace_periods_stay_correct() {
    if !usrcu::fence::membarrier_available() {
        eprintln!("membarrier(PRIVATE_EXPEDITED) is not available here: nothing to fail");
        return;
    }
    child::Child::new("child_membarrier_fails")
        .env("USRCU_FAULT_MEMBARRIER_FAILS", "1")
        .env_remove("USRCU_FENCE")
        .must_pass("1 passed");
}
