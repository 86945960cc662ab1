//! The host's Tasks engine: the grace-period sequence, the callers waiting
//! on it, the callback queue, the `usrcu-tasks` thread that drives grace
//! periods, and the `usrcu-tasks-cb` thread that runs callbacks. They are
//! separate so that a callback that blocks holds up only the callbacks
//! behind it, never a grace period (`synchronize`, polls, `HookSlot`
//! updates, tracepoint unregistration).
//!
//! | field (under `Engine::m`) | meaning |
//! |---|---|
//! | `started` | grace periods started; `started == completed`: idle |
//! | `completed` | grace periods completed |
//! | `requested` | highest grace-period number someone waits or polls for |
//! | `waiting` | tids blocked in `synchronize` (a grace period skips them) |
//! | `queue` | callbacks with the grace period each needs |
//! | `queued`, `invoked` | callback tickets: barrier waits for `invoked >= queued at its call` |
//!
//! A cookie is a grace-period number: `started + 1` at the call, because a
//! grace period already started may have listed the threads before the
//! caller's unpublish. It is done when `completed >= cookie`.
//!
//! Threads excluded because they wait in `synchronize` are sound to skip:
//! such a thread leaves `synchronize` only by taking `m` after the grace
//! period started (which happens under `m`, after every requester's
//! unpublish), so its later loads see every unpublish the grace period
//! covers: the mutex orders them.
//!
//! # `fork`
//!
//! `thread_pid` names the process whose `usrcu-tasks` thread runs; a child
//! of `fork` starts its own on first use (`call`, `synchronize`,
//! `start_poll`), and its own stop canary (`grace_period.rs`). The rule is the SRCU runtime's
//! (`runtime::idle()`): fork while the flavor is idle (no callback queued
//! or running, no grace period requested or running, no other thread
//! inside a call of this flavor), which the public `tasks::idle()`
//! reports ([`idle`]). Each of the two threads then holds no lock but `m`,
//! which it takes once more on its way back to sleep; the runtime's fork
//! handler (`runtime/fork.rs`) takes `m` across the fork, so the child
//! finds it free (`tests/flavors_fork.rs`). Outside that rule the child
//! may hang: a grace period running at the fork leaves `DRIVER` held in the
//! child, whose grace periods then never run. Callbacks still queued at the
//! fork are in the child's copy of the queue; whether they run there
//! depends on what the parent's thread was doing (not supported; a
//! `barrier` does not start the child's thread, its first `call`,
//! `synchronize` or `start_poll` does); one being invoked at the fork runs
//! in the parent only.

use super::grace_period::{GpOutcome, DRIVER};
use super::proc::gettid;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How often a waiting caller retries starting the `usrcu-tasks` thread
/// while it could not be started.
const START_RETRY: Duration = Duration::from_millis(10);

fn report_start_failure(failed: Option<std::io::Error>) {
    if let Some(e) = failed {
        crate::runtime::report_start_failure(super::DOMAIN_NAME, "the usrcu-tasks thread", &e);
    }
}

struct Callback {
    cookie: u64,
    f: unsafe extern "C" fn(*mut c_void),
    arg: *mut c_void,
}

// SAFETY: `tasks::call` requires the callback and its argument to be sendable
// to the engine's thread (the closure form is `Send`).
unsafe impl Send for Callback {}

#[derive(Default)]
pub(crate) struct State {
    started: u64,
    completed: u64,
    requested: u64,
    waiting: Vec<i32>,
    queue: VecDeque<Callback>,
    queued: u64,
    invoked: u64,
    /// Pid whose `usrcu-tasks` thread runs (0: none; a forked child, whose
    /// pid differs, starts its own).
    thread_pid: i32,
    /// The same for the `usrcu-tasks-cb` thread.
    cb_thread_pid: i32,
    /// The last start of the thread failed: the callers that wait retry it
    /// (`wait`), as does the next kick; reported once per episode.
    start_failed: bool,
    last: GpOutcome,
    /// The callback the thread is running (function and argument), if any:
    /// set under `m` when it is taken off the queue, cleared under `m` once
    /// it has returned, so that [`State::count_in`] under `m` sees every
    /// callback queued or running.
    running: Option<(usize, usize)>,
}

impl State {
    /// Callbacks queued or running whose function or argument `inside`
    /// accepts (the inventory by address, `runtime::inventory::deferred`).
    pub(crate) fn count_in(&self, inside: &dyn Fn(usize) -> bool) -> usize {
        let hit = |f: usize, a: usize| inside(f) || inside(a);
        self.queue.iter().filter(|c| hit(c.f as usize, c.arg as usize)).count()
            + self.running.is_some_and(|(f, a)| hit(f, a)) as usize
    }

    /// The queueing number (0 for the first callback ever queued) of the
    /// newest callback queued or running whose function or argument
    /// `inside` accepts, if any: it has run once [`State::ran_past`] says so.
    /// Callbacks run one at a time in queueing order, and `invoked` counts
    /// those that returned, so the one running is number `invoked`.
    pub(crate) fn newest_in(&self, inside: &dyn Fn(usize) -> bool) -> Option<u64> {
        let hit = |f: usize, a: usize| inside(f) || inside(a);
        let mut newest = None;
        let mut n = self.invoked;
        if let Some((f, a)) = self.running {
            if hit(f, a) {
                newest = Some(n);
            }
            n += 1;
        }
        for c in &self.queue {
            if hit(c.f as usize, c.arg as usize) {
                newest = Some(n);
            }
            n += 1;
        }
        newest
    }

    /// Has callback number `n` (as [`State::newest_in`] numbers them) run
    /// and returned? (`invoked` is counted under the lock held here.)
    pub(crate) fn ran_past(&self, n: u64) -> bool {
        self.invoked > n
    }
}

pub(crate) struct Engine {
    pub(crate) m: Mutex<State>,
    /// Callers of `synchronize`/`barrier` wait here.
    done: Condvar,
    /// The `usrcu-tasks` thread waits here.
    work: Condvar,
    /// The `usrcu-tasks-cb` thread waits here.
    cb_work: Condvar,
}

static ENGINE: OnceLock<Engine> = OnceLock::new();
/// Tid of `usrcu-tasks-cb`, the thread that runs callbacks, 0 until it
/// runs. Relaxed: compared with the caller's own tid only, to refuse a wait
/// on itself.
static THREAD_TID: AtomicI32 = AtomicI32::new(0);
/// `usrcu-tasks` sleeps, waiting for a request (set and cleared under `m`).
static GP_THREAD_ASLEEP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What `usrcu-tasks-cb` saw under `m` on its way to sleep: the
/// grace-period thread asleep and no grace period requested.
static GP_IDLE_SEEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Is `usrcu-tasks` asleep with nothing to do? For the fork-window test
/// hook (`runtime/fork.rs`), called by `usrcu-tasks-cb` on its way to
/// sleep, holding `m`: then the grace-period thread cannot change the
/// engine's state until the pause ends.
pub(crate) fn gp_thread_asleep() -> bool {
    // Relaxed: written by the caller's own thread.
    GP_IDLE_SEEN.load(Ordering::Relaxed)
}

/// Stall timeout for Tasks grace periods, in ms.
static STALL_MS: AtomicU64 = AtomicU64::new(0);

/// Is the caller this copy's `usrcu-tasks-cb` thread (running a Tasks
/// callback)?
pub(crate) fn on_tasks_thread() -> bool {
    // Relaxed: see `THREAD_TID`.
    THREAD_TID.load(Ordering::Relaxed) == gettid()
}

/// Is Tasks RCU idle in this copy ([`Engine::idle`]; true while the engine
/// does not exist, without creating it).
pub(crate) fn idle() -> bool {
    ENGINE.get().is_none_or(Engine::idle)
}

pub(crate) fn engine() -> &'static Engine {
    ENGINE.get_or_init(|| Engine {
        m: Mutex::new(State::default()),
        done: Condvar::new(),
        work: Condvar::new(),
        cb_work: Condvar::new(),
    })
}

fn stall_timeout() -> Duration {
    // Relaxed: a setting.
    let ms = STALL_MS.load(Ordering::Relaxed);
    if ms != 0 {
        return Duration::from_millis(ms);
    }
    let env = std::env::var("USRCU_STALL_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        // At least 1 ms: 0 doubled is 0 (a warning at every re-check).
        .map_or(10_000, |ms| ms.max(1));
    Duration::from_millis(env)
}

pub(crate) fn set_stall_timeout_ms(ms: u64) {
    STALL_MS.store(ms, Ordering::Relaxed);
}

impl Engine {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for `done`, at most until `end`. While the thread could not be
    /// started, wake every 10 ms to retry its start (the failure was
    /// reported when its episode began).
    fn wait<'a>(&self, st: MutexGuard<'a, State>, end: Option<Instant>) -> MutexGuard<'a, State> {
        let retry = st.start_failed.then(|| Instant::now() + START_RETRY);
        let until = match (end, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut st = match until {
            None => self.done.wait(st).unwrap_or_else(|p| p.into_inner()),
            Some(t) => {
                let d = t.saturating_duration_since(Instant::now());
                self.done
                    .wait_timeout(st, d)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0)
            }
        };
        if st.start_failed {
            let _ = self.kick(&mut st);
        }
        st
    }

    /// Make sure the `usrcu-tasks` and `usrcu-tasks-cb` threads run (under
    /// the lock), and wake the first (it wakes the second when a grace
    /// period completes). A failed
    /// start is not fatal (the callers are `extern "C"` vtable functions,
    /// where a panic aborts the process): the work stays, and the start is
    /// retried by the next kick and by the callers that wait. `Some(e)`: the
    /// episode of failures is new; report it with [`report_start_failure`]
    /// once the lock is dropped (a logger is user code).
    #[must_use]
    fn kick(&self, st: &mut State) -> Option<std::io::Error> {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        let mut failed = None;
        let mut failed_now = None;
        if st.thread_pid != pid {
            // Under `m`, which the new thread takes first (`runtime/spawn.rs`).
            match crate::runtime::start_thread("usrcu-tasks".into(), || engine().serve()) {
                Ok(()) => st.thread_pid = pid,
                Err(e) => failed_now = Some(e),
            }
        }
        if st.cb_thread_pid != pid {
            // No callback thread of this process runs (in a child of `fork`,
            // the tid is the parent's thread's). Relaxed: see `THREAD_TID`.
            THREAD_TID.store(0, Ordering::Relaxed);
            match crate::runtime::start_thread("usrcu-tasks-cb".into(), || engine().invoke()) {
                Ok(()) => st.cb_thread_pid = pid,
                Err(e) => failed_now = failed_now.or(Some(e)),
            }
        }
        match failed_now {
            None => st.start_failed = false,
            Some(e) => failed = (!std::mem::replace(&mut st.start_failed, true)).then_some(e),
        }
        self.work.notify_one();
        failed
    }

    /// Is the caller the `usrcu-tasks-cb` thread, where a wait would wait for
    /// itself? The callers refuse and return, and the API panics on the
    /// caller's side of the vtable: a panic inside an `extern "C"` vtable
    /// function cannot unwind and aborts the process.
    fn waits_for_itself(&self) -> bool {
        THREAD_TID.load(Ordering::Relaxed) == gettid()
    }

    /// A cookie; with `start`, make sure its grace period runs.
    pub(crate) fn get_state(&self, start: bool) -> u64 {
        let mut st = self.lock();
        let c = st.started + 1;
        if start && st.requested < c {
            st.requested = c;
            let failed = self.kick(&mut st);
            drop(st);
            report_start_failure(failed);
        }
        c
    }

    pub(crate) fn poll_state(&self, cookie: u64) -> bool {
        self.lock().completed >= cookie
    }

    /// False (without waiting) if called on the `usrcu-tasks` thread.
    pub(crate) fn synchronize(&self) -> bool {
        if self.waits_for_itself() {
            return false;
        }
        let me = gettid();
        let mut st = self.lock();
        let c = st.started + 1;
        st.requested = st.requested.max(c);
        st.waiting.push(me);
        if let Some(e) = self.kick(&mut st) {
            drop(st);
            report_start_failure(Some(e));
            st = self.lock();
        }
        while st.completed < c {
            st = self.wait(st, None);
        }
        if let Some(i) = st.waiting.iter().position(|t| *t == me) {
            st.waiting.swap_remove(i);
        }
        true
    }

    pub(crate) fn call(&self, f: unsafe extern "C" fn(*mut c_void), arg: *mut c_void) {
        let mut st = self.lock();
        let cookie = st.started + 1;
        st.requested = st.requested.max(cookie);
        st.queue.push_back(Callback { cookie, f, arg });
        st.queued += 1;
        let failed = self.kick(&mut st);
        drop(st);
        report_start_failure(failed);
    }

    /// False (without waiting) if called on the `usrcu-tasks` thread.
    pub(crate) fn barrier(&self) -> bool {
        if self.waits_for_itself() {
            return false;
        }
        let mut st = self.lock();
        let target = st.queued;
        while st.invoked < target {
            st = self.wait(st, None);
        }
        true
    }

    /// `barrier`, giving up after `timeout`: `Some(true)` if it completed,
    /// `None` (without waiting) if called on the `usrcu-tasks` thread.
    pub(crate) fn barrier_timeout(&self, timeout: Duration) -> Option<bool> {
        if self.waits_for_itself() {
            return None;
        }
        let end = Instant::now() + timeout;
        let mut st = self.lock();
        let target = st.queued;
        while st.invoked < target {
            if Instant::now() >= end {
                return Some(false);
            }
            st = self.wait(st, Some(end));
        }
        Some(true)
    }

    /// Callbacks queued and not yet run.
    pub(crate) fn pending_callbacks(&self) -> u64 {
        let st = self.lock();
        st.queued - st.invoked
    }

    pub(crate) fn last_outcome(&self) -> GpOutcome {
        self.lock().last
    }

    /// The `usrcu-tasks` thread: run the grace periods someone asked for.
    fn serve(&self) {
        let mut st = self.lock();
        loop {
            if st.requested > st.completed {
                st.started = st.completed + 1;
                let exclude = st.waiting.clone();
                drop(st);
                let stall = stall_timeout();
                let out = lock_driver().run(&exclude, stall);
                st = self.lock();
                st.completed = st.started;
                st.last = out;
                self.done.notify_all();
                // Callbacks may be ready now.
                self.cb_work.notify_one();
                continue;
            }
            // Relaxed: read under `m` by a pausing `usrcu-tasks-cb` (test
            // hook, `gp_thread_asleep`); set and cleared under `m`.
            GP_THREAD_ASLEEP.store(true, Ordering::Relaxed);
            st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
            GP_THREAD_ASLEEP.store(false, Ordering::Relaxed);
        }
    }

    /// The `usrcu-tasks-cb` thread: run every callback whose grace period
    /// completed, in queueing order.
    fn invoke(&self) {
        THREAD_TID.store(gettid(), Ordering::Relaxed);
        let mut st = self.lock();
        loop {
            while st.queue.front().is_some_and(|c| c.cookie <= st.completed) {
                let cb = st.queue.pop_front().expect("front checked");
                st.running = Some((cb.f as usize, cb.arg as usize));
                drop(st);
                // SAFETY: `tasks::call`'s contract: `f(arg)` may be called
                // once, on this thread, after a grace period.
                unsafe { (cb.f)(cb.arg) };
                // Leave no rseq descriptor of a plugin's read sections
                // behind (`reader/rseq.rs`) before it counts as run.
                crate::reader::rseq::clear_descriptor();
                st = self.lock();
                st.running = None;
                st.invoked += 1;
                self.done.notify_all();
            }
            // Relaxed: read by this thread only, in the pause below.
            GP_IDLE_SEEN.store(
                st.requested <= st.completed && GP_THREAD_ASLEEP.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            crate::runtime::pause_on_way_to_sleep(crate::runtime::Sleeper::Tasks);
            st = self.cb_work.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Is the flavor idle: no callback queued or running, no grace period
    /// requested or running, nobody waiting in `synchronize`? A snapshot
    /// (see the module docs, "`fork`"). False while another thread holds
    /// `m` or the grace-period driver.
    pub(crate) fn idle(&self) -> bool {
        let Some(st) = crate::sync::try_lock(&self.m) else {
            return false;
        };
        st.queue.is_empty()
            && st.queued == st.invoked
            && st.requested <= st.completed
            && st.started == st.completed
            && st.waiting.is_empty()
            && DRIVER.try_lock().is_ok()
    }
}

/// In a child of `fork` (its fork handler, the engine's lock held): the
/// parent's `usrcu-tasks` does not run here, whatever the pids say.
pub(crate) fn forget_thread(st: &mut State) {
    st.thread_pid = 0;
    st.cb_thread_pid = 0;
    // A callback the parent's thread was running runs in the parent only.
    st.running = None;
}

/// `m`, for the inventory's snapshot (`runtime::inventory::deferred`);
/// `None` while the engine does not exist.
pub(crate) fn lock_if_exists() -> Option<MutexGuard<'static, State>> {
    ENGINE.get().map(|e| e.lock())
}

/// `m`, for the fork handler (`runtime/fork.rs`); `None` while the engine
/// does not exist (then no thread of it does either).
pub(crate) fn lock_for_fork() -> Option<MutexGuard<'static, State>> {
    ENGINE.get().map(|e| e.lock())
}

fn lock_driver() -> MutexGuard<'static, super::grace_period::Driver> {
    DRIVER.lock().unwrap_or_else(|p| p.into_inner())
}
