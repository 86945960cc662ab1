//! Stall warnings: a grace period that waits for readers longer than the
//! domain's stall timeout is reported, then again at each doubling.

use super::state::DomainState;
use crate::diagnostics::{self, Warning, WarningKind};
use crate::grace_period::GpHooks;
use crate::stats::Counters;
use crate::sync::Ordering;
use std::time::{Duration, Instant};

impl GpHooks for DomainState {
    fn scanned(&self, slots: usize, nanos: u64) {
        Counters::add(&self.stats.slots_scanned, slots as u64);
        Counters::add(&self.stats.scan_nanos, nanos);
    }

    fn waiting(&self, waited_ms: u64) {
        // A caller's wait may span several grace periods (one in progress
        // when it came, then its own): count only the one in progress, so a
        // stall already reported and cleared is not reported again on the
        // next grace period after the readers left.
        let Some((seq, blocked)) = self.blocked_gp() else {
            return;
        };
        let waited_ms = waited_ms.min(blocked.as_millis() as u64);
        {
            let mut next = crate::sync::lock(&self.next_stall);
            if next.0 != seq {
                *next = (seq, self.stall_timeout_ms);
            }
            if waited_ms < next.1 {
                return;
            }
            next.1 = next.1.saturating_mul(2);
        }
        let oldest = super::readers::oldest(self as *const DomainState as usize);
        let who = match &oldest {
            Some(r) => format!(
                "; oldest reader: thread {} ({}) since {:?} at {}",
                r.tid, r.thread_name, r.held_for, r.location
            ),
            None => String::from("; reader locations are tracked in debug builds only"),
        };
        diagnostics::emit(Warning {
            kind: WarningKind::Stall,
            domain: self.name.clone(),
            message: format!(
                "usrcu: grace-period stall on domain '{}': waited {} ms for readers{}",
                self.name, waited_ms, who
            ),
            oldest_reader: oldest,
            tid: diagnostics::current_tid(),
        });
    }

    fn completed(&self) {
        // Under the driver lock (`GpState::end`), the only writer of these
        // two counters.
        Counters::add_locked(&self.stats.grace_periods, 1);
        // Relaxed: a statistic. Runs under the driver lock right after the
        // sequence increment that ended this grace period, so `seq_now` is
        // its end value, the cookie its waiters hold.
        if self.stats.expedite_upto.load(Ordering::Relaxed) >= self.gp.seq_now() {
            Counters::add_locked(&self.stats.expedited_grace_periods, 1);
        }
    }

    fn blocked(&self) {
        let seq = self.gp.seq_now();
        let mut b = crate::sync::lock(&self.blocked_since);
        if b.is_none_or(|(s, _)| s != seq) {
            *b = Some((seq, Instant::now()));
        }
    }
}

impl DomainState {
    /// How long the grace period in progress has been held up by readers:
    /// since a scan first found them; `None` if none has (or it completed).
    pub(super) fn blocked_for(&self) -> Option<Duration> {
        self.blocked_gp().map(|(_, d)| d)
    }

    /// The grace period in progress (its sequence value) and how long
    /// readers have held it up, if a scan has found them.
    fn blocked_gp(&self) -> Option<(u64, Duration)> {
        let seq = self.gp.seq_now();
        let since = *crate::sync::lock(&self.blocked_since);
        since.and_then(|(s, t)| (s == seq).then(|| (s, t.elapsed())))
    }

    /// The driver found readers: report a stall once the wait is long.
    pub(super) fn driver_waiting(&self) {
        let waited = self.blocked_for().unwrap_or_default();
        self.waiting(waited.as_millis() as u64);
    }
}
