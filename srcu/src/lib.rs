//! Userspace SRCU: sleepable read-copy-update with the Linux kernel's
//! semantics, for processes that load and unload plugins.
//!
//! # Domains
//!
//! A [`Srcu`] is an independent domain. Readers enter with
//! [`Srcu::read_lock`] and may sleep, block or do I/O inside; updaters wait
//! for pre-existing readers with [`Srcu::synchronize`] (or
//! [`Srcu::synchronize_expedited`]), defer work with [`Srcu::call_srcu`], and
//! wait for deferred work with [`Srcu::barrier`]. Polled grace periods:
//! [`Srcu::get_state`], [`Srcu::start_poll`], [`Srcu::poll_state`].
//!
//! # Readers
//!
//! Each domain keeps one cache-line slot of counters per *possible* CPU
//! (`/sys/devices/system/cpu/possible`, or `USRCU_POSSIBLE_CPUS`, or
//! [`SrcuConfig::possible_cpus`]). A reader adds one to a lock counter of its
//! CPU's slot, through rseq (a plain add in a restartable sequence) where
//! glibc registered it, otherwise a locked add; then a compiler fence. The
//! updater pairs that with `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`.
//! Where membarrier is missing (or `USRCU_FENCE=seqcst`), both sides use
//! SeqCst fences. No thread registration is needed.
//!
//! # Grace periods
//!
//! As in Linux's `srcutree.c`: drain the inactive rank, flip the index,
//! drain the previously active rank. The argument is in
//! `docs/memory-model.md`.
//!
//! # The runtime
//!
//! Grace periods for callbacks and polls are driven by one thread per
//! process, one non-blocking step at a time, so a domain with a sleeping
//! reader never holds up another; callbacks run on a separate pool of
//! invoker threads. Both are reached through a `#[repr(C)]` vtable
//! ([`runtime::RuntimeVTable`]) that a plugin loader hands to each plugin's
//! copy of this crate, so that no thread ever runs unmapped code, and the
//! runtime can say what it holds in an address range
//! ([`runtime::inventory`]). The crate registers no thread-local destructors.
//!
//! # Diagnostics
//!
//! Missed barriers, leaks, stalls and illegal synchronizes are warnings, sent
//! to the `log` crate and to [`diagnostics::Capture`]s.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
// The loom build compiles the algorithm units without the domain API that uses them.
#![cfg_attr(usrcu_loom, allow(dead_code))]

mod sync;

pub mod fault;
pub mod fence;
pub mod percpu;

mod attach;
mod callbacks;
mod grace_period;
mod reader;
mod slab;
mod wake;

#[cfg(not(usrcu_loom))]
pub mod abi;
#[cfg(not(usrcu_loom))]
mod cleanup;
#[cfg(not(usrcu_loom))]
pub mod diagnostics;
#[cfg(not(usrcu_loom))]
mod domain;
#[cfg(not(usrcu_loom))]
pub mod runtime;
mod stats;
#[cfg(not(usrcu_loom))]
pub mod tasks;
pub mod trace;

pub use callbacks::CallbackHead;
pub use grace_period::Cookie;
pub use stats::SrcuStats;

#[cfg(not(usrcu_loom))]
pub use cleanup::CleanupError;
#[cfg(not(usrcu_loom))]
pub use domain::{Srcu, SrcuConfig, SRCU_LAYOUT_VERSION, SRCU_MAGIC};
#[cfg(not(usrcu_loom))]
pub use reader::{ReadIndex, SrcuReadGuard};

/// This crate's version (a loader compares a plugin's against its own).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Is this thread's read side on the rseq path (plain per-CPU adds)?
pub fn rseq_active() -> bool {
    reader::rseq::active()
}

/// Clear this thread's `rseq->rseq_cs`: forget the restartable-sequence
/// descriptor of the last read section it ran (a no-op without rseq).
///
/// A read section leaves `rseq_cs` pointing at a descriptor inside the
/// object whose code entered it, as librseq does; the kernel clears it at
/// the thread's next preemption or signal. Before a plugin's object is
/// unmapped no thread may still point into it, so code that calls into an
/// object that may be unloaded later calls this afterwards. The module
/// loader (its calls, hooks and destructor trampolines), the
/// runtime's callback invokers, [`tasks::HookSlot::call`] and tracepoint
/// probes already do; a host that calls a plugin's function through a raw
/// address (not `Symbol::call` or an interface) and then lets the thread
/// sleep should: otherwise the loader's rseq proof (run before `dlclose`)
/// keeps the object mapped as a zombie until that thread has run again (see `docs/abi.md`, "rseq and unload").
///
/// ```
/// static D: usrcu::Srcu = usrcu::Srcu::new_static("doc-clear");
/// drop(D.read_lock());
/// usrcu::clear_rseq_descriptor();
/// ```
#[inline]
pub fn clear_rseq_descriptor() {
    reader::rseq::clear_descriptor()
}

#[cfg(usrcu_loom)]
#[doc(hidden)]
pub mod __loom;

#[cfg(not(usrcu_loom))]
#[doc(hidden)]
#[path = "testing.rs"]
pub mod __testing;

// The README's examples are compiled and run as doctests of
// `usrcu-registry`, which can also build its tracepoint example.
