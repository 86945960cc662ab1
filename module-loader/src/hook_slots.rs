//! Hook slots pointing into a module: installing a plugin function into a
//! host [`HookSlot`] with the module's lifetime attached, and the unload
//! step that clears every slot pointing into the object and waits for a
//! Tasks grace period before `dlclose` (the row "hook slots" of the unload
//! table in DESIGN).
//!
//! Tasks RCU needs the hook's code resident (a page fault that waits for I/O
//! is a voluntary switch, which a grace period takes as quiescent): the first
//! install from a module `mlock`s its executable mappings (read from
//! `/proc/self/maps`, which has the permissions `dl_iterate_phdr`'s segments
//! do not carry). The lock goes with the unmap.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use usrcu::tasks::{self, HookFn, HookSlot};

use crate::loader::ModuleLoader;
use crate::module::{Module, ModuleHandle};
use crate::report::UnloadReport;
use crate::state::ModuleState;

/// Why [`ModuleLoader::install_hook`] refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum HookError {
    /// No such module in this loader.
    UnknownModule {
        /// The handle given.
        handle: ModuleHandle,
    },
    /// The module is not `Live`.
    NotLive {
        /// The module.
        module: String,
        /// Its state.
        state: ModuleState,
    },
    /// The symbol is not exported by the module.
    NotFound {
        /// The module.
        module: String,
        /// The symbol.
        symbol: String,
        /// The dynamic linker's message.
        message: String,
    },
    /// The symbol resolves outside the module's own object (a re-export from
    /// another library, whose lifetime the loader does not govern).
    NotInModule {
        /// The module.
        module: String,
        /// The symbol.
        symbol: String,
    },
    /// `mlock` of the module's text failed (`RLIMIT_MEMLOCK`?): a hook whose
    /// code may fault on I/O cannot be installed under Tasks RCU.
    Mlock {
        /// The module.
        module: String,
        /// The error.
        error: std::io::Error,
    },
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookError::UnknownModule { handle } => write!(f, "no module {handle} in this loader"),
            HookError::NotLive { module, state } => write!(f, "module '{module}' is {state:?}, not Live"),
            HookError::NotFound {
                module,
                symbol,
                message,
            } => write!(f, "module '{module}' has no symbol '{symbol}': {message}"),
            HookError::NotInModule { module, symbol } => {
                write!(f, "symbol '{symbol}' resolves outside module '{module}'s object")
            }
            HookError::Mlock { module, error } => {
                write!(f, "cannot lock the text of module '{module}' in memory: {error}")
            }
        }
    }
}

impl std::error::Error for HookError {}

/// What the hook-slot step of an unload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookSlotsReport {
    /// Slots emptied because their function lay in the object.
    pub cleared: usize,
    /// A Tasks grace period (and a wait for the object's Tasks callbacks)
    /// ran before `dlclose`: only when a slot was emptied, a slot ever held
    /// one of the object's functions or a slot in the object was ever set
    /// ([`usrcu::tasks::hooks_ever_into`]), or Tasks callbacks were pending.
    pub waited_grace_period: bool,
    /// How long that took.
    pub elapsed: Duration,
    /// The grace period or the barrier did not complete within the unload
    /// timeout (the module then stays mapped as a zombie).
    pub timed_out: bool,
    /// The step ran (in full once per unload, before `exit`; after `exit`
    /// only slots filled since are cleared, and waited for).
    pub done: bool,
}

/// Test switch: skip the clearing (to show that the host then crashes).
static SKIP_CLEARING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Switch the unload step's clearing of hook slots off (`true`) or on. Only
/// for the test that shows what the clearing prevents: with it off, a host
/// whose threads call a plugin's hook crashes at the first call after the
/// unmap.
#[doc(hidden)]
pub fn __set_skip_hook_clearing(skip: bool) {
    SKIP_CLEARING.store(skip, std::sync::atomic::Ordering::Relaxed);
}

/// Test switch: the rule before the per-object record (a Tasks grace
/// period at every unload once any slot in the process was ever set, and
/// the interrupted proof whenever Tasks RCU was ever used).
static TASKS_WAIT_ALWAYS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Go back (`true`) to the process-wide rule for the Tasks waits of the
/// hook-slot step and of the interrupted proof, or use the per-object
/// record (`false`, the default). Only for the test that shows what the
/// record changes: with the old rule, a host thread that computes without
/// blocking makes every unload a `Zombie`.
#[doc(hidden)]
pub fn __set_tasks_wait_always(always: bool) {
    // Relaxed: a test switch, read at the next unload.
    TASKS_WAIT_ALWAYS.store(always, std::sync::atomic::Ordering::Relaxed);
}

/// Was the test switch [`__set_tasks_wait_always`] set?
pub(crate) fn tasks_wait_always() -> bool {
    // Relaxed: a test switch.
    TASKS_WAIT_ALWAYS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Modules whose text is locked (by handle). The lock also serialises
/// installs against the unload step: an install checks `Live` and stores
/// under it, and the unload step clears under it after the module became
/// `Going`, so no install can land after the clearing.
static LOCKED: Mutex<Option<HashMap<u64, ()>>> = Mutex::new(None);

fn lock_text(map: &mut HashMap<u64, ()>, m: &Module) -> Result<(), std::io::Error> {
    if map.contains_key(&m.handle.0) {
        return Ok(());
    }
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    for (a, b, perms) in crate::address_space::maps_lines(&maps) {
        if !perms.contains('x') {
            continue;
        }
        if !m.mapping.contains(a) {
            continue;
        }
        // SAFETY: mlock of a range that is mapped (the module is open);
        // it only pins pages.
        if unsafe { libc::mlock(a as *const libc::c_void, b - a) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    map.insert(m.handle.0, ());
    Ok(())
}

impl ModuleLoader {
    /// Install the module's function `symbol` into the host's `slot`, with
    /// the module's lifetime attached: the module's text is locked in memory
    /// first, and when the module goes, the slot is emptied and a Tasks grace
    /// period passes before its code is unmapped (so callers of
    /// [`HookSlot::call`] get `None` from then on and never run unmapped code).
    ///
    /// # Safety
    /// `F` is the type of the function the module exports under `symbol`,
    /// and that function keeps [`HookSlot`]'s contract (never blocks, never
    /// faults on non-resident memory: its data must be resident too, stores
    /// no pointer to itself). `slot` stays at its address, and is not
    /// dropped, until the module is unloaded or the slot is cleared: as with
    /// [`HookSlot::set`], the runtime keeps the slot's address to empty it
    /// when the module goes (a `static` slot, or one in a `Box` or `Arc`
    /// kept alive that long, does).
    pub unsafe fn install_hook<F: HookFn>(
        &self,
        h: ModuleHandle,
        slot: &HookSlot<F>,
        symbol: &str,
    ) -> Result<(), HookError> {
        let m = self.get_or_gone(h).map_err(|gone| match gone {
            Some((module, state)) => HookError::NotLive { module, state },
            None => HookError::UnknownModule { handle: h },
        })?;
        let mut locked = crate::lock(&LOCKED);
        let not_live = |m: &Module| HookError::NotLive {
            module: m.name.clone(),
            state: m.state.get(),
        };
        if m.state.get() != ModuleState::Live {
            return Err(not_live(&m));
        }
        let f: F = {
            let lib = crate::lock(&m.lib);
            let Some(lib) = lib.as_ref() else {
                return Err(not_live(&m));
            };
            // SAFETY: the caller vouches for the type; the library is open.
            let sym = unsafe { lib.get::<F>(symbol.as_bytes()) }.map_err(|e| HookError::NotFound {
                module: m.name.clone(),
                symbol: symbol.to_owned(),
                message: e.to_string(),
            })?;
            *sym
        };
        if !m.mapping.contains(f.into_raw() as usize) {
            return Err(HookError::NotInModule {
                module: m.name.clone(),
                symbol: symbol.to_owned(),
            });
        }
        lock_text(locked.get_or_insert_with(HashMap::new), &m).map_err(|error| HookError::Mlock {
            module: m.name.clone(),
            error,
        })?;
        // Still `Live` under `LOCKED` (checked above, after taking it): the
        // unload step, which takes `LOCKED` after `Going`, sees this slot.
        // SAFETY: the caller's contract for `f`.
        unsafe { slot.set_sync(Some(f)) };
        drop(locked);
        Ok(())
    }
}

/// The unload step: empty every registered hook slot whose function lies in
/// the object (and forget slots that live in it), then wait (bounded) for a
/// Tasks grace period and for the object's Tasks callbacks, when code of
/// *this* object may be inside a hook: a slot was emptied now, or the
/// runtime's record says that a slot ever held one of the object's
/// functions or that a slot lying in the object was ever set
/// ([`tasks::hooks_ever_into`]; a slot set and emptied by the host or the
/// plugin without waiting is in it too), or Tasks callbacks are pending
/// anywhere. Otherwise no thread can be inside the object's code through a
/// slot, and a thread that computes without ever blocking (it holds every
/// Tasks grace period) does not keep the object mapped.
///
/// Not in the record: a host hook that calls the object's code through a
/// table of the host's own. Such a host removes the object's entries and
/// calls [`tasks::synchronize`] in its `Going` notifier; notifiers run
/// before this step and before `dlclose`, so when it returns no thread is
/// inside that code any more (the interrupted proof, which looks for a
/// thread asleep in a signal handler over the object's code, does not run
/// for this case: see `proofs/interrupted.rs`).
///
/// Runs in full once per unload, before `exit`; called again after `exit`,
/// it clears what `exit` filled (`again`).
pub(crate) fn going(m: &Module, timeout: Duration, report: &mut UnloadReport) {
    if report.hook_slots.done {
        again(m, timeout, report);
        return;
    }
    let t0 = Instant::now();
    // SAFETY: every registered slot is live: host slots live as long as the
    // host keeps them (heap slots unregister on drop), and slots inside a
    // plugin object are forgotten here, before that object is unmapped —
    // every object this loader unmaps passes through this step.
    let cleared = {
        let _installs = crate::lock(&LOCKED);
        if SKIP_CLEARING.load(std::sync::atomic::Ordering::Relaxed) {
            0
        } else {
            // SAFETY: see above.
            unsafe { tasks::clear_hooks_into(&m.mapping.segments) }
        }
    };
    let mut timed_out = false;
    // The record is read after the clearing: a slot filled with the
    // object's function since is in it (and cleared by `again` after `exit`,
    // or waited for by the interrupted proof, which reads it again).
    let mine = if tasks_wait_always() {
        tasks::hooks_ever_set()
    } else {
        tasks::hooks_ever_into(&m.mapping.segments)
    };
    let wait = cleared > 0 || mine || tasks::callbacks_pending() > 0;
    if wait {
        // A retry that cleared nothing new needs no grace period later than
        // the one the earlier attempt asked for after its own clearing, and
        // may find it complete already; a fresh one each time never
        // completed within a zero `unload_timeout` (red team 8: an idle
        // module stayed a Zombie through 100 retries).
        // Nor if a hook of the object was set since (and emptied again by
        // its own code, say): a thread may have entered it after the earlier
        // grace period began (red team 16).
        let last = tasks::hooks_last_into(&m.mapping.segments);
        let cookie = kept_or_fresh(&m.hooks_cookie, last, cleared > 0);
        timed_out = !cookie.wait_timeout(timeout);
        if timed_out {
            name_holdouts(m);
        }
        if !timed_out {
            // The object's Tasks callbacks, not every one (a host callback
            // that blocks must not keep the object's hook).
            let deadline = t0
                .checked_add(timeout)
                .unwrap_or(t0 + Duration::from_secs(100 * 365 * 24 * 3600));
            timed_out = !crate::proofs::wait_flavor_callbacks_gone(&m.mapping.segments, deadline);
        }
    }
    report.hook_slots = HookSlotsReport {
        cleared,
        waited_grace_period: wait,
        elapsed: t0.elapsed(),
        timed_out,
        done: true,
    };
}

/// The Tasks grace period kept in `kept` by an earlier unload attempt, if
/// it was asked for when the object's record stood at `last`
/// (`tasks::hooks_last_into`) and `fresh` is false; else a new one, kept
/// in its place. For the hook step and the interrupted proof alike.
pub(crate) fn kept_or_fresh(kept: &Mutex<Option<(tasks::Cookie, u64)>>, last: u64, fresh: bool) -> tasks::Cookie {
    let mut kept = crate::lock(kept);
    let c = match *kept {
        Some((c, n)) if !fresh && n == last => c,
        _ => tasks::start_poll(),
    };
    *kept = Some((c, last));
    c
}

/// The Tasks grace period the unload waited for did not end in time: name
/// the threads it still waits for in a warning, so that a user whose
/// module stays a zombie (`HooksBusy`) learns which thread to fix, not only
/// that one exists (the engine's own stall warning comes after its stall
/// timeout, 10 s by default: newcomer review).
fn name_holdouts(m: &Module) {
    let who = tasks::holdouts();
    if who.is_empty() {
        return;
    }
    let list = who
        .iter()
        .map(|(tid, name)| format!("{tid} '{name}'"))
        .collect::<Vec<_>>()
        .join(", ");
    usrcu::diagnostics::emit(usrcu::diagnostics::Warning::new(
        usrcu::diagnostics::WarningKind::Other,
        m.name.clone(),
        format!(
            "usrcu-module-loader: unloading module '{}' ({}): the Tasks grace period it waits for is held by \
             thread(s) {list}: a thread that runs without ever blocking holds every Tasks grace period until it \
             calls usrcu::tasks::quiescent()",
            m.name, m.handle
        ),
    ));
}

/// After `exit` (the deferred-work proof, each round): empty again every
/// registered hook slot whose function lies in the object (a late hook, a
/// plugin thread on its way out, or a callback filled one), and if any was,
/// wait until `deadline` for a Tasks grace period, after which no thread is
/// inside it. Returns how many were emptied and whether the grace period
/// (if one was needed) completed; counted into the report.
pub(crate) fn clear_again(
    ranges: &[std::ops::Range<usize>],
    deadline: Instant,
    report: &mut UnloadReport,
) -> (usize, bool) {
    let cleared = {
        let _installs = crate::lock(&LOCKED);
        if SKIP_CLEARING.load(std::sync::atomic::Ordering::Relaxed) {
            0
        } else {
            // SAFETY: as in `going`: every registered slot is live, and
            // slots inside the ranges are forgotten here, before the unmap.
            unsafe { tasks::clear_hooks_into(ranges) }
        }
    };
    if cleared == 0 {
        return (0, true);
    }
    let done = tasks::start_poll().wait_timeout(deadline.saturating_duration_since(Instant::now()));
    report.hook_slots.cleared += cleared;
    report.hook_slots.waited_grace_period = true;
    report.hook_slots.timed_out |= !done;
    (cleared, done)
}

/// The step again, after `exit` (the step ran before it): `exit` may have
/// filled a slot with one of the object's functions, or filled a slot that
/// lives in the object (which the registry would then keep after the
/// unmap, and write through at the next unload of any module). Clear and
/// forget those as the first pass does; wait for a Tasks grace period and
/// barrier only if a slot was cleared (the first pass waited for the rest).
fn again(m: &Module, timeout: Duration, report: &mut UnloadReport) {
    let t0 = Instant::now();
    let deadline = t0
        .checked_add(timeout)
        .unwrap_or(t0 + Duration::from_secs(100 * 365 * 24 * 3600));
    let (cleared, done) = clear_again(&m.mapping.segments, deadline, report);
    if cleared > 0 && done && !crate::proofs::wait_flavor_callbacks_gone(&m.mapping.segments, deadline) {
        report.hook_slots.timed_out = true;
    }
    report.hook_slots.elapsed += t0.elapsed();
}

/// Forget the text lock record of a module that is gone.
pub(crate) fn forget(m: &Module) {
    if let Some(map) = crate::lock(&LOCKED).as_mut() {
        map.remove(&m.handle.0);
    }
}
