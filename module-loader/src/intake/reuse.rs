//! The pool of idle copies: sealed memfds whose object has left the
//! address space, kept for the next load of the same, unchanged source.
//!
//! # Why
//!
//! Copying a plugin into a fresh memfd costs its size in new shmem pages
//! (a 750 KB plugin: about 125 µs of `sendfile` and 40 µs to free the pages
//! at `close`, against about 50 µs for a bare `dlopen` + `dlclose` of the
//! file). A host that loads the same unchanged file again (a test suite, a
//! plugin unloaded when idle and loaded when needed) pays that every time.
//!
//! # Why it is correct
//!
//! - A copy is a sealed memfd (`F_SEAL_WRITE | SHRINK | GROW | SEAL`):
//!   nobody, this process included, can change it, so the checks it passed
//!   (`crate::elf_check`) and the facts read from it (`crate::elf_facts`)
//!   hold for every later load of it. Nothing is re-checked because nothing
//!   can have changed.
//! - A copy is reused only for a source whose identity, read with `fstat`
//!   on the descriptor opened for this load, equals the one it was copied
//!   under: device, inode, size, modification and change times
//!   ([`SourceId`]). The kernel sets the change time (`ctime`) to the
//!   current time on every write, truncation, rename over or metadata
//!   change, and no caller can set it back.
//! - A timestamp only moves when the clock ticks (the kernel's coarse
//!   clock, or the file system's granularity: up to a second or two on
//!   some). So a copy is pooled only if the source's `ctime` was at least
//!   [`QUIET`] older than the moment the copy began, and the source's
//!   identity was the same after the copy as before it: any write that
//!   could have changed the bytes, before or during the copy, left a newer
//!   `ctime` than the one recorded, which no later load will match. A file
//!   that was just written (a hot reload) is copied afresh each time until
//!   it has been quiet for [`QUIET`].
//! - A copy is taken out of the pool by the load that uses it, and comes
//!   back only when the loader has seen its object leave the address space
//!   (`Intake::release` with `unmapped`): two live modules never share a
//!   copy (the dynamic linker would hand the second one the first one's
//!   object, as it identifies objects by name and by inode), and the name
//!   `/proc/self/fd/N` stays unique while any object may be listed under it.
//!
//! What it cannot see: a writer that changes the file without moving its
//! timestamps (stores through a shared writable mapping on a file system
//! that does not update them on such writes; the system clock set back to
//! the exact `ctime` of the copy). A host that must load whatever the file
//! holds at each load in those cases turns reuse off
//! ([`LoaderConfig::reuse_copies`](crate::LoaderConfig::reuse_copies)).
//!
//! # Bounded
//!
//! At most [`MAX_IDLE`] copies and [`MAX_IDLE_BYTES`] bytes are idle at a
//! time, the least recently returned leaving first; a copy whose source has
//! changed is dropped as soon as a load sees the change. Copies in use by a
//! loaded module are not counted (they would exist without the pool too).

use std::collections::VecDeque;
use std::fs::Metadata;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::elf_facts::FileFacts;

/// How long a source must have been unchanged before the copy began for
/// the copy to be pooled: more than any timestamp granularity of a Linux
/// file system that plugins are loaded from (the coarse clock ticks every
/// few milliseconds; ext3 and FAT-like ones count whole seconds or two).
pub(crate) const QUIET: Duration = Duration::from_secs(3);

/// At most this many idle copies.
pub(crate) const MAX_IDLE: usize = 8;

/// At most this many bytes of idle copies.
pub(crate) const MAX_IDLE_BYTES: u64 = 64 << 20;

/// What identifies the content of a source file: see the module
/// documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SourceId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl SourceId {
    /// The identity of the file `meta` describes (an `fstat` of the open
    /// source).
    pub(crate) fn of(meta: &Metadata) -> SourceId {
        SourceId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The source's size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    fn same_file(&self, other: &SourceId) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

/// Was the source unchanged for [`QUIET`] before `copy_started`?
pub(crate) fn quiet_since(id: &SourceId, copy_started: SystemTime) -> bool {
    let (Ok(secs), Ok(nanos)) = (u64::try_from(id.ctime.0), u32::try_from(id.ctime.1)) else {
        return false;
    };
    let changed = UNIX_EPOCH + Duration::new(secs, nanos);
    changed
        .checked_add(QUIET)
        .is_some_and(|quiet_from| quiet_from <= copy_started)
}

/// One idle copy.
pub(crate) struct Idle {
    pub(crate) fd: OwnedFd,
    pub(crate) facts: Arc<FileFacts>,
    id: SourceId,
}

static POOL: Mutex<VecDeque<Idle>> = Mutex::new(VecDeque::new());

/// Take the idle copy of the source `id`, if there is one. Copies of an
/// earlier content of the same file are dropped: no load can match them.
pub(crate) fn take(id: &SourceId) -> Option<Idle> {
    let mut stale = Vec::new();
    let found = {
        let mut pool = crate::lock(&POOL);
        let found = pool.iter().position(|i| i.id == *id).and_then(|at| pool.remove(at));
        if found.is_none() {
            let mut i = 0;
            while i < pool.len() {
                if pool[i].id.same_file(id) {
                    stale.extend(pool.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        found
    };
    // Closing a memfd frees its pages: outside the lock.
    drop(stale);
    found
}

/// Give back the copy of source `id`, whose object has left the address
/// space; keeps it unless the pool would exceed its bounds (the oldest go
/// first) or already holds a copy of that source.
pub(crate) fn put(id: SourceId, fd: OwnedFd, facts: Arc<FileFacts>) {
    if id.size > MAX_IDLE_BYTES {
        return;
    }
    // The pool holds the copy under a descriptor of its own, and the one
    // the module was loaded through is closed: the name `/proc/self/fd/N`
    // the module was known by ends with it, as without the pool, and the
    // next load of the copy is opened under the pool's name.
    let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(&fd, 0) else {
        return;
    };
    let mut dropped = Vec::new();
    {
        let mut pool = crate::lock(&POOL);
        if pool.iter().any(|i| i.id == id) {
            drop(pool);
            return;
        }
        pool.push_back(Idle { fd, facts, id });
        let mut bytes: u64 = pool.iter().map(|i| i.id.size).sum();
        while pool.len() > MAX_IDLE || bytes > MAX_IDLE_BYTES {
            let Some(old) = pool.pop_front() else { break };
            bytes -= old.id.size;
            dropped.push(old);
        }
    }
    drop(dropped);
}

/// How many copies are idle in the pool, and their bytes.
pub(crate) fn idle() -> (usize, u64) {
    let pool = crate::lock(&POOL);
    (pool.len(), pool.iter().map(|i| i.id.size).sum())
}
