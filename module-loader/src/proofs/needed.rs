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
//! library that was already loaded (by the host or another plugin) is not
//! the plugin's, and stays.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::address_space::{self, ObjectMapping};

/// The objects that are loaded now, by (name, base).
pub(crate) fn snapshot() -> Vec<(Vec<u8>, usize)> {
    address_space::loaded_objects()
        .into_iter()
        .map(|(n, m)| (n, m.base))
        .collect()
}

/// The objects loaded now that were not in `before` and that the object
/// opened as `loaded` (mapped at `own`) needs, directly or through another.
pub(crate) fn brought_in(
    before: &[(Vec<u8>, usize)],
    loaded: &std::path::Path,
    own: &ObjectMapping,
) -> Vec<(PathBuf, ObjectMapping)> {
    let own_name = loaded.as_os_str().as_bytes();
    let mut fresh: Vec<(Vec<u8>, ObjectMapping)> = address_space::loaded_objects()
        .into_iter()
        .filter(|(n, m)| !n.is_empty() && n != own_name && !before.iter().any(|(bn, bb)| bn == n && *bb == m.base))
        .collect();
    let mut wanted: Vec<Vec<u8>> = own.needed.clone();
    let mut out = Vec::new();
    // Each pass takes the fresh objects named so far; their own needs join.
    loop {
        let named = |(n, m): &(Vec<u8>, ObjectMapping)| {
            let file = n.rsplit(|&b| b == b'/').next().unwrap_or(n);
            wanted.iter().any(|w| w == file || m.soname.as_ref() == Some(w))
        };
        let (take, rest): (Vec<_>, Vec<_>) = fresh.into_iter().partition(named);
        fresh = rest;
        if take.is_empty() {
            return out;
        }
        for (n, m) in take {
            wanted.extend(m.needed.iter().cloned());
            out.push((PathBuf::from(std::ffi::OsStr::from_bytes(&n)), m));
        }
    }
}
