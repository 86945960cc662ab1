//! The rseq read path: the CPU id read from the thread's `struct rseq`, and a
//! plain (non-locked) add committed inside a restartable sequence.
//!
//! glibc (2.35+) registers a `struct rseq` for every thread and exports
//! `__rseq_offset` (from the thread pointer) and `__rseq_size`. We look them
//! up once with `dlsym`, so a glibc without them, or rseq disabled with
//! `GLIBC_TUNABLES=glibc.pthread.rseq=0` (`__rseq_size == 0`, `cpu_id < 0`),
//! falls back to `sched_getcpu` and locked adds.
//!
//! The restartable sequence (x86_64): store the address of a `struct rseq_cs`
//! descriptor into `rseq->rseq_cs`; check that `rseq->cpu_id` is still the CPU
//! whose counter we picked; `add qword [counter], 1` is the commit. If the
//! thread is preempted, migrated or signalled inside, the kernel moves it to
//! the abort handler (preceded by the 4-byte signature glibc registered,
//! `0x53053053`), which returns `false` and the caller takes the atomic path.
//!
//! `rseq->rseq_cs` is left set after the commit, as librseq leaves it: the
//! kernel clears it itself the next time it preempts or signals the thread
//! outside the sequence. The descriptor lives in the object that holds this
//! code, so before a plugin's object is unmapped no thread may still point
//! there (the kernel reads the descriptor at that thread's next preemption
//! and kills the process if it cannot). Two things see to that, argued in
//! `docs/abi.md`, "rseq and unload": every place where host code has run
//! plugin code (the loader's calls, the runtime's callback invokers, hook
//! slots, probes) calls [`clear_descriptor`] afterwards, and the loader's rseq
//! proof, before `dlclose`, reads every thread's `rseq_cs` and does not
//! unmap while one still points into the object.

use std::sync::atomic::{AtomicIsize, Ordering};

const UNKNOWN: isize = isize::MIN;

/// `__rseq_offset`, 0 if rseq is unavailable, or `UNKNOWN`. (The offset is
/// never 0: the TCB header sits at the thread pointer.) Relaxed: every thread
/// computes the same value from the same `dlsym` lookups.
static OFFSET: AtomicIsize = AtomicIsize::new(UNKNOWN);

#[cold]
fn detect() -> isize {
    // SAFETY: dlsym with RTLD_DEFAULT and NUL-terminated names; the symbols,
    // when present, are glibc's `const ptrdiff_t __rseq_offset` and
    // `const unsigned int __rseq_size`, read once.
    let off = unsafe {
        let o = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr());
        let s = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr());
        if o.is_null() || s.is_null() || *(s as *const u32) < 16 || disabled_by_env() {
            0
        } else {
            *(o as *const isize)
        }
    };
    OFFSET.store(off, Ordering::Relaxed);
    off
}

fn disabled_by_env() -> bool {
    std::env::var_os("USRCU_RSEQ").is_some_and(|v| v == "0")
}

/// The offset of `struct rseq` from the thread pointer, 0 if rseq is not
/// usable in this process. Copied into each domain's per-CPU block at attach
/// so that the read path finds it on the line it reads anyway.
pub(crate) fn offset() -> isize {
    let off = OFFSET.load(Ordering::Relaxed);
    if off == UNKNOWN {
        detect()
    } else {
        off
    }
}

/// This thread's `struct rseq` for a non-zero `offset`.
#[inline(always)]
pub(crate) fn area(offset: isize) -> *mut u8 {
    let tp: usize;
    // SAFETY: on x86_64 Linux %fs:0 holds the thread pointer (TCB self
    // pointer); reading it has no side effects.
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp,
            options(nostack, preserves_flags, readonly, pure));
    }
    (tp as isize).wrapping_add(offset) as *mut u8
}

/// The CPU id in `area`, as u32 (a negative "not registered" id becomes
/// huge, so one unsigned compare rejects it).
#[inline(always)]
pub(crate) fn area_cpu(area: *mut u8) -> u32 {
    // SAFETY: `area` is this thread's registered `struct rseq` (glibc maps it
    // for every thread when `__rseq_size` is non-zero); `cpu_id` is the u32
    // at offset 4, updated by the kernel, so read it volatile.
    unsafe { core::ptr::read_volatile(area.add(4) as *const u32) }
}

/// The CPU id from rseq, if registered for this thread.
#[inline]
pub(crate) fn cpu_id() -> Option<usize> {
    let off = offset();
    if off == 0 {
        return None;
    }
    let cpu = area_cpu(area(off));
    ((cpu as i32) >= 0).then_some(cpu as usize)
}

/// Add one to `*counter` in a restartable sequence bound to `cpu`. Returns
/// false (nothing added) if the thread is not on `cpu` or the kernel aborted
/// the sequence; the caller then takes the atomic path.
///
/// # Safety
/// `area` is this thread's rseq area; `counter` is a live counter that only
/// rseq sequences running on `cpu` write (see `percpu.rs`).
#[inline(always)]
pub(crate) unsafe fn add(area: *mut u8, cpu: u32, counter: *mut usize) -> bool {
    // SAFETY: forwarded.
    unsafe { add_in_sequence(area, cpu, counter) }
}

#[inline(always)]
unsafe fn add_in_sequence(area: *mut u8, cpu: u32, counter: *mut usize) -> bool {
    // SAFETY: see the module docs. Labels avoid the digits 0/1 only, as
    // inline-asm numeric labels of only 0s and 1s parse as binary in
    // Intel syntax. The asm is a compiler barrier (no `nomem`), which the
    // reader fence relies on.
    unsafe {
        core::arch::asm!(
            ".pushsection __rseq_cs, \"aw\"",
            ".balign 32",
            "6:",
            ".long 0, 0",
            ".quad 7f, 8f - 7f, 9f",
            ".popsection",
            "lea {tmp}, [rip + 6b]",
            "mov qword ptr [{area} + 8], {tmp}",
            "7:",
            "cmp dword ptr [{area} + 4], {cpu:e}",
            "jne 9f",
            "add qword ptr [{ctr}], 1",
            "8:",
            ".pushsection __rseq_failure, \"ax\"",
            ".byte 0x0f, 0xb9, 0x3d",
            ".long 0x53053053",
            "9:",
            "jmp {abort}",
            ".popsection",
            area = in(reg) area,
            cpu = in(reg) cpu,
            ctr = in(reg) counter,
            tmp = out(reg) _,
            abort = label {
                return false;
            },
            options(nostack),
        );
    }
    true
}

/// Clear this thread's `rseq->rseq_cs` (no-op without rseq): it no longer
/// points at the descriptor of the last sequence the thread ran. Never
/// inside a sequence: between two statements of Rust code, none is open.
///
/// Its fast path is one load, one test and one `%fs`-relative store, for
/// callers on hot paths (`HookSlot::call`): glibc's offset is positive on
/// x86_64 (the area is in `struct pthread`, above the thread pointer).
#[inline(always)]
pub(crate) fn clear_descriptor() {
    let off = OFFSET.load(Ordering::Relaxed);
    if off > 0 {
        store_zero(off);
    } else if off != 0 {
        clear_descriptor_slow(off);
    }
}

#[cold]
#[inline(never)]
fn clear_descriptor_slow(off: isize) {
    let off = if off == UNKNOWN { detect() } else { off };
    if off != 0 {
        store_zero(off);
    }
}

/// Store 0 into `rseq_cs` at `%fs:off + 8`.
#[inline(always)]
fn store_zero(off: isize) {
    // SAFETY: `off` is glibc's `__rseq_offset` (non-zero): `%fs:off` is this
    // thread's registered `struct rseq`, whose `rseq_cs` (offset 8) only
    // this thread and the kernel (on its behalf) write. Storing 0 outside a
    // sequence is what the kernel itself does when it finds the thread
    // outside one.
    unsafe {
        core::arch::asm!("mov qword ptr fs:[{off} + 8], 0", off = in(reg) off, options(nostack, preserves_flags));
    }
}

/// This thread's `rseq->rseq_cs` (0 without rseq).
pub(crate) fn descriptor() -> u64 {
    let off = offset();
    if off == 0 {
        return 0;
    }
    // SAFETY: as in `clear_descriptor`; a volatile read of our own field.
    unsafe { core::ptr::read_volatile(area(off).add(8) as *const u64) }
}

/// Is the rseq path in use for this thread?
pub fn active() -> bool {
    cpu_id().is_some()
}
