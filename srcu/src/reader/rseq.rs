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
//! After the commit we clear `rseq->rseq_cs` ourselves: the descriptor lives
//! in the object that holds this code, and a plugin's object may be unmapped
//! later; a stale `rseq_cs` pointing there would make the kernel fault the
//! thread at its next preemption.

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
            "mov qword ptr [{area} + 8], 0",
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
                // The kernel clears rseq_cs when it aborts; the CPU-mismatch
                // branch lands here without that, so clear it ourselves.
                // SAFETY: `area` is this thread's rseq area; offset 8 is
                // `rseq_cs`, which only this thread and the kernel write.
                unsafe { core::ptr::write_volatile(area.add(8) as *mut u64, 0) };
                return false;
            },
            options(nostack),
        );
    }
    true
}

/// Is the rseq path in use for this thread?
pub fn active() -> bool {
    cpu_id().is_some()
}
