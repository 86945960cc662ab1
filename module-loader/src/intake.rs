//! Intake: the private, checked copy of a plugin file that `dlopen` opens.
//!
//! # Why a copy, and why a private one
//!
//! `dlopen` of a path that is still mapped returns the old image, so every
//! load opens a fresh copy. The copy is also what makes the checks mean
//! anything: a file that is checked and then opened by path can be
//! rewritten, truncated or swapped for a symlink in between (a build still
//! writing it, a hot-reload watcher, another user). So:
//!
//! 1. The source is opened **once**; everything after reads that one open
//!    file (`fstat`: a regular file, not a directory or a FIFO; then its
//!    bytes). Swapping the path for a symlink or another file after that
//!    changes nothing of what is loaded. A symlink *at* the source path is
//!    followed when it is opened (the host named that path; a hot-reload
//!    setup often points a link at the current build): what matters is that
//!    the file is read through one descriptor, not which name it had.
//!    A file larger than
//!    [`LoaderConfig::max_file_size`](crate::LoaderConfig::max_file_size)
//!    is refused from its `fstat` size before a byte is copied, and the
//!    copy reads at most one byte past the bound (a file that grows, or
//!    reads longer than its size says), so no input can fill memory or disk.
//! 2. The bytes go into storage nobody else can write. By default an
//!    anonymous `memfd_create` object, sealed (`F_SEAL_WRITE | SHRINK |
//!    GROW | SEAL`) once written: not even this process can change it
//!    afterwards, so the bytes that are checked are the bytes that are
//!    mapped, and the file cannot shrink under a mapping (the `SIGBUS` of a
//!    truncated `.so`). `dlopen` opens it as `/proc/self/fd/N`. With
//!    [`LoaderConfig::copy_dir`](crate::LoaderConfig::copy_dir) set (a
//!    plugin that finds its `DT_NEEDED` siblings through `$ORIGIN` needs a
//!    real directory), the copy is a new file in that directory, which must
//!    be a directory owned by this user with no access for group or others
//!    (created `0700` if absent); the file is created with
//!    `O_CREAT | O_EXCL | O_NOFOLLOW`, so an existing file or a planted
//!    symlink is an error, never followed.
//! 3. The copy, not the source, is validated ([`crate::elf_check`]) before
//!    `dlopen` sees it.
//!
//! `rustix` gives `memfd_create`, the seals and `mmap` as safe or
//! narrowly-unsafe calls over owned file descriptors (rather than raw
//! `libc`); the standard library's `OpenOptionsExt` covers the directory case.
//!
//! # The name `dlopen` remembers
//!
//! The dynamic linker identifies a loaded object by the name it was opened
//! with, and a later `dlopen` of the same name returns that object. For a
//! memfd the name is `/proc/self/fd/N`, and `N` is reused once closed. So
//! the memfd stays open for as long as the object might be listed: it is
//! closed only when the loader has seen the object leave the address space
//! ([`Intake::release`]), and otherwise (a zombie, an object glibc keeps
//! resident) it is leaked on purpose, with the mapping it names.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{MemfdFlags, SealFlags};

use crate::elf_check::{self, Refusal};
use crate::elf_facts::FileFacts;
use crate::error::LoadError;

pub(crate) mod reuse;
use reuse::SourceId;

/// Where a module's copy lives, kept alive as long as the object may be
/// known to the dynamic linker by the copy's name.
#[derive(Debug)]
enum Storage {
    /// A sealed memfd, opened by `dlopen` as `/proc/self/fd/N`.
    Memfd(OwnedFd),
    /// A file in the private copy directory.
    File,
}

/// The private copy of one plugin file, validated, ready for `dlopen`.
#[derive(Debug)]
pub(crate) struct Intake {
    /// The path `dlopen` opens, and the name the dynamic linker lists.
    pub(crate) path: PathBuf,
    storage: Mutex<Option<Storage>>,
    /// What the loader needs from the copy's ELF tables, read from the
    /// same mapping that was validated (the file is parsed once).
    pub(crate) facts: Arc<FileFacts>,
    /// Where the copy may go once its object has left the address space:
    /// the pool of idle copies, under the source's identity (see
    /// [`reuse`]), or nowhere (closed).
    reuse_as: Option<SourceId>,
}

impl Intake {
    /// Copy `source` into private storage (a sealed memfd, or a new file
    /// `unique_name` in `copy_dir`) and validate the copy. With `reuse`
    /// (memfd copies only), an idle sealed copy of the same source, taken
    /// and validated by an earlier load, is used instead when the source's
    /// identity is unchanged (see [`reuse`]).
    pub(crate) fn take(
        source: &Path,
        copy_dir: Option<&Path>,
        unique_name: &str,
        reuse: bool,
        max_size: u64,
    ) -> Result<Intake, LoadError> {
        let (src, meta) = open_source(source)?;
        crate::phase_timing::lap("load: intake: open source");
        let too_large = |size: u64| LoadError::TooLarge {
            path: source.to_owned(),
            size,
            limit: max_size,
        };
        if meta.len() > max_size {
            return Err(too_large(meta.len()));
        }
        // A file that grows while it is copied (or whose size says nothing
        // of what a read returns, as in procfs) is read only up to one byte
        // past the bound: that byte is the proof it is too large.
        let mut src = io::Read::take(src, max_size.saturating_add(1));
        let copied_too_much = |copied: u64| (copied > max_size).then(|| too_large(copied));
        let id = (reuse && copy_dir.is_none()).then(|| SourceId::of(&meta));
        if let Some(id) = id {
            if let Some(idle) = reuse::take(&id) {
                crate::phase_timing::lap("load: intake: idle copy reused");
                return Ok(Intake {
                    path: PathBuf::from(format!("/proc/self/fd/{}", idle.fd.as_raw_fd())),
                    storage: Mutex::new(Some(Storage::Memfd(idle.fd))),
                    facts: idle.facts,
                    reuse_as: Some(id),
                });
            }
        }
        // Read before the copy starts: see `reuse::quiet_since`.
        let copy_started = std::time::SystemTime::now();
        let intake = match copy_dir {
            None => {
                let fd = rustix::fs::memfd_create(
                    format!("usrcu-module:{unique_name}"),
                    MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
                )
                .map_err(|e| copy_error(source, e.into()))?;
                let mut dst = File::from(fd);
                crate::phase_timing::lap("load: intake: memfd_create");
                let copied = io::copy(&mut src, &mut dst).map_err(|e| copy_error(source, e))?;
                if let Some(e) = copied_too_much(copied) {
                    return Err(e);
                }
                crate::phase_timing::lap("load: intake: copy");
                // From here on nobody, this process included, can change
                // the copy: what is validated below is what dlopen maps.
                rustix::fs::fcntl_add_seals(
                    &dst,
                    SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
                )
                .map_err(|e| copy_error(source, e.into()))?;
                let path = PathBuf::from(format!("/proc/self/fd/{}", dst.as_raw_fd()));
                let fd = OwnedFd::from(dst);
                crate::phase_timing::lap("load: intake: seal");
                let facts = validate(source, &fd)?;
                // The copy may be reused only if the source did not change
                // while it was read, nor can have changed unseen before, and
                // if the copy holds as many bytes as the source says it has
                // (not so for a file whose size says nothing of what a read
                // returns, as in procfs).
                let reuse_as = id.filter(|id| {
                    let after = src.get_ref().metadata().ok().map(|m| SourceId::of(&m));
                    let copied = rustix::fs::fstat(&fd).ok().map(|st| st.st_size as u64);
                    after.as_ref() == Some(id) && copied == Some(id.size()) && reuse::quiet_since(id, copy_started)
                });
                Intake {
                    path,
                    storage: Mutex::new(Some(Storage::Memfd(fd))),
                    facts: Arc::new(facts),
                    reuse_as,
                }
            }
            Some(dir) => {
                private_dir(dir)?;
                let path = dir.join(unique_name);
                let mut dst = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true) // O_CREAT | O_EXCL
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)
                    .map_err(|e| LoadError::Io {
                        path: path.clone(),
                        source: e,
                    })?;
                let mut intake = Intake {
                    path,
                    storage: Mutex::new(Some(Storage::File)),
                    facts: Arc::default(),
                    reuse_as: None,
                };
                // On any error below, `intake` is released (the file removed).
                let copied = io::copy(&mut src, &mut dst)
                    .map_err(|e| copy_error(source, e))
                    .and_then(|n| copied_too_much(n).map_or(Ok(()), Err))
                    .and_then(|()| validate(source, &dst));
                match copied {
                    Ok(facts) => intake.facts = Arc::new(facts),
                    Err(e) => {
                        intake.release(true);
                        return Err(e);
                    }
                }
                intake
            }
        };
        Ok(intake)
    }

    /// The object opened from this copy is gone (`unmapped`) or was never
    /// opened: close the memfd (or give it to the pool of idle copies, when
    /// it may be reused) or remove the file. Otherwise keep the memfd open
    /// for the rest of the process, so that its name `/proc/self/fd/N`
    /// stays unique while the dynamic linker may list it. A file copy is
    /// removed either way (its name is unique, and a mapping keeps the inode).
    pub(crate) fn release(&self, unmapped: bool) {
        let Some(storage) = crate::lock(&self.storage).take() else {
            return;
        };
        match storage {
            Storage::Memfd(fd) if unmapped => match self.reuse_as {
                Some(id) => reuse::put(id, fd, self.facts.clone()),
                None => drop(fd),
            },
            Storage::Memfd(fd) => std::mem::forget(fd),
            Storage::File => {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

impl Drop for Intake {
    /// A module record dropped without [`Intake::release`] (a loader dropped
    /// while it holds a zombie) may still be mapped: keep its name unique.
    fn drop(&mut self) {
        if let Some(Storage::Memfd(fd)) = crate::lock(&self.storage).take() {
            std::mem::forget(fd);
        }
    }
}

/// Open the source once, read-only, and check that it is a regular file.
fn open_source(source: &Path) -> Result<(File, fs::Metadata), LoadError> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused
    // just below); O_NOCTTY for a terminal device.
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(source)
        .map_err(|e| crate::module::io_error(source, e))?;
    let meta = f.metadata().map_err(|e| crate::module::io_error(source, e))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_block_device() || ft.is_char_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(LoadError::NotARegularFile {
            path: source.to_owned(),
            kind,
        });
    }
    Ok((f, meta))
}

/// Create `dir` (mode 0700) if it does not exist, then check that it is a
/// directory (not a symlink to one) owned by this user, with no access for
/// group or others.
fn private_dir(dir: &Path) -> Result<(), LoadError> {
    let unsafe_dir = |reason: String| LoadError::UnsafeCopyDir {
        path: dir.to_owned(),
        reason,
    };
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A missing parent: create the parents, then the directory, 0700.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| LoadError::Io {
                    path: dir.to_owned(),
                    source: e,
                })?;
        }
        Err(e) => {
            return Err(LoadError::Io {
                path: dir.to_owned(),
                source: e,
            })
        }
    }
    // O_NOFOLLOW | O_DIRECTORY: the directory itself, never through a symlink.
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| {
            unsafe_dir(format!(
                "cannot open it as a directory without following a symlink: {e}"
            ))
        })?;
    let meta = d.metadata().map_err(|e| LoadError::Io {
        path: dir.to_owned(),
        source: e,
    })?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "owned by uid {}, not by this process's uid {me}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_dir(format!(
            "mode {:o} gives group or others access (must be 0700)",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

fn copy_error(source: &Path, e: io::Error) -> LoadError {
    LoadError::Io {
        path: source.to_owned(),
        source: e,
    }
}

/// Map the copy read-only and run the ELF checks over it; then, from the
/// same mapping, read what the loader needs from its tables.
fn validate(source: &Path, fd: impl AsFd) -> Result<FileFacts, LoadError> {
    let len = rustix::fs::fstat(&fd)
        .map_err(|e| copy_error(source, e.into()))?
        .st_size as u64;
    let refused = |r: Refusal| r.into_load_error(source);
    if len == 0 {
        return Err(refused(Refusal::NotElf("an empty file".to_owned())));
    }
    let len = usize::try_from(len).map_err(|_| refused(Refusal::NotElf("larger than the address space".to_owned())))?;
    // SAFETY: a fresh read-only private mapping of a file nobody else can
    // write (a sealed memfd, or a new file in a private directory that only
    // this function touches), of its current length; unmapped below before
    // the slice over it goes out of scope.
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::PRIVATE,
            &fd,
            0,
        )
    }
    .map_err(|e| copy_error(source, e.into()))?;
    crate::phase_timing::lap("load: intake: validate: map");
    // SAFETY: `p` maps `len` readable bytes until the munmap below.
    let data = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
    let verdict = elf_check::check(data).map(|()| {
        crate::phase_timing::lap("load: intake: validate: elf_check");
        FileFacts::parse(data)
    });
    crate::phase_timing::lap("load: intake: validate: facts");
    // SAFETY: the mapping made above; `data` is not used after this.
    let _ = unsafe { rustix::mm::munmap(p, len) };
    crate::phase_timing::lap("load: intake: validate: unmap");
    verdict.map_err(refused)
}
