//! The read side: lock and unlock on the per-CPU counters, guards, and raw
//! sections that cross scopes or threads.
//!
//! `lock` (step L in `docs/memory-model.md`): read the index, add one to
//! `lock[idx]` of the current CPU's slot, then the reader fence (B). `unlock`:
//! the reader fence (C), then add one to `unlock[idx]` of whatever slot the
//! thread is on now. The add goes through rseq (a plain add) when the thread
//! has rseq and the CPU has a slot of its own in an allocated chunk, otherwise
//! a locked add — on the domain's fallback slot if the CPU's chunk is not
//! allocated yet, after which (outside the restartable sequence, behind the
//! reader fence) the reader asks the block's builder for the chunk
//! (`percpu.rs`, "Chunks").

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(usrcu_loom)))]
pub(crate) mod rseq;

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(usrcu_loom))))]
pub(crate) mod rseq {
    //! rseq is only wired up on x86_64 Linux; elsewhere the atomic path runs.
    pub(crate) fn offset() -> isize {
        0
    }
    pub(crate) fn cpu_id() -> Option<usize> {
        None
    }
    pub(crate) fn area(_: isize) -> *mut u8 {
        std::ptr::null_mut()
    }
    pub(crate) fn area_cpu(_: *mut u8) -> u32 {
        u32::MAX
    }
    pub(crate) unsafe fn add(_: *mut u8, _: u32, _: *mut usize) -> bool {
        false
    }
    /// Is the rseq path in use for this thread?
    pub fn active() -> bool {
        false
    }
    pub(crate) fn clear_descriptor() {}
    #[allow(dead_code)]
    pub(crate) fn descriptor() -> u64 {
        0
    }
}

use crate::fence::reader_fence;
use crate::percpu::{current_cpu, PerCpu, Slot};
use crate::sync::{compiler_fence, AtomicUsize, Ordering};

/// Byte offsets of the counters within a `Slot` (rank 0; rank 1 is one
/// counter further).
const LOCK: usize = std::mem::offset_of!(Slot, lock);
const UNLOCK: usize = std::mem::offset_of!(Slot, unlock);
const RSEQ_LOCK: usize = std::mem::offset_of!(Slot, rseq_lock);
const RSEQ_UNLOCK: usize = std::mem::offset_of!(Slot, rseq_unlock);

/// The counter at byte offset `field` (one of the constants above) plus rank
/// `idx` in `slot`.
#[inline(always)]
fn counter(slot: &Slot, field: usize, idx: usize) -> &AtomicUsize {
    const STRIDE: usize = std::mem::size_of::<AtomicUsize>();
    debug_assert!(idx < 2 && field + 2 * STRIDE <= std::mem::size_of::<Slot>());
    // SAFETY: `Slot` is repr(C) with four `[AtomicUsize; 2]` fields; `field`
    // is one of their offsets and `idx < 2`, so this is one of its counters.
    unsafe { &*((slot as *const Slot as *const u8).add(field + idx * STRIDE) as *const AtomicUsize) }
}

/// Where an rseq add of the counter (`field`, rank `idx`) would go now:
/// the thread's rseq area, the current CPU's counter and the CPU. `None` if
/// the domain has no rseq path, or this CPU has no slot of its own or its
/// chunk is not allocated yet.
///
/// A non-zero `rseq_offset` implies the membarrier fence pair (`PerCpu::new`
/// gives SeqCst domains no rseq path), so callers that take this path need
/// only a compiler fence.
#[inline(always)]
fn rseq_target(pc: &PerCpu, idx: usize, field: usize) -> Option<Entered> {
    let off = pc.rseq_offset;
    if off == 0 {
        return None;
    }
    let area = rseq::area(off);
    let cpu = rseq::area_cpu(area);
    // A negative "not registered" id reads as a huge u32: no slot.
    let slot = pc.own_slot(cpu as usize)?;
    Some(Entered {
        area,
        ctr: counter_ptr(slot, field, idx),
        cpu,
    })
}

/// Add one to `e`'s counter in a restartable sequence bound to its CPU;
/// false if the thread is on another CPU or the kernel aborted the sequence.
///
/// # Safety
/// `e` came from [`rseq_target`] on this thread.
#[inline(always)]
unsafe fn rseq_add(e: Entered) -> bool {
    // SAFETY: `e.area` is this thread's rseq area (`rseq_offset` non-zero);
    // `e.ctr` is an rseq counter of `e.cpu`'s slot, and rseq counters of a
    // slot are only written by sequences bound to its CPU (percpu.rs); the
    // chunk holding the slot stays allocated as long as the block.
    unsafe { rseq::add(e.area, e.cpu, e.ctr) }
}

#[cfg(not(usrcu_loom))]
#[inline(always)]
fn counter_ptr(slot: &Slot, field: usize, idx: usize) -> *mut usize {
    counter(slot, field, idx).as_ptr()
}

#[cfg(usrcu_loom)]
#[inline(always)]
fn counter_ptr(_: &Slot, _: usize, _: usize) -> *mut usize {
    unreachable!("no rseq path under loom")
}

/// Add one to the atomic counter (`field`, rank `idx`) of `cpu`'s slot with
/// a locked add; on the fallback slot if `cpu`'s chunk is not allocated yet.
/// Returns true in that case: the caller then asks for the chunk
/// ([`PerCpu::populate`]) once its fence is behind it.
#[inline(always)]
fn atomic_increment(pc: &PerCpu, idx: usize, field: usize, cpu: usize) -> bool {
    let (slot, fell_back) = match pc.own_slot(pc.fold(cpu)) {
        Some(slot) => (slot, false),
        None => (pc.fallback(), true),
    };
    // Relaxed: ordered against the critical section by the reader fence
    // that follows (lock) or precedes (unlock) this add. A fallback add is
    // seen by every scan (the fallback slot is always summed).
    counter(slot, field, idx).fetch_add(1, Ordering::Relaxed);
    fell_back
}

/// The atomic path of `lock` on `cpu`: L then B, then (after B, inside the
/// section, never inside a restartable sequence) allocate the CPU's chunk if
/// the add had to fall back.
#[inline(always)]
fn lock_atomic(pc: &PerCpu, idx: usize, cpu: usize) {
    let fell_back = atomic_increment(pc, idx, LOCK, cpu);
    // B: pairs with the updater's heavy fence A.
    reader_fence(pc.seqcst_readers != 0);
    if fell_back {
        pc.populate(cpu);
    }
}

/// The atomic path of `unlock` on `cpu` (after C): the add, then allocate the
/// CPU's chunk if the add had to fall back (the section is over by then).
#[inline(always)]
fn unlock_atomic(pc: &PerCpu, idx: usize, cpu: usize) {
    if atomic_increment(pc, idx, UNLOCK, cpu) {
        pc.populate(cpu);
    }
}

/// Enter a read-side critical section on `pc`; returns the rank to leave with.
#[inline(always)]
pub(crate) fn lock(pc: &PerCpu) -> usize {
    lock_entered(pc).0
}

/// The atomic path of `unlock` (after C), out of line (see
/// [`lock_entered_slow`]).
#[cold]
#[inline(never)]
fn unlock_atomic_out_of_line(pc: &PerCpu, idx: usize) {
    unlock_atomic(pc, idx, current_cpu());
}

/// What a guard keeps of its lock's rseq commit: the thread's rseq area, the
/// `rseq_lock[idx]` counter it added to, and the CPU that counter belongs to.
/// The guard's unlock, when it runs on that same CPU, adds to the
/// `rseq_unlock[idx]` counter beside it without looking the slot up again.
/// `ctr` is null when the lock took the atomic path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entered {
    area: *mut u8,
    ctr: *mut usize,
    cpu: u32,
}

impl Entered {
    const ATOMIC: Entered = Entered {
        area: std::ptr::null_mut(),
        ctr: std::ptr::null_mut(),
        cpu: 0,
    };
}

/// `lock`, also returning what a guard's unlock needs for its fast path
/// ([`unlock_entered`]).
#[inline(always)]
pub(crate) fn lock_entered(pc: &PerCpu) -> (usize, Entered) {
    // Relaxed: any rank is correct; a reader that read the index long before
    // its add is the straggler the grace period's first scan waits for.
    let idx = pc.idx.load(Ordering::Relaxed) & 1;
    if let Some(e) = rseq_target(pc, idx, RSEQ_LOCK) {
        // SAFETY: `e` came from `rseq_target` on this thread.
        if unsafe { rseq_add(e) } {
            // B (membarrier mode, implied by the rseq path): pairs with the
            // updater's heavy fence A.
            compiler_fence(Ordering::SeqCst);
            // SAFETY: `e.ctr` points into a live slot. (Said so that a
            // guard's drop, inlined after this, tests it no more.)
            unsafe { std::hint::assert_unchecked(!e.ctr.is_null()) };
            return (idx, e);
        }
    }
    lock_entered_slow(pc, idx)
}

/// The atomic path of [`lock_entered`], out of line so that the rseq path
/// stays small enough to inline everywhere.
#[cold]
#[inline(never)]
fn lock_entered_slow(pc: &PerCpu, idx: usize) -> (usize, Entered) {
    lock_atomic(pc, idx, current_cpu());
    (idx, Entered::ATOMIC)
}

/// The general unlock for [`unlock_entered`], out of line so that the
/// guard's drop stays small enough to inline everywhere.
#[cold]
#[inline(never)]
fn unlock_slow(pc: &PerCpu, idx: usize) {
    unlock(pc, idx)
}

/// `unlock` for a guard whose lock returned `e`. If the lock committed
/// through rseq and the thread is still on that CPU, the unlock add goes to
/// the `rseq_unlock[idx]` counter of the same slot; otherwise (atomic lock,
/// migration, or an aborted sequence) this is `unlock`.
///
/// # Safety
/// `e` came from [`lock_entered`] on `pc` with rank `idx`, on this thread.
#[inline(always)]
pub(crate) unsafe fn unlock_entered(pc: &PerCpu, idx: usize, e: Entered) {
    if !e.ctr.is_null() {
        // C (membarrier mode, implied by the rseq lock): pairs with the
        // updater's heavy fence A.
        compiler_fence(Ordering::SeqCst);
        // The same slot's `rseq_unlock[idx]`, `RSEQ_UNLOCK - RSEQ_LOCK`
        // bytes on from `e.ctr`: what `rseq_target` would give on `e.cpu`.
        let u = Entered {
            // SAFETY: within the slot that holds `e.ctr` (`counter`'s layout).
            ctr: unsafe { e.ctr.byte_add(RSEQ_UNLOCK - RSEQ_LOCK) },
            ..e
        };
        // SAFETY: `e` came from `rseq_target` on this thread (the caller's
        // contract; a guard is not `Send`), and so does `u` but for its
        // counter, which is an rseq counter of the same slot; the sequence
        // checks that the thread is still on `e.cpu`.
        if unsafe { rseq_add(u) } {
            return;
        }
    }
    unlock_slow(pc, idx)
}

/// Leave a read-side critical section entered with rank `idx`.
#[inline(always)]
pub(crate) fn unlock(pc: &PerCpu, idx: usize) {
    if pc.rseq_offset != 0 {
        // C (membarrier mode, implied by a non-zero rseq offset): pairs with
        // the updater's heavy fence A.
        compiler_fence(Ordering::SeqCst);
        // SAFETY: the target came from `rseq_target` on this thread.
        if !rseq_target(pc, idx, RSEQ_UNLOCK).is_some_and(|u| unsafe { rseq_add(u) }) {
            unlock_atomic_out_of_line(pc, idx);
        }
    } else {
        // C: pairs with the updater's heavy fence A.
        reader_fence(pc.seqcst_readers != 0);
        unlock_atomic(pc, idx, current_cpu());
    }
}

/// Lock on an explicit CPU through the atomic path (loom models use it to
/// put a reader's lock and unlock on different CPUs): the very path `lock`
/// takes without rseq, fallback slot and chunk allocation included.
#[cfg(usrcu_loom)]
pub(crate) fn lock_on(pc: &PerCpu, cpu: usize) -> usize {
    let idx = pc.idx.load(Ordering::Relaxed) & 1;
    lock_atomic(pc, idx, cpu);
    idx
}

/// Unlock on an explicit CPU through the atomic path.
#[cfg(usrcu_loom)]
pub(crate) fn unlock_on(pc: &PerCpu, cpu: usize, idx: usize) {
    // C: pairs with the updater's heavy fence A.
    reader_fence(pc.seqcst_readers != 0);
    unlock_atomic(pc, idx, cpu);
}

#[cfg(not(usrcu_loom))]
pub use guard::{ReadIndex, SrcuReadGuard};

#[cfg(not(usrcu_loom))]
mod guard {
    use super::*;
    use crate::domain::Srcu;
    use std::marker::PhantomData;

    /// An SRCU read-side critical section; it ends when the guard drops.
    ///
    /// Not `Send`: the section belongs to the thread that entered it (use
    /// [`Srcu::read_lock_raw`] for a section that ends on another thread).
    ///
    /// ```compile_fail
    /// fn assert_send<T: Send>(_: T) {}
    /// static D: usrcu::Srcu = usrcu::Srcu::new_static("doc");
    /// assert_send(D.read_lock());
    /// ```
    ///
    /// ```
    /// static D: usrcu::Srcu = usrcu::Srcu::new_static("doc");
    /// let g = D.read_lock();
    /// drop(g);
    /// ```
    ///
    /// The guard cannot outlive its domain:
    ///
    /// ```compile_fail
    /// let g;
    /// {
    ///     let d = usrcu::Srcu::new("short");
    ///     g = d.read_lock();
    /// }
    /// drop(g);
    /// ```
    #[must_use = "the section ends as soon as the guard is dropped"]
    #[derive(Debug)]
    pub struct SrcuReadGuard<'a> {
        pub(crate) pc: &'a PerCpu,
        pub(crate) idx: usize,
        /// The lock's rseq commit, for the unlock's fast path.
        pub(crate) entered: Entered,
        /// Debug builds: the domain and the runtime's reader record.
        #[cfg(debug_assertions)]
        pub(crate) debug: (&'a Srcu, u64),
        pub(crate) _not_send: PhantomData<(*const (), &'a Srcu)>,
    }

    impl SrcuReadGuard<'_> {
        /// The rank this section counts on (0 or 1).
        pub fn index(&self) -> usize {
            self.idx
        }
    }

    impl Drop for SrcuReadGuard<'_> {
        #[inline(always)]
        fn drop(&mut self) {
            // SAFETY: `entered` came from `lock_entered` on `pc` with rank
            // `idx`, on this thread (the guard is not `Send`).
            unsafe { unlock_entered(self.pc, self.idx, self.entered) };
            #[cfg(debug_assertions)]
            self.debug.0.debug_reader_exit(self.debug.1, true);
        }
    }

    /// The rank of a raw section ([`Srcu::read_lock_raw`]), to be handed to
    /// [`Srcu::read_unlock_raw`] exactly once, on any thread.
    #[must_use = "a raw section must be ended with read_unlock_raw"]
    #[derive(Debug)]
    pub struct ReadIndex {
        pub(crate) idx: usize,
        pub(crate) debug_token: u64,
    }

    impl ReadIndex {
        /// The rank this section counts on (0 or 1).
        pub fn index(&self) -> usize {
            self.idx
        }
    }
}
