//! Light and heavy fences: the asymmetric pair that lets readers skip a full
//! barrier.
//!
//! # Semantics
//!
//! A reader orders its counter increment against its critical section with
//! `reader_fence`; an updater orders its counter sums against everything
//! else with `heavy_fence`. The pair is only correct as a pair:
//!
//! * [`FenceMode::Membarrier`]: the reader's fence is a compiler fence and the
//!   updater's is `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes
//!   every CPU currently running a thread of this process execute a full
//!   barrier before the call returns. So for any reader, each of its accesses
//!   is either ordered before the updater's heavy fence or after it — the
//!   userspace twin of the kernel's SRCU-fast (`barrier()` against
//!   `synchronize_rcu()`).
//! * [`FenceMode::SeqCst`]: both sides issue `fence(SeqCst)`. Chosen where
//!   membarrier is missing or refused, when `USRCU_FENCE=seqcst` is set, or
//!   per domain through `SrcuConfig::force_seqcst_fence` (tests), and always
//!   under loom.
//!
//! # When membarrier fails at run time
//!
//! A SeqCst fence on the updater pairs with nothing on a compiler-fence
//! reader, so a membarrier-mode domain can never fall back to one. If
//! `MEMBARRIER_CMD_PRIVATE_EXPEDITED` fails after registration succeeded,
//! the call is retried on `EINTR`/`EAGAIN`; any other error switches the
//! process, once and with a warning, to `MEMBARRIER_CMD_GLOBAL`, which gives
//! the same guarantee to every thread of the system (every running thread
//! passes through a full barrier between the call's entry and return) at the
//! cost of a kernel grace period (about 15 ms on the 2-vCPU VM this was
//! written on, a Python `syscall(324, 1, 0, 0)` loop). Domains attached after
//! the failure take the SeqCst pair instead. Where `MEMBARRIER_CMD_GLOBAL`
//! is not offered or fails too, the process aborts with a message: no
//! correct heavy fence is left, and ending grace periods too soon is worse.
//!
//! `USRCU_FAULT_MEMBARRIER_FAILS=1` makes every
//! `MEMBARRIER_CMD_PRIVATE_EXPEDITED` call fail with `EPERM` (registration
//! still succeeds), to test that path; the torture runs with it in `.ci/run`.
//!
//! The mode is chosen once per domain, when its per-CPU state is attached, and
//! stored next to the counters so that readers and updaters of that domain
//! always agree. The full argument is in `docs/memory-model.md`.

use crate::sync::{compiler_fence, fence, Ordering};

/// Which fence pair a domain uses.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceMode {
    /// Compiler fence on the reader, `membarrier` on the updater.
    Membarrier = 0,
    /// `fence(SeqCst)` on both sides.
    SeqCst = 1,
}

/// The reader's fence (steps B and C in `docs/memory-model.md`).
///
/// Pairs with [`heavy_fence`] in the updater's counter check.
#[inline(always)]
pub(crate) fn reader_fence(seqcst: bool) {
    if cfg!(usrcu_loom) || seqcst {
        if crate::fault::reader_fence_removed() {
            return;
        }
        // SeqCst: pairs with the SeqCst fence in `heavy_fence` (fallback mode).
        fence(Ordering::SeqCst);
    } else {
        // Compiler fence only: the updater's membarrier supplies the CPU-level
        // ordering (see the module docs).
        compiler_fence(Ordering::SeqCst);
    }
}

/// The updater's fence (step A in `docs/memory-model.md`).
///
/// Pairs with [`reader_fence`] on every reader.
#[inline]
pub(crate) fn heavy_fence(mode: FenceMode) {
    if crate::fault::heavy_fence_removed() {
        return;
    }
    #[cfg(not(usrcu_loom))]
    if mode == FenceMode::Membarrier {
        // A: pairs with the compiler fences B and C of every reader of this
        // domain, through membarrier (never a SeqCst fence: see the module
        // docs, "When membarrier fails at run time").
        membarrier::heavy();
        return;
    }
    let _ = mode;
    // SeqCst: pairs with the SeqCst reader fences B and C of SeqCst-mode
    // domains (the only mode there is under loom).
    fence(Ordering::SeqCst);
}

/// The mode a newly attached domain gets, unless its config forces SeqCst.
pub(crate) fn default_mode() -> FenceMode {
    #[cfg(usrcu_loom)]
    {
        FenceMode::SeqCst
    }
    #[cfg(not(usrcu_loom))]
    {
        if std::env::var_os("USRCU_FENCE").is_some_and(|v| v == "seqcst") {
            return FenceMode::SeqCst;
        }
        if membarrier::available() && !membarrier::failed_at_run_time() {
            FenceMode::Membarrier
        } else {
            FenceMode::SeqCst
        }
    }
}

#[cfg(not(usrcu_loom))]
mod membarrier {
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

    const CMD_QUERY: libc::c_long = 0;
    const CMD_GLOBAL: libc::c_long = 1 << 0;
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    const UNKNOWN: u8 = 0;
    const YES: u8 = 1;
    const NO: u8 = 2;

    /// Detection result; Relaxed is enough: every thread computes the same
    /// answer and registration is idempotent.
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
    /// `USRCU_FAULT_MEMBARRIER_FAILS=1`, read once (Relaxed: as `STATE`).
    static FAULT: AtomicU8 = AtomicU8::new(UNKNOWN);
    /// Set once `PRIVATE_EXPEDITED` failed at run time; from then on heavy
    /// fences use `GLOBAL`. Relaxed: a thread that still sees false tries
    /// `PRIVATE_EXPEDITED`, fails, and takes the same fallback.
    static FAILED: AtomicBool = AtomicBool::new(false);

    /// `membarrier(cmd)`: Ok, or the errno.
    fn sys(cmd: libc::c_long) -> Result<libc::c_long, i32> {
        // SAFETY: membarrier takes (cmd, flags, cpu_id) integers and touches
        // no memory of ours.
        let r = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_long, 0 as libc::c_long) };
        if r < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(r)
        }
    }

    /// The command mask the kernel offers (0 if the query fails).
    fn query() -> libc::c_long {
        sys(CMD_QUERY).unwrap_or(0)
    }

    /// Is private expedited membarrier supported, and registered for this
    /// process? Detects and registers once.
    pub(super) fn available() -> bool {
        match STATE.load(Ordering::Relaxed) {
            YES => true,
            NO => false,
            _ => {
                let ok = query() & CMD_PRIVATE_EXPEDITED != 0 && sys(CMD_REGISTER_PRIVATE_EXPEDITED).is_ok();
                STATE.store(if ok { YES } else { NO }, Ordering::Relaxed);
                ok
            }
        }
    }

    /// Has `PRIVATE_EXPEDITED` failed at run time in this process?
    pub(super) fn failed_at_run_time() -> bool {
        FAILED.load(Ordering::Relaxed)
    }

    /// The test switch `USRCU_FAULT_MEMBARRIER_FAILS=1`.
    fn fault_on() -> bool {
        match FAULT.load(Ordering::Relaxed) {
            YES => true,
            NO => false,
            _ => {
                let on = std::env::var_os("USRCU_FAULT_MEMBARRIER_FAILS").is_some_and(|v| v == "1");
                FAULT.store(if on { YES } else { NO }, Ordering::Relaxed);
                on
            }
        }
    }

    /// `PRIVATE_EXPEDITED`, retried on transient errors.
    fn private_expedited() -> Result<(), i32> {
        if fault_on() {
            return Err(libc::EPERM);
        }
        let mut tries = 0;
        loop {
            match sys(CMD_PRIVATE_EXPEDITED) {
                Ok(_) => return Ok(()),
                Err(e) if (e == libc::EINTR || e == libc::EAGAIN) && tries < 100 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The heavy fence of a membarrier-mode domain (see the module docs).
    #[inline]
    pub(super) fn heavy() {
        if !FAILED.load(Ordering::Relaxed) {
            match private_expedited() {
                Ok(()) => return,
                Err(e) => switch_to_global(e),
            }
        }
        global_or_abort();
    }

    /// Record the run-time failure, once, with a warning.
    #[cold]
    fn switch_to_global(errno: i32) {
        if FAILED.swap(true, Ordering::Relaxed) {
            return;
        }
        crate::diagnostics::warn(
            crate::diagnostics::WarningKind::Other,
            "",
            format!(
                "usrcu: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed at run time ({}); \
                 domains in membarrier mode now use MEMBARRIER_CMD_GLOBAL (slow but correct), \
                 domains attached from now on use SeqCst fences",
                std::io::Error::from_raw_os_error(errno)
            ),
        );
    }

    /// `GLOBAL`, or abort: nothing else pairs with a compiler-fence reader.
    #[cold]
    fn global_or_abort() {
        let offered = query() & CMD_GLOBAL != 0;
        let err = if offered {
            let mut tries = 0;
            loop {
                match sys(CMD_GLOBAL) {
                    Ok(_) => return,
                    Err(e) if (e == libc::EINTR || e == libc::EAGAIN) && tries < 100 => tries += 1,
                    Err(e) => break std::io::Error::from_raw_os_error(e).to_string(),
                }
            }
        } else {
            String::from("not offered by this kernel")
        };
        eprintln!(
            "usrcu: fatal: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed at run time and \
             MEMBARRIER_CMD_GLOBAL is unusable ({err}): no heavy fence is left that pairs with the \
             compiler-fence readers of membarrier-mode domains, and ending a grace period too soon \
             would free memory under them. Aborting. (USRCU_FENCE=seqcst avoids membarrier.)"
        );
        std::process::abort();
    }
}

/// Has `membarrier(PRIVATE_EXPEDITED)` failed at run time in this process?
/// Membarrier-mode domains then use `MEMBARRIER_CMD_GLOBAL` for their heavy
/// fence, and new domains the SeqCst pair (a warning is emitted once).
pub fn membarrier_failed_at_run_time() -> bool {
    #[cfg(usrcu_loom)]
    {
        false
    }
    #[cfg(not(usrcu_loom))]
    {
        membarrier::failed_at_run_time()
    }
}

/// Is `membarrier(PRIVATE_EXPEDITED)` usable in this process (supported,
/// registered, and not failed at run time)?
pub fn membarrier_available() -> bool {
    #[cfg(usrcu_loom)]
    {
        false
    }
    #[cfg(not(usrcu_loom))]
    {
        membarrier::available() && !membarrier::failed_at_run_time()
    }
}
