//! The built-in probe notifier: before an object is closed, detach every
//! tracepoint probe whose code or data lies in it, and wait until no thread
//! is inside one (the kernel leaves this to each module's exit function,
//! `tracepoint_synchronize_unregister`; here it cannot be forgotten).
//!
//! The tracepoints searched are the host's: those declared with
//! `usrcu_registry::define_tracepoint!` in the object this loader is linked
//! into (its `TRACEPOINTS` slice). The range is the unloading object's
//! `PT_LOAD` segments, read by `dl_iterate_phdr` when it was loaded
//! ([`ObjectMapping`]). After the probes' grace periods, a Tasks Trace
//! `barrier` drains callbacks the plugin's copy queued on that flavor (the
//! deferred frees of probe arrays it replaced run its code).

use crate::address_space::ObjectMapping;
use usrcu_registry::tracepoint::{remove_probes_in, RemovedProbe};

/// Detach the object's probes, wait for their grace periods and for every
/// Tasks Trace callback queued so far; returns the probes removed.
pub(crate) fn going(mapping: &ObjectMapping) -> Vec<RemovedProbe> {
    let removed = remove_probes_in(&|addr| mapping.contains(addr));
    usrcu_registry::usrcu::trace::barrier();
    removed
}
