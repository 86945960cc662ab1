//! The use-after-free race of `core.rs` can fail: with the grace period
//! broken on purpose (`usrcu::fault`), stale readers see the poison.
//!
//! Its own test binary because faults are process-wide: nothing else may run
//! in this process while a fault is on.
//!
//! Only `SkipSecondScan` is checked here. `NoHeavyFence` and `NoReaderFence`
//! removed one at a time were not seen by this race on x86_64 (0 sightings in
//! 10 x 300 rounds on each fence path, `cargo test --release`, 2-vCPU VM):
//! on x86_64 the atomic path's lock add is a locked instruction (a full
//! barrier), and the rseq path's plain add leaves a store-buffer window of
//! nanoseconds, far shorter than the grace period it would have to fool.
//! The loom models are what show those two fences are needed.

#[path = "common/race.rs"]
mod race;

use std::sync::Arc;
use usrcu::fault::Fault;
use usrcu::{Srcu, SrcuConfig};

/// Run the race with `fault` on until a reader sees the poison, at most
/// `tries` times; return the sightings of the last run.
fn sightings_with(fault: Fault, seqcst: bool, tries: usize) -> u64 {
    let d = Arc::new(Srcu::with_config(
        "broken",
        SrcuConfig::new().force_seqcst_fence(seqcst),
    ));
    // SAFETY: this binary runs nothing else, and the race keeps every
    // retired object allocated until its readers are joined (race.rs).
    unsafe { usrcu::fault::set(fault, true) };
    let mut seen = 0;
    for _ in 0..tries {
        seen = race::stale_sightings(&d, 3, 300);
        if seen > 0 {
            break;
        }
    }
    // SAFETY: switching a fault off is always sound.
    unsafe { usrcu::fault::set(fault, false) };
    seen
}

#[test]
fn race_sees_the_poison_when_the_second_scan_is_skipped() {
    // Both fence paths, one after the other (faults are process-wide).
    for seqcst in [false, true] {
        let seen = sightings_with(Fault::SkipSecondScan, seqcst, 5);
        assert!(
            seen > 0,
            "no stale reader seen with SkipSecondScan (seqcst={seqcst}): the race cannot fail"
        );
    }
}
