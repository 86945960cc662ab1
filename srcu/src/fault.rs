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
    /// The runtime's side of the wake-up handshake (`wake.rs`) omits its
    /// SeqCst fence (loom's negative check of the handshake model).
    RelaxedWake = 16,
    /// The runtime takes ready callbacks past a ticket gap, as if a callback
    /// still being pushed did not exist (loom's negative check of the
    /// take-ready model).
    TakePastGap = 32,
    /// Tasks Trace readers omit their fences B and C (SeqCst mode and loom
    /// only; in membarrier mode they are compiler fences already).
    TraceNoReaderFence = 64,
    /// A Tasks Trace grace period ends after its first scan without
    /// re-checking the holdouts it found.
    TraceSkipHoldoutRecheck = 128,
    /// Tasks grace periods trust a thread's voluntary-switch count even when
    /// a stop may have intervened (the stop canary is ignored).
    TasksTrustCounterAcrossStop = 256,
    /// Tasks grace periods skip threads that are running (`R`) at the first
    /// sample, as if running code could not be inside a hook.
    TasksSkipRunning = 512,
    /// A CPU's chunk of per-CPU slots is published before its touched bit is
    /// set, so a scan can miss a chunk a reader already counts on (loom's
    /// negative check of the per-CPU chunk model).
    ChunkTouchedLate = 1024,
    /// A callback slot block (`slab.rs`) gives its references back with
    /// Relaxed decrements and no Acquire fence before the free (loom's
    /// negative check of the slab model).
    SlabRelaxedRelease = 2048,
    /// Producers carve callback slots with Relaxed operations on the
    /// cache's packed block-and-index word (loom's negative check of the
    /// slab hand-off model).
    SlabRelaxedHandoff = 4096,
    /// A recycled callback slot block is pushed on its free list, and the
    /// list taken, with Relaxed operations (loom's negative check of the
    /// slab recycling model).
    SlabRelaxedRecycle = 8192,
}

// Relaxed: a configuration word set before the run being checked starts.
static FAULTS: AtomicU32 = AtomicU32::new(0);

/// Switch a fault on or off. Only for torture tests and models.
///
/// # Safety
///
/// A fault switches off part of the algorithm, process-wide: while one is
/// on, a grace period of *any* domain may end before its pre-existing
/// readers have left, and (with [`Fault::RelaxedPublish`]) a first user of a
/// domain may read its per-CPU block before it is built.
///
/// Switching a fault on is sound only if, for as long as it is on, nothing
/// in the process frees or reuses memory on the strength of a usrcu grace
/// period (no `call_srcu` callback frees, no object freed after
/// `synchronize`, no module unloaded); checkers that poison retired objects
/// and deallocate them only after joining every reader satisfy this, as
/// `usrcu-torture`'s pool, the core's `broken_grace_period` test and the loom
/// models do. [`Fault::RelaxedPublish`] may be switched on only under loom
/// (`--cfg usrcu_loom`): outside it, two threads attaching a domain at once
/// would race on plain memory. Likewise [`Fault::SlabRelaxedRelease`],
/// [`Fault::SlabRelaxedHandoff`] and [`Fault::SlabRelaxedRecycle`] (small
/// `call_srcu` closures' slots would be reused while another thread still
/// reads them). Switching a fault off is always sound.
pub unsafe fn set(fault: Fault, on: bool) {
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
pub(crate) fn take_past_gap() -> bool {
    is_set(Fault::TakePastGap)
}

#[inline]
pub(crate) fn chunk_touched_late() -> bool {
    is_set(Fault::ChunkTouchedLate)
}

#[inline]
pub(crate) fn slab_relaxed_release() -> bool {
    is_set(Fault::SlabRelaxedRelease)
}

#[inline]
pub(crate) fn slab_relaxed_handoff() -> bool {
    is_set(Fault::SlabRelaxedHandoff)
}

#[inline]
pub(crate) fn slab_relaxed_recycle() -> bool {
    is_set(Fault::SlabRelaxedRecycle)
}
