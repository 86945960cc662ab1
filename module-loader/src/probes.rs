//! The built-in probe notifier: before an object is closed, detach every
//! tracepoint probe whose code or data lies in it, and wait until no thread
//! is inside one (the kernel leaves this to each module's exit function,
//! `tracepoint_synchronize_unregister`; here it cannot be forgotten).
//!
//! The tracepoints searched are the host's: those declared with
//! `usrcu_registry::define_tracepoint!` in the object this loader is linked
//! into (its `TRACEPOINTS` slice). The range is the unloading object's
//! `PT_LOAD` segments, read by `dl_iterate_phdr` when it was loaded
//! ([`ObjectMapping`]). Each flavor that had such probes gets its grace
//! period: Tasks RCU (`usrcu::tasks`) for normal tracepoints, Tasks Trace
//! (`usrcu::trace`) for faultable ones. Then the callbacks of both flavors
//! whose code or argument lies in the object are waited for (work its
//! probes queued as they fired), and only those: an unrelated callback that
//! blocks does not hold the unload up. The frees of probe arrays the
//! plugin's copy replaced run the host's code (`Tracepoint::replace`).
//!
//! A probe counts as the object's if its function, its data, or its
//! trampoline lies in it: a plugin that attaches a host function with host
//! data still leaves its own copy of the registry's trampoline behind.

use std::time::Duration;

use crate::address_space::ObjectMapping;
use usrcu_registry::tracepoint::{remove_probes_in_within, RemovedProbe};

/// Detach the object's probes, wait (within `timeout`) for their grace
/// periods and for the Tasks and Tasks Trace callbacks that run the
/// object's code;
/// returns the probes removed and whether the waits completed. `retry`: an
/// earlier unload of this module detached probes whose grace period it did
/// not see complete, so both flavors' are waited for again.
///
/// The wait here is the probe notifier's own; the deferred-work proof (`proofs/deferred.rs`) drains whatever
/// the object still has queued in any flavor before it is closed, whether
/// or not probes are removed.
pub(crate) fn going(mapping: &ObjectMapping, timeout: Duration, retry: bool) -> (Vec<RemovedProbe>, bool) {
    remove_probes_in_within(&|addr| mapping.contains(addr), timeout, retry)
}
