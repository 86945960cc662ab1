//! Deliberate faults, for proving that the checkers can see a failure.
//!
//! `usrcu-torture --broken=...` and the loom models' negative checks switch
//! one of these on and require the checker to report a too-short grace
//! period. They are process-wide, off by default, and never set by the
//! library itself. Reading them costs one relaxed load on the updater's path
//! and nothing on the membarrier read path.

use std::sync::atomic::{AtomicU32, Ordering};

/// A fault that can be injected.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The grace period skips its second scan (the drain of the rank that was
    /// active before the flip).
    SkipSecondScan = 1,
    /// The updater's heavy fence is omitted.
    NoHeavyFence = 2,
    /// The reader's fence is omitted (SeqCst mode and loom only; in
    /// membarrier mode the reader fence is a compiler fence already).
    NoReaderFence = 4,
    /// The lazy attach publishes its per-CPU block with Relaxed instead of
    /// Release/Acquire (loom's negative check of the attach model).
    RelaxedPublish = 8,
    /// A CPU's chunk of per-CPU slots is published before its touched bit is
    /// set, so a scan can miss a chunk a reader already counts on (loom's
    /// negative check of the per-CPU chunk model).
    ChunkTouchedLate = 16,
}

// Relaxed: a configuration word set before the run being checked starts.
static FAULTS: AtomicU32 = AtomicU32::new(0);

/// Switch a fault on or off. Only for torture tests and models.
pub fn set(fault: Fault, on: bool) {
    if on {
        FAULTS.fetch_or(fault as u32, Ordering::Relaxed);
    } else {
        FAULTS.fetch_and(!(fault as u32), Ordering::Relaxed);
    }
}

/// Is `fault` switched on?
#[inline]
pub fn is_set(fault: Fault) -> bool {
    FAULTS.load(Ordering::Relaxed) & fault as u32 != 0
}

#[inline]
pub(crate) fn reader_fence_removed() -> bool {
    is_set(Fault::NoReaderFence)
}

#[inline]
pub(crate) fn heavy_fence_removed() -> bool {
    is_set(Fault::NoHeavyFence)
}

#[inline]
pub(crate) fn second_scan_skipped() -> bool {
    is_set(Fault::SkipSecondScan)
}

#[inline]
pub(crate) fn publish_relaxed() -> bool {
    is_set(Fault::RelaxedPublish)
}

#[inline]
pub(crate) fn chunk_touched_late() -> bool {
    is_set(Fault::ChunkTouchedLate)
}
