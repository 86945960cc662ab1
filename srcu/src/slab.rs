//! Callback nodes for small `call_srcu` closures: slots carved from blocks,
//! so that a closure callback costs no allocation of its own.
//!
//! A closure of at most [`INLINE_BYTES`] bytes (alignment at most
//! [`INLINE_ALIGN`]) is stored in a 64-byte *slot*: a [`CallbackHead`], the
//! slot's block, and the closure's bytes. A block holds [`SLOTS`] slots and
//! is allocated and freed by the runtime (the host's copy of this crate), so
//! that a plugin's copy never frees memory of another allocator: the plugin
//! asks the runtime for a slot through the vtable, and the runtime's own
//! `free` function, stored in the block, frees the block.
//!
//! # Protocol
//!
//! Each domain keeps one *current* block per intake stack (`cache`), on the
//! stack's cache line. A producer takes it out with a swap (exclusive from
//! then on), carves the next slot, and puts it back with a swap unless it is
//! full; if another producer put a block there meanwhile, the one it got back
//! is *retired*. A block's `refs` starts at [`SLOTS`]: every slot that ran
//! gives one back, a retired block gives back the slots never carved; the one
//! that brings it to zero frees the block. This is `Arc`'s release protocol
//! (Release decrements, an Acquire fence before the free); the loom model
//! `model_slab_block_freed_after_every_slot_read` and its negative twin
//! (`Fault::SlabRelaxedRelease`) check it; `model_slab_cache_handoff` and its
//! twin (`Fault::SlabRelaxedHandoff`) check the swaps that hand a block from
//! one producer to the next; `docs/memory-model.md` has the argument.

use crate::callbacks::CallbackHead;
use crate::sync::{fence, AtomicPtr, AtomicUsize, Ordering};
use std::mem::MaybeUninit;

/// Bytes of closure a slot holds inline.
pub(crate) const INLINE_BYTES: usize = 24;
/// Largest closure alignment a slot holds inline.
pub(crate) const INLINE_ALIGN: usize = 8;
/// Slots per block: with the header, 960 bytes. Below glibc's large-chunk
/// size (1 KiB) on purpose: a large request makes glibc consolidate its
/// fast bins, which empties them of the small objects callbacks free, and
/// every small allocation after it takes the slow path.
pub(crate) const SLOTS: usize = 14;

/// One callback node: the head first (the runtime hands it to the
/// trampoline), then the block it belongs to, then the closure.
#[repr(C)]
pub(crate) struct Slot {
    head: CallbackHead,
    block: *mut Block,
    data: [MaybeUninit<usize>; INLINE_BYTES / 8],
    /// Loom only: the accesses to the slot's bytes, for the race checker.
    race: crate::sync::RaceCell,
}

#[repr(C, align(64))]
struct Header {
    /// Slots not yet given back (run, or never carved by a retired block).
    refs: AtomicUsize,
    /// Slots carved so far; only touched by the producer holding the block
    /// (taken out of a cache with an Acquire swap).
    used: usize,
    /// The runtime's function that frees this block (the allocator that
    /// allocated it).
    free: unsafe extern "C" fn(*mut Block),
    /// Loom only: the accesses to `used`, for the race checker.
    used_race: crate::sync::RaceCell,
}

/// A block of slots.
#[repr(C)]
pub(crate) struct Block {
    hdr: Header,
    slots: [Slot; SLOTS],
}

#[cfg(not(usrcu_loom))]
const _: () = {
    assert!(std::mem::size_of::<Slot>() == 64);
    assert!(std::mem::size_of::<Block>() == 960);
};

/// Can a closure of type `F` live in a slot?
pub(crate) const fn fits<F>() -> bool {
    std::mem::size_of::<F>() <= INLINE_BYTES && std::mem::align_of::<F>() <= INLINE_ALIGN
}

/// The closure bytes of the slot whose head is `h`.
///
/// # Safety
/// `h` is the head of a slot returned by [`take_slot`].
pub(crate) unsafe fn data(h: *mut CallbackHead) -> *mut u8 {
    // SAFETY: the head is the first field of a repr(C) `Slot`.
    unsafe { std::ptr::addr_of_mut!((*(h as *mut Slot)).data) as *mut u8 }
}

/// Loom only: record the producer's write of the slot's bytes.
///
/// # Safety
/// As [`data`].
pub(crate) unsafe fn note_written(h: *mut CallbackHead) {
    // SAFETY: as `data`.
    unsafe { (*(h as *mut Slot)).race.write() }
}

unsafe extern "C" fn free_block(b: *mut Block) {
    // Loom: the block's loom objects are dropped with it.
    #[cfg(usrcu_loom)]
    // SAFETY: the block is live until the Box below drops.
    unsafe {
        for i in 0..SLOTS {
            std::ptr::drop_in_place(std::ptr::addr_of_mut!((*b).slots[i].race));
        }
        std::ptr::drop_in_place(std::ptr::addr_of_mut!((*b).hdr));
    }
    // SAFETY: `b` came from `Box::into_raw` in `new_block`, and its last
    // reference was given back (refs reached zero): nothing uses it now.
    drop(unsafe { Box::from_raw(b as *mut MaybeUninit<Block>) });
}

fn new_block() -> *mut Block {
    let b = Box::into_raw(Box::<Block>::new_uninit()) as *mut Block;
    // SAFETY: a fresh allocation; the header is written before any use, and
    // slots are written when carved.
    unsafe {
        std::ptr::addr_of_mut!((*b).hdr).write(Header {
            refs: AtomicUsize::new(SLOTS),
            used: 0,
            free: free_block,
            used_race: crate::sync::RaceCell::new(),
        });
        #[cfg(usrcu_loom)]
        for i in 0..SLOTS {
            std::ptr::addr_of_mut!((*b).slots[i].race).write(crate::sync::RaceCell::new());
        }
    }
    b
}

/// Give back `n` references of block `b`; the last one frees it.
///
/// # Safety
/// The caller owns `n` of `b`'s references and does not touch the slots
/// they stand for after this call.
unsafe fn release(b: *mut Block, n: usize) {
    let relaxed = crate::fault::slab_relaxed_release();
    // Release: orders this holder's accesses to the block (the slot's read
    // by the trampoline, the producer's carving) before the decrement; the
    // decrements form a release sequence that the freer's Acquire fence
    // below synchronizes with.
    let order = if relaxed { Ordering::Relaxed } else { Ordering::Release };
    // SAFETY: the caller holds references, so the block is live.
    let (before, free) = unsafe { ((*b).hdr.refs.fetch_sub(n, order), (*b).hdr.free) };
    if before == n {
        if !relaxed {
            // Acquire: pairs with every Release decrement above, so that all
            // slot accesses happen before the free.
            fence(Ordering::Acquire);
        }
        // Loom: the free writes every slot, so that a free not ordered after
        // a slot's last read is a race the checker sees (here, not in the
        // `extern "C"` free, which cannot unwind the checker's panic).
        #[cfg(usrcu_loom)]
        for i in 0..SLOTS {
            // SAFETY: the last reference: the block is ours.
            unsafe { (*b).slots[i].race.write() };
        }
        // SAFETY: the last reference: nobody else touches the block.
        unsafe { free(b) };
    }
}

/// A slot from `cache` (allocating a block when it holds none): owned by the
/// caller until it is handed to [`release_slot`].
pub(crate) fn take_slot(cache: &AtomicPtr<Block>) -> *mut CallbackHead {
    let relaxed = crate::fault::slab_relaxed_handoff();
    // Acquire: pairs with the Release (AcqRel) swap that put the block here,
    // so the previous holder's carving (`used`, its slots) happened before.
    let take = if relaxed { Ordering::Relaxed } else { Ordering::Acquire };
    let mut b = cache.swap(std::ptr::null_mut(), take);
    if b.is_null() {
        b = new_block();
    }
    // SAFETY: `b` is live (we hold its uncarved references) and ours alone.
    unsafe {
        (*b).hdr.used_race.write();
        let i = (*b).hdr.used;
        (*b).hdr.used = i + 1;
        let s = std::ptr::addr_of_mut!((*b).slots[i]);
        std::ptr::addr_of_mut!((*s).head).write(CallbackHead::new());
        std::ptr::addr_of_mut!((*s).block).write(b);
        if i + 1 < SLOTS {
            // AcqRel: Release publishes our carving to the next taker; Acquire
            // pairs with the Release of whoever put `prev` there, before we
            // read its `used` to retire it.
            let put = if relaxed { Ordering::Relaxed } else { Ordering::AcqRel };
            let prev = cache.swap(b, put);
            if !prev.is_null() {
                retire(prev);
            }
        }
        s as *mut CallbackHead
    }
}

/// Give back the slot of head `h` (its closure has been moved out).
///
/// # Safety
/// `h` is the head of a slot from [`take_slot`], given back once, and not
/// touched after this call.
pub(crate) unsafe fn release_slot(h: *mut CallbackHead) {
    let s = h as *mut Slot;
    // SAFETY: the slot is live until its reference is given back below.
    unsafe {
        (*s).race.read();
        release((*s).block, 1)
    }
}

/// Give back the uncarved references of a block taken out of a cache.
///
/// # Safety
/// The caller took `b` out of a cache (it holds its uncarved references).
unsafe fn retire(b: *mut Block) {
    // SAFETY: as above; `used < SLOTS` for a cached block.
    unsafe {
        (*b).hdr.used_race.read();
        let unused = SLOTS - (*b).hdr.used;
        release(b, unused)
    }
}

/// Retire the block in `cache`, if any (the domain goes away).
pub(crate) fn drain(cache: &AtomicPtr<Block>) {
    // Acquire: as in `take_slot`.
    let b = cache.swap(std::ptr::null_mut(), Ordering::Acquire);
    if !b.is_null() {
        // SAFETY: taken out of the cache.
        unsafe { retire(b) };
    }
}

/// Bytes of the block in `cache`, if any (for footprints).
pub(crate) fn cached_bytes(cache: &AtomicPtr<Block>) -> usize {
    // Relaxed: a statistic; the pointer is not followed.
    if cache.load(Ordering::Relaxed).is_null() {
        0
    } else {
        std::mem::size_of::<Block>()
    }
}
