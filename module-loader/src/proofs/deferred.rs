//! Deferred work, the last look before the object is closed: nothing of
//! the object is queued or running in any flavor of the process, and no
//! hook slot points into it.
//!
//! The earlier steps drain each kind of work once: the SRCU notifier
//! (`callbacks.rs`) each static domain and the runtime's inventory, the
//! probe notifier Tasks and Tasks Trace, the hook-slot step the slots. But
//! work of the object hops: an SRCU callback of the plugin that a drain
//! runs queues a Tasks Trace callback; a Tasks Trace callback queues
//! another; a plugin thread that `exit` told to stop (the threads proof
//! waits for it) queues a callback, or fills a hook slot, on its way out,
//! after every drain. Unmapped under such work, the host dies of `SIGSEGV`
//! when it runs (`tests/tests/redteam2_deferred_work.rs`). So this proof,
//! after the threads proof, repeats until a snapshot finds nothing, within
//! the unload's deadline:
//!
//! 1. hook slots pointing into the object are emptied again, and a Tasks
//!    grace period waited for if one was (`hook_slots::clear_again`);
//! 2. a bounded wait until no Tasks Trace or Tasks callback of the object
//!    is queued or running (not a barrier of each flavor, which would wait
//!    for a host callback that blocks), then a bounded drain of the SRCU
//!    callbacks whose code, head or domain lies in the object
//!    (`usrcu::runtime::inventory::drain`);
//! 3. one snapshot of all three flavors (`inventory::deferred`): callbacks
//!    queued or running whose function or argument lies in the object,
//!    and readers inside its domains. It holds the Tasks Trace and Tasks
//!    engines' locks while it walks SRCU, so a hop into or out of those
//!    flavors cannot slip between the looks; within SRCU it holds the
//!    invokers at their next callback while it walks, and counts the one
//!    callback per domain that may be running, so a hop between two SRCU
//!    domains cannot slip between the walks of the two
//!    (`srcu/tests/deferred_hops.rs`);
//! 4. after the snapshot, hook slots are emptied again and (unless
//!    `LoaderConfig::remove_probes` is off) tracepoint probes of the object
//!    detached again, with their grace periods: plugin code that step 2 ran
//!    may have filled a slot or attached a probe. The round succeeds only
//!    if the snapshot was idle and step 4 found nothing.
//!
//! If the deadline passes first, the module stays mapped as a Zombie that
//! names what is left: `CallbacksInObject` with the domain (or
//! `usrcu::trace` / `usrcu::tasks`), or `HooksBusy` for a hook slot whose
//! grace period did not complete. A retry runs the same loop.
//!
//! Cost when nothing is left: two barriers that return at once, an
//! inventory walk, the snapshot, a hook-slot look and a probe look, once:
//! 1.4 µs median per unload (`cargo run --release -p usrcu-benches
//! --example unload_phases`, step "unload: proof: deferred", on the 2-vCPU
//! development VM, 2026-12-02, while a CI run shared the machine).
//! The reload soak (`cargo run --release -p usrcu-tests --bin
//! usrcu-soak -- --cycles 1000 --seed 20261202`) passed with it, RSS +388 KiB.

use std::ops::Range;
use std::time::{Duration, Instant};

use usrcu::runtime::inventory as rt;

use super::{Proof, UnloadCx};
use crate::report::ZombieCause;

/// See the module documentation.
pub(crate) struct Deferred;

impl Proof for Deferred {
    fn prove(&self, cx: &mut UnloadCx<'_>) -> Result<(), ZombieCause> {
        let ranges: Vec<Range<usize>> = cx.objects.iter().flat_map(|o| o.segments.iter().cloned()).collect();
        let mut nap = Duration::from_micros(50);
        loop {
            let (_, hooks_done) = crate::hook_slots::clear_again(&ranges, cx.deadline, cx.report);
            if !hooks_done {
                return Err(ZombieCause::HooksBusy);
            }
            // Bounded, and only the object's: a host callback that blocks
            // does not hold the unload up; the snapshot below says what is
            // still there.
            super::wait_flavor_callbacks_gone(&ranges, cx.deadline);
            let _ = rt::drain(&ranges, cx.time_left());
            let snap = rt::deferred(&ranges);
            // After the snapshot: plugin code that this round's drains ran
            // (or a hook of the object a host thread called) may have filled
            // a hook slot or attached a probe. Once the snapshot is idle and
            // these find nothing, no code of the object runs any more.
            let (cleared, hooks_done) = crate::hook_slots::clear_again(&ranges, cx.deadline, cx.report);
            if !hooks_done {
                return Err(ZombieCause::HooksBusy);
            }
            let mut probes = 0;
            if cx.config.remove_probes {
                let (removed, complete) =
                    usrcu_registry::tracepoint::remove_probes_in_within(&|a| cx.contains(a), cx.time_left(), false);
                probes = removed.len();
                cx.report.probes_removed.extend(removed);
                if !complete {
                    return Err(ZombieCause::ProbesInUse);
                }
            }
            if snap.is_idle() && cleared == 0 && probes == 0 {
                return Ok(());
            }
            if Instant::now() >= cx.deadline {
                return Err(cause(&snap));
            }
            std::thread::sleep(nap.min(cx.time_left()));
            nap = (nap * 2).min(Duration::from_millis(5));
        }
    }
}

/// The Zombie cause a snapshot names: the first busy domain of the object,
/// else the flavor with callbacks left.
fn cause(snap: &rt::Deferred) -> ZombieCause {
    let busy = snap
        .srcu
        .domains
        .iter()
        .find(|d| d.readers != 0 || d.callbacks_pending != 0);
    if let Some(d) = busy {
        return ZombieCause::CallbacksInObject {
            domain: d.name.clone(),
            callbacks: d.callbacks_pending.max(snap.srcu.callbacks),
            readers: d.readers,
        };
    }
    let (domain, callbacks) = if snap.srcu.callbacks > 0 {
        (
            snap.srcu.holding.first().map_or("", String::as_str),
            snap.srcu.callbacks,
        )
    } else if snap.trace_callbacks > 0 {
        ("usrcu::trace", snap.trace_callbacks)
    } else {
        ("usrcu::tasks", snap.tasks_callbacks)
    };
    ZombieCause::CallbacksInObject {
        domain: domain.to_owned(),
        callbacks,
        readers: 0,
    }
}
