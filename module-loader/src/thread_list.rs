//! glibc's list of threads, read through the layout glibc publishes for
//! debuggers, to find live threads whose start routine lies in an object.
//!
//! # Why
//!
//! A plugin that starts a thread (`std::thread::spawn`, a rayon or tokio
//! pool, a raw `pthread_create`) leaves code of its own running after its
//! calls return: the thread's start routine is the plugin's (for a Rust
//! thread, the plugin's copy of std's `thread_start`). Unmapping the object
//! under it kills the host.
//!
//! # How
//!
//! glibc ≥ 2.34 keeps every thread descriptor (`struct pthread`) on two
//! lists in the dynamic linker's `_rtld_global`: `_dl_stack_used` (threads on
//! stacks glibc allocated) and `_dl_stack_user` (the main thread, and threads
//! on stacks the caller supplied). `libthread_db` finds them through
//! descriptors glibc exports: `_thread_db_rtld_global__dl_stack_{used,user}`
//! (offsets in `_rtld_global`), `_thread_db_pthread_list` (the link in each
//! descriptor), `_thread_db_list_t_next`, `_thread_db_pthread_tid` and
//! `_thread_db_pthread_start_routine`. A thread is alive while its `tid` is
//! non-zero: the kernel clears it when the thread has exited
//! (`CLONE_CHILD_CLEARTID`), after its TLS and key destructors ran.
//!
//! The lists change while we read them (glibc takes a lock we cannot name),
//! so every read goes through `process_vm_readv` on our own process, which
//! returns an error instead of faulting on memory unmapped meanwhile, a walk
//! is bounded, and a walk is accepted only if it saw every thread that
//! `/proc/self/task` listed before it started and that still exists after
//! it: a torn walk is retried, then reported as unreadable. Threads created
//! after that listing are not the object's: no code of the object runs any
//! more when the loader asks (calls have drained, callbacks are drained),
//! so nothing can start one.

use std::collections::BTreeSet;
use std::ffi::{c_void, CStr};
use std::sync::OnceLock;

/// The layout of glibc's thread lists, as `libthread_db` reads it.
#[derive(Debug, Clone, Copy)]
pub struct ThreadList {
    heads: [usize; 2],
    next_off: usize,
    list_off: usize,
    tid_off: usize,
    start_off: usize,
}

/// One live thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadRecord {
    /// Its kernel thread id.
    pub tid: i32,
    /// Its start routine (0 for the main thread).
    pub start_routine: usize,
    /// Its `struct pthread` (its `pthread_t`).
    pub descriptor: usize,
}

fn symbol(name: &CStr) -> usize {
    // SAFETY: dlsym with RTLD_DEFAULT only looks a symbol up.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}

/// A `libthread_db` field descriptor: `[bits, count, offset]`.
fn descriptor(name: &CStr) -> Option<[u32; 3]> {
    let p = symbol(name) as *const [u32; 3];
    // SAFETY: glibc defines these symbols as `const uint32_t[3]`.
    (!p.is_null()).then(|| unsafe { *p })
}

/// Read a `T` at `addr` of our own address space without faulting: `None`
/// if any byte of it is not mapped (now).
pub(crate) fn peek<T: Copy + Default>(addr: usize) -> Option<T> {
    peek_in(me(), addr)
}

/// Read `buf.len()` bytes at `addr` of our own address space without
/// faulting; how many were read (the kernel stops at the first byte that is
/// not mapped now).
pub(crate) fn read_bytes(addr: usize, buf: &mut [u8]) -> usize {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` is `buf`, `buf.len()` writable bytes; the kernel
    // checks `remote` and stops short (or fails) rather than fault on it.
    let got = unsafe { libc::process_vm_readv(me(), &local, 1, &remote, 1, 0) };
    usize::try_from(got).unwrap_or(0)
}

/// The id `process_vm_readv` is given for our own address space: the
/// calling thread's, not the process id. The process id names the main
/// thread, and once that thread has exited (`pthread_exit` while others
/// run: a zombie that keeps the id) it has no address space left, and
/// every read through its id fails.
fn me() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// [`peek`] with our id already known (one `gettid` per walk, not per word).
fn peek_in<T: Copy + Default>(pid: libc::pid_t, addr: usize) -> Option<T> {
    let mut v = T::default();
    let size = std::mem::size_of::<T>();
    let local = libc::iovec {
        iov_base: &mut v as *mut T as *mut c_void,
        iov_len: size,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: size,
    };
    // SAFETY: `local` is our own `v`, `size` bytes; the kernel checks
    // `remote` and fails (EFAULT) rather than fault on it.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    (n == size as isize).then_some(v)
}

/// A thread descriptor's tid (at `tid`), start routine (at `start`) and
/// list link (at `next`), read in one `process_vm_readv`: `None` unless
/// every byte of the three was read (the kernel stops at the first remote
/// range it cannot read).
fn peek_descriptor(pid: libc::pid_t, tid: usize, start: usize, next: usize) -> Option<(i32, usize, usize)> {
    let (mut t, mut s, mut n) = (0i32, 0usize, 0usize);
    let local = [
        libc::iovec {
            iov_base: &mut t as *mut i32 as *mut c_void,
            iov_len: 4,
        },
        libc::iovec {
            iov_base: &mut s as *mut usize as *mut c_void,
            iov_len: std::mem::size_of::<usize>(),
        },
        libc::iovec {
            iov_base: &mut n as *mut usize as *mut c_void,
            iov_len: std::mem::size_of::<usize>(),
        },
    ];
    let remote = [
        libc::iovec {
            iov_base: tid as *mut c_void,
            iov_len: 4,
        },
        libc::iovec {
            iov_base: start as *mut c_void,
            iov_len: std::mem::size_of::<usize>(),
        },
        libc::iovec {
            iov_base: next as *mut c_void,
            iov_len: std::mem::size_of::<usize>(),
        },
    ];
    let want: usize = local.iter().map(|v| v.iov_len).sum();
    // SAFETY: `local` describes our own three variables, with their sizes;
    // the kernel checks `remote` and fails (or stops short) rather than
    // fault on it.
    let got = unsafe { libc::process_vm_readv(pid, local.as_ptr(), 3, remote.as_ptr(), 3, 0) };
    (got == want as isize).then_some((t, s, n))
}

/// Every task of this process, from `/proc/self/task`.
fn tasks() -> Option<BTreeSet<i32>> {
    let dir = std::fs::read_dir("/proc/self/task").ok()?;
    Some(dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
}

/// Does thread `tid` still exist and run code? A task that has exited but is
/// still listed counts as gone: a zombie (`Z`, e.g. a main thread that
/// called `pthread_exit` while others run: the kernel keeps the thread-group
/// leader listed, and glibc's descriptor of it no longer names it) or a dead
/// one (`X`). Neither runs code again, so neither can be inside a plugin.
fn task_exists(tid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return false;
    };
    // The state is the first field after the command name, which is in
    // parentheses and may itself contain ')' : take the last one.
    !matches!(
        stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()),
        Some("Z" | "X" | "x")
    )
}

/// A thread's name, from `/proc/self/task/<tid>/comm`.
pub fn thread_name(tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

/// Longest list a walk follows before it calls the walk torn.
const MAX_THREADS: usize = 1 << 16;

impl ThreadList {
    /// Find glibc's thread lists and check their layout; `None` where this
    /// is not a glibc whose lists we understand (or `process_vm_readv` is
    /// refused), and also, this time only, where the lists changed under
    /// every walk of the check (threads starting and exiting meanwhile).
    pub fn open() -> Option<ThreadList> {
        static LIST: OnceLock<Option<ThreadList>> = OnceLock::new();
        Self::open_in(&LIST, ThreadList::live_threads)
    }

    /// [`ThreadList::open`] with its cache and its walk given (tests give
    /// their own). Only a verdict is cached: the layout descriptors are
    /// missing or unexpected, or a complete walk found (or did not find)
    /// the calling thread. A walk that stayed torn (`live_threads` gave up)
    /// says nothing about the layout; cached, it would make every later
    /// unload of the process a Zombie (`ThreadsUnverifiable`) that no retry
    /// re-proves (seen in `redteam_loader_host_stress.rs`: the first unload
    /// ran while the host's short-lived threads exited).
    fn open_in(
        cache: &OnceLock<Option<ThreadList>>,
        walk: impl Fn(&ThreadList) -> Option<Vec<ThreadRecord>>,
    ) -> Option<ThreadList> {
        if let Some(verdict) = cache.get() {
            return *verdict;
        }
        let Some(l) = ThreadList::layout() else {
            return *cache.get_or_init(|| None);
        };
        // The calling thread must be found: checks the layout and that
        // process_vm_readv works here.
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as usize;
        let found = walk(&l)?.iter().any(|t| t.descriptor == me);
        *cache.get_or_init(|| found.then_some(l))
    }

    /// The lists' addresses and the descriptor offsets, from the layout
    /// glibc publishes; `None` if missing or unexpected.
    fn layout() -> Option<ThreadList> {
        let rtld = symbol(c"_rtld_global");
        let used = descriptor(c"_thread_db_rtld_global__dl_stack_used")?;
        let user = descriptor(c"_thread_db_rtld_global__dl_stack_user")?;
        let next = descriptor(c"_thread_db_list_t_next")?;
        let list = descriptor(c"_thread_db_pthread_list")?;
        let tid = descriptor(c"_thread_db_pthread_tid")?;
        let start = descriptor(c"_thread_db_pthread_start_routine")?;
        let word = usize::BITS;
        let sane = rtld != 0
            && used[0] == 2 * word
            && user[0] == 2 * word
            && next[0] == word
            && list[0] == 2 * word
            && tid[0] == 32
            && start[0] == word
            && [used[2], user[2], next[2], list[2], start[2]]
                .iter()
                .all(|o| o % 8 == 0)
            && tid[2] % 4 == 0;
        sane.then_some(ThreadList {
            heads: [rtld + used[2] as usize, rtld + user[2] as usize],
            next_off: next[2] as usize,
            list_off: list[2] as usize,
            tid_off: tid[2] as usize,
            start_off: start[2] as usize,
        })
    }

    /// One walk of both lists: every descriptor with a non-zero tid. Each
    /// descriptor's three words (tid, start routine, link to the next) are
    /// read with one `process_vm_readv`.
    fn walk(&self) -> Option<Vec<ThreadRecord>> {
        let pid = me();
        let mut out = Vec::new();
        for &head in &self.heads {
            let mut p: usize = peek_in(pid, head + self.next_off)?;
            let mut steps = 0;
            while p != head {
                steps += 1;
                if steps > MAX_THREADS || p == 0 {
                    return None;
                }
                let pd = p.checked_sub(self.list_off)?;
                let (tid, start_routine, next) = peek_descriptor(
                    pid,
                    pd.checked_add(self.tid_off)?,
                    pd.checked_add(self.start_off)?,
                    p.checked_add(self.next_off)?,
                )?;
                if tid > 0 {
                    out.push(ThreadRecord {
                        tid,
                        start_routine,
                        descriptor: pd,
                    });
                }
                p = next;
            }
        }
        Some(out)
    }

    /// Every live thread of the process: a walk that saw every task listed
    /// before it began and still alive after it ended (see the module
    /// documentation); `None` if walks stayed torn for about 50 ms.
    ///
    /// A task can be listed while its descriptor says nothing yet or any
    /// more: a thread being born is in `/proc` before `clone` writes its tid
    /// into the descriptor, and an exiting one stays there a moment after
    /// the kernel cleared it. Both pass in microseconds, so a torn walk is
    /// retried, with a growing pause, rather than given up.
    pub fn live_threads(&self) -> Option<Vec<ThreadRecord>> {
        let mut nap = std::time::Duration::from_micros(20);
        let mut waited = std::time::Duration::ZERO;
        loop {
            let before = tasks()?;
            if let Some(seen) = self.walk() {
                let seen_tids: BTreeSet<i32> = seen.iter().map(|t| t.tid).collect();
                if before.iter().all(|t| seen_tids.contains(t) || !task_exists(*t)) {
                    return Some(seen);
                }
            }
            if waited > std::time::Duration::from_millis(50) {
                return None;
            }
            std::thread::sleep(nap);
            waited += nap;
            nap = (nap * 2).min(std::time::Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    extern "C" fn parked(arg: *mut c_void) -> *mut c_void {
        // SAFETY: `arg` is the receiver below, alive until we return.
        let rx = unsafe { &*(arg as *const mpsc::Receiver<()>) };
        let _ = rx.recv();
        std::ptr::null_mut()
    }

    /// A check whose walks stayed torn (threads exiting meanwhile) is not
    /// a verdict: the next `open` checks again, and finds the list.
    #[test]
    fn a_check_torn_by_exiting_threads_is_retried_by_the_next_open_not_cached() {
        let cache = OnceLock::new();
        let torn = |_: &ThreadList| None;
        assert!(
            ThreadList::open_in(&cache, torn).is_none(),
            "a torn check opens nothing"
        );
        // Other tests' threads start and exit meanwhile: a complete walk,
        // however many it takes.
        let complete = |l: &ThreadList| (0..100).find_map(|_| l.live_threads());
        let list = ThreadList::open_in(&cache, complete);
        assert!(
            list.is_some(),
            "a torn first check made the thread list unreadable for good"
        );
        // Now a verdict: cached.
        assert!(ThreadList::open_in(&cache, torn).is_some());
    }

    #[test]
    fn finds_a_raw_pthread_by_its_start_routine_and_loses_it_once_joined() {
        let list = ThreadList::open().expect("glibc's thread list is readable here");
        let (tx, rx) = mpsc::channel::<()>();
        let mut t: libc::pthread_t = 0;
        // SAFETY: `parked` matches the start routine type; `rx` outlives the thread (joined below).
        let rc = unsafe { libc::pthread_create(&mut t, std::ptr::null(), parked, &rx as *const _ as *mut c_void) };
        assert_eq!(rc, 0);
        let routine = parked as extern "C" fn(*mut c_void) -> *mut c_void as usize;
        let ours = list.live_threads().unwrap();
        let rec = ours
            .iter()
            .find(|r| r.start_routine == routine)
            .expect("the thread is listed");
        assert_eq!(rec.descriptor, t as usize);
        assert!(ours.iter().any(|r| r.start_routine == 0), "the main thread is listed");
        tx.send(()).unwrap();
        // SAFETY: joining the thread created above.
        assert_eq!(unsafe { libc::pthread_join(t, std::ptr::null_mut()) }, 0);
        assert!(!list.live_threads().unwrap().iter().any(|r| r.start_routine == routine));
    }
}
