//! Per-CPU reader counters over every *possible* CPU, and the CPU id.
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
//! id and the add, fewer slots than CPUs, or a domain on the SeqCst fence
//! pair, whose readers always take the atomic path). Keeping the two apart is what
//! makes mixing plain and locked adds sound. Only the sums over all slots and
//! both paths mean anything: a reader may lock on one CPU and unlock on
//! another.

use crate::sync::{AtomicUsize, Ordering};

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
}

/// The per-CPU block of one domain: the active index and the slots.
///
/// Shared between a plugin's copy of the crate (readers) and the host's
/// (updaters), hence `#[repr(C)]`; its layout is part of the ABI checked by
/// the module descriptor.
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
    pub(crate) nr_slots: u32,
    slots: *mut Slot,
}

// SAFETY: the block only holds atomics and a pointer to atomics owned by it.
unsafe impl Send for PerCpu {}
// SAFETY: as above; every shared access goes through atomics.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    /// Allocate a block of `nr_slots` zeroed slots.
    pub(crate) fn new(nr_slots: usize, seqcst_readers: bool) -> PerCpu {
        assert!((1..=MAX_CPUS).contains(&nr_slots), "possible CPUs out of range");
        let v: Vec<Slot> = (0..nr_slots).map(|_| Slot::new()).collect();
        let slots = Box::into_raw(v.into_boxed_slice()) as *mut Slot;
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
            nr_slots: nr_slots as u32,
            slots,
        }
    }

    /// Number of slots (possible CPUs).
    #[inline(always)]
    pub(crate) fn nr_slots(&self) -> usize {
        self.nr_slots as usize
    }

    /// The slot of `cpu`, folding CPU ids beyond the slot count.
    #[inline(always)]
    pub(crate) fn slot(&self, cpu: usize) -> &Slot {
        let i = if cpu < self.nr_slots() {
            cpu
        } else {
            cpu % self.nr_slots()
        };
        // SAFETY: `i < nr_slots`, and `slots` points at `nr_slots` slots that
        // live as long as `self`.
        unsafe { &*self.slots.add(i) }
    }

    /// The slot of `cpu` without folding.
    ///
    /// # Safety
    /// `cpu < nr_slots`.
    #[inline(always)]
    pub(crate) unsafe fn slot_unchecked(&self, cpu: usize) -> &Slot {
        // SAFETY: the caller checked the bound; see `slot`.
        unsafe { &*self.slots.add(cpu) }
    }

    /// All slots.
    #[inline]
    pub(crate) fn slots(&self) -> &[Slot] {
        // SAFETY: `slots` points at `nr_slots` initialised slots owned by self.
        unsafe { std::slice::from_raw_parts(self.slots, self.nr_slots()) }
    }

    /// Sum of unlock counters of rank `r` over every slot and both paths.
    ///
    /// Relaxed loads: ordered against the lock sum by the heavy fence between
    /// them (step A, `grace_period::readers_gone`).
    pub(crate) fn sum_unlocks(&self, r: usize) -> usize {
        self.slots().iter().fold(0usize, |acc, s| {
            acc.wrapping_add(s.unlock[r].load(Ordering::Relaxed))
                .wrapping_add(s.rseq_unlock[r].load(Ordering::Relaxed))
        })
    }

    /// Sum of lock counters of rank `r` over every slot and both paths.
    /// Relaxed: see [`PerCpu::sum_unlocks`].
    pub(crate) fn sum_locks(&self, r: usize) -> usize {
        self.slots().iter().fold(0usize, |acc, s| {
            acc.wrapping_add(s.lock[r].load(Ordering::Relaxed))
                .wrapping_add(s.rseq_lock[r].load(Ordering::Relaxed))
        })
    }

    /// Readers currently inside a section, both ranks (a racy snapshot, for
    /// cleanup's check and diagnostics; cleanup orders it with a heavy fence).
    pub(crate) fn active_readers(&self) -> isize {
        let mut n = 0isize;
        for r in 0..2 {
            let u = self.sum_unlocks(r);
            n = n.wrapping_add(self.sum_locks(r).wrapping_sub(u) as isize);
        }
        n
    }
}

impl Drop for PerCpu {
    fn drop(&mut self) {
        let n = self.nr_slots();
        // SAFETY: `slots` came from `Box<[Slot]>::into_raw` with length `n`.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.slots, n)) });
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
    pub(crate) const FIELD_OFFSETS: [usize; 5] = [
        std::mem::offset_of!(PerCpu, idx),
        std::mem::offset_of!(PerCpu, rseq_offset),
        std::mem::offset_of!(PerCpu, seqcst_readers),
        std::mem::offset_of!(PerCpu, nr_slots),
        std::mem::offset_of!(PerCpu, slots),
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

#[cfg(test)]
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
    fn sums_cover_both_paths_and_all_slots() {
        let pc = PerCpu::new(4, false);
        pc.slot(1).lock[0].fetch_add(2, Ordering::Relaxed);
        pc.slot(3).rseq_lock[0].fetch_add(1, Ordering::Relaxed);
        pc.slot(2).unlock[0].fetch_add(1, Ordering::Relaxed);
        pc.slot(5).rseq_unlock[0].fetch_add(1, Ordering::Relaxed); // folds to slot 1
        assert_eq!(pc.sum_locks(0), 3);
        assert_eq!(pc.sum_unlocks(0), 2);
        assert_eq!(pc.active_readers(), 1);
    }
}
