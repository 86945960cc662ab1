//! The algorithm units, exposed to the loom models in `loom/` (only with
//! `--cfg usrcu_loom`). These are the very functions the library runs; the
//! models drive them directly because loom cannot host the runtime thread or
//! the process-wide statics.

use crate::callbacks::{Barrier, CallbackHead, Callbacks};
use crate::fence::FenceMode;
use crate::grace_period::{GpState, Urgency};
use crate::percpu::PerCpu;
use crate::sync::{AtomicPtr, AtomicU32};

pub use crate::fault::{set as set_fault, Fault};

/// A domain's reader/updater core: per-CPU counters and grace-period state.
#[derive(Debug)]
pub struct Core {
    pc: PerCpu,
    gp: GpState,
}

impl Core {
    /// `slots` possible CPUs, SeqCst fence pair (loom has no membarrier),
    /// every CPU's chunk allocated up front: the models of the reader/grace
    /// period protocol on per-CPU slots.
    pub fn new(slots: usize) -> Core {
        let core = Core::new_lazy(slots);
        for cpu in 0..slots {
            core.populate(cpu);
        }
        core
    }

    /// As [`Core::new`], with no chunk allocated: the first reader on each
    /// CPU counts on the fallback slot and allocates its chunk (under loom
    /// every CPU is a chunk of its own).
    pub fn new_lazy(slots: usize) -> Core {
        Core {
            pc: PerCpu::new(slots, true),
            gp: GpState::new(),
        }
    }

    /// Allocate `cpu`'s chunk, as a reader that fell back does.
    pub fn populate(&self, cpu: usize) {
        self.pc.populate(cpu);
    }

    /// Chunks allocated so far.
    pub fn chunks_touched(&self) -> usize {
        self.pc.chunks_touched()
    }

    /// Reader lock on `cpu`'s slot; returns the rank.
    pub fn lock_on(&self, cpu: usize) -> usize {
        crate::reader::lock_on(&self.pc, cpu)
    }

    /// Reader unlock on `cpu`'s slot.
    pub fn unlock_on(&self, cpu: usize, idx: usize) {
        crate::reader::unlock_on(&self.pc, cpu, idx)
    }

    /// `synchronize`.
    pub fn synchronize(&self) {
        self.gp
            .synchronize(&self.pc, FenceMode::SeqCst, Urgency::Expedited, &());
    }

    /// `get_state`-style cookie.
    pub fn snap(&self) -> u64 {
        self.gp.snap().0
    }

    /// `poll_state`.
    pub fn done(&self, c: u64) -> bool {
        self.gp.done(crate::grace_period::Cookie(c))
    }
}

/// The callback queue with the grace-period core, as the runtime uses them.
#[derive(Debug)]
pub struct CallbackCore {
    core: Core,
    cbs: Callbacks,
    wake: crate::wake::Wake,
}

/// A pending barrier.
#[derive(Debug)]
pub struct PendingBarrier(Option<Barrier>);

impl PendingBarrier {
    /// Wait for the marker to run.
    pub fn wait(self) {
        if let Some(b) = self.0 {
            b.wait();
        }
    }
}

impl CallbackCore {
    /// `slots` reader slots, `slots` intake stacks.
    pub fn new(slots: usize) -> CallbackCore {
        CallbackCore {
            core: Core::new(slots),
            cbs: Callbacks::new(slots),
            wake: crate::wake::Wake::default(),
        }
    }

    /// `call_srcu_raw` on `cpu`'s intake stack, with a fresh cookie.
    ///
    /// # Safety
    /// As `Srcu::call_srcu_raw`.
    pub unsafe fn enqueue(&self, cpu: usize, head: *mut CallbackHead, func: unsafe extern "C" fn(*mut CallbackHead)) {
        // SAFETY: forwarded.
        unsafe { self.cbs.enqueue(cpu, head, func, || self.core.gp.snap_after_fence()) };
    }

    /// `call_srcu_raw` on `cpu`'s intake stack with a cookie taken earlier
    /// (a model may complete grace periods between the snap and the push).
    ///
    /// # Safety
    /// As `Srcu::call_srcu_raw`.
    pub unsafe fn enqueue_with_cookie(
        &self,
        cpu: usize,
        head: *mut CallbackHead,
        func: unsafe extern "C" fn(*mut CallbackHead),
        cookie: u64,
    ) {
        // SAFETY: forwarded.
        unsafe {
            self.cbs
                .enqueue(cpu, head, func, || crate::grace_period::Cookie(cookie))
        };
    }

    /// The producer's side of the wake-up handshake, after an enqueue: true
    /// if it would kick the runtime.
    pub fn needs_kick(&self) -> bool {
        self.wake.needs_kick()
    }

    /// The runtime marks itself scheduled (it is about to look).
    pub fn runtime_scheduled(&self) {
        self.wake.set();
    }

    /// The runtime goes idle: true if the re-check found work (it stays).
    pub fn runtime_idle(&self) -> bool {
        self.wake.idle(|| self.cbs.pending() > 0)
    }

    /// Begin a barrier (a marker queued); `wait` on the result.
    pub fn barrier_begin(&self, cpu: usize) -> PendingBarrier {
        PendingBarrier(self.cbs.barrier_begin(cpu))
    }

    /// One pass of the runtime: complete a grace period if callbacks wait
    /// for one, take what is ready against one snapshot, and run it.
    /// Returns callbacks invoked (markers included).
    pub fn service_once(&self) -> usize {
        let c = self.core.gp.snap();
        if self.cbs.pending() > 0 {
            self.core
                .gp
                .wait_for(c, &self.core.pc, FenceMode::SeqCst, Urgency::Normal, &(), None);
        }
        self.take_and_run()
    }

    /// Take what is ready against one snapshot of the completed sequence
    /// and run it, without driving grace periods.
    pub fn take_and_run(&self) -> usize {
        let t = self.cbs.take_ready(self.core.gp.completed());
        if t.ready == 0 {
            return 0;
        }
        self.cbs.run_batch(&crate::sync::AtomicU64::new(0))
    }

    /// Callbacks not yet finished.
    pub fn pending(&self) -> usize {
        self.cbs.pending() as usize
    }

    /// The reader/updater core.
    pub fn core(&self) -> &Core {
        &self.core
    }
}

/// The lazy attach cell of a static domain.
#[derive(Debug)]
pub struct AttachCell {
    state: AtomicU32,
    ptr: AtomicPtr<PerCpu>,
}

impl Default for AttachCell {
    fn default() -> Self {
        AttachCell {
            state: AtomicU32::new(crate::attach::DETACHED),
            ptr: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

impl AttachCell {
    /// First use: attach (build once) and return the block, as `read_lock`'s
    /// slow path does; `built` counts builds.
    pub fn get(&self, built: &crate::sync::AtomicUsize) -> &PerCpuView {
        let p = crate::attach::attach_once(&self.state, &self.ptr, || {
            built.fetch_add(1, crate::sync::Ordering::Relaxed);
            let pc = PerCpu::new(2, true);
            // Relaxed: made visible to other users by the attach's Release
            // publication, which is what the model checks.
            pc.idx.store(INITIAL_INDEX, crate::sync::Ordering::Relaxed);
            Box::into_raw(Box::new(pc))
        });
        // SAFETY: PerCpuView is a transparent wrapper of PerCpu; the block
        // lives until `Drop`.
        unsafe { &*(p as *const PerCpuView) }
    }
}

impl Drop for AttachCell {
    fn drop(&mut self) {
        let p = crate::attach::detach(&self.state, &self.ptr);
        if !p.is_null() {
            // SAFETY: built by `get` with Box::into_raw, detached above.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// The index value the attach model's builder stores before publishing.
pub const INITIAL_INDEX: usize = 7;

/// A view of an attached per-CPU block.
#[repr(transparent)]
#[derive(Debug)]
pub struct PerCpuView(PerCpu);

impl PerCpuView {
    /// Slots of the block (reads a field the builder initialised).
    pub fn nr_slots(&self) -> usize {
        self.0.nr_slots()
    }

    /// The block's index (Relaxed: the model checks that the attach's
    /// publication, not this load, orders it).
    pub fn index(&self) -> usize {
        self.0.idx.load(crate::sync::Ordering::Relaxed)
    }

    /// Reader lock on this block.
    pub fn lock_on(&self, cpu: usize) -> usize {
        crate::reader::lock_on(&self.0, cpu)
    }
}

/// The Tasks Trace flavor's read side and grace-period scan, over records
/// the model owns (the host's allocator, pthread key and threads are not
/// modelled).
#[derive(Debug)]
pub struct TraceCore {
    records: Vec<crate::trace::ThreadRecord>,
}

impl AsRef<crate::trace::ThreadRecord> for &crate::trace::ThreadRecord {
    fn as_ref(&self) -> &crate::trace::ThreadRecord {
        self
    }
}

impl TraceCore {
    /// `threads` records (SeqCst fence pair: loom has no membarrier).
    pub fn new(threads: usize) -> TraceCore {
        TraceCore {
            records: (0..threads).map(|_| crate::trace::ThreadRecord::new(true)).collect(),
        }
    }

    /// `read_lock` by the owner of record `t`.
    pub fn enter(&self, t: usize) {
        self.records[t].enter();
    }

    /// The guard's drop by the owner of record `t`.
    pub fn exit(&self, t: usize) {
        self.records[t].exit();
    }

    /// `synchronize`: fence A, scans, holdout re-samples (yielding), fence E.
    pub fn synchronize(&self) {
        let recs: Vec<&crate::trace::ThreadRecord> = self.records.iter().collect();
        crate::trace::wait_for_readers(&recs, FenceMode::SeqCst, |_, _| crate::sync::yield_now());
    }
}

/// One intake stack's cache of callback slot blocks (`slab.rs`): the very
/// functions `call_srcu` and its trampoline use for small closures.
#[derive(Debug)]
pub struct SlabCache(crate::sync::AtomicUsize, Box<crate::slab::Recycle>);

/// A slot taken from a [`SlabCache`], holding one `usize`.
#[derive(Debug)]
pub struct SlabSlot(*mut CallbackHead);

// SAFETY: a slot is handed from its producer to one consumer, as the
// runtime hands a queued callback to its invoker.
unsafe impl Send for SlabSlot {}

impl SlabCache {
    /// An empty cache.
    pub fn new() -> SlabCache {
        SlabCache(crate::sync::AtomicUsize::new(0), Box::new(crate::slab::Recycle::new()))
    }

    /// Take a slot and store `v` in it, as `call_srcu` stores a closure.
    pub fn put(&self, v: usize) -> SlabSlot {
        let h = crate::slab::take_slot(&self.0, &self.1);
        // SAFETY: a fresh slot holds `INLINE_BYTES` >= 8 bytes aligned to 8.
        unsafe {
            std::ptr::write(crate::slab::data(h) as *mut usize, v);
            crate::slab::note_written(h);
        }
        SlabSlot(h)
    }

    /// Retire the cached block (as a producer that finds another block in
    /// the cache does); its slots still queued keep it alive.
    pub fn retire_cached(&self) {
        crate::slab::drain(&self.0)
    }

    /// The domain goes away: retire the cached block and free the free list
    /// (every slot must have been taken back).
    pub fn drain(&self) {
        crate::slab::drain(&self.0);
        crate::slab::drain_free(&self.1);
    }
}

impl Default for SlabCache {
    fn default() -> Self {
        SlabCache::new()
    }
}

impl SlabSlot {
    /// Read the value out and give the slot back, as the trampoline does.
    pub fn take(self) -> usize {
        // SAFETY: the slot was filled by `put` and is given back once.
        unsafe {
            let v = std::ptr::read(crate::slab::data(self.0) as *const usize);
            crate::slab::release_slot(self.0);
            v
        }
    }
}
