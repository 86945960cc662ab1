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
    /// Tasks grace periods trust a thread's voluntary-switch count even when
    /// a stop may have intervened (the stop canary is ignored).
    TasksTrustCounterAcrossStop = 16,
    /// Tasks grace periods skip threads that are running (`R`) at the first
    /// sample, as if running code could not be inside a hook.
    TasksSkipRunning = 32,
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
