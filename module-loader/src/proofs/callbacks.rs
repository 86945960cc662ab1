//! Callbacks whose code or data lies in the object: once it is unmapped, a
//! runtime thread running one would jump into nothing.
//!
//! # What is proven today
//!
//! For every static domain the object lists (its `define_static_srcu!`
//! slice), the built-in SRCU notifier: `barrier` if `call_srcu` was used
//! (skipped otherwise: the `call_srcu_used` gate), then `cleanup`, which
//! refuses while callbacks are pending, readers are inside or a grace period
//! is in flight. A dynamic domain of the plugin that was dropped without its
//! barrier while the module was going leaves a missed-barrier warning, which
//! keeps the object mapped.
//!
//! # What the runtime's inventory adds
//!
//! Callbacks on domains the object does *not* list (a plain
//! `static X: Srcu = Srcu::new_static(..)`, a dynamic domain kept in a
//! `static`, a host domain given a plugin closure) are invisible above. The
//! runtime owns every queued callback and every domain state, so it can
//! answer by address: [`Inventory`] is that answer, and [`inventory`] is the
//! adapter to it. Until the runtime exports its query
//! (`usrcu::runtime::inventory`), the adapter reports that it cannot see
//! beyond the listed domains ([`Inventory::unavailable`]) and the proof rests
//! on the notifier above; the switch is this one function.

use std::ops::Range;
use std::time::{Duration, Instant};

use usrcu::Srcu;

use super::{Proof, UnloadCx};
use crate::report::{BarrierOutcome, DomainReport, ZombieCause};

/// See the module documentation.
pub(crate) struct Callbacks;

impl Proof for Callbacks {
    fn prove(&self, cx: &mut UnloadCx<'_>) -> Result<(), ZombieCause> {
        // A dynamic domain's callbacks cannot be seen to have drained: a cause
        // of that kind from an earlier attempt stays. Busy static domains are
        // checked again below.
        let mut cause: Option<ZombieCause> = crate::lock(&cx.module.zombie_cause)
            .clone()
            .filter(|c| matches!(c, ZombieCause::DynamicDomainMissedBarrier { .. }));
        for (i, dp) in cx.module.domains.iter().enumerate() {
            // SAFETY: the object is mapped for the whole unload.
            let d = unsafe { dp.get() };
            let stuck = cx.readers_stuck.contains(&i);
            let r = srcu_notifier(d, cx.config.auto_barrier, stuck);
            if cause.is_none() {
                if let Err(error) = r.cleanup {
                    cause = Some(ZombieCause::DomainBusy {
                        domain: r.name.clone(),
                        error,
                    });
                }
            }
            cx.report.domains.push(r);
        }
        if cause.is_none() {
            cause = cx
                .suspects
                .drain(..)
                .next()
                .map(|w| ZombieCause::DynamicDomainMissedBarrier { domain: w.domain });
        }
        if let Some(c) = cause {
            return Err(c);
        }
        let ranges: Vec<Range<usize>> = cx.objects.iter().flat_map(|o| o.segments.iter().cloned()).collect();
        match inventory::drain(&ranges, cx.time_left()) {
            Ok(()) => Ok(()),
            Err(inv) if inv.unavailable => Ok(()),
            Err(inv) => Err(inv.cause()),
        }
    }
}

/// The built-in SRCU notifier for one static domain (the kernel's
/// `srcu_module_going`, plus the barrier the kernel never adopted).
fn srcu_notifier(d: &Srcu, auto_barrier: bool, readers_stuck: bool) -> DomainReport {
    let t0 = Instant::now();
    let before = d.stats();
    let used = d.call_srcu_used();
    let barrier = if !auto_barrier {
        BarrierOutcome::Disabled
    } else if !used {
        // Returns at once and counts the skip in the domain's stats.
        d.barrier();
        BarrierOutcome::Skipped
    } else if readers_stuck {
        // A barrier would wait for those readers forever.
        BarrierOutcome::ReadersStuck
    } else {
        d.barrier();
        BarrierOutcome::Issued
    };
    let after = d.stats();
    // SAFETY: no new reader can enter: the module's code cannot be called any
    // more (it is `Going` and calls have drained), and the host holds no
    // reference to its domains beyond this loader.
    let cleanup = unsafe { d.cleanup() };
    DomainReport {
        name: d.name().to_owned(),
        possible_cpus: after.possible_cpus,
        call_srcu_used: used,
        barrier,
        slots_scanned: after.slots_scanned.saturating_sub(before.slots_scanned),
        callbacks_queued: after.callbacks_queued,
        callbacks_invoked: after.callbacks_invoked,
        cleanup,
        elapsed: t0.elapsed(),
    }
}

/// What the runtime holds that lies in a set of address ranges, as its
/// inventory query (`usrcu::runtime::inventory::query`) answers it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Inventory {
    /// The runtime cannot answer (its query is not there): nothing is known
    /// beyond the listed domains.
    pub(crate) unavailable: bool,
    /// Queued or running callbacks whose function, head or domain lies in
    /// the ranges.
    pub(crate) callbacks: usize,
    /// Domains created by code in the ranges, or whose struct lies in them,
    /// that are still busy: (name, readers, callbacks pending).
    pub(crate) domains: Vec<(String, isize, usize)>,
}

impl Inventory {
    /// The adapter's answer while the runtime has no inventory query.
    pub(crate) fn unavailable() -> Inventory {
        Inventory {
            unavailable: true,
            ..Inventory::default()
        }
    }

    /// The Zombie cause this inventory names.
    pub(crate) fn cause(&self) -> ZombieCause {
        match self.domains.first() {
            Some((name, readers, pending)) => ZombieCause::CallbacksInObject {
                domain: name.clone(),
                callbacks: (*pending).max(self.callbacks),
                readers: *readers,
            },
            None => ZombieCause::CallbacksInObject {
                domain: String::new(),
                callbacks: self.callbacks,
                readers: 0,
            },
        }
    }
}

/// The adapter to the runtime's inventory by address. One function to
/// switch when `usrcu::runtime::inventory` lands: `query` and `drain` map
/// one to one onto it (`DomainUse { name, readers, callbacks_pending, .. }`
/// becomes `(name, readers, callbacks_pending)`).
pub(crate) mod inventory {
    use super::*;

    /// Everything the runtime holds in `ranges`.
    #[allow(dead_code)] // used once the runtime's query lands
    pub(crate) fn query(_ranges: &[Range<usize>]) -> Inventory {
        Inventory::unavailable()
    }

    /// Drain what the runtime holds in `ranges` within `timeout`, or say
    /// what is left.
    pub(crate) fn drain(_ranges: &[Range<usize>], _timeout: Duration) -> Result<(), Inventory> {
        Err(Inventory::unavailable())
    }
}
