//! Proofs of idleness: before a module is unmapped, every resource that
//! could still run its code or read its memory after `dlclose` is checked,
//! one file per row of the unload table in `docs/abi.md`.
//!
//! | proof       | what may still use the object                       | how it is known                          | if busy                    |
//! |-------------|-----------------------------------------------------|------------------------------------------|----------------------------|
//! | [`readers`] | readers inside a static domain of the object         | the domain's counters (a polled grace period) | bounded wait, then Zombie |
//! | [`callbacks`] | callbacks queued on the object's domains          | `call_srcu_used`, `barrier`, `cleanup`; missed-barrier warnings of dynamic domains | bounded drain, then Zombie |
//! | [`threads`] | threads whose start routine lies in the object       | glibc's thread list (`_thread_db_*` descriptors) | Zombie until they exit, named |
//! | [`deferred`] | work of the object that hopped after the drains: callbacks of any flavor queued or running, hook slots filled late | repeated bounded barriers and drains, then one snapshot of all three flavors (`usrcu::runtime::inventory::deferred`), until it is empty | bounded, then Zombie naming what is left |
//! | [`signals`] | signal handlers whose address lies in the object; the calling thread's alternate signal stack | `sigaction(sig, NULL, &old)` for signals 1..=`SIGRTMAX`; `sigaltstack(NULL, &old)` (the calling thread only) | Zombie naming the signal and handler (or the stack); nothing reset |
//! | [`interrupted`] | threads asleep in a signal handler that interrupted the object's code (a Tasks reader: a hook, a normal probe) | each blocked thread's stack pointer (`/proc/self/task/<tid>/syscall`), its stack searched for signal frames (the handlers' `sa_restorer`) whose saved context is in the object | bounded wait, a Tasks grace period after a clean scan, a scan again; then Zombie naming the threads |
//! | [`rseq`]    | threads whose `rseq->rseq_cs` points at a restartable-sequence descriptor in the object | each thread's `struct rseq` (glibc's thread list plus `__rseq_offset`), read with `process_vm_readv`; `membarrier(..._EXPEDITED_RSEQ)` to have running ones cleared | bounded wait, then Zombie naming the threads |
//! | [`keys`]    | pthread-key destructors in the object                | keys created through the loader's interposer, and glibc's key table | destructors retired after a grace period; keys deleted |
//!
//! Every proof looks at every range of the departing object *and* of the
//! libraries that were loaded together with it and that no other live
//! module uses ([`needed`]: a shared library is proven on the unload that
//! unmaps it, its last user's).
//!
//! Proofs run in the order of [`UNLOAD_PROOFS`]; the first that fails names
//! the cause and the module stays mapped as a `Zombie`. A proof that acts
//! (the key proof deletes keys) runs last, once everything else is idle.

use std::time::Instant;

use usrcu::diagnostics::Warning;

use crate::address_space::ObjectMapping;
use crate::loader::LoaderConfig;
use crate::module::Module;
use crate::report::{UnloadReport, ZombieCause};

pub(crate) mod callbacks;
pub(crate) mod deferred;
pub(crate) mod interrupted;
pub(crate) mod keys;
pub(crate) mod needed;
pub(crate) mod readers;
pub(crate) mod rseq;
pub(crate) mod signals;
pub(crate) mod threads;

/// What a proof works with: the module, everything it mapped, the report
/// being written, and the deadline of the whole unload.
pub(crate) struct UnloadCx<'a> {
    pub(crate) module: &'a Module,
    pub(crate) config: &'a LoaderConfig,
    /// The module's own object, then every library loaded together with it.
    pub(crate) objects: Vec<ObjectMapping>,
    pub(crate) report: &'a mut UnloadReport,
    /// Missed-barrier warnings emitted on this thread while the module's
    /// last hook ran (a dynamic domain of the plugin dropped without its
    /// barrier).
    pub(crate) suspects: Vec<Warning>,
    /// Indexes (in `module.domains`) of static domains whose readers did not
    /// leave in time.
    pub(crate) readers_stuck: Vec<usize>,
    /// The whole unload must be over by then.
    pub(crate) deadline: Instant,
    /// glibc's key table, as the loader's platform check found it.
    pub(crate) key_table: Option<crate::pthread_keys::KeyTable>,
}

impl UnloadCx<'_> {
    /// Does `addr` lie in the module or in a library loaded with it?
    pub(crate) fn contains(&self, addr: usize) -> bool {
        self.objects.iter().any(|o| o.contains(addr))
    }

    /// What is left of the unload's time budget.
    pub(crate) fn time_left(&self) -> std::time::Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// One row of the unload table: proves that one kind of resource no longer
/// uses the object, or names what does.
pub(crate) trait Proof: Sync {
    /// Prove the object idle for this resource, or say why it is not.
    fn prove(&self, cx: &mut UnloadCx<'_>) -> Result<(), ZombieCause>;
}

/// The unload sequence: each proof in turn.
pub(crate) static UNLOAD_PROOFS: [&dyn Proof; 8] = [
    &readers::Readers,
    &callbacks::Callbacks,
    &threads::Threads,
    &deferred::Deferred,
    &signals::Signals,
    &interrupted::Interrupted,
    &rseq::Rseq,
    &keys::Keys,
];

/// Run every proof in order; the first cause found wins. Every proof runs
/// up to the first failure (later ones may act on the object, e.g. delete
/// its keys, which only an idle object allows).
///
/// With `drain_only` (the loader runs as `UnmapPolicy::Never`: nothing will
/// be unmapped) only the readers and callbacks rows run: their barriers and
/// cleanups are due anyway.
pub(crate) fn prove_idle(cx: &mut UnloadCx<'_>, drain_only: bool) -> Result<(), ZombieCause> {
    let n = if drain_only { 2 } else { UNLOAD_PROOFS.len() };
    for ((proof, name), step) in UNLOAD_PROOFS.iter().zip(PROOF_NAMES).zip(LAP_NAMES).take(n) {
        if test_switch::skipped(name) {
            continue;
        }
        proof.prove(cx)?;
        crate::phase_timing::lap(step);
    }
    Ok(())
}

/// The proofs' names, for the test switch, in [`UNLOAD_PROOFS`] order.
const PROOF_NAMES: [&str; 8] = [
    "readers",
    "callbacks",
    "threads",
    "deferred",
    "signals",
    "interrupted",
    "rseq",
    "keys",
];

/// The proofs' names as step names for [`crate::phase_timing`].
const LAP_NAMES: [&str; 8] = [
    "unload: proof: readers",
    "unload: proof: callbacks",
    "unload: proof: threads",
    "unload: proof: deferred",
    "unload: proof: signals",
    "unload: proof: interrupted",
    "unload: proof: rseq",
    "unload: proof: keys",
];

/// A switch for tests that show what each proof prevents: the environment
/// variable `USRCU_LOADER_TEST_SKIP_PROOFS` (read once per process), a
/// comma-separated list of proof names, turns those proofs off. A host that
/// sets it gets crashes; it exists so that a test can see one, in a child
/// process.
#[doc(hidden)]
pub(crate) mod test_switch {
    use std::sync::OnceLock;

    pub(crate) fn skipped(name: &str) -> bool {
        static SKIP: OnceLock<Vec<String>> = OnceLock::new();
        SKIP.get_or_init(|| {
            std::env::var("USRCU_LOADER_TEST_SKIP_PROOFS")
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
                .unwrap_or_default()
        })
        .iter()
        .any(|s| s == name)
    }
}

/// Wait until every Tasks Trace and Tasks callback whose function or
/// argument lies in `ranges`, queued or running now, has run (a barrier of
/// each flavor restricted to the object's callbacks:
/// `usrcu::runtime::inventory::flavor_callbacks_mark`, a look at both
/// flavors under their engines' locks that scans no SRCU domain), or until
/// `deadline`; true if they have. Unlike a barrier of each flavor, it does
/// not wait for unrelated callbacks queued after the object's: a host
/// callback that blocks holds up no unload (`tests/tests/loader_hooks.rs`).
/// Unlike waiting until none of the object's is left, it does not wait for
/// the object's callbacks queued after the call: an unloading plugin whose
/// probes still fire and queue work would keep that count above zero
/// (`tests/tests/redteam6_unload.rs`, hot reload, seen as a Zombie each
/// time); the deferred-work proof's last snapshot catches those before the
/// object is closed.
pub(crate) fn wait_flavor_callbacks_gone(ranges: &[std::ops::Range<usize>], deadline: Instant) -> bool {
    let inside = |a: usize| ranges.iter().any(|r| r.contains(&a));
    let mark = usrcu::runtime::inventory::flavor_callbacks_mark(&inside);
    usrcu::runtime::inventory::wait_flavor_mark(&mark, deadline)
}
