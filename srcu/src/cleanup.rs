//! Cleanup: free a domain's per-CPU state only when nothing can still use it;
//! otherwise warn, leak, and say why.

use crate::diagnostics::{self, WarningKind};
use crate::domain::Srcu;
use std::fmt;

/// Why [`Srcu::cleanup`] refused. The per-CPU state was leaked (left
/// allocated and attached), never freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanupError {
    /// Readers were inside a section (their count).
    pub readers_active: usize,
    /// Callbacks were still pending: a `barrier` was missed.
    pub callbacks_pending: usize,
    /// A grace period was running or requested.
    pub grace_period_in_flight: bool,
}

impl CleanupError {
    pub(crate) fn to_bits(self) -> u32 {
        (self.readers_active.min(0x3ff) as u32)
            | ((self.callbacks_pending.min(0xfffff) as u32) << 10)
            | ((self.grace_period_in_flight as u32) << 31)
    }

    pub(crate) fn from_bits(b: u32) -> Option<CleanupError> {
        (b != 0).then_some(CleanupError {
            readers_active: (b & 0x3ff) as usize,
            callbacks_pending: ((b >> 10) & 0xfffff) as usize,
            grace_period_in_flight: b >> 31 != 0,
        })
    }
}

impl fmt::Display for CleanupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.readers_active > 0 {
            parts.push(format!("{} reader(s) still inside", self.readers_active));
        }
        if self.callbacks_pending > 0 {
            parts.push(format!(
                "{} callback(s) pending (missed barrier)",
                self.callbacks_pending
            ));
        }
        if self.grace_period_in_flight {
            parts.push("a grace period in flight".to_owned());
        }
        write!(
            f,
            "cannot clean up SRCU domain: {}; its state was leaked",
            parts.join(", ")
        )
    }
}

impl std::error::Error for CleanupError {}

/// How long a cleanup with nothing but a grace period in flight waits for
/// it to end before it leaks the state after all.
const FINISH_GRACE_PERIODS_WITHIN: std::time::Duration = std::time::Duration::from_millis(100);

/// The runtime side of cleanup: check, then free or warn and leak.
/// Returns `CleanupError` bits (0: freed).
///
/// # Safety
/// Nobody else uses `s` concurrently (see `Srcu::cleanup`).
pub(crate) unsafe fn cleanup_in_runtime(s: &Srcu) -> u32 {
    let Some(st) = crate::runtime::attached_state(s) else {
        return 0;
    };
    let readers = st.readers_inside();
    let pending = st.cbs.pending() as usize;
    let mut in_flight = st.gp_in_flight();
    if readers == 0 && pending == 0 && in_flight && !crate::runtime::serving_domain(st) {
        // A grace period someone gave up waiting for: finish it here
        // rather than leak the state (`DomainState::finish_grace_periods`).
        in_flight = !st.finish_grace_periods(FINISH_GRACE_PERIODS_WITHIN);
    }
    if readers == 0 && (pending > 0 || in_flight) && crate::runtime::serving_domain(st) {
        // From inside one of its own callbacks (the last `Arc<Srcu>`
        // dropped by it): its remaining callbacks, this one among them,
        // will run; the runtime releases the state after them.
        crate::attach::detach(s.state_word(), s.percpu_word());
        let p = s.take_private();
        // SAFETY: detached above: the domain no longer points at the state,
        // and no reader is inside (contract: none may enter).
        unsafe { crate::runtime::orphan_state(p, !s.is_dynamic()) };
        return 0;
    }
    if readers == 0 && pending == 0 && !in_flight {
        let pc = crate::attach::detach(s.state_word(), s.percpu_word());
        debug_assert!(!pc.is_null());
        let p = s.take_private();
        // SAFETY: detached above, so the domain no longer points at the
        // state; no reader is inside and none may enter (contract).
        unsafe { crate::runtime::release_state(p) };
        return 0;
    }
    let name = s.name();
    // `pending` counts the markers of timed-out barriers too; the report
    // names callbacks only. A marker waits for no grace period (cookie 0),
    // a callback for one (cookie >= 2). At least 1 while anything is
    // pending: the cleanup is refused and the error must say so.
    let pending = if pending > 0 {
        let mut callbacks = 0usize;
        st.cbs.for_each_pending(|it| callbacks += usize::from(it.cookie != 0));
        callbacks.max(1)
    } else {
        0
    };
    if pending > 0 {
        diagnostics::warn(
            WarningKind::MissedBarrier,
            name,
            format!("usrcu: domain '{name}': {pending} callback(s) still pending at cleanup: forgot barrier(), so leaking its state"),
        );
    }
    if readers != 0 {
        diagnostics::warn(
            WarningKind::ReadersActive,
            name,
            format!("usrcu: domain '{name}': {readers} reader(s) still inside at cleanup: leaking its state"),
        );
    }
    if in_flight {
        diagnostics::warn(
            WarningKind::GracePeriodInFlight,
            name,
            format!("usrcu: domain '{name}': grace period in flight at cleanup: leaking its state"),
        );
    }
    diagnostics::warn(
        WarningKind::Leak,
        name,
        format!(
            "usrcu: domain '{name}': per-CPU state of {} possible CPU(s) ({} byte(s), {} chunk(s) allocated) leaked, not freed",
            st.possible_cpus(),
            st.pc.bytes(),
            st.pc.chunks_touched()
        ),
    );
    CleanupError {
        readers_active: readers.unsigned_abs().max(usize::from(readers != 0)),
        callbacks_pending: pending,
        grace_period_in_flight: in_flight,
    }
    .to_bits()
}
