//! Restartable-sequence descriptors in the object: a thread whose
//! `rseq->rseq_cs` still points at a `struct rseq_cs` in the object is
//! killed by the kernel (SIGSEGV) at its next preemption or signal after the
//! unmap, when it fails to read the descriptor.
//!
//! usrcu's read side leaves `rseq_cs` set after its commit, as librseq does
//! (`usrcu::clear_rseq_descriptor`); the kernel clears it itself the next
//! time it preempts or signals the thread outside the sequence, while the
//! object is still mapped. The loader's calls, the runtime's callback
//! invokers, `HookSlot::call` and tracepoint probes clear it after running
//! plugin code, so what this proof finds is a thread that ran the object's
//! code some other way (a raw function address, say) and has not returned
//! to user space through a preemption or signal since.
//!
//! # How
//!
//! Each thread's `struct rseq` sits at its thread pointer (its `struct
//! pthread`, from glibc's thread list, `crate::thread_list`) plus glibc's
//! `__rseq_offset`; `rseq_cs` is the word at offset 8. It is read with
//! `process_vm_readv`, which fails instead of faulting on a thread that
//! exits meanwhile. A thread counts as pointing into the object if the
//! word, or the descriptor's `start_ip` or `abort_ip`, lies in it.
//!
//! Only the thread itself and the kernel (on its behalf) write its
//! `rseq_cs`, and no code of the object runs any more (the proofs before
//! this one), so a thread seen not pointing into the object never will
//! again. A value seen cleared also means no kernel fixup of that thread is
//! still reading the old descriptor: the kernel clears `rseq_cs` only after
//! it has read the descriptor.
//!
//! For threads still pointing in, `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)`
//! interrupts those running now, and the kernel, finding them outside any
//! sequence, clears their `rseq_cs` on the way back to user space; threads
//! asleep are cleared when they next run. The proof re-reads until none
//! points in, within the unload's budget (at most [`RSEQ_WAIT`], 250 ms); any left
//! are a `Zombie` naming them, and a later unload of the zombie looks again.
//!
//! # The unloading thread's own `dlclose`
//!
//! `dlclose` runs the object's ELF destructors on the calling thread just
//! before it unmaps the object, after every proof. [`without_rseq`] runs it
//! with the thread's rseq registration taken away (and given back after), so
//! that a destructor's read section takes usrcu's atomic path and leaves no
//! descriptor behind, and no preemption in between reads one.

use std::time::{Duration, Instant};

use super::{Proof, UnloadCx};
use crate::report::ZombieCause;
use crate::thread_list::{peek, ThreadList};

/// See the module documentation.
pub(crate) struct Rseq;

/// How long the proof waits, at most, for threads to be cleared: a thread
/// that is runnable but not running (preempted on a busy machine) is
/// cleared only once it runs again, which takes a few scheduler time
/// slices when the CPUs are oversubscribed.
const RSEQ_WAIT: Duration = Duration::from_millis(250);

/// glibc's rseq registration: `__rseq_offset`, and the signature (x86_64).
const RSEQ_SIG: u32 = 0x5305_3053;
const RSEQ_FLAG_UNREGISTER: i32 = 1;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: i32 = 1 << 7;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: i32 = 1 << 8;

/// glibc's `__rseq_offset` if rseq is registered for its threads (its
/// `__rseq_size` non-zero), else `None`.
fn rseq_offset() -> Option<isize> {
    // SAFETY: dlsym with RTLD_DEFAULT and NUL-terminated names; when present
    // these are glibc's `const ptrdiff_t __rseq_offset` and
    // `const unsigned int __rseq_size`.
    unsafe {
        let o = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr());
        let s = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr());
        if o.is_null() || s.is_null() || *(s as *const u32) == 0 {
            None
        } else {
            Some(*(o as *const isize))
        }
    }
}

/// Does thread `t`'s `rseq_cs` point into the object (the word itself, or
/// the descriptor's `start_ip` or `abort_ip`)?
fn points_in(cx: &UnloadCx<'_>, descriptor: usize, offset: isize) -> bool {
    let field = (descriptor as isize).wrapping_add(offset).wrapping_add(8) as usize;
    let Some(cs) = peek::<u64>(field) else {
        return false; // the thread has exited (its memory is gone)
    };
    let cs = cs as usize;
    if cs == 0 {
        return false;
    }
    if cx.contains(cs) {
        return true;
    }
    // struct rseq_cs { u32 version, flags; u64 start_ip, post_commit_offset, abort_ip; }
    let start = peek::<u64>(cs + 8).unwrap_or(0) as usize;
    let abort = peek::<u64>(cs + 24).unwrap_or(0) as usize;
    cx.contains(start) || cx.contains(abort)
}

/// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)`, registering the
/// process for it the first time; false if the kernel offers neither.
fn restart_running_threads() -> bool {
    static REGISTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    // Relaxed: registering twice is harmless (the kernel accepts it again),
    // so the flag only saves the call; a failed registration is retried.
    if !REGISTERED.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: membarrier with a command and flags 0 only acts on this
        // process's threads.
        let ok = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0) } == 0;
        if !ok {
            return false;
        }
        REGISTERED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0) == 0 }
}

impl Proof for Rseq {
    fn prove(&self, cx: &mut UnloadCx<'_>) -> Result<(), ZombieCause> {
        let Some(offset) = rseq_offset() else {
            return Ok(());
        };
        // This thread ran the plugin's `exit` and the proofs: clear its own.
        usrcu::clear_rseq_descriptor();
        let list = ThreadList::open().ok_or(ZombieCause::ThreadsUnverifiable)?;
        let until = Instant::now() + RSEQ_WAIT.min(cx.time_left());
        let mut nap = Duration::from_micros(20);
        let mut restarted = false;
        loop {
            let live = list.live_threads().ok_or(ZombieCause::ThreadsUnverifiable)?;
            let stale: Vec<i32> = live
                .iter()
                .filter(|t| points_in(cx, t.descriptor, offset))
                .map(|t| t.tid)
                .collect();
            if stale.is_empty() {
                return Ok(());
            }
            // At least one `membarrier` before giving up, even with the
            // unload's budget spent: a running thread is cleared by it.
            if restarted && Instant::now() >= until {
                return Err(ZombieCause::RseqDescriptorInObject { threads: stale });
            }
            restart_running_threads();
            restarted = true;
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(5));
        }
    }
}

/// The size glibc registered this thread's `struct rseq` with, found by
/// the kernel's answer to an unregistration: it accepts only the exact size
/// it was registered with (and refuses any other without a side effect).
/// Tried: the size that worked last time, `__rseq_size` itself (newer
/// glibc may register with the kernel's feature size rather than 32; not
/// seen here), 32 (glibc 2.36 here, seen with the tests), then every size
/// up to 512.
fn unregister(area: *mut u8) -> Option<u32> {
    static WORKED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // SAFETY: as in `rseq_offset`.
    let feature = unsafe {
        let s = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr());
        if s.is_null() {
            0
        } else {
            *(s as *const u32)
        }
    };
    // Relaxed: a hint; any size is checked by the kernel.
    let first = [WORKED.load(std::sync::atomic::Ordering::Relaxed), feature, 32];
    let mut tried = Vec::with_capacity(8);
    let sizes = first.into_iter().chain(20..=512).filter(|&n| {
        let new = n >= 20 && !tried.contains(&n);
        if new {
            tried.push(n);
        }
        new
    });
    for len in sizes {
        // SAFETY: `area` is this thread's registered `struct rseq`; the
        // kernel checks every argument and unregisters only on a match.
        if unsafe { libc::syscall(libc::SYS_rseq, area, len, RSEQ_FLAG_UNREGISTER, RSEQ_SIG) } == 0 {
            WORKED.store(len, std::sync::atomic::Ordering::Relaxed);
            return Some(len);
        }
    }
    None
}

/// Run `f` (the object's `dlclose`) with this thread's rseq registration
/// taken away, then give it back (see the module documentation). Without
/// rseq, or if the kernel refuses, `f` runs as is.
pub(crate) fn without_rseq<R>(f: impl FnOnce() -> R) -> R {
    usrcu::clear_rseq_descriptor();
    let Some(offset) = rseq_offset() else {
        return f();
    };
    if super::test_switch::skipped("rseq-dlclose") {
        return f();
    }
    let tp: usize;
    // SAFETY: on x86_64 Linux %fs:0 holds the thread pointer; reading it has
    // no side effects.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        return f();
    }
    let area = (tp as isize).wrapping_add(offset) as *mut u8;
    let Some(len) = unregister(area) else {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            usrcu::diagnostics::emit(usrcu::diagnostics::Warning::new(
                usrcu::diagnostics::WarningKind::Other,
                "usrcu-module-loader",
                "usrcu-module-loader: the kernel refused to unregister this thread's rseq area for dlclose; \
                 a plugin ELF destructor that enters read sections can leave it pointing into the unmapped object"
                    .to_owned(),
            ))
        });
        let r = f();
        // The best left: the window is from the destructor to here.
        usrcu::clear_rseq_descriptor();
        return r;
    };
    let r = f();
    // Unregistered, the kernel ignores the area; a sequence that ran
    // meanwhile (a guard's unlock aborts only after storing its descriptor)
    // may have left `rseq_cs` set: registration must start from 0.
    usrcu::clear_rseq_descriptor();
    // SAFETY: as in `unregister`: the same area, size and signature glibc
    // registered, with `rseq_cs` 0.
    let back = unsafe { libc::syscall(libc::SYS_rseq, area, len, 0, RSEQ_SIG) };
    if back != 0 {
        usrcu::diagnostics::emit(usrcu::diagnostics::Warning::new(
            usrcu::diagnostics::WarningKind::Other,
            "usrcu-module-loader",
            format!(
                "usrcu-module-loader: could not give this thread its rseq registration back after dlclose ({}); \
                 its read sections take the atomic path from now on",
                std::io::Error::last_os_error()
            ),
        ));
    }
    r
}
