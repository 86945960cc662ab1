//! Starting the runtime's threads (the driver, `driver.rs`; the callback
//! invokers, `invoke.rs`; the flavors' `usrcu-trace` and `usrcu-tasks`).
//!
//! A start can fail (`pthread_create` cannot map a stack under
//! `RLIMIT_AS`, or the process is out of threads). The runtime is reached
//! from `extern "C"` vtable functions, where a panic cannot unwind and
//! aborts the process, and from its own driver, whose death would strand
//! every callback; so a failed start is not fatal: the work stays queued,
//! the failure is reported once per episode (a
//! [`ThreadStartFailed`](crate::diagnostics::WarningKind::ThreadStartFailed)
//! warning, emitted after the caller dropped its lock, since a logger is
//! user code), and the start is retried later (`driver.rs`: at the next
//! schedule or kick, and by a `barrier` or `poll_state` waiting for it, at
//! most once per 10 ms; `invoke.rs`: the driver re-arms a domain that waits
//! for an invoker that could not be started, even while other invokers run,
//! since they may all be blocked in callbacks). `synchronize` needs no
//! runtime thread: its caller drives the grace period.

use crate::diagnostics::{self, WarningKind};

/// Start a runtime thread named `name` running `f`. The caller holds the
/// lock the new thread takes first (the driver's `heap`, the pool's `q`,
/// the trace engine's `queue`, the tasks engine's `m`).
///
/// The fork handler (`fork.rs`) is registered here, still under that
/// lock, before the thread can hold one (and at the first attach,
/// `state.rs`).
pub(crate) fn start(name: String, f: fn()) -> std::io::Result<()> {
    super::fork::register_handler_once();
    std::thread::Builder::new().name(name).stack_size(STACK).spawn(f)?;
    Ok(())
}

/// The stack of every runtime thread: std's default, given explicitly so
/// that no `spawn` of the runtime reads `RUST_MIN_STACK`. std reads it under
/// its environment lock, which a forking `Command` holds for reading across
/// its `fork`, and a runtime spawn runs under a runtime lock that the fork
/// handler takes: with a writer of the environment queued between the two,
/// they could deadlock. (So `RUST_MIN_STACK` does not size the runtime's
/// threads.)
const STACK: usize = 2 << 20;

/// Report a failed start (once per episode: the callers keep the episode's
/// flag under their lock). Call with no runtime lock held.
pub(crate) fn report_failure(domain: &str, what: &str, e: &std::io::Error) {
    diagnostics::warn(
        WarningKind::ThreadStartFailed,
        domain,
        format!("usrcu: cannot start {what}: {e}; the work stays queued and the start is retried"),
    );
}
