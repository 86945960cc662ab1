//! Callback nodes for small `call_srcu` closures: slots carved from blocks,
//! so that a closure callback costs no allocation of its own.
//!
//! A closure of at most [`INLINE_BYTES`] bytes (alignment at most
//! [`INLINE_ALIGN`]) is stored in a 64-byte *slot*: a [`CallbackHead`], the
//! slot's block, and the closure's bytes. A block holds [`SLOTS`] slots and
//! is allocated, recycled and freed by the runtime (the host's copy of this
//! crate), so that a plugin's copy never frees memory of another allocator:
//! the plugin asks the runtime for a slot through the vtable, and the
//! runtime's own function, stored in the block, takes the block back.
//!
//! # Protocol
//!
//! Each domain keeps one *current* block per intake stack, in a cache word
//! on the stack's cache line: the block and, in its low bits, how many of
//! its slots are carved. A producer claims the next slot with one CAS of
//! that word; the claimer of the last slot leaves the word empty (the full
//! block is owned by its slots now), and a producer that finds it empty
//! installs a block. A block's `refs` starts at [`SLOTS`]: every slot that
//! ran gives one back, a block drained from its cache gives back the slots
//! never carved; the one that brings it to zero owns the block (`Arc`'s
//! release protocol: Release decrements, an Acquire fence) and *recycles*
//! it: pushes it on the domain's free list (a push-only Treiber stack that
//! producers empty whole with a swap, so no ABA), or frees it when the
//! domain holds [`RECYCLE_CAP`] spare blocks (on the list and in producers'
//! chains together). A producer that needs a block takes the free blocks
//! the full one carried, or empties the free list (the first block becomes
//! current, the rest ride in its chain, still counted as spare), and
//! allocates only when both are empty: a steady stream of callbacks
//! allocates and frees nothing, and no producer frees blocks in its
//! `call_srcu`.
//!
//! The block and slot layouts are shared by every copy of this crate in the
//! process (a plugin's trampoline gives its slot back), so they are part of
//! the runtime ABI: changing them bumps `RUNTIME_ABI_VERSION`.
//!
//! The loom models `model_slab_block_freed_after_every_slot_read`,
//! `model_slab_cache_handoff` and `model_slab_recycled_block_reused` check
//! the three hand-offs, each with a negative twin
//! (`Fault::SlabRelaxedRelease`, `Fault::SlabRelaxedHandoff`,
//! `Fault::SlabRelaxedRecycle`); `docs/memory-model.md` has the argument.

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
#[cfg(not(usrcu_loom))]
pub(crate) const SLOTS: usize = 14;
/// Under loom, two slots: a block fills, and is recycled, within a model.
#[cfg(usrcu_loom)]
pub(crate) const SLOTS: usize = 2;

/// Most spare blocks a domain keeps (240 KiB), on its free list and in the
/// chains its producers took from it together; past it, a block whose
/// slots all ran is freed. Besides them, each of the domain's intake stacks
/// holds its current block: at most 256 + 32 blocks, 270 KiB, a domain
/// (plus one block per thread racing on the bound).
pub(crate) const RECYCLE_CAP: usize = 256;

/// A domain's free blocks: pushed by whoever gives back a block's last
/// reference, emptied whole by a producer.
#[derive(Debug)]
pub(crate) struct Recycle {
    head: AtomicPtr<Block>,
    /// About how many spare blocks the domain holds: on this list, and in
    /// the chains producers took from it and have not carved yet (a bound,
    /// not an exact count). A block is counted when it is pushed and
    /// uncounted when a producer makes it its current block, so taking the
    /// list does not reset the bound: the domain's spare blocks stay within
    /// [`RECYCLE_CAP`] however many stacks hold chains.
    count: AtomicUsize,
}

impl Recycle {
    pub(crate) fn new() -> Recycle {
        Recycle {
            head: AtomicPtr::new(std::ptr::null_mut()),
            count: AtomicUsize::new(0),
        }
    }
}

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

/// 64 bytes, so that the slots after it stay on 64-byte boundaries of the
/// block (the block itself is not over-aligned: an aligned allocation is a
/// slower path of the allocator).
#[repr(C)]
struct Header {
    /// Slots not yet given back (run, or never carved by a retired block).
    refs: AtomicUsize,
    /// The runtime's function that takes the block back when its last
    /// reference is given back (recycles it, or frees it with the allocator
    /// that allocated it).
    free: unsafe extern "C" fn(*mut Block),
    /// The free list this block returns to (its domain's; outlives it).
    home: *const Recycle,
    /// The next block: on the free list, or, for a producer's current
    /// block, the free blocks that producer holds.
    next: *mut Block,
    /// Loom only: the accesses to `next`, for the race checker.
    next_race: crate::sync::RaceCell,
    _pad: [usize; 4],
}

/// A block of slots; 16-byte aligned, so that the cache word has 4 low bits
/// for the slot count (what every malloc returns, so no aligned allocation).
#[repr(C, align(16))]
pub(crate) struct Block {
    hdr: Header,
    slots: [Slot; SLOTS],
}

#[cfg(not(usrcu_loom))]
const _: () = {
    assert!(std::mem::size_of::<Slot>() == 64);
    assert!(std::mem::size_of::<Block>() == 960);
    assert!(std::mem::size_of::<Header>() == 64);
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

/// Free a block to the allocator (the runtime's, which allocated it).
///
/// # Safety
/// `b` came from [`new_block`] and nothing uses it any more.
unsafe fn free_block(b: *mut Block) {
    // Loom: the block's loom objects are dropped with it.
    #[cfg(usrcu_loom)]
    // SAFETY: the block is live until the Box below drops.
    unsafe {
        for i in 0..SLOTS {
            std::ptr::drop_in_place(std::ptr::addr_of_mut!((*b).slots[i].race));
        }
        std::ptr::drop_in_place(std::ptr::addr_of_mut!((*b).hdr));
    }
    // SAFETY: `b` came from `Box::into_raw` in `new_block`; the caller
    // guarantees nothing uses it now.
    drop(unsafe { Box::from_raw(b as *mut MaybeUninit<Block>) });
}

/// Free `b` and the blocks linked from it.
///
/// # Safety
/// The caller owns every block of the chain (all their references), and
/// nothing uses them any more.
unsafe fn free_chain(mut b: *mut Block) {
    while !b.is_null() {
        // SAFETY: as above.
        unsafe {
            (*b).hdr.next_race.read();
            let n = (*b).hdr.next;
            free_block(b);
            b = n;
        }
    }
}

/// Push a block whose references are all ours on its free list; `count`:
/// it becomes spare now (false: it was spare already, in a chain being
/// given back).
///
/// # Safety
/// The caller owns `b` (all its references); `b` is not used after.
unsafe fn push_free(b: *mut Block, count: bool) {
    let relaxed = crate::fault::slab_relaxed_recycle();
    // SAFETY: the caller owns the block; `home` outlives it.
    unsafe {
        let home = &*(*b).hdr.home;
        if count {
            // Relaxed: a bound on the spare blocks, not a synchronization.
            home.count.fetch_add(1, Ordering::Relaxed);
        }
        (*b).hdr.next_race.write();
        // Relaxed: the push's CAS below publishes the reset.
        (*b).hdr.refs.store(SLOTS, Ordering::Relaxed);
        // Relaxed: the CAS re-checks the value.
        let mut top = home.head.load(Ordering::Relaxed);
        loop {
            (*b).hdr.next = top;
            // Release: publishes the block's reset (and, through the Acquire
            // fence of the last release, every slot access before it) to the
            // producer's Acquire swap in `fresh_block`. A push only needs the
            // head it links to to be the head it replaces, so a block taken
            // and pushed again in between (ABA) is harmless.
            let ok = if relaxed { Ordering::Relaxed } else { Ordering::Release };
            match home.head.compare_exchange_weak(top, b, ok, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => top = now,
            }
        }
    }
}

/// The runtime's function stored in every block: its last reference was
/// given back; recycle it, or free it when its free list is full.
unsafe extern "C" fn recycle_block(b: *mut Block) {
    // SAFETY: the last reference was given back: the block is ours; its
    // home outlives it.
    unsafe {
        // Relaxed: a bound (see `Recycle::count`).
        if (*(*b).hdr.home).count.load(Ordering::Relaxed) >= RECYCLE_CAP {
            free_block(b);
        } else {
            push_free(b, true);
        }
    }
}

fn new_block(home: &Recycle) -> *mut Block {
    let b = Box::into_raw(Box::<Block>::new_uninit()) as *mut Block;
    // SAFETY: a fresh allocation; the header is written before any use, and
    // slots are written when carved.
    unsafe {
        std::ptr::addr_of_mut!((*b).hdr).write(Header {
            refs: AtomicUsize::new(SLOTS),
            free: recycle_block,
            home,
            next: std::ptr::null_mut(),
            next_race: crate::sync::RaceCell::new(),
            _pad: [0; 4],
        });
        (*b).hdr.next_race.write();
        #[cfg(usrcu_loom)]
        for i in 0..SLOTS {
            std::ptr::addr_of_mut!((*b).slots[i].race).write(crate::sync::RaceCell::new());
        }
    }
    b
}

/// A block for a producer that holds none: the free list's first block, with
/// the rest of the list linked from it (spare blocks the producer carries,
/// still counted), or a new one.
fn fresh_block(home: &Recycle) -> *mut Block {
    // Relaxed pre-check: an empty list costs no RMW.
    if home.head.load(Ordering::Relaxed).is_null() {
        return new_block(home);
    }
    // Acquire: pairs with the Release CAS of every push (the later pushes
    // continue the release sequence), so each block's reset is visible.
    let take = if crate::fault::slab_relaxed_recycle() {
        Ordering::Relaxed
    } else {
        Ordering::Acquire
    };
    let list = home.head.swap(std::ptr::null_mut(), take);
    if list.is_null() {
        return new_block(home);
    }
    // The first block is no longer spare. Relaxed: a bound; its push's
    // increment is ordered before (it happened before the swap that took
    // the block), so this never wraps.
    home.count.fetch_sub(1, Ordering::Relaxed);
    list
}

/// Give back `n` references of block `b`; the last one recycles or frees it.
///
/// # Safety
/// The caller owns `n` of `b`'s references and does not touch the slots
/// they stand for after this call.
unsafe fn release(b: *mut Block, n: usize) {
    let relaxed = crate::fault::slab_relaxed_release();
    // Release: orders this holder's accesses to the block (the slot's read
    // by the trampoline, the producer's carving) before the decrement; the
    // decrements form a release sequence that the last one's Acquire fence
    // below synchronizes with.
    let order = if relaxed { Ordering::Relaxed } else { Ordering::Release };
    // Read `free` first: once our decrement is done, another holder's
    // decrement may be the last and free the block under us.
    // SAFETY: the caller holds references, so the block is live.
    let free = unsafe { (*b).hdr.free };
    // SAFETY: as above; the block is not touched after this decrement
    // unless it was the last.
    let before = unsafe { (*b).hdr.refs.fetch_sub(n, order) };
    if before == n {
        if !relaxed {
            // Acquire: pairs with every Release decrement above, so that all
            // slot accesses happen before the block is reused or freed.
            fence(Ordering::Acquire);
        }
        // Loom: reuse and free write every slot, so that one not ordered
        // after a slot's last read is a race the checker sees (here, not in
        // the `extern "C"` function, which cannot unwind its panic).
        #[cfg(usrcu_loom)]
        for i in 0..SLOTS {
            // SAFETY: the last reference: the block is ours.
            unsafe { (*b).slots[i].race.write() };
        }
        // SAFETY: the last reference: nobody else touches the block.
        unsafe { free(b) };
    }
}

/// The cache word: a block (16-byte aligned, as every allocation is) and,
/// in the low bits, how many of its slots are carved (always < `SLOTS`);
/// zero when the cache holds no block. Carving is one CAS on this word, so
/// the slot it claims is the word's own (a block recycled and cached again
/// in between, ABA, is harmless: the word says which slot is free).
const INDEX_MASK: usize = 15;
const _: () = assert!(SLOTS <= INDEX_MASK + 1 && std::mem::align_of::<Block>() == INDEX_MASK + 1);

/// A slot from `cache` (taking a block from `home` or allocating one when
/// it holds none): owned by the caller until it is handed to
/// [`release_slot`].
pub(crate) fn take_slot(cache: &AtomicUsize, home: &Recycle) -> *mut CallbackHead {
    let relaxed = crate::fault::slab_relaxed_handoff();
    // Acquire (the CAS; the plain load's value is only the CAS's expected
    // value, so its Acquire is not needed): pairs with the Release CAS that
    // installed the block (below), so the installer's writes (the block's reset, `next`)
    // and, through it, the last use of the slot's memory happened before we
    // write the slot. Release (CAS): publishes an installed block likewise.
    let (load, rmw) = if relaxed {
        (Ordering::Relaxed, Ordering::Relaxed)
    } else {
        (Ordering::Acquire, Ordering::AcqRel)
    };
    let mut w = cache.load(load);
    loop {
        if w == 0 {
            // No block: install one with its first slot carved.
            let b = fresh_block(home);
            let claimed = if SLOTS > 1 { b as usize | 1 } else { 0 };
            match cache.compare_exchange(0, claimed, rmw, load) {
                // SAFETY: the block is ours until published, and its slot 0
                // ours from then on.
                Ok(_) => return unsafe { carve(b, 0) },
                Err(now) => {
                    // Another producer installed one: take ours back.
                    // SAFETY: `b` and the free blocks linked from it are ours.
                    unsafe { push_chain(b) };
                    w = now;
                    continue;
                }
            }
        }
        let b = (w & !INDEX_MASK) as *mut Block;
        let i = w & INDEX_MASK;
        let last = i + 1 == SLOTS;
        let next = if last { 0 } else { w + 1 };
        match cache.compare_exchange_weak(w, next, rmw, load) {
            Ok(_) => {
                if last {
                    // The block is full; its slots own it. Cache the free
                    // blocks it carries, if any.
                    // SAFETY: our slot keeps the block alive, and only the
                    // claimer of its last slot reads `next`.
                    let chain = unsafe {
                        (*b).hdr.next_race.read();
                        std::mem::replace(&mut (*b).hdr.next, std::ptr::null_mut())
                    };
                    if !chain.is_null() {
                        // Read before the CAS: once installed, the block may
                        // be carved, run and recycled by others.
                        // SAFETY: the chain is ours until installed.
                        let chain_home = unsafe { (*chain).hdr.home };
                        if cache.compare_exchange(0, chain as usize, rmw, load).is_ok() {
                            // Its first block is current now, no longer
                            // spare. Relaxed: a bound (see `fresh_block`).
                            // SAFETY: a free list outlives its blocks.
                            unsafe { (*chain_home).count.fetch_sub(1, Ordering::Relaxed) };
                        } else {
                            // SAFETY: the chain is ours, all of it spare.
                            unsafe { push_spare(chain) };
                        }
                    }
                }
                if !last {
                    // The next call on this CPU carves the next slot: start
                    // bringing its line over now (it was last touched by
                    // the invoker, on another CPU).
                    // SAFETY: in bounds of the live block `b` (our slot keeps
                    // it alive); a prefetch neither faults nor writes.
                    crate::callbacks::prefetch_write(unsafe { std::ptr::addr_of!((*b).slots[i + 1]) } as *const u8);
                }
                // SAFETY: the CAS gave us slot `i` of the live block `b`.
                return unsafe { carve(b, i) };
            }
            Err(now) => w = now,
        }
    }
}

/// Write the head of slot `i` of `b`, which the caller claimed.
///
/// # Safety
/// The caller owns slot `i` of the live block `b`.
unsafe fn carve(b: *mut Block, i: usize) -> *mut CallbackHead {
    // SAFETY: as above.
    unsafe {
        let s = std::ptr::addr_of_mut!((*b).slots[i]);
        std::ptr::addr_of_mut!((*s).head).write(CallbackHead::new());
        // No stale hint: a closure under 8 bytes (or with padding first)
        // leaves the previous closure's first word, maybe a pointer freed
        // since, which the invoker would prefetch (`callbacks::slot_hint`).
        std::ptr::addr_of_mut!((*s).data).cast::<usize>().write(0);
        std::ptr::addr_of_mut!((*s).block).write(b);
        s as *mut CallbackHead
    }
}

/// Push `b`, a block that was to be current, back on its free list (through
/// the cap, as every recycled block), and the spare blocks linked from it.
///
/// # Safety
/// The caller owns every block of the chain (all their references).
unsafe fn push_chain(b: *mut Block) {
    // SAFETY: as above.
    unsafe {
        (*b).hdr.next_race.read();
        let rest = std::mem::replace(&mut (*b).hdr.next, std::ptr::null_mut());
        recycle_block(b);
        push_spare(rest);
    }
}

/// Push a chain of spare blocks (counted already) back on their free list.
///
/// # Safety
/// The caller owns every block of the chain (all their references).
unsafe fn push_spare(mut b: *mut Block) {
    while !b.is_null() {
        // SAFETY: as above.
        unsafe {
            (*b).hdr.next_race.read();
            let n = (*b).hdr.next;
            push_free(b, false);
            b = n;
        }
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

/// Retire the block in `cache`, if any (the domain goes away): the free
/// blocks it carries go back on the free list, and its uncarved references
/// are released.
pub(crate) fn drain(cache: &AtomicUsize) {
    // Acquire: as in `take_slot`.
    let w = cache.swap(0, Ordering::Acquire);
    if w == 0 {
        return;
    }
    let b = (w & !INDEX_MASK) as *mut Block;
    // SAFETY: taken out of the cache: its uncarved references and the blocks
    // it carries are ours.
    unsafe {
        (*b).hdr.next_race.read();
        let chain = std::mem::replace(&mut (*b).hdr.next, std::ptr::null_mut());
        push_spare(chain);
        release(b, SLOTS - (w & INDEX_MASK));
    }
}

/// Free every block on `home` (the domain goes away; its caches were
/// drained first, and every slot has run).
pub(crate) fn drain_free(home: &Recycle) {
    // Acquire: as in `fresh_block`.
    let list = home.head.swap(std::ptr::null_mut(), Ordering::Acquire);
    // SAFETY: taken off the free list: ours, unused.
    unsafe { free_chain(list) };
    // Relaxed: a bound.
    home.count.store(0, Ordering::Relaxed);
}

/// Bytes of the block in `cache`, if any (for footprints).
pub(crate) fn cached_bytes(cache: &AtomicUsize) -> usize {
    // Relaxed: a statistic; the pointer is not followed.
    if cache.load(Ordering::Relaxed) == 0 {
        0
    } else {
        std::mem::size_of::<Block>()
    }
}

/// About how many bytes of free blocks `home` keeps (for footprints).
pub(crate) fn recycled_bytes(home: &Recycle) -> usize {
    // Relaxed: a statistic.
    home.count.load(Ordering::Relaxed) * std::mem::size_of::<Block>()
}
