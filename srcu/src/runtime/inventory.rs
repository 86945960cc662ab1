//! Inventory by address: what the runtime holds that lies in an address
//! range, and a bounded drain of exactly that.
//!
//! A plugin loader asks, before it unmaps an object: is any callback queued
//! or running (on *any* domain: the plugin's listed or unlisted statics,
//! its dynamic domains, the host's) whose function, whose callback head, or
//! whose domain lies in the object? Are readers inside a domain of the
//! object? The runtime owns every domain state and every queued callback,
//! so it answers from what the process holds, not from what the plugin
//! declared.
//!
//! A boxed `call_srcu` closure runs through a trampoline monomorphised in
//! the copy of this crate that queued it, so its function lies in the
//! plugin when plugin code queued it. A closure queued by host code that
//! merely calls into the plugin is not seen: the host must not do that.
//!
//! ```
//! use usrcu::{runtime::inventory, Srcu};
//! static D: Srcu = Srcu::new_static("inventory-doc");
//! D.call_srcu(|| {});
//! let here = &D as *const Srcu as usize;
//! let found = inventory::query(&[here..here + std::mem::size_of::<Srcu>()]);
//! assert_eq!(found.domains.len(), 1);
//! D.barrier();
//! assert_eq!(inventory::query(&[here..here + 1]).callbacks, 0);
//! ```

use super::state::{registered, DomainState};
use std::ops::Range;
use std::time::{Duration, Instant};

/// What lies in the ranges asked about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Callbacks (any domain) queued or running whose function, callback
    /// head, or domain lies in one of the ranges.
    pub callbacks: usize,
    /// Attached domains whose `Srcu` lies in one of the ranges, or that were
    /// created by code of a copy of this crate that does.
    pub domains: Vec<DomainUse>,
}

/// One domain of the ranges, and what still uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainUse {
    /// The domain's name.
    pub name: String,
    /// Address of its `Srcu`.
    pub addr: usize,
    /// Readers inside a section now.
    pub readers: isize,
    /// Callbacks queued on it and not yet finished.
    pub callbacks_pending: usize,
    /// Has `call_srcu` been used on it since its state was attached?
    pub call_srcu_used: bool,
    /// A grace period running or requested.
    pub grace_period_in_flight: bool,
}

impl Inventory {
    /// Nothing runs code of, or reads through, the ranges.
    pub fn is_idle(&self) -> bool {
        self.callbacks == 0 && self.domains.iter().all(|d| d.readers == 0 && d.callbacks_pending == 0)
    }
}

fn inside(ranges: &[Range<usize>], a: usize) -> bool {
    ranges.iter().any(|r| r.contains(&a))
}

fn owned_by(st: &DomainState, ranges: &[Range<usize>]) -> bool {
    inside(ranges, st.srcu) || inside(ranges, st.origin)
}

/// What the runtime holds in `ranges`. Cheap when nothing is pending: a
/// domain with no pending callback is not walked.
pub fn query(ranges: &[Range<usize>]) -> Inventory {
    let mut inv = Inventory::default();
    for st in registered() {
        let pending = st.cbs.pending() as usize;
        if owned_by(&st, ranges) {
            inv.callbacks += pending;
            // The domain struct itself may be gone (a dynamic domain dropped
            // with work pending leaks its state): ask the state only.
            let used = st.cbs.queued_callbacks() > 0;
            inv.domains.push(DomainUse {
                name: st.name.clone(),
                addr: st.srcu,
                readers: st.readers_inside(),
                callbacks_pending: pending,
                call_srcu_used: used,
                grace_period_in_flight: st.gp_in_flight(),
            });
        } else if pending > 0 {
            st.cbs.for_each_pending(|it| {
                if inside(ranges, it.func as usize) || inside(ranges, it.head as usize) {
                    inv.callbacks += 1;
                }
            });
        }
    }
    inv
}

/// Wait until no callback in `ranges` is queued or running, for at most
/// `timeout`; on time-out, what is still there. Grace periods and
/// invocations are driven by the runtime meanwhile; readers are not waited
/// for (see [`Inventory::domains`]).
pub fn drain(ranges: &[Range<usize>], timeout: Duration) -> Result<(), Inventory> {
    // None: a timeout past what an `Instant` can hold (`Duration::MAX`)
    // waits without limit instead of overflowing.
    let deadline = Instant::now().checked_add(timeout);
    let mut sleep = Duration::from_micros(20);
    loop {
        let inv = query(ranges);
        if inv.callbacks == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let left = match deadline {
            Some(d) if now >= d => return Err(inv),
            Some(d) => d - now,
            None => Duration::MAX,
        };
        // Make sure every domain with pending callbacks is being driven.
        for st in registered() {
            if st.cbs.pending() > 0 {
                super::driver::kick_fenced(&st);
            }
        }
        std::thread::sleep(sleep.min(left));
        sleep = (sleep * 2).min(Duration::from_millis(5));
    }
}

/// Attached domains in the process (for diagnostics and tests).
pub fn domains_attached() -> usize {
    registered().len()
}

/// Threads the runtime runs: the grace-period driver and the invokers.
pub fn runtime_thread(tid_name: &str) -> bool {
    tid_name.starts_with("usrcu-gp") || tid_name.starts_with("usrcu-cb-")
}
