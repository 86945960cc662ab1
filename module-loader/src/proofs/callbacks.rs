//! Callbacks whose code or data lies in the object: once it is unmapped, a
//! runtime thread running one would jump into nothing.
//!
//! # What is proven today
//!
//! For every `static` domain *of the object*: those it lists (its
//! `define_static_srcu!` slice) and every other one — a plain
//! `static X: Srcu = Srcu::new_static(..)` that the slice does not list —
//! found among its symbols (`crate::elf_facts`: data symbols the size of a
//! `Srcu`) by their `#[repr(C)]` header (magic and layout version, 64 bits)
//! and their runtime pointer (the host's, exactly):
//! `barrier` if `call_srcu` was used (skipped otherwise: the `call_srcu_used`
//! gate), then `cleanup`, which refuses while callbacks are pending, readers
//! are inside or a grace period is in flight. The barrier is bounded by the
//! unload's budget: it runs on a helper thread, and if it does not return in
//! time the object stays a Zombie naming the domain, and stays mapped at
//! least until that barrier has returned. A dynamic domain of the plugin
//! that was dropped without its barrier while the module was going leaves a
//! missed-barrier warning, which keeps the object mapped.
//!
//! Domains inside other statics are *not* taken from a search of memory:
//! a `Srcu` is a value that moves, and the bytes it leaves behind (an
//! `Option<Srcu>` taken out of a `static`) still look like a domain whose
//! state is freed; using one would be a use-after-free. Only the runtime can
//! tell a live domain from its ghost.
//!
//! # What the runtime's inventory adds
//!
//! Callbacks whose domain does not lie in the object (a host domain given a
//! plugin closure, a plugin domain on the heap behind a `static` pointer)
//! and dynamic domains in the object (one kept in a `static LazyLock`) are
//! invisible above. The runtime owns every queued callback and every
//! domain state, so it answers by address (`usrcu::runtime::inventory`):
//! after the above, the proof drains what it still holds in the object's
//! ranges, bounded by the rest of the budget, and requires no reader inside
//! a domain of the object; [`inventory`] is the adapter.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use usrcu::{CleanupError, Srcu, SRCU_LAYOUT_VERSION, SRCU_MAGIC};

use super::{test_switch, Proof, UnloadCx};
use crate::module::{DomainPtr, Module};
use crate::report::{BarrierOutcome, DomainReport, ZombieCause};

/// See the module documentation.
pub(crate) struct Callbacks;

impl Proof for Callbacks {
    fn prove(&self, cx: &mut UnloadCx<'_>) -> Result<(), ZombieCause> {
        // A dynamic domain's callbacks cannot be seen to have drained: a cause
        // of that kind from an earlier attempt stays. Busy domains are
        // checked again below.
        let previous = crate::lock(&cx.module.zombie_cause).clone();
        let mut cause = previous
            .clone()
            .filter(|c| matches!(c, ZombieCause::DynamicDomainMissedBarrier { .. }));
        // A barrier that gave up earlier may still run on its helper thread,
        // inside a domain of the object: nothing else may touch them yet.
        // A retry soon after the callbacks ran finds it about to return:
        // wait for it within the budget rather than fail at once.
        if cause.is_none() && !cx.module.barriers_in_flight.wait_none(cx.deadline) {
            return Err(previous.unwrap_or(ZombieCause::CallbacksInObject {
                domain: String::new(),
                callbacks: 0,
                readers: 0,
            }));
        }
        let unlisted = if test_switch::skipped("unlisted-domains") {
            Vec::new()
        } else {
            unlisted_statics(&cx.module.srcu_statics, &cx.module.domains)
        };
        // Tasks Trace and Tasks callbacks the plugin queued before the
        // unload may enter its static domains: let them run before those
        // domains are cleaned up (bounded; what a timed-out barrier leaves
        // is the deferred proof's). Without this, such a callback raced the
        // cleanup below: a refused cleanup (readers inside), or a reader in
        // the state the cleanup freed (`loader_rseq_unload.rs`, the trace
        // callback test, seen aborting in `ChunkTable::get_or_alloc`).
        // Test switch `cleanup-barriers` (tests only).
        if !test_switch::skipped("cleanup-barriers") {
            let ranges: Vec<std::ops::Range<usize>> =
                cx.objects.iter().flat_map(|o| o.segments.iter().cloned()).collect();
            super::wait_flavor_callbacks_gone(&ranges, cx.deadline);
        }
        let listed = cx.module.domains.len();
        for (i, dp) in cx.module.domains.iter().chain(&unlisted).enumerate() {
            // SAFETY: the object is mapped for the whole unload, and listed
            // or found domains lie in it.
            let d = unsafe { dp.get() };
            let stuck = i < listed && cx.readers_stuck.contains(&i);
            // Count the scans since the barrier before `exit` too.
            let base = crate::lock(&cx.module.scan_base)
                .iter()
                .find(|(a, _)| *a == dp.0 as usize)
                .map(|&(_, b)| b);
            let r = srcu_notifier(d, cx, stuck, base);
            if cause.is_none() {
                cause = match (r.barrier, r.cleanup) {
                    (BarrierOutcome::TimedOut, Err(e)) => Some(ZombieCause::CallbacksInObject {
                        domain: r.name.clone(),
                        callbacks: e.callbacks_pending,
                        readers: 0,
                    }),
                    (_, Err(error)) => Some(ZombieCause::DomainBusy {
                        domain: r.name.clone(),
                        error,
                    }),
                    _ => None,
                };
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
        if test_switch::skipped("inventory") {
            return Ok(());
        }
        let ranges: Vec<Range<usize>> = cx.objects.iter().flat_map(|o| o.segments.iter().cloned()).collect();
        match inventory::drain(&ranges, cx.time_left()) {
            Ok(()) => Ok(()),
            Err(inv) => Err(inv.cause()),
        }
    }
}

/// Before `exit`: a bounded barrier on every domain of the object that used
/// `call_srcu`, so that callbacks queued before `exit` have run before it
/// tears down what they use. A barrier that does not return by `deadline`
/// (or readers that keep it waiting) keeps the module a Zombie naming the
/// domain, with `exit` not yet run.
pub(crate) fn drain_before_exit(m: &Module, auto_barrier: bool, deadline: Instant) -> Result<(), ZombieCause> {
    if !auto_barrier {
        return Ok(());
    }
    let unlisted = if test_switch::skipped("unlisted-domains") {
        Vec::new()
    } else {
        unlisted_statics(&m.srcu_statics, &m.domains)
    };
    // A barrier an earlier attempt gave up on may still run. A retry soon
    // after its callbacks ran finds it about to return: wait for it within
    // the budget rather than fail at once (`redteam_loader_unload_all.rs`,
    // seen failing in CI and in its test with no wait here).
    if !m.barriers_in_flight.wait_none(deadline) {
        return Err(crate::lock(&m.zombie_cause)
            .clone()
            .unwrap_or(ZombieCause::CallbacksInObject {
                domain: String::new(),
                callbacks: 0,
                readers: 0,
            }));
    }
    let mut base = crate::lock(&m.scan_base);
    base.clear();
    for dp in m.domains.iter().chain(&unlisted) {
        // SAFETY: the object is mapped for the whole unload.
        let d = unsafe { dp.get() };
        base.push((dp.0 as usize, d.stats().slots_scanned));
        if d.call_srcu_used()
            && !bounded_barrier(
                d,
                deadline.saturating_duration_since(Instant::now()),
                &m.barriers_in_flight,
            )
        {
            let s = d.stats();
            return Err(ZombieCause::CallbacksInObject {
                domain: d.name().to_owned(),
                callbacks: s.callbacks_queued.saturating_sub(s.callbacks_invoked) as usize,
                readers: 0,
            });
        }
    }
    Ok(())
}

/// The object's `static` domains (data symbols the size of a `Srcu`, see
/// `crate::elf_facts`) that it does not list and that run on the host's
/// runtime (a domain never used has no runtime pointer, and no callbacks).
fn unlisted_statics(statics: &[usize], listed: &[DomainPtr]) -> Vec<DomainPtr> {
    let host = usrcu::runtime::host_vtable() as *const _;
    let mut found = Vec::new();
    for &a in statics {
        if a % std::mem::align_of::<Srcu>() != 0 || listed.iter().any(|d| d.0 as usize == a) {
            continue;
        }
        // SAFETY: an aligned word of a mapped writable segment of the object
        // (a symbol of it); read atomically since other threads may write
        // it. Relaxed: a candidate only; what it is is checked below.
        let w = unsafe { (*(a as *const AtomicU64)).load(Ordering::Relaxed) };
        if w != srcu_header() {
            continue;
        }
        let dp = DomainPtr(a as *const Srcu);
        // SAFETY: a `static` of the object of `Srcu`'s size that starts with
        // the 64-bit header of a `Srcu` of our layout: one of its domains.
        if unsafe { dp.get() }.runtime_ptr() == host {
            found.push(dp);
        }
    }
    found
}

/// The first 8 bytes of every `Srcu` of this layout.
fn srcu_header() -> u64 {
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&SRCU_MAGIC.to_ne_bytes());
    header[4..].copy_from_slice(&SRCU_LAYOUT_VERSION.to_ne_bytes());
    u64::from_ne_bytes(header)
}

/// The built-in SRCU notifier for one domain of the object (the kernel's
/// `srcu_module_going`, plus the barrier the kernel never adopted), bounded
/// by the unload's budget.
fn srcu_notifier(d: &Srcu, cx: &UnloadCx<'_>, readers_stuck: bool, scan_base: Option<u64>) -> DomainReport {
    let t0 = Instant::now();
    let before = d.stats();
    let used = d.call_srcu_used();
    let barrier = if !cx.config.auto_barrier {
        BarrierOutcome::Disabled
    } else if !used {
        // Returns at once and counts the skip in the domain's stats.
        d.barrier();
        BarrierOutcome::Skipped
    } else if readers_stuck {
        // A barrier would wait for those readers forever.
        BarrierOutcome::ReadersStuck
    } else if !bounded_barrier(d, cx.time_left(), &cx.module.barriers_in_flight) {
        BarrierOutcome::TimedOut
    } else if d.stats().barriers_issued > before.barriers_issued {
        BarrierOutcome::Issued
    } else {
        // On a runtime thread `barrier` returns at once without counting
        // itself as issued (see `Srcu::barrier`); report that, not Issued.
        BarrierOutcome::ReturnedEarly
    };
    let after = d.stats();
    let cleanup = if barrier == BarrierOutcome::TimedOut {
        // The barrier still runs on its helper thread: cleanup would race it.
        Err(CleanupError {
            readers_active: 0,
            callbacks_pending: after.callbacks_queued.saturating_sub(after.callbacks_invoked) as usize,
            grace_period_in_flight: false,
        })
    } else {
        // SAFETY: no new reader can enter: the module's code cannot be called
        // any more (it is `Going` and calls have drained), its SRCU callbacks
        // ran (the barrier above) and its Tasks Trace and Tasks callbacks
        // queued so far ran (`prove`, before this loop), and the host holds
        // no reference to its domains beyond this loader. Not covered: a
        // plugin thread still running (the threads proof comes later) or
        // work that hops between flavors after these barriers (see
        // docs/abi.md, step 7).
        unsafe { d.cleanup() }
    };
    DomainReport {
        name: d.name().to_owned(),
        possible_cpus: after.possible_cpus,
        call_srcu_used: used,
        barrier,
        slots_scanned: after
            .slots_scanned
            .saturating_sub(scan_base.unwrap_or(before.slots_scanned)),
        callbacks_queued: after.callbacks_queued,
        callbacks_invoked: after.callbacks_invoked,
        cleanup,
        elapsed: t0.elapsed(),
    }
}

/// `barrier` on `d`, given up after `timeout`. With nothing pending it runs
/// here; otherwise on a helper thread, counted in `in_flight` until it
/// returns (the object must stay mapped until then). True if it returned.
fn bounded_barrier(d: &Srcu, timeout: Duration, in_flight: &Arc<InFlight>) -> bool {
    let s = d.stats();
    if s.callbacks_queued == s.callbacks_invoked {
        d.barrier();
        return true;
    }
    let (tx, rx) = mpsc::channel();
    let p = d as *const Srcu as usize;
    in_flight.begin();
    let count = in_flight.clone();
    let job: Job = Box::new(move || {
        // SAFETY: the object stays mapped while `in_flight` counts this
        // barrier (the callbacks proof refuses to pass until it is 0).
        unsafe { &*(p as *const Srcu) }.barrier();
        count.end();
    });
    if let Err(job) = helpers::run(job, tx) {
        // No helper thread could be started: undo the count and report the
        // drain as not done (the object stays mapped).
        drop(job);
        in_flight.end();
        return false;
    }
    rx.recv_timeout(timeout).is_ok()
}

/// How many barriers on an object's domains still run on a helper thread
/// after a bounded drain gave up on them: the object stays mapped while any
/// does, and a retry waits (within its budget) for them to return.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    n: Mutex<usize>,
    returned: Condvar,
}

impl InFlight {
    fn begin(&self) {
        *crate::lock(&self.n) += 1;
    }

    fn end(&self) {
        let mut n = crate::lock(&self.n);
        *n -= 1;
        if *n == 0 {
            self.returned.notify_all();
        }
    }

    /// True once none is in flight; false if some still are at `deadline`.
    pub(crate) fn wait_none(&self, deadline: Instant) -> bool {
        let mut n = crate::lock(&self.n);
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = self.returned.wait_timeout(n, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

/// A barrier to run on a helper thread.
type Job = Box<dyn FnOnce() + Send>;

/// The threads that run bounded barriers: an idle one takes the job, or a
/// new one starts (a barrier that never returns keeps its thread, and only
/// it). Kept for the process, so that an unload with callbacks pending does
/// not start and end a thread each time.
mod helpers {
    use std::sync::{mpsc, Mutex};

    use super::Job;

    /// A job and where to say it is done.
    type Work = (Job, mpsc::Sender<()>);

    static IDLE: Mutex<Vec<mpsc::Sender<Work>>> = Mutex::new(Vec::new());

    /// Run `job` on a helper thread, then send on `done` (after the thread
    /// is idle again, so that the next barrier finds it); gives the job back
    /// if no thread could be started.
    pub(super) fn run(job: Job, done: mpsc::Sender<()>) -> Result<(), Job> {
        let idle = crate::lock(&IDLE).pop();
        let work = match idle {
            Some(tx) => match tx.send((job, done)) {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError(work)) => work,
            },
            None => (job, done),
        };
        let (tx, rx) = mpsc::channel::<Work>();
        let first = Mutex::new(Some(work));
        std::thread::Builder::new()
            .name("usrcu-unload-barrier".into())
            .spawn(move || {
                let mut next = crate::lock(&first).take();
                while let Some((job, done)) = next {
                    job();
                    crate::lock(&IDLE).push(tx.clone());
                    let _ = done.send(());
                    next = rx.recv().ok();
                }
            })
            .map(|_| ())
            // The job went with the failed spawn; the caller only needs to
            // know it did not run.
            .map_err(|_| Box::new(|| {}) as Job)
    }
}

/// What the runtime holds that lies in a set of address ranges, as its
/// inventory query (`usrcu::runtime::inventory::query`) answers it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Inventory {
    /// Queued or running callbacks whose function, head or domain lies in
    /// the ranges.
    pub(crate) callbacks: usize,
    /// Domains created by code in the ranges, or whose struct lies in them,
    /// that are still busy: (name, readers, callbacks pending).
    pub(crate) domains: Vec<(String, isize, usize)>,
    /// Other domains (the host's) holding callbacks of the ranges.
    pub(crate) holding: Vec<String>,
}

impl Inventory {
    /// The Zombie cause this inventory names.
    pub(crate) fn cause(&self) -> ZombieCause {
        match self.domains.first() {
            Some((name, readers, pending)) => ZombieCause::CallbacksInObject {
                domain: name.clone(),
                callbacks: (*pending).max(self.callbacks),
                readers: *readers,
            },
            // Callbacks of the object on a domain of the host's: named.
            None => ZombieCause::CallbacksInObject {
                domain: self.holding.first().cloned().unwrap_or_default(),
                callbacks: self.callbacks,
                readers: 0,
            },
        }
    }
}

/// The adapter to the runtime's inventory by address
/// (`usrcu::runtime::inventory`): `query` and `drain` map one to one onto
/// it, `DomainUse { name, readers, callbacks_pending, .. }` becoming
/// `(name, readers, callbacks_pending)`.
pub(crate) mod inventory {
    use super::*;
    use usrcu::runtime::inventory as rt;

    fn convert(inv: rt::Inventory) -> Inventory {
        Inventory {
            callbacks: inv.callbacks,
            domains: inv
                .domains
                .into_iter()
                .filter(|d| d.readers != 0 || d.callbacks_pending != 0)
                .map(|d| (d.name, d.readers, d.callbacks_pending))
                .collect(),
            holding: inv.holding,
        }
    }

    /// Everything the runtime holds in `ranges` that is not idle.
    pub(crate) fn query(ranges: &[Range<usize>]) -> Inventory {
        convert(rt::query(ranges))
    }

    /// Drain what the runtime holds in `ranges` within `timeout`, or say
    /// what is left; then no domain of the object may have readers inside.
    pub(crate) fn drain(ranges: &[Range<usize>], timeout: Duration) -> Result<(), Inventory> {
        rt::drain(ranges, timeout).map_err(convert)?;
        let left = query(ranges);
        if left.domains.is_empty() && left.callbacks == 0 {
            Ok(())
        } else {
            Err(left)
        }
    }
}
