//! What `/proc` says about this process's threads: the list of tids and,
//! per thread, its scheduler state, voluntary-switch count, tracer and name.
//!
//! The directory `/proc/self/task` is opened once (`O_DIRECTORY`) and kept;
//! a listing is an `lseek` back to 0 and a few `getdents64` calls into one
//! buffer. A thread's `status` file is opened once per grace period and
//! re-read with `pread` at offset 0 (seq_file regenerates it), so a holdout
//! costs one system call per check. The open file pins the thread's `struct
//! pid`: if the thread exits and its tid is reused within the grace period,
//! the read fails (the old thread is gone) instead of describing the newcomer.
//!
//! Raw `libc` calls rather than `std::fs::read_dir`: `read_dir` opens the
//! directory anew each time and allocates an entry per thread; the parsing
//! is a few `split` calls over text the kernel formats, no crate needed.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A thread's scheduler state letter (`State:` in `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SchedState {
    /// `R`: running or runnable.
    Running,
    /// `S`: interruptible sleep, blocked in the kernel.
    Sleeping,
    /// `D`: uninterruptible sleep, blocked in the kernel.
    DiskSleep,
    /// `T`: stopped by job control.
    Stopped,
    /// `t`: stopped by a tracer.
    TracingStop,
    /// `Z`, `X`: exiting or dead.
    Dead,
    /// `I` (idle kernel thread) or anything else: treated as running.
    Other(u8),
}

impl SchedState {
    fn from_letter(c: u8) -> SchedState {
        match c {
            b'R' => SchedState::Running,
            b'S' => SchedState::Sleeping,
            b'D' => SchedState::DiskSleep,
            b'T' => SchedState::Stopped,
            b't' => SchedState::TracingStop,
            b'Z' | b'X' => SchedState::Dead,
            c => SchedState::Other(c),
        }
    }

    /// Blocked in the kernel (`S` or `D`): not inside a hook at this instant.
    pub(crate) fn blocked(self) -> bool {
        matches!(self, SchedState::Sleeping | SchedState::DiskSleep)
    }

    /// Stopped (`T` or `t`): may resume anywhere, a hook included.
    pub(crate) fn stopped(self) -> bool {
        matches!(self, SchedState::Stopped | SchedState::TracingStop)
    }

    /// The letter `/proc` shows.
    pub(crate) fn letter(self) -> char {
        match self {
            SchedState::Running => 'R',
            SchedState::Sleeping => 'S',
            SchedState::DiskSleep => 'D',
            SchedState::Stopped => 'T',
            SchedState::TracingStop => 't',
            SchedState::Dead => 'Z',
            SchedState::Other(c) => c as char,
        }
    }
}

/// One reading of a thread's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) state: SchedState,
    /// `voluntary_ctxt_switches`.
    pub(crate) nvcsw: u64,
    /// `TracerPid` (0: not traced).
    pub(crate) tracer: i32,
}

/// The kept `/proc/self/task` directory of this process.
#[derive(Debug)]
pub(crate) struct TaskDir {
    fd: OwnedFd,
    pid: i32,
    buf: Vec<u8>,
}

// `linux_dirent64`: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name.
const DIRENT_RECLEN_AT: usize = 16;
const DIRENT_NAME_AT: usize = 19;

impl TaskDir {
    /// Open `/proc/self/task` (checked against `getpid` before each use, so
    /// that a forked child does not list its parent's threads).
    pub(crate) fn open() -> std::io::Result<TaskDir> {
        // SAFETY: a NUL-terminated literal path; the flags open a directory.
        let fd = unsafe {
            libc::open(
                c"/proc/self/task".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(TaskDir {
            // SAFETY: `fd` was just opened and is owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            // SAFETY: getpid has no preconditions.
            pid: unsafe { libc::getpid() },
            buf: vec![0; 32 * 1024],
        })
    }

    /// Is this still the directory of the calling process?
    pub(crate) fn is_current(&self) -> bool {
        // SAFETY: getpid has no preconditions.
        self.pid == unsafe { libc::getpid() }
    }

    /// Every tid of the process, in directory order.
    pub(crate) fn list(&mut self, out: &mut Vec<i32>) -> std::io::Result<()> {
        out.clear();
        let fd = self.fd.as_raw_fd();
        // SAFETY: `fd` is an open directory owned by `self`.
        if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        loop {
            // SAFETY: the buffer is ours and its length is passed.
            let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, self.buf.as_mut_ptr(), self.buf.len()) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if n == 0 {
                return Ok(());
            }
            let mut at = 0usize;
            while at < n as usize {
                let rec = &self.buf[at..n as usize];
                let reclen = u16::from_ne_bytes([rec[DIRENT_RECLEN_AT], rec[DIRENT_RECLEN_AT + 1]]) as usize;
                let name = &rec[DIRENT_NAME_AT..reclen];
                let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
                if let Some(tid) = parse_int(name) {
                    out.push(tid as i32);
                }
                at += reclen.max(1);
            }
        }
    }

    /// Open `<tid>/status`. [`Opened::Gone`] only when the kernel says the
    /// thread does not exist (`ENOENT`, `ESRCH`); any other failure (out of
    /// descriptors, out of memory) is [`Opened::Unknown`]: no evidence
    /// either way, so the thread stays a holdout.
    pub(crate) fn open_status(&self, tid: i32) -> Opened {
        let mut path = [0u8; 32];
        let s = format_path(tid, &mut path);
        // SAFETY: `s` is NUL-terminated; `self.fd` is an open directory.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), s.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return if gone_errno() { Opened::Gone } else { Opened::Unknown };
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Opened::File(StatusFile(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

/// What opening a thread's status file gave.
pub(crate) enum Opened {
    /// The file.
    File(StatusFile),
    /// The thread does not exist any more.
    Gone,
    /// It could not be opened for another reason: nothing is known.
    Unknown,
}

/// Does the last failed call's `errno` say that the thread is gone?
fn gone_errno() -> bool {
    matches!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ESRCH)
    )
}

impl StatusFile {
    /// [`StatusFile::sample`], telling a thread that is gone (the read
    /// fails with `ESRCH` or `ENOENT`, or reads nothing) from one whose read
    /// failed for another reason (`Err(())`: nothing is known, the thread
    /// stays a holdout).
    pub(crate) fn sample_or_gone(&self, buf: &mut [u8]) -> Result<Option<Sample>, ()> {
        match self.read(buf) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(parse(&buf[..n]).map(|(s, _)| s)),
            Err(true) => Ok(None),
            Err(false) => Err(()),
        }
    }
}

fn format_path(tid: i32, buf: &mut [u8; 32]) -> &CStr {
    use std::io::Write;
    let mut w = &mut buf[..];
    let _ = write!(w, "{tid}/status\0");
    CStr::from_bytes_until_nul(buf).unwrap_or(c"")
}

fn parse_int(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(v)
}

/// An open `/proc/self/task/<tid>/status`.
#[derive(Debug)]
pub(crate) struct StatusFile(OwnedFd);

impl StatusFile {
    /// Read it afresh; `None` if the thread is gone (or the text is not
    /// what this parser knows, which is treated as gone only if the state
    /// line is missing too, never as quiescent otherwise).
    pub(crate) fn sample(&self, buf: &mut [u8]) -> Option<(Sample, usize)> {
        match self.read(buf) {
            Ok(n) if n > 0 => parse(&buf[..n]),
            _ => None,
        }
    }

    /// Read the file from its start: the byte count, or whether the error
    /// says the thread is gone.
    fn read(&self, buf: &mut [u8]) -> Result<usize, bool> {
        // SAFETY: the buffer is ours; pread on an open fd.
        let n = unsafe { libc::pread(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(gone_errno())
        } else {
            Ok(n as usize)
        }
    }
}

/// Parse a status text; `None` without a `State:` line.
fn parse(text: &[u8]) -> Option<(Sample, usize)> {
    let n = text.len();
    let mut state = None;
    let mut nvcsw = None;
    let mut tracer = 0i32;
    for line in text.split(|&b| b == b'\n') {
        if let Some(v) = line.strip_prefix(b"State:") {
            state = v
                .iter()
                .find(|c| !c.is_ascii_whitespace())
                .map(|&c| SchedState::from_letter(c));
        } else if let Some(v) = line.strip_prefix(b"TracerPid:") {
            tracer = parse_int(v.trim_ascii()).unwrap_or(0) as i32;
        } else if let Some(v) = line.strip_prefix(b"voluntary_ctxt_switches:") {
            nvcsw = parse_int(v.trim_ascii());
        }
    }
    let state = state?;
    Some((
        Sample {
            state,
            // A missing count (never seen) only disables counter evidence.
            nvcsw: nvcsw.unwrap_or(u64::MAX),
            tracer,
        },
        n,
    ))
}

/// The name of thread `tid` (`Name:` in its status), for stall warnings.
pub(crate) fn thread_name(tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| String::from("?"))
}

/// Kernel thread id of the caller.
pub(crate) fn gettid() -> i32 {
    crate::diagnostics::current_tid() as i32
}
