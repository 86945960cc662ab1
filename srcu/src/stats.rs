//! Per-domain counters: grace periods, callbacks, barriers, per-CPU scans.

use crate::sync::{AtomicU64, Ordering};

/// A snapshot of a domain's counters ([`crate::Srcu::stats`]).
///
/// `#[repr(C)]`: it crosses the runtime vtable between a plugin and the host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrcuStats {
    /// Grace periods completed (normal and expedited).
    pub grace_periods: u64,
    /// Of those, driven by `synchronize_expedited` (once per grace period,
    /// however many expedited callers shared it).
    pub expedited_grace_periods: u64,
    /// Callbacks queued with `call_srcu` (markers of `barrier` excluded).
    pub callbacks_queued: u64,
    /// Callbacks invoked (markers of `barrier` excluded, as in
    /// `callbacks_queued`: once a `barrier` returns, this counts every
    /// callback queued before it).
    pub callbacks_invoked: u64,
    /// `barrier` calls that visited the per-CPU queues.
    pub barriers_issued: u64,
    /// `barrier` calls that returned at once because `call_srcu_used` was false.
    pub barriers_skipped: u64,
    /// Per-CPU slots read: reader checks (2 per slot visited: the fallback
    /// slot and the slots of allocated chunks) and cleanup checks (4 per
    /// slot visited). A barrier visits no per-CPU state: it queues one marker.
    pub slots_scanned: u64,
    /// Time spent in those scans, in nanoseconds.
    pub scan_nanos: u64,
    /// Possible CPUs (slots) of the domain; 0 while not attached.
    pub possible_cpus: u64,
    /// Bytes of runtime state the domain holds (per-CPU counters, callback
    /// intake, the cached blocks of closure slots, bookkeeping); 0 while not
    /// attached. Not counted: the invoker's buffers that put a pass's
    /// callbacks in order, 40 bytes a callback, which follow the size of
    /// recent passes (shrunk back to about what a pass needs, never below
    /// 4,096 callbacks, once three passes in a row have left nothing
    /// queued or a second went by in which no pass needed a quarter of
    /// them; freed altogether once the queue has stayed empty for 100 ms,
    /// unless each holds at most 256 callbacks' worth, 10 KiB; `cleanup`
    /// frees them too).
    pub runtime_bytes: u64,
    /// Bytes of per-CPU reader state: the per-CPU block, its chunk table
    /// and the chunks allocated so far (slots exist only for chunks of CPUs
    /// that readers ran on); 0 while not attached.
    pub percpu_bytes: u64,
    /// Chunks of [`CPUS_PER_CHUNK`](crate::percpu::CPUS_PER_CHUNK) slots
    /// allocated so far.
    pub percpu_chunks: u64,
}

/// Live counters behind [`SrcuStats`]. Relaxed everywhere: statistics, read
/// as a snapshot that need not be consistent across fields.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) grace_periods: AtomicU64,
    pub(crate) expedited_grace_periods: AtomicU64,
    /// The largest cookie a `synchronize_expedited` caller waits for: a
    /// grace period that ends at or below it was driven for such a caller
    /// and counts once in `expedited_grace_periods` (when it completes, not
    /// per caller, so concurrent callers sharing one grace period count it
    /// once and the count stays a part of `grace_periods`).
    pub(crate) expedite_upto: AtomicU64,
    pub(crate) callbacks_invoked: AtomicU64,
    pub(crate) barriers_issued: AtomicU64,
    pub(crate) slots_scanned: AtomicU64,
    pub(crate) scan_nanos: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, v: u64) {
        c.fetch_add(v, Ordering::Relaxed);
    }

    /// [`Counters::add`] for a counter whose every writer holds the same
    /// lock (the domain's grace-period driver lock): a load and a store, no
    /// RMW. Exact: the lock's release/acquire orders each writer's store
    /// before the next writer's load. Relaxed: a statistic, read with
    /// Relaxed loads.
    pub(crate) fn add_locked(c: &AtomicU64, v: u64) {
        c.store(c.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, possible_cpus: usize) -> SrcuStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SrcuStats {
            grace_periods: l(&self.grace_periods),
            expedited_grace_periods: l(&self.expedited_grace_periods),
            callbacks_queued: 0, // filled in from the callback queues' tickets
            callbacks_invoked: l(&self.callbacks_invoked),
            barriers_issued: l(&self.barriers_issued),
            barriers_skipped: 0,
            slots_scanned: l(&self.slots_scanned),
            scan_nanos: l(&self.scan_nanos),
            possible_cpus: possible_cpus as u64,
            runtime_bytes: 0, // filled in by the runtime
            percpu_bytes: 0,  // filled in from the per-CPU block
            percpu_chunks: 0, // likewise
        }
    }
}
