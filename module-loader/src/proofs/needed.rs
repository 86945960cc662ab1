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

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Mutex;

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
}

/// Every library a plugin load brought in, until an unload sees it leave.
/// An entry with no users is kept while the library may still be mapped
/// (a load racing with the last unload holds it): a module that needs it
/// then counts it as its own.
static SHARED: Mutex<Vec<Shared>> = Mutex::new(Vec::new());

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

/// Which of a module's libraries its unload proves idle and expects gone:
/// those it is the last live user of (true), not those another live module
/// also uses (false; they stay, and are that module's to prove).
pub(crate) fn partition(needed: &[(PathBuf, ObjectMapping)]) -> Vec<bool> {
    let mut shared = crate::lock(&SHARED);
    needed
        .iter()
        .map(|(p, m)| entry(&mut shared, p.as_os_str().as_bytes(), m.base).is_none_or(|e| e.users <= 1))
        .collect()
}

/// The module's object was closed: it no longer uses its libraries.
/// Returns, for each, whether another live module still uses it (one whose
/// load raced with this unload). Entries of libraries no longer mapped go.
pub(crate) fn release(needed: &[(PathBuf, ObjectMapping)]) -> Vec<bool> {
    let mut shared = crate::lock(&SHARED);
    let used = needed
        .iter()
        .map(|(p, m)| match entry(&mut shared, p.as_os_str().as_bytes(), m.base) {
            Some(e) => {
                e.users = e.users.saturating_sub(1);
                e.users > 0
            }
            None => false,
        })
        .collect();
    if shared.iter().any(|s| s.users == 0) {
        let mapped = snapshot();
        shared.retain(|s| s.users > 0 || mapped.iter().any(|(n, b)| *n == s.name && *b == s.base));
    }
    used
}
