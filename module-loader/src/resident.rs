//! At load, make the object's pages present in the page tables (populated,
//! not locked) before anything of it can run under Tasks RCU.
//!
//! A plugin's probes on normal tracepoints and its hooks run under Tasks
//! RCU, whose readers must not block. A firing thread that executes a fresh
//! copy's code, or writes its `.data` or `.bss`, for the first time takes a
//! page fault, and the fault may sleep (`D`): on a page lock, or on the
//! `mmap` lock that a concurrent `dlopen`, `dlclose` or `munmap` holds (a
//! first write to an anonymous mapping without its `anon_vma` yet cannot
//! take the per-VMA lock and falls back to the `mmap` lock). The unload's
//! Tasks grace period takes that blocked state as quiescent, and the object
//! was unmapped under the thread, which died of SIGSEGV at the first
//! instruction of the probe's trampoline: a hot reload under load that
//! unloads a copy right after attaching its probes
//! (`tests/tests/redteam6_unload.rs`, `child_busy_reload`), 1 run in 33 to
//! 105 without this, the core showing the firing thread at the call into
//! the unmapped trampoline.
//!
//! Populated with `madvise(MADV_POPULATE_READ)` for read-only segments and
//! `MADV_POPULATE_WRITE` for writable ones (their private copies taken
//! now; Linux 5.14). Not `mlock`: locking changes the mappings' flags, and
//! the split mappings outlived the object (the reload soak's
//! `/proc/self/maps` grew). Memory pressure may reclaim the pages later:
//! a plugin that must never fault under Tasks RCU locks its own pages
//! (the contract of `usrcu::tasks`). A kernel without the advice leaves
//! the pages to be faulted in on first use, as before.

use crate::module::Module;

/// `MADV_POPULATE_READ` / `_WRITE` (not in every libc crate version).
const MADV_POPULATE_READ: libc::c_int = 22;
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// Populate every accessible page of `m`'s `PT_LOAD` segments.
pub(crate) fn populate(m: &Module) {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for (a, b, writable) in object_ranges(&maps, m) {
        let advice = if writable {
            MADV_POPULATE_WRITE
        } else {
            MADV_POPULATE_READ
        };
        // SAFETY: a range of the object that is mapped (the module is
        // open, and `/proc/self/maps` says the range is accessible);
        // populating page tables (and, for a writable private mapping,
        // taking its private copies now) changes no contents. A failure
        // leaves the pages to be faulted in on first use.
        let _ = unsafe { libc::madvise(a as *mut libc::c_void, b - a, advice) };
    }
}

/// The parts of `/proc/self/maps`' accessible mappings that lie in `m`'s
/// segments, rounded out to pages: a mapping line can run past the object
/// (its `.bss` merged with an anonymous mapping after it), which is not the
/// object's to touch.
fn object_ranges<'a>(maps: &'a str, m: &'a Module) -> impl Iterator<Item = (usize, usize, bool)> + 'a {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => 4096,
    };
    accessible_ranges(maps).flat_map(move |(a, b, writable)| {
        m.mapping.segments.iter().filter_map(move |r| {
            let lo = a.max(r.start / page * page);
            let hi = b.min(r.end.div_ceil(page) * page);
            (lo < hi).then_some((lo, hi, writable))
        })
    })
}

/// The mappings of `/proc/self/maps` text that can be accessed (not the
/// `PROT_NONE` gaps between an object's segments), as address ranges and
/// whether they are writable.
fn accessible_ranges(maps: &str) -> impl Iterator<Item = (usize, usize, bool)> + '_ {
    crate::address_space::maps_lines(maps)
        .filter(|(_, _, perms)| perms.contains(['r', 'w', 'x']))
        .map(|(a, b, perms)| (a, b, perms.contains('w')))
}
