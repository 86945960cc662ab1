//! Libraries loaded together with the plugin: `dlopen` maps the object's
//! `DT_NEEDED` closure, and `dlclose` unmaps whatever of it nothing else
//! holds. Their code is the plugin's as much as its own (a C library it
//! links may start threads or create pthread keys), so every proof looks at
//! their ranges too, and "did it leave?" asks about them as well.
//!
//! Known from `dl_iterate_phdr` before and after `dlopen`: of the objects
//! that appeared, those the plugin names in its `DT_NEEDED` (by file name
//! or `DT_SONAME`), and those they name in turn, are the ones this load
//! brought in. An object another thread loaded meanwhile is not named, and a
//! library that the host had already loaded is not the plugin's, and stays.
//!
//! A library that another plugin's load brought in is shared: the dynamic
//! linker maps it once and unmaps it with the last object that needs it,
//! whichever was loaded first. So the loader counts, process-wide, the live
//! modules that use each library a plugin load brought in ([`SHARED`]): a
//! later module that needs one counts it as its own too, and the proofs
//! look at it on the unload of its last user ([`partition`]), the one whose
//! `dlclose` unmaps it. (Before, only the first module counted it; unloaded
//! first, it reported the library "still mapped" under a made-up cause, and
//! the second unmapped it unproven: a thread holding a value under the
//! library's pthread key then died in the unmapped destructor.)
//!
//! The count is taken after `dlopen`, so a load must not slip in between an
//! unload's decision that it is a library's last user ([`partition`]) and
//! that unload's `dlclose` ([`release`]): it would share a library whose
//! keys the unload is deleting. So the two exclude each other, each wait
//! bounded by a deadline ([`GATE`]): an unload marks the libraries it is
//! the last user of as *closing*, and a load ([`load_gate`]) waits, before
//! its `dlopen`, until none is closing; an unload waits, before it decides,
//! until no load is between its gate and its count ([`brought_in`]).
//! A load whose wait runs out fails ([`GateClosed`], the loader's
//! `LoadError::SharedLibraryClosing`) before its `dlopen`: going ahead
//! would share the library the unload is closing. An unload whose wait
//! runs out decides nothing ([`LoadsInProgress`]; the loader keeps the
//! module as a Zombie, `ZombieCause::SharedLibraryLoading`): the load may
//! yet count a library as its own, whose keys the unload would delete.
//! The loader's call sites are tested in `tests/tests/loader_needed_gate.rs`.
//!
//! Two unloads of modules that share a library are ordered the same way.
//! An unload counts its share of a library off only in [`release`], after
//! its `dlclose`; another unload deciding meanwhile would still count it,
//! and decide it is not the last user either: the library would then be
//! unmapped by the later `dlclose` with nobody having proven it idle (its
//! pthread keys alive, a host thread's value under one of them destroyed
//! at that thread's exit by code no longer mapped). So an unload marks
//! each of its libraries *in flight* from its decision until its
//! [`release`] (or [`reopen`]), and an unload about to decide waits, as for
//! loads and with the same deadline, until none of its libraries is in
//! flight, then counts: after a `dlclose` the other's share is gone (one of
//! them is the last user), after a Zombie it is still there (the library
//! stays mapped with the Zombie, and its keys with it). An unload whose
//! wait runs out decides nothing ([`Undecided::UnloadInProgress`]; the
//! loader keeps the module as a Zombie, `ZombieCause::SharedLibraryUnloading`).
//! No deadlock: an unload waits only before it marks anything, and one that
//! has marked waits for nobody's marks. Tested in
//! `tests/tests/loader_needed_concurrent_unload.rs`.
//!
//! Two loads of modules that need the same library are ordered as well: a
//! load's snapshot (`before`) taken after another load's `dlopen` mapped the
//! library, but counted before that load counted it, saw the library
//! neither new nor shared, and its module did not count it: the other
//! module's unload then proved the library idle (deleted its keys) while
//! this module used it, and this module's unload later unmapped it
//! unproven. (Seen in `redteam_loader_host_stress.rs`, about one run in a
//! hundred under load, once the unload of the last counted user looked
//! whether the library left.) So one load at a time is between its gate
//! and its count ([`Gate::counting`]); the others wait at the gate, bounded
//! by the same deadline, and one whose wait runs out fails before its
//! `dlopen` ([`GateClosed`] with `closing: false`, the loader's
//! `LoadError::SharedLibraryLoading`).

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::address_space::{self, ObjectMapping};

/// The objects that are loaded now, by (name, base).
pub(crate) fn snapshot() -> Vec<(Vec<u8>, usize)> {
    address_space::loaded_objects()
        .into_iter()
        .map(|(n, m)| (n, m.base))
        .collect()
}

/// A library that a plugin load brought in, still mapped as far as the
/// loader knows: its name and load bias, and how many live modules (of any
/// loader) count it as theirs.
struct Shared {
    name: Vec<u8>,
    base: usize,
    users: usize,
    /// Its last user's unload decided to prove it idle and close it.
    closing: bool,
    /// Unloads of modules using it that decided (last user or not) and
    /// have not released or reopened it yet: another unload does not
    /// decide about it meanwhile (see the module docs).
    unloading: usize,
}

/// Every library a plugin load brought in, until an unload sees it leave.
/// An entry with no users is kept while the library may still be mapped
/// (a load racing with the last unload holds it): a module that needs it
/// then counts it as its own.
static SHARED: Mutex<Vec<Shared>> = Mutex::new(Vec::new());

/// The loads at the gate: those between their gate and their count (see
/// the module docs), and those waiting at it.
struct Gate {
    /// Past the gate, not yet counted: an unload does not decide meanwhile.
    loading: usize,
    /// Waiting at the gate while a library is closing or another load is
    /// counting (for tests: `__testing::wait_for_loads_at_gate`).
    waiting: usize,
    /// A load is between its gate and its count (see the module docs): the
    /// others wait at the gate.
    counting: bool,
    /// Unloads waiting to decide, for a load between its gate and its
    /// count or for another unload in flight on one of their libraries
    /// (for tests: `__testing::wait_for_unloads_waiting_to_decide`).
    unloads_waiting: usize,
}

/// The loads at the gate; its lock also orders every change of `closing`
/// and of `unloading`.
static LOADING: Mutex<Gate> = Mutex::new(Gate {
    loading: 0,
    waiting: 0,
    counting: false,
    unloads_waiting: 0,
});

/// Woken when a library stops closing, a load has counted, or an unload
/// has released or reopened its libraries: the waits of [`load_gate`] and
/// [`partition`] (on [`LOADING`]'s lock).
static GATE: Condvar = Condvar::new();

/// Is a library of [`SHARED`] closing? (Read under [`LOADING`]'s lock, which
/// every change of `closing` also takes, so a wait cannot miss its wake-up.)
fn any_closing() -> bool {
    crate::lock(&SHARED).iter().any(|s| s.closing)
}

/// Held by a load from before its `dlopen` until its libraries are counted
/// (or it failed): an unload does not decide it is a library's last user
/// meanwhile, and no other load passes the gate.
#[derive(Debug)]
pub(crate) struct LoadGate {
    /// It set [`Gate::counting`] (false only with the test switch
    /// `load-order`).
    counting: bool,
}

impl Drop for LoadGate {
    fn drop(&mut self) {
        let mut n = crate::lock(&LOADING);
        n.loading -= 1;
        if self.counting {
            n.counting = false;
        }
        drop(n);
        GATE.notify_all();
    }
}

/// A load's wait at the gate ran out: the load must not `dlopen`.
#[derive(Debug)]
pub(crate) struct GateClosed {
    /// How long the load waited.
    pub(crate) waited: Duration,
    /// An unload was still closing a library (the load might share it);
    /// false: another load was still between its gate and its count (this
    /// load's snapshot would not tell that load's libraries from the
    /// host's).
    pub(crate) closing: bool,
}

/// Before a load's `dlopen` (and its snapshot of the objects loaded before
/// it): wait (until `deadline` at most) while an unload is closing a
/// library the load might share, or another load is between its gate and
/// its count; then hold off new decisions and other loads until the
/// returned gate is dropped. Still waiting at `deadline`: [`GateClosed`],
/// and the load must fail.
pub(crate) fn load_gate(deadline: Instant) -> Result<LoadGate, GateClosed> {
    let t0 = Instant::now();
    // The ordering of loads switched off (test switch, tests only).
    let order = !crate::proofs::test_switch::skipped("load-order");
    let mut n = crate::lock(&LOADING);
    let blocked = |n: &Gate| any_closing() || (order && n.counting);
    if blocked(&n) {
        n.waiting += 1;
        // Tests wait for this load to be waiting (`wait_for_loads_waiting`).
        GATE.notify_all();
        while blocked(&n) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                n.waiting -= 1;
                return Err(GateClosed {
                    waited: t0.elapsed(),
                    closing: any_closing(),
                });
            }
            n = GATE.wait_timeout(n, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        n.waiting -= 1;
    }
    n.loading += 1;
    n.counting |= order;
    Ok(LoadGate { counting: order })
}

/// How many loads wait at the gate now.
pub(crate) fn loads_waiting() -> usize {
    crate::lock(&LOADING).waiting
}

/// Wait until at least `n` loads wait at the gate, `timeout` at most;
/// returns whether they do.
pub(crate) fn wait_for_loads_waiting(n: usize, timeout: Duration) -> bool {
    wait_on_gate(timeout, |g| g.waiting >= n)
}

/// How many unloads wait to decide now (see [`Gate::unloads_waiting`]).
pub(crate) fn unloads_waiting() -> usize {
    crate::lock(&LOADING).unloads_waiting
}

/// Wait until at least `n` unloads wait to decide, `timeout` at most;
/// returns whether they do.
pub(crate) fn wait_for_unloads_waiting(n: usize, timeout: Duration) -> bool {
    wait_on_gate(timeout, |g| g.unloads_waiting >= n)
}

/// Wait until `done` holds of the gate, `timeout` at most (tests' waits:
/// every change they wait for notifies [`GATE`]); returns whether it does.
fn wait_on_gate(timeout: Duration, done: impl Fn(&Gate) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut g = crate::lock(&LOADING);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if done(&g) || left.is_zero() {
            return done(&g);
        }
        g = GATE.wait_timeout(g, left).unwrap_or_else(|e| e.into_inner()).0;
    }
}

fn entry<'a>(shared: &'a mut [Shared], name: &[u8], base: usize) -> Option<&'a mut Shared> {
    shared.iter_mut().find(|s| s.name == name && s.base == base)
}

/// The objects loaded now that the object opened as `loaded` (mapped at
/// `own`) needs, directly or through another, and that were not in `before`
/// or that another plugin load brought in: the module's libraries, each
/// counted as used by one more module.
pub(crate) fn brought_in(
    before: &[(Vec<u8>, usize)],
    loaded: &std::path::Path,
    own: &ObjectMapping,
) -> Vec<(PathBuf, ObjectMapping)> {
    let own_name = loaded.as_os_str().as_bytes();
    // Held until the module is counted: an unload deciding whether it is a
    // library's last user sees this module either not at all or counted.
    let mut shared = crate::lock(&SHARED);
    let mut fresh: Vec<(Vec<u8>, ObjectMapping)> = address_space::loaded_objects()
        .into_iter()
        .filter(|(n, m)| {
            !n.is_empty()
                && n != own_name
                && (!before.iter().any(|(bn, bb)| bn == n && *bb == m.base)
                    || shared.iter().any(|s| s.name == *n && s.base == m.base))
        })
        .collect();
    let mut wanted: Vec<Vec<u8>> = own.needed.clone();
    let mut out: Vec<(PathBuf, ObjectMapping)> = Vec::new();
    // Each pass takes the fresh objects named so far; their own needs join.
    loop {
        let named = |(n, m): &(Vec<u8>, ObjectMapping)| {
            let file = n.rsplit(|&b| b == b'/').next().unwrap_or(n);
            wanted.iter().any(|w| w == file || m.soname.as_ref() == Some(w))
        };
        let (take, rest): (Vec<_>, Vec<_>) = fresh.into_iter().partition(named);
        fresh = rest;
        if take.is_empty() {
            for (p, m) in &out {
                let name = p.as_os_str().as_bytes();
                match entry(&mut shared, name, m.base) {
                    Some(e) => e.users += 1,
                    None => shared.push(Shared {
                        name: name.to_vec(),
                        base: m.base,
                        users: 1,
                        closing: false,
                        unloading: 0,
                    }),
                }
            }
            return out;
        }
        for (n, m) in take {
            wanted.extend(m.needed.iter().cloned());
            out.push((PathBuf::from(std::ffi::OsStr::from_bytes(&n)), m));
        }
    }
}

/// The libraries an unload marked closing and in flight ([`partition`]),
/// until its `dlclose` is done ([`Closing::release`]); dropped instead (the
/// module stays mapped, or the unload unwound), they are neither closing
/// nor in flight any more ([`reopen`]), so no load or unload waits for an
/// unload that will not come.
#[derive(Debug)]
pub(crate) struct Closing<'a> {
    needed: Option<&'a [(PathBuf, ObjectMapping)]>,
    /// For each library: is this module its last live user?
    pub(crate) last_user: Vec<bool>,
    /// For each library: did this unload mark it in flight?
    in_flight: Vec<bool>,
}

impl Closing<'_> {
    /// The module's object was closed: see [`release`].
    pub(crate) fn release(mut self) -> Vec<bool> {
        release(self.needed.take().unwrap_or(&[]), &self.in_flight)
    }
}

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        if let Some(needed) = self.needed.take() {
            reopen(needed, &self.in_flight);
        }
    }
}

/// Which of a module's libraries its unload proves idle and expects gone:
/// those it is the last live user of (true), not those another live module
/// also uses (false; they stay, and are that module's to prove). The first
/// are marked closing while the returned guard lives; loads wait for them.
/// All are marked in flight while it lives; other unloads wait for them.
/// Waits first (until `deadline` at most) for loads between their gate and
/// their count, and for other unloads in flight on one of these libraries;
/// one still there at `deadline` may yet change the count, so nothing is
/// decided: [`Undecided`].
pub(crate) fn partition(needed: &[(PathBuf, ObjectMapping)], deadline: Instant) -> Result<Closing<'_>, Undecided> {
    let (last_user, in_flight) = mark_closing(needed, deadline)?;
    Ok(Closing {
        needed: Some(needed),
        last_user,
        in_flight,
    })
}

/// Why an unload's wait to decide ran out: it cannot know whether it is
/// the last user of its libraries (it must neither delete their keys nor
/// close them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undecided {
    /// A load was still between its gate and its count: it may yet count a
    /// library as its own.
    LoadsInProgress,
    /// Another unload of a module sharing one of the libraries was still
    /// between its decision and its `dlclose` (or its Zombie): it may yet
    /// count its share off.
    UnloadInProgress,
}

impl Undecided {
    /// The module stays mapped for this reason.
    pub(crate) fn cause(self) -> crate::report::ZombieCause {
        match self {
            Undecided::LoadsInProgress => crate::report::ZombieCause::SharedLibraryLoading,
            Undecided::UnloadInProgress => crate::report::ZombieCause::SharedLibraryUnloading,
        }
    }
}

impl Closing<'_> {
    /// Nothing decided, nothing marked: every library stays (for an unload
    /// that unmaps nothing).
    pub(crate) fn none(libraries: usize) -> Closing<'static> {
        Closing {
            needed: None,
            last_user: vec![false; libraries],
            in_flight: Vec::new(),
        }
    }
}

/// What keeps an unload of a module using `needed` from deciding now, if
/// anything (read under [`LOADING`]'s lock, which every change of `loading`
/// and `unloading` also takes, so a wait cannot miss its wake-up).
fn undecidable(gate: &Gate, needed: &[(PathBuf, ObjectMapping)]) -> Option<Undecided> {
    if gate.loading > 0 {
        return Some(Undecided::LoadsInProgress);
    }
    let mut shared = crate::lock(&SHARED);
    needed
        .iter()
        .any(|(p, m)| entry(&mut shared, p.as_os_str().as_bytes(), m.base).is_some_and(|e| e.unloading > 0))
        .then_some(Undecided::UnloadInProgress)
}

/// Waits (see [`partition`]), then decides for each library whether this
/// unload is its last user, marking it closing if so, and in flight.
/// Returns the decisions and which entries were marked in flight.
fn mark_closing(needed: &[(PathBuf, ObjectMapping)], deadline: Instant) -> Result<(Vec<bool>, Vec<bool>), Undecided> {
    if needed.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut n = crate::lock(&LOADING);
    if let Some(mut why) = undecidable(&n, needed) {
        n.unloads_waiting += 1;
        // Tests wait for this unload to be waiting.
        GATE.notify_all();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                n.unloads_waiting -= 1;
                return Err(why);
            }
            n = GATE.wait_timeout(n, left).unwrap_or_else(|e| e.into_inner()).0;
            match undecidable(&n, needed) {
                Some(still) => why = still,
                None => break,
            }
        }
        n.unloads_waiting -= 1;
    }
    // The ordering switched off (test switch, tests only): decide as if no
    // other unload were in flight, and mark nothing in flight.
    let order = !crate::proofs::test_switch::skipped("unload-order");
    let mut shared = crate::lock(&SHARED);
    let (decided, in_flight) = needed
        .iter()
        .map(|(p, m)| match entry(&mut shared, p.as_os_str().as_bytes(), m.base) {
            Some(e) => {
                let last = e.users <= 1;
                e.closing |= last;
                e.unloading += usize::from(order);
                (last, order)
            }
            None => (true, false),
        })
        .unzip();
    Ok((decided, in_flight))
}

/// The unload that [`partition`]ed `needed` keeps the module mapped (a
/// Zombie, or `UnmapPolicy::Never`): its libraries are not closing, nor in
/// flight (those marked so in `in_flight`); the module keeps its share.
fn reopen(needed: &[(PathBuf, ObjectMapping)], in_flight: &[bool]) {
    if needed.is_empty() {
        return;
    }
    let n = crate::lock(&LOADING);
    let mut shared = crate::lock(&SHARED);
    for (i, (p, m)) in needed.iter().enumerate() {
        if let Some(e) = entry(&mut shared, p.as_os_str().as_bytes(), m.base) {
            e.closing = false;
            if in_flight.get(i) == Some(&true) {
                e.unloading -= 1;
            }
        }
    }
    drop(shared);
    drop(n);
    GATE.notify_all();
}

/// The module's object was closed: it no longer uses its libraries, and
/// they are not in flight for it any more (those marked so in
/// `in_flight`). Returns, for each, whether another live module still uses
/// it (one whose load raced with this unload, or one whose unload waited
/// for this one). Entries of libraries no longer mapped go.
fn release(needed: &[(PathBuf, ObjectMapping)], in_flight: &[bool]) -> Vec<bool> {
    let n = crate::lock(&LOADING);
    let mut shared = crate::lock(&SHARED);
    let used = needed
        .iter()
        .enumerate()
        .map(
            |(i, (p, m))| match entry(&mut shared, p.as_os_str().as_bytes(), m.base) {
                Some(e) => {
                    e.users = e.users.saturating_sub(1);
                    e.closing = false;
                    if in_flight.get(i) == Some(&true) {
                        e.unloading -= 1;
                    }
                    e.users > 0
                }
                None => false,
            },
        )
        .collect();
    if shared.iter().any(|s| s.users == 0 && s.unloading == 0) {
        let mapped = snapshot();
        shared.retain(|s| s.users > 0 || s.unloading > 0 || mapped.iter().any(|(n, b)| *n == s.name && *b == s.base));
    }
    drop(shared);
    drop(n);
    GATE.notify_all();
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// A library entry of its own (a name no real object has), used by one
    /// module.
    fn fake_library(name: &str) -> Vec<(PathBuf, ObjectMapping)> {
        fake_library_used_by(name, 1)
    }

    /// A library entry of its own, used by `users` modules.
    fn fake_library_used_by(name: &str, users: usize) -> Vec<(PathBuf, ObjectMapping)> {
        let m = ObjectMapping {
            base: 0x1000,
            segments: Vec::new(),
            nodelete: false,
            relro: None,
            data_segments: Vec::new(),
            needed: Vec::new(),
            soname: None,
        };
        crate::lock(&SHARED).push(Shared {
            name: name.as_bytes().to_vec(),
            base: m.base,
            users,
            closing: false,
            unloading: 0,
        });
        vec![(PathBuf::from(name), m)]
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// Wait a little for `flag` to be set (by a thread that should be
    /// blocked): returns whether it was. A slow machine can only make a
    /// broken gate look right, never a working one look broken.
    fn set_soon(flag: &AtomicBool) -> bool {
        for _ in 0..20 {
            // Relaxed: a flag polled by the test thread; the join below orders the rest.
            if flag.load(Ordering::Relaxed) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_load_waits_while_the_last_user_of_a_library_is_closing_it() {
        let lib = fake_library("/nonexistent/test-closing-lib.so");
        // The unload of its last user decides to close it.
        let closing = partition(&lib, far()).unwrap();
        assert_eq!(closing.last_user, vec![true]);
        let passed = Arc::new(AtomicBool::new(false));
        let t = {
            let passed = passed.clone();
            std::thread::spawn(move || {
                let gate = load_gate(far()).unwrap();
                // Relaxed: see `set_soon`.
                passed.store(true, Ordering::Relaxed);
                drop(gate);
            })
        };
        assert!(!set_soon(&passed), "a load went ahead while a library was closing");
        // The unload's dlclose is done: the load goes ahead.
        closing.release();
        t.join().unwrap();
        assert!(passed.load(Ordering::Relaxed));
    }

    #[test]
    fn a_load_whose_wait_runs_out_fails_instead_of_sharing_a_closing_library() {
        let lib = fake_library("/nonexistent/test-gate-timeout-lib.so");
        let closing = partition(&lib, far()).unwrap();
        assert_eq!(closing.last_user, vec![true]);
        let r = load_gate(Instant::now() + Duration::from_millis(20));
        assert!(
            r.is_err(),
            "a load went ahead after its wait for a closing library ran out"
        );
        closing.release();
    }

    #[test]
    fn an_unload_whose_wait_for_a_load_in_progress_runs_out_decides_nothing() {
        let lib = fake_library("/nonexistent/test-decision-timeout-lib.so");
        let gate = load_gate(far()).unwrap();
        let r = partition(&lib, Instant::now() + Duration::from_millis(20));
        assert!(
            r.is_err(),
            "an unload decided while a load was between its gate and its count"
        );
        assert!(!crate::lock(&SHARED)
            .iter()
            .any(|s| s.name == b"/nonexistent/test-decision-timeout-lib.so" && s.closing));
        drop(gate);
        release(&lib, &[false]);
    }

    #[test]
    fn an_unload_decides_only_after_a_load_in_progress_has_counted_its_libraries() {
        let lib = fake_library("/nonexistent/test-loading-lib.so");
        let gate = load_gate(far()).unwrap();
        let decided = Arc::new(AtomicBool::new(false));
        let t = {
            let (lib, decided) = (lib.clone(), decided.clone());
            std::thread::spawn(move || {
                let last = partition(&lib, far()).unwrap().last_user.clone();
                // Relaxed: see `set_soon`.
                decided.store(true, Ordering::Relaxed);
                last
            })
        };
        assert!(
            !set_soon(&decided),
            "an unload decided while a load was between its gate and its count"
        );
        drop(gate);
        assert_eq!(t.join().unwrap(), vec![true]);
        // The guard was dropped in the thread (the module stayed): not
        // closing; the entry goes with the module's release.
        assert!(!crate::lock(&SHARED)
            .iter()
            .any(|s| s.name == b"/nonexistent/test-loading-lib.so" && s.closing));
        release(&lib, &[false]);
    }

    #[test]
    fn a_load_waits_at_the_gate_while_another_load_is_between_its_gate_and_its_count() {
        let first = load_gate(far()).unwrap();
        let passed = Arc::new(AtomicBool::new(false));
        let t = {
            let passed = passed.clone();
            std::thread::spawn(move || {
                let gate = load_gate(far()).unwrap();
                // Relaxed: see `set_soon`.
                passed.store(true, Ordering::Relaxed);
                drop(gate);
            })
        };
        assert!(
            !set_soon(&passed),
            "a load passed the gate while another load had not counted its libraries"
        );
        drop(first);
        t.join().unwrap();
        assert!(passed.load(Ordering::Relaxed));
        // Bounded: a load whose wait runs out fails.
        let first = load_gate(far()).unwrap();
        assert!(load_gate(Instant::now() + Duration::from_millis(20)).is_err());
        drop(first);
    }

    /// The entry's (users, unloading) now.
    fn counts(name: &str) -> (usize, usize) {
        let shared = crate::lock(&SHARED);
        let e = shared.iter().find(|s| s.name == name.as_bytes()).unwrap();
        (e.users, e.unloading)
    }

    #[test]
    fn of_two_unloads_sharing_a_library_the_second_decides_after_the_first_released_it_and_is_last() {
        let name = "/nonexistent/test-two-unloads-lib.so";
        let lib = fake_library_used_by(name, 2);
        // A decides first: not the last user (B still counts).
        let a = partition(&lib, far()).unwrap();
        assert_eq!(a.last_user, vec![false]);
        assert_eq!(counts(name), (2, 1));
        let decided = Arc::new(AtomicBool::new(false));
        let b = {
            let (lib, decided) = (lib.clone(), decided.clone());
            std::thread::spawn(move || {
                let b = partition(&lib, far()).unwrap();
                // Relaxed: see `set_soon`.
                decided.store(true, Ordering::Relaxed);
                let last = b.last_user.clone();
                b.release();
                last
            })
        };
        assert!(wait_for_unloads_waiting(1, Duration::from_secs(20)));
        assert!(
            !set_soon(&decided),
            "an unload decided while another unload of a module sharing its library was in flight"
        );
        // A's dlclose is done: its share is gone, B is the last user.
        assert_eq!(a.release(), vec![true]);
        assert_eq!(b.join().unwrap(), vec![true], "B decided it was not the last user");
        assert!(!crate::lock(&SHARED).iter().any(|s| s.name == name.as_bytes()));
    }

    #[test]
    fn an_unload_waiting_for_another_that_kept_its_module_mapped_is_not_the_last_user() {
        let name = "/nonexistent/test-zombie-unload-lib.so";
        let lib = fake_library_used_by(name, 2);
        let a = partition(&lib, far()).unwrap();
        assert_eq!(a.last_user, vec![false]);
        let decided = Arc::new(AtomicBool::new(false));
        let b = {
            let (lib, decided) = (lib.clone(), decided.clone());
            std::thread::spawn(move || {
                let b = partition(&lib, far()).unwrap();
                // Relaxed: see `set_soon`.
                decided.store(true, Ordering::Relaxed);
                let last = b.last_user.clone();
                b.release();
                last
            })
        };
        assert!(wait_for_unloads_waiting(1, Duration::from_secs(20)));
        assert!(
            !set_soon(&decided),
            "an unload decided while another unload of a module sharing its library was in flight"
        );
        // A's module stays mapped (a Zombie): it keeps its share.
        drop(a);
        assert_eq!(
            b.join().unwrap(),
            vec![false],
            "B deleted the keys of a library A's zombie uses"
        );
        assert_eq!(counts(name), (1, 0));
        // A's retry is the last user.
        let a = partition(&lib, far()).unwrap();
        assert_eq!(a.last_user, vec![true]);
        assert_eq!(a.release(), vec![false]);
    }

    #[test]
    fn an_unload_whose_wait_for_another_unload_runs_out_decides_nothing() {
        let name = "/nonexistent/test-unload-timeout-lib.so";
        let lib = fake_library_used_by(name, 2);
        let a = partition(&lib, far()).unwrap();
        let r = partition(&lib, Instant::now() + Duration::from_millis(20));
        assert_eq!(r.unwrap_err(), Undecided::UnloadInProgress);
        assert_eq!(counts(name), (2, 1), "the unload that decided nothing marked nothing");
        assert_eq!(a.release(), vec![true]);
        let b = partition(&lib, far()).unwrap();
        assert_eq!(b.last_user, vec![true]);
        b.release();
    }
}
