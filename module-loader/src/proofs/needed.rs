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
    /// Waiting at the gate while a library is closing (for tests:
    /// `__testing::wait_for_loads_at_gate`).
    waiting: usize,
}

/// The loads at the gate; its lock also orders every change of `closing`.
static LOADING: Mutex<Gate> = Mutex::new(Gate { loading: 0, waiting: 0 });

/// Woken when a library stops closing or a load has counted: the waits of
/// [`load_gate`] and [`partition`] (on [`LOADING`]'s lock).
static GATE: Condvar = Condvar::new();

/// Is a library of [`SHARED`] closing? (Read under [`LOADING`]'s lock, which
/// every change of `closing` also takes, so a wait cannot miss its wake-up.)
fn any_closing() -> bool {
    crate::lock(&SHARED).iter().any(|s| s.closing)
}

/// Held by a load from before its `dlopen` until its libraries are counted
/// (or it failed): an unload does not decide it is a library's last user
/// meanwhile.
#[derive(Debug)]
pub(crate) struct LoadGate(());

impl Drop for LoadGate {
    fn drop(&mut self) {
        let mut n = crate::lock(&LOADING);
        n.loading -= 1;
        drop(n);
        GATE.notify_all();
    }
}

/// A load's wait at the gate ran out while an unload was still closing a
/// library: the load must not `dlopen` (it might share that library).
#[derive(Debug)]
pub(crate) struct GateClosed {
    /// How long the load waited.
    pub(crate) waited: Duration,
}

/// Before a load's `dlopen`: wait (until `deadline` at most) while an
/// unload is closing a library the load might share, then hold off new
/// decisions until the returned gate is dropped. Still closing at
/// `deadline`: [`GateClosed`], and the load must fail.
pub(crate) fn load_gate(deadline: Instant) -> Result<LoadGate, GateClosed> {
    let t0 = Instant::now();
    let mut n = crate::lock(&LOADING);
    if any_closing() {
        n.waiting += 1;
        // Tests wait for this load to be waiting (`wait_for_loads_waiting`).
        GATE.notify_all();
        while any_closing() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                n.waiting -= 1;
                return Err(GateClosed { waited: t0.elapsed() });
            }
            n = GATE.wait_timeout(n, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        n.waiting -= 1;
    }
    n.loading += 1;
    Ok(LoadGate(()))
}

/// How many loads wait at the gate now.
pub(crate) fn loads_waiting() -> usize {
    crate::lock(&LOADING).waiting
}

/// Wait until at least `n` loads wait at the gate, `timeout` at most;
/// returns whether they do.
pub(crate) fn wait_for_loads_waiting(n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut g = crate::lock(&LOADING);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if g.waiting >= n || left.is_zero() {
            return g.waiting >= n;
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

/// The libraries an unload marked closing ([`partition`]), until its
/// `dlclose` is done ([`Closing::release`]); dropped instead (the module
/// stays mapped, or the unload unwound), they are not closing any more, so
/// no load waits for an unload that will not come.
#[derive(Debug)]
pub(crate) struct Closing<'a> {
    needed: Option<&'a [(PathBuf, ObjectMapping)]>,
    /// For each library: is this module its last live user?
    pub(crate) last_user: Vec<bool>,
}

impl Closing<'_> {
    /// The module's object was closed: see [`release`].
    pub(crate) fn release(mut self) -> Vec<bool> {
        release(self.needed.take().unwrap_or(&[]))
    }
}

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        if let Some(needed) = self.needed.take() {
            reopen(needed);
        }
    }
}

/// Which of a module's libraries its unload proves idle and expects gone:
/// those it is the last live user of (true), not those another live module
/// also uses (false; they stay, and are that module's to prove). The first
/// are marked closing while the returned guard lives; loads wait for them.
/// Waits first (until `deadline` at most) for loads between their gate and
/// their count; one still there at `deadline` may yet count a library as
/// its own, so nothing is decided: [`LoadsInProgress`].
pub(crate) fn partition(
    needed: &[(PathBuf, ObjectMapping)],
    deadline: Instant,
) -> Result<Closing<'_>, LoadsInProgress> {
    Ok(Closing {
        needed: Some(needed),
        last_user: mark_closing(needed, deadline)?,
    })
}

/// A load was still between its gate and its count when an unload's wait
/// for it ran out: the unload cannot know whether it is the last user of
/// its libraries (it must neither delete their keys nor close them).
#[derive(Debug)]
pub(crate) struct LoadsInProgress;

impl Closing<'_> {
    /// Nothing decided, nothing marked: every library stays (for an unload
    /// that unmaps nothing).
    pub(crate) fn none(libraries: usize) -> Closing<'static> {
        Closing {
            needed: None,
            last_user: vec![false; libraries],
        }
    }
}

fn mark_closing(needed: &[(PathBuf, ObjectMapping)], deadline: Instant) -> Result<Vec<bool>, LoadsInProgress> {
    if needed.is_empty() {
        return Ok(Vec::new());
    }
    let mut n = crate::lock(&LOADING);
    while n.loading > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LoadsInProgress);
        }
        n = GATE.wait_timeout(n, left).unwrap_or_else(|e| e.into_inner()).0;
    }
    let mut shared = crate::lock(&SHARED);
    let decided = needed
        .iter()
        .map(|(p, m)| match entry(&mut shared, p.as_os_str().as_bytes(), m.base) {
            Some(e) if e.users > 1 => false,
            Some(e) => {
                e.closing = true;
                true
            }
            None => true,
        })
        .collect();
    Ok(decided)
}

/// The unload that [`partition`]ed `needed` keeps the module mapped (a
/// Zombie, or `UnmapPolicy::Never`): its libraries are not closing.
fn reopen(needed: &[(PathBuf, ObjectMapping)]) {
    if needed.is_empty() {
        return;
    }
    let n = crate::lock(&LOADING);
    let mut shared = crate::lock(&SHARED);
    for (p, m) in needed {
        if let Some(e) = entry(&mut shared, p.as_os_str().as_bytes(), m.base) {
            e.closing = false;
        }
    }
    drop(shared);
    drop(n);
    GATE.notify_all();
}

/// The module's object was closed: it no longer uses its libraries.
/// Returns, for each, whether another live module still uses it (one whose
/// load raced with this unload). Entries of libraries no longer mapped go.
fn release(needed: &[(PathBuf, ObjectMapping)]) -> Vec<bool> {
    let n = crate::lock(&LOADING);
    let mut shared = crate::lock(&SHARED);
    let used = needed
        .iter()
        .map(|(p, m)| match entry(&mut shared, p.as_os_str().as_bytes(), m.base) {
            Some(e) => {
                e.users = e.users.saturating_sub(1);
                e.closing = false;
                e.users > 0
            }
            None => false,
        })
        .collect();
    if shared.iter().any(|s| s.users == 0) {
        let mapped = snapshot();
        shared.retain(|s| s.users > 0 || mapped.iter().any(|(n, b)| *n == s.name && *b == s.base));
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
            users: 1,
            closing: false,
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
        release(&lib);
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
        release(&lib);
    }
}
