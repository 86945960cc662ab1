//! The runtime: the one per process that drives grace periods, invokes
//! callbacks and reports stalls; and the `#[repr(C)]` vtable through which a
//! plugin's copy of this crate uses the host's runtime.
//!
//! # Engine
//!
//! - **One grace-period driver** thread (`usrcu-gp`, `driver.rs`) advances
//!   every domain that needs a grace period. A step never waits: it scans,
//!   and either advances or re-arms the domain with a deadline (a binary
//!   heap of next-check times, backing off per domain). A domain with a
//!   stuck reader costs one check per back-off period and nothing more.
//! - **Callback invokers** (`usrcu-cb-N`, `invoke.rs`), a pool separate from
//!   the driver and grown on demand: a slow callback never delays a grace
//!   period, and a domain whose callbacks block holds only its own invoker.
//!   The pool stops growing at 4096 threads: past 4096 domains whose
//!   callbacks block at once, other domains' callbacks wait for one of them
//!   to return (so a callback must not wait for a callback of another
//!   domain that only those blocked ones could let run). Invokers past the
//!   first four exit after 10 s without work.
//!   Each domain is served by one invoker at a time, so its callbacks keep
//!   their order (`callbacks.rs`).
//! - **The wake-up handshake** between producers and the driver is in
//!   `wake.rs`, with a loom model.
//! - **Thread starts** (`spawn.rs`) are never fatal: a thread that cannot
//!   be started is reported once (`WarningKind::ThreadStartFailed`), its
//!   work stays queued, and the start is retried.
//! - **`fork`** (`fork.rs`): a `pthread_atfork` handler takes the driver's
//!   and the pool's locks (and those of the Tasks Trace and Tasks engines)
//!   across a fork, so that a child forked while the runtime is idle finds
//!   them free (see [`idle`]).
//! - **Inventory by address** (`inventory.rs`): the runtime owns every domain
//!   state and every queued callback, so it can say what lies in an address
//!   range and drain exactly that, with a deadline; a plugin loader's safety
//!   rests on this.
//!
//! # The vtable
//!
//! Every operation that blocks, allocates runtime state or reports goes
//! through [`RuntimeVTable`]. A plain process uses its own copy's vtable
//! ([`host_vtable`]); a plugin loader calls the plugin's install hook with
//! the host's vtable before anything in the plugin runs ([`install`]), so
//! that no thread ever runs plugin code the host did not call, and no plugin
//! code parks a thread or touches a thread-local with a destructor.

pub mod callouts;
mod driver;
mod fork;
pub mod inventory;
mod invoke;
mod readers;
mod spawn;
mod stall;
mod state;
mod vtable;

pub(crate) use fork::pause_on_way_to_sleep;

/// Is the calling thread running a callback of `st` (an invoker serving it)?
pub(crate) fn serving_domain(st: &state::DomainState) -> bool {
    invoke::serving(st)
}

/// Register the fork handler (once): before the first use of any lock it
/// takes (`fork.rs`).
pub(crate) fn register_fork_handler() {
    fork::register_handler_once();
}
pub(crate) use fork::{arm_pause, pause_inside, release_pause, skip_handler, Sleeper};
pub(crate) use spawn::{report_failure as report_start_failure, start as start_thread};
pub(crate) use state::{attached_state, orphan_state, release_state, DomainState};
pub(crate) use vtable::is_plugin_copy;
pub use vtable::{current, host_vtable, install, InstallError, RuntimeVTable, WarningRecord, RUNTIME_ABI_VERSION};

/// The vtable's "no timeout" argument.
#[inline]
pub(crate) fn vtable_forever() -> u64 {
    vtable::FOREVER
}

/// Is the runtime idle: no callback pending on any domain, no grace period
/// requested and not complete, no domain scheduled with the driver or held
/// by an invoker? A snapshot: work queued right after may make it false.
///
/// The runtime's threads hold no lock while idle, which is what a process
/// that calls `fork` needs: fork while `idle()` holds, and the child starts
/// its own driver and invokers on first use. A runtime thread that has just
/// made the runtime idle takes its lock once more on its way back to sleep
/// (an invoker the pool's queue, the driver its heap); a fork at that
/// instant would copy the lock held into the child. The runtime's
/// `pthread_atfork` handler, registered at its first thread start, closes
/// that window: it takes both locks before the fork and releases them on
/// both sides after it (`srcu/tests/runtime_fork_window.rs` forks while a
/// thread is held inside the window; without the handler the child hangs).
/// The process-wide flavors have their own answers, [`crate::trace::idle`]
/// and [`crate::tasks::idle`]; a process that uses them forks when all
/// three hold. Readers are not part of it: a
/// section that another thread has open at the fork stays open in the
/// child, where that thread does not exist, so the child's grace periods on
/// that domain never complete (`synchronize` waits forever).
///
/// ```
/// let d = usrcu::Srcu::new("idle-doc");
/// d.call_srcu(|| {});
/// d.barrier();
/// while !usrcu::runtime::idle() {
///     std::thread::yield_now();
/// }
/// ```
pub fn idle() -> bool {
    driver::heap_empty() && invoke::queue_empty() && domains_idle()
}

/// The per-domain part of [`idle`].
fn domains_idle() -> bool {
    state::registered().iter().all(|st| {
        !st.wake.is_scheduled()
            && !st.invoking.load(crate::sync::Ordering::SeqCst)
            && st.cbs.pending() == 0
            && !st.gp_in_flight()
    })
}

/// Run a callback, catching its panic and reporting it as a
/// [`CallbackPanicked`](crate::diagnostics::WarningKind::CallbackPanicked)
/// warning through the runtime this copy uses (the host's, so that a
/// plugin's callbacks are reported where the host's captures are), then go
/// on. `flavor` names the flavor in the message ("usrcu", "usrcu::trace").
pub(crate) fn run_catching_panic(flavor: &str, f: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        // A plugin's code panicked (a probe, a callback): the report below
        // reaches the host's logger, which may block, with the plugin's
        // frames below it. A callout, so that a Tasks grace period does
        // not take this thread for quiescent (red team 9). Not for the
        // host's own code (red team 11: a host callback's warning held
        // every Tasks grace period while the logger waited).
        let _callout = vtable::is_plugin_copy().then(callouts::enter);
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string payload".into());
        // The payload is user data too: its drop may panic again, and this
        // runs inside an `extern "C"` trampoline, where that second panic
        // would abort the process. Drop it under a catch of its own and
        // leak whatever a panicking drop throws (dropping that could panic
        // once more).
        if let Err(again) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(p))) {
            std::mem::forget(again);
        }
        let msg = format!("{flavor}: a callback panicked: {what}");
        // SAFETY: a null domain asks the runtime to name the domain whose
        // callbacks it is invoking (empty for the process-wide flavors); the
        // message is UTF-8.
        unsafe {
            (current().report)(
                std::ptr::null(),
                crate::diagnostics::WarningKind::CallbackPanicked.to_u32(),
                msg.as_ptr(),
                msg.len(),
            )
        };
    }
}
