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
    if mode == FenceMode::Membarrier && membarrier::expedited() {
        return;
    }
    let _ = mode;
    // SeqCst: pairs with the SeqCst reader fence (fallback mode), and in
    // membarrier mode it is only reached if membarrier failed at run time, in
    // which case `detect` has already switched new domains to SeqCst.
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
        if membarrier::available() {
            FenceMode::Membarrier
        } else {
            FenceMode::SeqCst
        }
    }
}

#[cfg(not(usrcu_loom))]
mod membarrier {
    use std::sync::atomic::{AtomicU8, Ordering};

    const CMD_QUERY: libc::c_long = 0;
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    const UNKNOWN: u8 = 0;
    const YES: u8 = 1;
    const NO: u8 = 2;

    /// Detection result; Relaxed is enough: every thread computes the same
    /// answer and registration is idempotent.
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

    fn sys(cmd: libc::c_long) -> libc::c_long {
        // SAFETY: membarrier takes (cmd, flags, cpu_id) integers and touches
        // no memory of ours.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_long, 0 as libc::c_long) }
    }

    /// Is private expedited membarrier supported, and registered for this
    /// process? Detects and registers once.
    pub(super) fn available() -> bool {
        match STATE.load(Ordering::Relaxed) {
            YES => true,
            NO => false,
            _ => {
                let mask = sys(CMD_QUERY);
                let ok = mask >= 0 && mask & CMD_PRIVATE_EXPEDITED != 0 && sys(CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
                STATE.store(if ok { YES } else { NO }, Ordering::Relaxed);
                ok
            }
        }
    }

    /// Issue the heavy barrier. Returns false if it could not be issued, in
    /// which case the caller falls back to a SeqCst fence (which is only a
    /// correct pair for SeqCst readers; `available()` is checked before any
    /// domain enters membarrier mode, so this is a can't-happen path kept
    /// defensive).
    #[inline]
    pub(super) fn expedited() -> bool {
        sys(CMD_PRIVATE_EXPEDITED) == 0
    }
}

/// Is `membarrier(PRIVATE_EXPEDITED)` usable in this process?
pub fn membarrier_available() -> bool {
    #[cfg(usrcu_loom)]
    {
        false
    }
    #[cfg(not(usrcu_loom))]
    {
        membarrier::available()
    }
}
