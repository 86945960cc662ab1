//! Per-CPU reader counters, allocated by chunk as CPUs are used, and the CPU
//! id.
//!
//! # Slot layout
//!
//! One [`Slot`] per possible CPU, each exactly one cache line. A slot holds
//! two ranks (indexed by the low bit of the domain's index) of four
//! monotonically increasing counters:
//!
//! | counter        | written by                                   | how            |
//! |----------------|----------------------------------------------|----------------|
//! | `lock[r]`      | readers entering on this CPU, atomic path    | locked `add`   |
//! | `unlock[r]`    | readers leaving on this CPU, atomic path     | locked `add`   |
//! | `rseq_lock[r]` | readers entering on this CPU, rseq path      | plain `add` in a restartable sequence |
//! | `rseq_unlock[r]` | readers leaving on this CPU, rseq path     | plain `add` in a restartable sequence |
//!
//! The rseq counters are only ever written by the thread currently running on
//! that CPU, inside a restartable sequence that the kernel aborts on
//! preemption, migration or signal, so a plain add cannot lose an update. The
//! atomic counters take the rest (no rseq, a migration between reading the CPU
//! id and the add, fewer slots than CPUs, a CPU whose chunk is not allocated
//! yet, or a domain on the SeqCst fence pair, whose readers always take the
//! atomic path). Keeping the two apart is what makes mixing plain and locked
//! adds sound. Only the sums over all slots and both paths mean anything: a
//! reader may lock on one CPU and unlock on another.
//!
//! # Chunks: memory and scans proportional to the CPUs used
//!
//! A domain does not hold one slot per *possible* CPU up front. The slots are
//! grouped in chunks of [`CPUS_PER_CHUNK`] consecutive CPUs (64 slots of 64
//! bytes: 4 KiB); CPU `c` lives at index `c % 64` of chunk `c / 64`
//! ([`chunk_of`]). A chunk is allocated the first time a reader runs on one of
//! its CPUs, and a *touched-chunk bitmap* says which chunks exist. Every scan
//! (the grace period's lock and unlock sums, `cleanup`'s reader count) walks
//! the bitmap and visits allocated chunks only, plus one shared *fallback
//! slot*. At 4096 possible CPUs with readers on two of them, a domain holds
//! one 4 KiB chunk, a 512-byte pointer table, one bitmap word and its
//! 128-byte block, and a scan reads 65 slots instead of 4096.
//!
//! | per domain            | what                                         | allocated          |
//! |-----------------------|----------------------------------------------|--------------------|
//! | [`PerCpu`] block      | index, rseq offset, fence mode, chunk table header, `grow`, fallback slot | at attach |
//! | chunk pointer table   | one `AtomicPtr` per chunk, null until used   | at attach          |
//! | touched bitmap        | one bit per chunk                            | at attach          |
//! | chunk `k`             | slots of CPUs `64k .. 64k + 63`              | first reader on one of them |
//!
//! A reader whose CPU's chunk is not allocated yet counts itself on the
//! fallback slot with a locked add (never the rseq path: the fallback slot is
//! shared by all CPUs), and *then*, outside any restartable sequence, asks for
//! the chunk through the block's `grow` function. `grow` belongs to the copy
//! of this crate that built the block (the host runtime's, through the
//! vtable's `attach`), so a chunk is allocated and later freed by the host's
//! allocator even when the reader is a plugin's copy, and survives the
//! plugin's unmap. `grow` sets the chunk's touched bit and *then* publishes
//! the chunk pointer (Release); readers load the pointer with Acquire. Why a
//! scan that misses a chunk published while it ran is still correct is
//! argued in `docs/memory-model.md`, "Per-CPU chunks".
//!
//! The same indexing serves every per-CPU structure of a domain:
//! [`ChunkTable`] is generic over the entry type and gives the mapping
//! ([`chunk_of`], [`nr_chunks`], [`chunk_len`]), allocation on first touch
//! ([`ChunkTable::get_or_alloc`]) and the walk of touched chunks
//! ([`ChunkTable::touched`]).

use crate::sync::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::marker::PhantomData;

/// log2 of [`CPUS_PER_CHUNK`]. Under loom every CPU is its own chunk, so that
/// two simulated CPUs exercise two chunks.
#[cfg(not(usrcu_loom))]
pub const CHUNK_SHIFT: u32 = 6;
/// log2 of [`CPUS_PER_CHUNK`] (loom: one CPU per chunk).
#[cfg(usrcu_loom)]
pub const CHUNK_SHIFT: u32 = 0;

/// CPUs per chunk of per-CPU state: 64 slots of 64 bytes, 4 KiB.
pub const CPUS_PER_CHUNK: usize = 1 << CHUNK_SHIFT;

/// The chunk of `cpu` and its index inside that chunk.
#[inline(always)]
pub const fn chunk_of(cpu: usize) -> (usize, usize) {
    (cpu >> CHUNK_SHIFT, cpu & (CPUS_PER_CHUNK - 1))
}

/// The first CPU of `chunk` (inverse of [`chunk_of`]).
#[inline(always)]
pub const fn first_cpu(chunk: usize) -> usize {
    chunk << CHUNK_SHIFT
}

/// Chunks needed for `nr_cpus` possible CPUs.
#[inline]
pub const fn nr_chunks(nr_cpus: usize) -> usize {
    // `div_ceil`, not `(n + 63) >> 6`, which overflows near `usize::MAX`.
    nr_cpus.div_ceil(CPUS_PER_CHUNK)
}

/// Entries in `chunk` for `nr_cpus` possible CPUs: [`CPUS_PER_CHUNK`], less
/// for the last chunk (2 possible CPUs make one chunk of 2 entries), none
/// past it.
#[inline]
pub const fn chunk_len(nr_cpus: usize, chunk: usize) -> usize {
    let rest = nr_cpus.saturating_sub(first_cpu(chunk));
    if rest < CPUS_PER_CHUNK {
        rest
    } else {
        CPUS_PER_CHUNK
    }
}

/// Chunk pointers per cache line of the pointer table.
const PTRS_PER_LINE: usize = 64 / std::mem::size_of::<usize>();

/// One cache line of chunk pointers.
#[repr(C, align(64))]
struct PtrLine<T>([AtomicPtr<T>; PTRS_PER_LINE]);

/// A per-CPU array of `T` over `nr_cpus` possible CPUs, allocated chunk by
/// chunk on first touch, with a touched-chunk bitmap.
///
/// `#[repr(C)]` and independent of `T` in layout (two counts, two pointers),
/// so that it can sit inside the shared [`PerCpu`] block. Entries of a chunk
/// are built by `get_or_alloc`'s `init` and live until the table drops;
/// chunks are never freed while the table lives.
///
/// # Words
///
/// | word           | written by                        | meaning                                |
/// |----------------|-----------------------------------|----------------------------------------|
/// | `touched[w]`   | `get_or_alloc`, `fetch_or` only   | bit `b`: chunk `64w + b` is (being) allocated |
/// | `ptrs[k]`      | `get_or_alloc`, one CAS from null | chunk `k`'s entries, null until published |
///
/// A bit is set before (sequenced before) the CAS that publishes its chunk,
/// and neither is ever cleared: so a published chunk's bit is visible to
/// whoever sees the pointer, and a walk of the bitmap finds every chunk
/// published before it (see `docs/memory-model.md`, "Per-CPU chunks").
#[repr(C)]
pub struct ChunkTable<T> {
    nr_cpus: u32,
    nr_chunks: u32,
    ptrs: *const AtomicPtr<T>,
    touched: *const AtomicU64,
    _owns: PhantomData<T>,
}

// SAFETY: the table owns its chunks (entries of type T, shared between
// threads through `&T`) and only holds atomics otherwise.
unsafe impl<T: Send + Sync> Send for ChunkTable<T> {}
// SAFETY: as above; every shared access to the table goes through atomics,
// and entries are handed out as `&T`.
unsafe impl<T: Send + Sync> Sync for ChunkTable<T> {}

impl<T> std::fmt::Debug for ChunkTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkTable")
            .field("nr_cpus", &self.nr_cpus)
            .field("nr_chunks", &self.nr_chunks)
            .field("touched", &self.touched_count())
            .finish()
    }
}

impl<T> ChunkTable<T> {
    /// An empty table for `nr_cpus` (1..=[`MAX_CPUS`]) possible CPUs: the
    /// pointer table and the bitmap, no chunk.
    pub fn new(nr_cpus: usize) -> ChunkTable<T> {
        assert!((1..=MAX_CPUS).contains(&nr_cpus), "possible CPUs out of range");
        let n = nr_chunks(nr_cpus);
        // Whole cache lines of pointers: every reader loads from this table,
        // so it shares no line with an allocation that is written.
        let ptrs: Box<[PtrLine<T>]> = (0..n.div_ceil(PTRS_PER_LINE))
            .map(|_| PtrLine(std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut()))))
            .collect();
        let words: Box<[AtomicU64]> = (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        ChunkTable {
            nr_cpus: nr_cpus as u32,
            nr_chunks: n as u32,
            // A `PtrLine` is exactly `PTRS_PER_LINE` pointers (repr(C), no
            // padding), so the lines are one contiguous pointer array.
            ptrs: Box::into_raw(ptrs) as *const AtomicPtr<T>,
            touched: Box::into_raw(words) as *const AtomicU64,
            _owns: PhantomData,
        }
    }

    /// Possible CPUs.
    #[inline(always)]
    pub fn nr_cpus(&self) -> usize {
        self.nr_cpus as usize
    }

    /// Chunks (allocated or not).
    #[inline(always)]
    pub fn nr_chunks(&self) -> usize {
        self.nr_chunks as usize
    }

    fn bitmap(&self) -> &[AtomicU64] {
        // SAFETY: `touched` came from a boxed slice of `nr_chunks.div_ceil(64)`
        // words owned by the table.
        unsafe { std::slice::from_raw_parts(self.touched, self.nr_chunks().div_ceil(64)) }
    }

    /// Chunk `chunk`'s first entry, or null while it is not allocated.
    ///
    /// # Safety
    /// `chunk < nr_chunks()`.
    #[inline(always)]
    pub unsafe fn chunk_unchecked(&self, chunk: usize) -> *mut T {
        // SAFETY: the caller checked the bound; `ptrs` holds `nr_chunks`
        // pointers owned by the table.
        let p = unsafe { &*self.ptrs.add(chunk) };
        // Acquire: pairs with the Release CAS in `get_or_alloc`, so the
        // entries' initialisation happens before the caller's accesses.
        p.load(Ordering::Acquire)
    }

    /// The entries of `chunk`, if it is allocated.
    #[inline]
    pub fn chunk(&self, chunk: usize) -> Option<&[T]> {
        if chunk >= self.nr_chunks() {
            return None;
        }
        // SAFETY: bound checked.
        let p = unsafe { self.chunk_unchecked(chunk) };
        // SAFETY: a published chunk holds `chunk_len` initialised entries
        // that live as long as the table.
        (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p, chunk_len(self.nr_cpus(), chunk)) })
    }

    /// The entry of `cpu` (< `nr_cpus()`), if its chunk is allocated.
    #[inline(always)]
    pub fn get(&self, cpu: usize) -> Option<&T> {
        if cpu >= self.nr_cpus() {
            return None;
        }
        let (c, i) = chunk_of(cpu);
        // SAFETY: `cpu < nr_cpus`, so `c < nr_chunks`.
        let p = unsafe { self.chunk_unchecked(c) };
        if p.is_null() {
            None
        } else {
            // SAFETY: `i < chunk_len(c)` since `cpu < nr_cpus`; the chunk
            // lives as long as the table.
            Some(unsafe { &*p.add(i) })
        }
    }

    /// The entries of `chunk`, allocating them with `init` (one call per
    /// entry) if this is its first touch. Racing callers agree on one chunk;
    /// a loser's entries are dropped unpublished.
    ///
    /// Allocates: never call it inside a restartable sequence, and only in
    /// the copy of the crate that owns the table (its allocator frees it).
    ///
    /// # Panics
    /// If `chunk >= nr_chunks()`.
    pub fn get_or_alloc(&self, chunk: usize, mut init: impl FnMut() -> T) -> &[T] {
        assert!(chunk < self.nr_chunks(), "chunk out of range");
        let len = chunk_len(self.nr_cpus(), chunk);
        // SAFETY: bound checked.
        let p = unsafe { self.chunk_unchecked(chunk) };
        if !p.is_null() {
            // SAFETY: as in `chunk`.
            return unsafe { std::slice::from_raw_parts(p, len) };
        }
        let fresh: Box<[T]> = (0..len).map(|_| init()).collect();
        let fresh = Box::into_raw(fresh) as *mut T;
        let late = crate::fault::chunk_touched_late();
        if !late {
            self.touch(chunk);
        }
        // SAFETY: bound checked above.
        let slot = unsafe { &*self.ptrs.add(chunk) };
        // Release on success: publishes the entries' initialisation and the
        // touched bit set just before (sequenced before this CAS) to every
        // Acquire load that sees the pointer (readers, scans). Acquire on
        // failure: pairs with the winner's Release, for the same reason.
        let p = match slot.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => fresh,
            Err(winner) => {
                // SAFETY: `fresh` came from `Box<[T]>::into_raw` with `len`
                // entries and was never published.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(fresh, len)) });
                winner
            }
        };
        if late {
            self.touch(chunk);
        }
        // SAFETY: published, `len` entries, live as long as the table.
        unsafe { std::slice::from_raw_parts(p, len) }
    }

    /// Set `chunk`'s touched bit.
    fn touch(&self, chunk: usize) {
        // Relaxed: ordered before the chunk's publication by program order
        // and the publishing CAS's Release (see `get_or_alloc`); the scans
        // order their bitmap loads with the heavy fence A.
        self.bitmap()[chunk / 64].fetch_or(1 << (chunk % 64), Ordering::Relaxed);
    }

    /// Allocated chunks, in chunk order, each as (chunk, its entries): every
    /// chunk whose touched bit this walk loads set and whose pointer it
    /// loads non-null. Each bitmap word is loaded (Relaxed) when the walk
    /// reaches it: a scan that must not miss a chunk published before some
    /// fence starts its walk after that fence.
    pub fn touched(&self) -> Touched<'_, T> {
        Touched {
            table: self,
            word: 0,
            bits: 0,
            base: 0,
        }
    }

    /// Chunks whose touched bit is set now.
    pub fn touched_count(&self) -> usize {
        // Relaxed: a statistic.
        self.bitmap()
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as usize)
            .sum()
    }

    /// Bytes held: the pointer table, the bitmap and the allocated chunks.
    pub fn bytes(&self) -> usize {
        let chunks: usize = self.touched().map(|(_, e)| std::mem::size_of_val(e)).sum();
        self.nr_chunks().div_ceil(PTRS_PER_LINE) * std::mem::size_of::<PtrLine<T>>()
            + std::mem::size_of_val(self.bitmap())
            + chunks
    }
}

impl<T> Drop for ChunkTable<T> {
    fn drop(&mut self) {
        let n = self.nr_chunks();
        for c in 0..n {
            // SAFETY: `c < nr_chunks`; `&mut self`: no one else uses the table.
            let p = unsafe { self.chunk_unchecked(c) };
            if !p.is_null() {
                let len = chunk_len(self.nr_cpus(), c);
                // SAFETY: published chunks came from `Box<[T]>::into_raw`
                // with `len` entries.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, len)) });
            }
        }
        // SAFETY: both came from boxed slices of these lengths in `new`.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.ptrs as *mut PtrLine<T>,
                n.div_ceil(PTRS_PER_LINE),
            )));
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.touched as *mut AtomicU64,
                n.div_ceil(64),
            )));
        }
    }
}

/// The walk of a [`ChunkTable`]'s allocated chunks ([`ChunkTable::touched`]).
#[derive(Debug)]
pub struct Touched<'a, T> {
    table: &'a ChunkTable<T>,
    /// Next bitmap word to load.
    word: usize,
    /// Bits of the current word not yet visited.
    bits: u64,
    /// Chunk of bit 0 of `bits`.
    base: usize,
}

impl<'a, T> Iterator for Touched<'a, T> {
    type Item = (usize, &'a [T]);

    fn next(&mut self) -> Option<(usize, &'a [T])> {
        loop {
            if self.bits != 0 {
                let c = self.base + self.bits.trailing_zeros() as usize;
                self.bits &= self.bits - 1;
                // A set bit whose pointer is still null: the chunk is being
                // published; nobody can have counted on it yet (see
                // `docs/memory-model.md`, "Per-CPU chunks").
                if let Some(e) = self.table.chunk(c) {
                    return Some((c, e));
                }
                continue;
            }
            let words = self.table.bitmap();
            if self.word >= words.len() {
                return None;
            }
            // Relaxed: see `ChunkTable::touched`.
            self.bits = words[self.word].load(Ordering::Relaxed);
            self.base = self.word * 64;
            self.word += 1;
        }
    }
}

/// Counters of one possible CPU. One cache line, so that readers on different
/// CPUs never write the same line.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Slot {
    pub(crate) lock: [AtomicUsize; 2],
    pub(crate) unlock: [AtomicUsize; 2],
    pub(crate) rseq_lock: [AtomicUsize; 2],
    pub(crate) rseq_unlock: [AtomicUsize; 2],
}

impl Slot {
    fn new() -> Slot {
        Slot {
            lock: [AtomicUsize::new(0), AtomicUsize::new(0)],
            unlock: [AtomicUsize::new(0), AtomicUsize::new(0)],
            rseq_lock: [AtomicUsize::new(0), AtomicUsize::new(0)],
            rseq_unlock: [AtomicUsize::new(0), AtomicUsize::new(0)],
        }
    }

    /// `lock[r] + rseq_lock[r]` (Relaxed, see [`PerCpu::sum_locks`]).
    #[inline]
    fn locks(&self, r: usize) -> usize {
        self.lock[r]
            .load(Ordering::Relaxed)
            .wrapping_add(self.rseq_lock[r].load(Ordering::Relaxed))
    }

    /// `unlock[r] + rseq_unlock[r]` (Relaxed, see [`PerCpu::sum_unlocks`]).
    #[inline]
    fn unlocks(&self, r: usize) -> usize {
        self.unlock[r]
            .load(Ordering::Relaxed)
            .wrapping_add(self.rseq_unlock[r].load(Ordering::Relaxed))
    }
}

/// A sum over the slots a scan visited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sum {
    /// The sum of the counters.
    pub(crate) total: usize,
    /// Slots visited (the fallback slot and every slot of each allocated
    /// chunk): what the `slots_scanned` statistic counts.
    pub(crate) slots: usize,
}

/// Allocate the chunk of a CPU in the copy of the crate that built the block.
type GrowFn = unsafe extern "C" fn(*const PerCpu, usize);

/// The per-CPU block of one domain: the active index, the chunked slots and
/// the fallback slot.
///
/// Shared between a plugin's copy of the crate (readers) and the host's
/// (updaters), hence `#[repr(C)]`; its layout is part of the ABI checked by
/// the module descriptor (`SRCU_LAYOUT_VERSION` 2 introduced the chunks).
#[repr(C)]
#[derive(Debug)]
pub struct PerCpu {
    /// Grace-period index; its low bit is the active rank.
    pub(crate) idx: AtomicUsize,
    /// glibc's `__rseq_offset`, or 0: readers of this domain use the atomic
    /// path only (always so for SeqCst-fence domains). Copied here so the
    /// read path finds it on this line.
    pub(crate) rseq_offset: isize,
    /// Non-zero: readers use the SeqCst fence (see `fence.rs`).
    pub(crate) seqcst_readers: u32,
    _reserved: u32,
    /// One slot per possible CPU, by chunk.
    slots: ChunkTable<Slot>,
    /// Allocates a CPU's chunk: a function of the copy that built the block.
    grow: GrowFn,
    /// Counts readers whose CPU's chunk is not allocated yet (atomic path
    /// only). Its own cache line, after the read-mostly header.
    fallback: Slot,
}

// SAFETY: the block only holds atomics, a function pointer, and pointers to
// atomics owned by it.
unsafe impl Send for PerCpu {}
// SAFETY: as above; every shared access goes through atomics.
unsafe impl Sync for PerCpu {}

/// `grow` of blocks built by this copy of the crate.
///
/// # Safety
/// `pc` points at a live block built by this copy (`PerCpu::new`).
unsafe extern "C" fn grow_here(pc: *const PerCpu, cpu: usize) {
    // SAFETY: the caller passes a live block.
    let pc = unsafe { &*pc };
    let cpu = pc.fold(cpu);
    pc.slots.get_or_alloc(chunk_of(cpu).0, Slot::new);
}

impl PerCpu {
    /// A block for `nr_slots` possible CPUs, no chunk allocated yet.
    pub(crate) fn new(nr_slots: usize, seqcst_readers: bool) -> PerCpu {
        PerCpu {
            idx: AtomicUsize::new(0),
            // SeqCst domains take the atomic path only, so that the rseq
            // path implies the membarrier pair (reader.rs).
            rseq_offset: if seqcst_readers {
                0
            } else {
                crate::reader::rseq::offset()
            },
            seqcst_readers: seqcst_readers as u32,
            _reserved: 0,
            slots: ChunkTable::new(nr_slots),
            grow: grow_here,
            fallback: Slot::new(),
        }
    }

    /// Number of slots (possible CPUs).
    #[inline(always)]
    pub(crate) fn nr_slots(&self) -> usize {
        self.slots.nr_cpus()
    }

    /// `cpu`, folded into the slot range (a CPU id beyond the possible CPUs,
    /// or more CPUs than slots simulated).
    #[inline(always)]
    pub(crate) fn fold(&self, cpu: usize) -> usize {
        if cpu < self.nr_slots() {
            cpu
        } else {
            cpu % self.nr_slots()
        }
    }

    /// The slot of `cpu` (< `nr_slots`) if its chunk is allocated.
    #[inline(always)]
    pub(crate) fn own_slot(&self, cpu: usize) -> Option<&Slot> {
        self.slots.get(cpu)
    }

    /// The slot shared by readers whose CPU has no allocated chunk.
    #[inline(always)]
    pub(crate) fn fallback(&self) -> &Slot {
        &self.fallback
    }

    /// Allocate `cpu`'s chunk if it is not yet, through the builder's
    /// `grow`. Allocates: outside restartable sequences only.
    #[cold]
    #[inline(never)]
    pub(crate) fn populate(&self, cpu: usize) {
        // SAFETY: `grow` is the function of the copy that built `self`,
        // which lives as long as any block it built (the host runtime).
        unsafe { (self.grow)(self, cpu) }
    }

    /// The chunks allocated so far, each as (chunk, its slots). The
    /// lead-in to every scan; see [`ChunkTable::touched`].
    pub(crate) fn touched_chunks(&self) -> Touched<'_, Slot> {
        self.slots.touched()
    }

    /// Sum `f` over the fallback slot and every slot of every allocated
    /// chunk, walking the bitmap afresh.
    #[inline]
    fn sum(&self, f: impl Fn(&Slot) -> usize) -> Sum {
        let mut s = Sum {
            total: f(&self.fallback),
            slots: 1,
        };
        for (_, chunk) in self.touched_chunks() {
            s.slots += chunk.len();
            s.total = chunk.iter().fold(s.total, |acc, slot| acc.wrapping_add(f(slot)));
        }
        s
    }

    /// Sum of unlock counters of rank `r` over the fallback slot, every
    /// allocated chunk and both paths.
    ///
    /// Relaxed loads: ordered against the lock sum by the heavy fence between
    /// them (step A, `grace_period::readers_gone`).
    pub(crate) fn sum_unlocks(&self, r: usize) -> Sum {
        self.sum(|s| s.unlocks(r))
    }

    /// Sum of lock counters of rank `r`, as [`PerCpu::sum_unlocks`].
    ///
    /// Walks the touched bitmap again: called after the heavy fence A, it
    /// must see every chunk published before A (`docs/memory-model.md`,
    /// "Per-CPU chunks"), not reuse the walk made before A.
    pub(crate) fn sum_locks(&self, r: usize) -> Sum {
        self.sum(|s| s.locks(r))
    }

    /// Readers currently inside a section, both ranks (a racy snapshot, for
    /// cleanup's check and diagnostics; cleanup orders it with a heavy
    /// fence), and the slots read.
    pub(crate) fn active_readers(&self) -> (isize, usize) {
        let mut n = 0isize;
        let mut slots = 0;
        for r in 0..2 {
            let u = self.sum_unlocks(r);
            let l = self.sum_locks(r);
            n = n.wrapping_add(l.total.wrapping_sub(u.total) as isize);
            slots += u.slots + l.slots;
        }
        (n, slots)
    }

    /// Chunks allocated so far.
    pub(crate) fn chunks_touched(&self) -> usize {
        self.slots.touched_count()
    }

    /// Bytes of per-CPU reader state: this block, the chunk table and the
    /// allocated chunks.
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of::<PerCpu>() + self.slots.bytes()
    }
}

/// Upper bound on simulated possible CPUs.
pub const MAX_CPUS: usize = 1 << 16;

/// The number of possible CPUs of this machine, from
/// `/sys/devices/system/cpu/possible`, or `USRCU_POSSIBLE_CPUS` if set.
///
/// Read once per process.
pub fn possible_cpus() -> usize {
    #[cfg(usrcu_loom)]
    {
        2
    }
    #[cfg(not(usrcu_loom))]
    {
        static CACHE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *CACHE.get_or_init(|| {
            if let Some(n) = env_possible_cpus() {
                return n;
            }
            os_possible_cpus()
        })
    }
}

/// `USRCU_POSSIBLE_CPUS`, if set to a number in `1..=MAX_CPUS`. A malformed
/// value is reported once on the log and ignored.
#[cfg(not(usrcu_loom))]
fn env_possible_cpus() -> Option<usize> {
    let v = std::env::var("USRCU_POSSIBLE_CPUS").ok()?;
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_CPUS).contains(&n) => Some(n),
        _ => {
            log::warn!("usrcu: ignoring USRCU_POSSIBLE_CPUS={v:?}: expected an integer in 1..={MAX_CPUS}");
            None
        }
    }
}

/// Possible CPUs as the kernel lists them ("0-3,8-11" -> 12, counting up to
/// the highest id + 1 so every CPU id maps to its own slot).
#[cfg(not(usrcu_loom))]
fn os_possible_cpus() -> usize {
    if let Ok(s) = std::fs::read_to_string("/sys/devices/system/cpu/possible") {
        if let Some(n) = parse_cpu_list_max(&s) {
            return n + 1;
        }
    }
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The highest CPU id in a kernel CPU list such as `0-3,8-11`.
pub(crate) fn parse_cpu_list_max(s: &str) -> Option<usize> {
    let mut max = None;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let hi = part.rsplit('-').next()?;
        let v: usize = hi.trim().parse().ok()?;
        max = Some(max.map_or(v, |m: usize| m.max(v)));
    }
    max
}

/// The CPU this thread runs on now (a hint: it may change right after).
#[inline(always)]
pub(crate) fn current_cpu() -> usize {
    #[cfg(usrcu_loom)]
    {
        0
    }
    #[cfg(not(usrcu_loom))]
    {
        if let Some(cpu) = crate::reader::rseq::cpu_id() {
            return cpu;
        }
        // SAFETY: sched_getcpu has no preconditions.
        let c = unsafe { libc::sched_getcpu() };
        if c < 0 {
            0
        } else {
            c as usize
        }
    }
}

// Field offsets for the ABI fingerprint (`abi.rs`): every field, in
// declaration order.
impl PerCpu {
    pub(crate) const FIELD_OFFSETS: [usize; 7] = [
        std::mem::offset_of!(PerCpu, idx),
        std::mem::offset_of!(PerCpu, rseq_offset),
        std::mem::offset_of!(PerCpu, seqcst_readers),
        std::mem::offset_of!(PerCpu, _reserved),
        std::mem::offset_of!(PerCpu, slots),
        std::mem::offset_of!(PerCpu, grow),
        std::mem::offset_of!(PerCpu, fallback),
    ];
}

impl Slot {
    pub(crate) const FIELD_OFFSETS: [usize; 4] = [
        std::mem::offset_of!(Slot, lock),
        std::mem::offset_of!(Slot, unlock),
        std::mem::offset_of!(Slot, rseq_lock),
        std::mem::offset_of!(Slot, rseq_unlock),
    ];
}

#[cfg(all(test, not(usrcu_loom)))]
mod tests {
    use super::*;

    #[test]
    fn cpu_list_parses_ranges_and_singles() {
        assert_eq!(parse_cpu_list_max("0-1\n"), Some(1));
        assert_eq!(parse_cpu_list_max("0"), Some(0));
        assert_eq!(parse_cpu_list_max("0-3,8-11"), Some(11));
        assert_eq!(parse_cpu_list_max("garbage"), None);
    }

    #[test]
    fn chunk_mapping_covers_every_cpu_once() {
        for nr in [1, 2, 63, 64, 65, 130, 4096] {
            let mut seen = vec![false; nr];
            for c in 0..nr_chunks(nr) {
                for i in 0..chunk_len(nr, c) {
                    let cpu = first_cpu(c) + i;
                    assert_eq!(chunk_of(cpu), (c, i));
                    assert!(!std::mem::replace(&mut seen[cpu], true));
                }
            }
            assert!(seen.iter().all(|&s| s), "{nr} CPUs");
        }
        assert_eq!(nr_chunks(4096), 64);
        assert_eq!(chunk_len(2, 0), 2);
        assert_eq!(chunk_len(130, 2), 2);
    }

    #[test]
    fn a_new_block_holds_no_chunk_and_scans_only_the_fallback_slot() {
        let pc = PerCpu::new(4096, false);
        assert_eq!(pc.chunks_touched(), 0);
        assert!(pc.own_slot(5).is_none());
        assert_eq!(pc.sum_locks(0), Sum { total: 0, slots: 1 });
        assert_eq!(pc.bytes(), std::mem::size_of::<PerCpu>() + 64 * 8 + 8);
    }

    #[test]
    fn populate_allocates_only_the_touched_chunk() {
        let pc = PerCpu::new(4096, false);
        pc.populate(130); // chunk 2
        pc.populate(4096 + 131); // folds to 131: chunk 2 again
        assert_eq!(pc.chunks_touched(), 1);
        assert!(pc.own_slot(128).is_some() && pc.own_slot(191).is_some());
        assert!(pc.own_slot(127).is_none() && pc.own_slot(192).is_none());
        let chunks: Vec<usize> = pc.touched_chunks().map(|(c, s)| c + 1000 * s.len()).collect();
        assert_eq!(chunks, vec![2 + 1000 * 64]);
        assert_eq!(pc.sum_unlocks(1).slots, 1 + 64);
        assert_eq!(pc.bytes(), std::mem::size_of::<PerCpu>() + 64 * 8 + 8 + 64 * 64);
    }

    #[test]
    fn sums_cover_both_paths_the_fallback_and_all_allocated_chunks() {
        let pc = PerCpu::new(200, false);
        pc.populate(1);
        pc.populate(199); // chunk 3, 8 slots
        pc.own_slot(1).unwrap().lock[0].fetch_add(2, Ordering::Relaxed);
        pc.own_slot(199).unwrap().rseq_lock[0].fetch_add(1, Ordering::Relaxed);
        pc.fallback().lock[0].fetch_add(1, Ordering::Relaxed);
        pc.own_slot(2).unwrap().unlock[0].fetch_add(1, Ordering::Relaxed);
        pc.own_slot(198).unwrap().rseq_unlock[0].fetch_add(1, Ordering::Relaxed);
        pc.fallback().unlock[0].fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            pc.sum_locks(0),
            Sum {
                total: 4,
                slots: 1 + 64 + 8
            }
        );
        assert_eq!(pc.sum_unlocks(0).total, 3);
        assert_eq!(pc.active_readers(), (1, 4 * (1 + 64 + 8)));
    }

    #[test]
    fn racing_first_touches_publish_one_chunk() {
        let t: std::sync::Arc<ChunkTable<AtomicUsize>> = std::sync::Arc::new(ChunkTable::new(256));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || t.get_or_alloc(3, || AtomicUsize::new(0)).as_ptr() as usize)
            })
            .collect();
        let ps: Vec<usize> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            ps.iter().all(|&p| p == ps[0]),
            "racing allocations published different chunks"
        );
        assert_eq!(t.touched_count(), 1);
        assert_eq!(t.touched().map(|(c, _)| c).collect::<Vec<_>>(), vec![3]);
    }
}
