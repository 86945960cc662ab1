//! The full barrier at the start (T1) and end (T5) of a Tasks grace period.
//!
//! # Semantics
//!
//! Hooks run with no fence at all, so the updater's side must be a barrier
//! on every thread of the process: `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`
//! (every CPU running one of our threads executes a full barrier before the
//! call returns; a thread not running passes through the scheduler's full
//! barrier before it runs again). It is registered by `fence`'s detection.
//! If it fails at run time (ENOMEM on kernels with off-stack cpumasks, a
//! seccomp filter), the grace period retries once and then uses
//! `MEMBARRIER_CMD_GLOBAL` (a full RCU grace period of the kernel: slower,
//! but a barrier on every CPU all the same). If neither is available there is
//! no pair for a fence-free read side, and the process aborts with a message
//! rather than end a grace period unproven: a SeqCst fence here would pair
//! with nothing.

const CMD_GLOBAL: libc::c_long = 1;
const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;

fn sys(cmd: libc::c_long) -> libc::c_long {
    // SAFETY: membarrier takes (cmd, flags, cpu_id) integers and touches no
    // memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_long, 0 as libc::c_long) }
}

/// A full barrier on every thread of the process.
pub(crate) fn full() {
    if crate::fence::membarrier_available() && (sys(CMD_PRIVATE_EXPEDITED) == 0 || sys(CMD_PRIVATE_EXPEDITED) == 0) {
        return;
    }
    if sys(CMD_GLOBAL) == 0 {
        return;
    }
    eprintln!("usrcu::tasks: membarrier is unavailable; a Tasks grace period cannot be proven, aborting");
    std::process::abort();
}
