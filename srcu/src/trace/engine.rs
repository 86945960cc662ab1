//! The host's Tasks Trace engine: the grace-period driver, the callback
//! thread (`usrcu-trace`, started on the first `call` or `start_poll`, the
//! kernel's per-flavor kthread) and the grace-period thread that serves it
//! and polls (`usrcu-trace-gp`, so that a blocked callback holds up no
//! polled grace period), barriers, stall warnings, and the
//! `#[repr(C)]` [`TraceVTable`] through which a plugin's copy uses them.
//!
//! # Work queue
//!
//! One FIFO of items, each tagged with the cookie it waits for: callbacks
//! (cookie from `snap` taken under the queue lock, so cookies never go down
//! along the queue) and barrier markers (cookie 0: they wait only for the
//! items ahead of them). `usrcu-trace` pops every ready item at the front
//! and invokes them in order; `usrcu-trace-gp` drives the grace period the
//! front item (or a polled cookie) needs, then wakes it.
//!
//! # `fork`
//!
//! The thread belongs to the process that started it: `Queue::thread_pid`
//! names that process, and a child of `fork`, whose pid differs, starts its
//! own thread on first use (`call`, `barrier`, `start_poll`), as the SRCU
//! runtime does. The rule is the runtime's (`runtime::idle()`): fork while
//! the flavor is idle (no callback queued or running, no grace period in
//! progress, no other thread inside a call of this flavor), which the
//! public `trace::idle()` reports ([`idle`]). The thread then
//! holds no lock but `queue`, which it takes once more on its way back to
//! sleep; the runtime's fork handler (`runtime/fork.rs`) takes `queue`
//! across the fork, so the child finds it free (`tests/flavors_fork.rs`).
//! Outside that rule the child may hang: a grace period in progress at the
//! fork (on any thread) leaves `gp` held in the child, whose `synchronize`,
//! callbacks and barriers then wait forever. Callbacks still queued at the
//! fork are in the child's copy of the queue; whether they run there
//! depends on what the parent's thread was doing (not supported); a batch
//! the parent's thread had taken off the queue runs in the parent only.

use super::grace_period::{wait_for_readers, Holdout, Sequence};
use super::record::ThreadRecord;
use super::threads::{self, HostRecord};
use super::{TraceStats, DOMAIN_NAME};
use crate::callbacks::CallbackHead;
use crate::diagnostics::{self, ReaderInfo, Warning, WarningKind};
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// ABI version of [`TraceVTable`] and of the [`ThreadRecord`] layout.
/// 3: `on_callback_thread` (a plugin's copy asked its own thread-local,
/// which only the host's engine sets: red team 12).
pub const TRACE_ABI_VERSION: u32 = 3;

/// The host's Tasks Trace operations, as `extern "C"` functions.
#[repr(C)]
#[derive(Debug)]
pub struct TraceVTable {
    /// [`TRACE_ABI_VERSION`] of the copy that built this table.
    pub abi_version: u32,
    /// `size_of::<TraceVTable>()` of that copy.
    pub size: u32,
    /// The calling thread's record (allocated or reused on first call).
    pub register: unsafe extern "C" fn() -> *const ThreadRecord,
    /// Wait for a grace period.
    pub synchronize: unsafe extern "C" fn(),
    /// Queue `func(head)` to run after a grace period.
    pub call: unsafe extern "C" fn(*mut CallbackHead, unsafe extern "C" fn(*mut CallbackHead)),
    /// Wait until every callback queued before the call has run.
    pub barrier: unsafe extern "C" fn(),
    /// A cookie; with `start` non-zero, also make sure its grace period runs.
    pub get_state: unsafe extern "C" fn(u32) -> u64,
    /// Non-zero if the cookie's grace period completed.
    pub poll_state: unsafe extern "C" fn(u64) -> u32,
    /// Fill in the counters.
    pub stats: unsafe extern "C" fn(*mut TraceStats),
    /// `barrier` bounded by a timeout in ms (`u64::MAX`: none): 1 if every
    /// callback queued before the call ran, 0 if the timeout passed first
    /// or the caller is the `usrcu-trace` thread (version 2).
    pub barrier_timeout_ms: unsafe extern "C" fn(u64) -> u32,
    /// Non-zero if the calling thread is the host's `usrcu-trace` thread
    /// (version 3).
    pub on_callback_thread: unsafe extern "C" fn() -> u32,
}

unsafe extern "C" fn rt_on_callback_thread() -> u32 {
    on_trace_thread() as u32
}

pub(crate) static HOST_TRACE_VTABLE: TraceVTable = TraceVTable {
    abi_version: TRACE_ABI_VERSION,
    size: std::mem::size_of::<TraceVTable>() as u32,
    register: rt_register,
    synchronize: rt_synchronize,
    call: rt_call,
    barrier: rt_barrier,
    get_state: rt_get_state,
    poll_state: rt_poll_state,
    stats: rt_stats,
    barrier_timeout_ms: rt_barrier_timeout_ms,
    on_callback_thread: rt_on_callback_thread,
};

/// A queued item.
enum Item {
    Call(*mut CallbackHead, unsafe extern "C" fn(*mut CallbackHead)),
    Marker(Arc<Marker>),
}

// SAFETY: a queued head is handed to the engine by `call_raw`'s contract
// (the caller gives up the head until `func` runs, on the engine's thread).
unsafe impl Send for Item {}

#[derive(Default)]
struct Marker {
    ran: Mutex<bool>,
    cv: Condvar,
}

#[derive(Default)]
pub(crate) struct Queue {
    items: VecDeque<(u64, Item)>,
    /// Highest polled cookie asked for by `start_poll`.
    poll_target: u64,
    /// The process whose `usrcu-trace` thread runs (0: none yet). A child of
    /// `fork` has no thread of its parent's: it starts its own.
    thread_pid: libc::pid_t,
    /// The same for the `usrcu-trace-gp` thread.
    gp_thread_pid: libc::pid_t,
    /// The thread is invoking a batch it took off the queue (for [`idle`]).
    busy: bool,
    /// The callbacks of that batch (head and function addresses), kept
    /// under `queue` until the whole batch has run, so that
    /// [`Queue::count_in`] under `queue` sees every callback queued or
    /// running.
    running: Vec<(usize, usize)>,
    /// Callbacks (not markers) that had run when the batch in `running` was
    /// taken: the first of `running` is callback number `batch_base` in
    /// queueing order (callbacks run in that order, one thread).
    batch_base: u64,
    /// The last start of the thread failed: it is retried at the next call,
    /// barrier or poll (and by a waiting barrier), and reported once per
    /// episode.
    start_failed: bool,
}

impl Queue {
    /// How many callbacks have returned, for [`Queue::count_in`]: load it
    /// right after taking `queue`, before looking at anything else (another
    /// flavor's queue, SRCU's domains), and pass it in.
    ///
    /// Acquire: pairs with the Release add after each callback returns
    /// (`callback_thread`): whatever a callback this load sees returned
    /// queued (in any flavor, the lock-free SRCU push included) happened
    /// before everything the caller looks at after the load
    /// (docs/memory-model.md, "The loader's last look").
    pub(crate) fn returned(&self) -> u64 {
        engine().invoked.load(Ordering::Acquire)
    }

    /// Callbacks queued or running whose head or function `inside`
    /// accepts (the inventory by address, `runtime::inventory::deferred`);
    /// `returned`: [`Queue::returned`], loaded under this same lock before
    /// the caller looked elsewhere.
    pub(crate) fn count_in(&self, inside: &dyn Fn(usize) -> bool, returned: u64) -> usize {
        let hit = |h: usize, f: usize| inside(h) || inside(f);
        let queued = self
            .items
            .iter()
            .filter(|(_, i)| matches!(i, Item::Call(h, f) if hit(*h as usize, *f as usize)))
            .count();
        // Those of the running batch that had returned when `returned` was
        // loaded are not counted: the batch stays in `running` until all of
        // it (markers too) has run, and a barrier's marker wakes its waiter
        // before that, so a `deferred` right after `barrier` counted
        // callbacks that ran before the marker (`redteam17_trace_deferred.rs`).
        // One that returned after that load is counted: what it queued may
        // have been missed by a walk that came after the load.
        let done = usize::try_from(returned.saturating_sub(self.batch_base)).unwrap_or(usize::MAX);
        queued + self.running.iter().skip(done).filter(|&&(h, f)| hit(h, f)).count()
    }

    /// The queueing number (0 for the first callback ever queued) of the
    /// newest callback queued or running whose head or function `inside`
    /// accepts, if any: it has run once [`Queue::ran_past`] says so.
    pub(crate) fn newest_in(&self, inside: &dyn Fn(usize) -> bool) -> Option<u64> {
        let hit = |h: usize, f: usize| inside(h) || inside(f);
        let mut newest = None;
        // No batch running: every callback taken so far has returned (this
        // thread re-takes the lock after its batch), so the first queued one
        // is number `invoked`. `batch_base` is only the running batch's.
        let mut n = if self.running.is_empty() {
            // Acquire: as in `ran_past`.
            engine().invoked.load(Ordering::Acquire)
        } else {
            self.batch_base
        };
        for &(h, f) in &self.running {
            if hit(h, f) {
                newest = Some(n);
            }
            n += 1;
        }
        for (_, i) in &self.items {
            if let Item::Call(h, f) = i {
                if hit(*h as usize, *f as usize) {
                    newest = Some(n);
                }
                n += 1;
            }
        }
        newest
    }

    /// Has callback number `n` (as [`Queue::newest_in`] numbers them) run
    /// and returned?
    pub(crate) fn ran_past(&self, n: u64) -> bool {
        // Acquire: pairs with the Release count after each callback
        // returns (`callback_thread`): what it did happened before.
        engine().invoked.load(Ordering::Acquire) > n
    }
}

/// `queue`, for the inventory's snapshot (`runtime::inventory::deferred`);
/// `None` while the engine does not exist.
pub(crate) fn lock_queue_if_exists() -> Option<MutexGuard<'static, Queue>> {
    E.get().map(|e| lock(&e.queue))
}

struct Engine {
    seq: Sequence,
    /// Held while a grace period runs: concurrent callers batch behind it.
    gp: Mutex<()>,
    queue: Mutex<Queue>,
    /// `usrcu-trace` (the callback thread) waits here.
    work: Condvar,
    /// `usrcu-trace-gp` (the grace-period thread) waits here.
    gp_work: Condvar,
    invoked: AtomicU64,
    queued: AtomicU64,
    stall_ms: AtomicU64,
}

static E: OnceLock<Engine> = OnceLock::new();

fn engine() -> &'static Engine {
    E.get_or_init(|| Engine {
        seq: Sequence::new(),
        gp: Mutex::new(()),
        queue: Mutex::new(Queue::default()),
        work: Condvar::new(),
        gp_work: Condvar::new(),
        invoked: AtomicU64::new(0),
        queued: AtomicU64::new(0),
        stall_ms: AtomicU64::new(default_stall_ms()),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `USRCU_STALL_TIMEOUT_MS`, else 10 s.
fn default_stall_ms() -> u64 {
    std::env::var("USRCU_STALL_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        // At least 1 ms: 0 doubled is 0 (a warning at every re-check).
        .map_or(10_000, |ms| ms.max(1))
}

/// Set the stall timeout of this copy's engine (the host's).
pub(crate) fn set_stall_timeout(d: Duration) {
    // Relaxed: a setting read at the next stall check.
    engine()
        .stall_ms
        .store(d.as_millis().clamp(1, u64::MAX as u128) as u64, Ordering::Relaxed);
}

thread_local! {
    // Const-initialised `Copy` cell: no destructor is registered.
    static ON_TRACE_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Run grace periods until cookie `c` is complete.
fn drive(c: u64) {
    let e = engine();
    if e.seq.done(c) {
        return;
    }
    let _gp = lock(&e.gp);
    while !e.seq.done(c) {
        one_grace_period(e);
    }
}

/// One grace period (the driver holds `e.gp`).
fn one_grace_period(e: &Engine) {
    e.seq.start();
    let records = threads::snapshot();
    let t0 = Instant::now();
    // Relaxed: a setting.
    let mut next_stall = Duration::from_millis(e.stall_ms.load(Ordering::Relaxed));
    wait_for_readers(&records, threads::mode(), |holdouts, round| {
        let waited = t0.elapsed();
        if waited >= next_stall {
            report_stall(&records, holdouts, waited);
            next_stall = next_stall.saturating_mul(2);
        }
        nap(round);
    });
    e.seq.end();
}

/// Back-off between re-samples of the holdouts: a few yields, then sleeps
/// of 1 ms doubling to 16 ms.
fn nap(round: u32) {
    if round < 4 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_millis(1 << (round - 4).min(4)));
    }
}

fn report_stall(records: &[&'static HostRecord], holdouts: &[Holdout], waited: Duration) {
    let named: Vec<ReaderInfo> = holdouts
        .iter()
        .map(|h| {
            let r = records[h.index];
            ReaderInfo {
                // Relaxed: a label.
                tid: r.tid.load(Ordering::Relaxed),
                thread_name: r.thread_name(),
                location: String::new(),
                held_for: waited,
            }
        })
        .collect();
    let list: Vec<String> = named
        .iter()
        .map(|r| format!("thread {} ({})", r.tid, r.thread_name))
        .collect();
    diagnostics::emit(Warning {
        kind: WarningKind::TraceStall,
        domain: DOMAIN_NAME.to_owned(),
        message: format!(
            "usrcu::trace: grace-period stall: waited {} ms for {} holdout(s): {}",
            waited.as_millis(),
            named.len(),
            list.join(", ")
        ),
        oldest_reader: named.into_iter().next(),
        tid: diagnostics::current_tid(),
    });
}

/// Start the callback thread if it does not run in this process (queue
/// lock held; a child of `fork` starts its own).
/// A failed start is not fatal (the callers are `extern "C"` vtable
/// functions, where a panic aborts the process): the items stay queued and
/// the start is retried at the next call, barrier or poll. `Some(e)`: the
/// episode of failures is new; report it with [`report_start_failure`] once
/// the lock is dropped (a logger is user code).
fn ensure_thread(q: &mut Queue) -> Option<std::io::Error> {
    let pid = this_pid();
    if q.thread_pid == pid && q.gp_thread_pid == pid {
        return None;
    }
    let mut failed = None;
    // Under `queue`, which the new threads take first (`runtime/spawn.rs`).
    if q.thread_pid != pid {
        match crate::runtime::start_thread("usrcu-trace".into(), callback_thread) {
            Ok(()) => q.thread_pid = pid,
            Err(e) => failed = Some(e),
        }
    }
    if q.gp_thread_pid != pid {
        match crate::runtime::start_thread("usrcu-trace-gp".into(), gp_thread) {
            Ok(()) => q.gp_thread_pid = pid,
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    match failed {
        None => {
            q.start_failed = false;
            None
        }
        Some(e) => (!std::mem::replace(&mut q.start_failed, true)).then_some(e),
    }
}

/// The grace period the queue and the polls need, if one is not done: the
/// larger of the newest queued callback's cookie (cookies never go down
/// along the queue; markers, 0, wait for none) and the polled one. Not only
/// the front's: a callback ready at the front may wait behind one that
/// blocks, and a poll must not wait with it.
fn needed(e: &Engine, q: &Queue) -> Option<u64> {
    let queued = q.items.iter().rev().map(|(c, _)| *c).find(|c| *c != 0).unwrap_or(0);
    let c = queued.max(q.poll_target);
    (!e.seq.done(c)).then_some(c)
}

/// `usrcu-trace-gp` is asleep with nothing to drive (set and cleared under
/// `queue`).
static GP_THREAD_ASLEEP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What `usrcu-trace` saw under `queue` on its way to sleep: the
/// grace-period thread asleep and nothing to drive.
static GP_IDLE_SEEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `usrcu-trace-gp`: drive the grace periods the queue's front item or a
/// poll needs, then wake the callback thread. Separate from the callback
/// thread, so that a callback that blocks holds up only the callbacks
/// behind it, not polled grace periods.
fn gp_thread() {
    let e = engine();
    loop {
        let mut q = lock(&e.queue);
        let c = loop {
            if let Some(c) = needed(e, &q) {
                break c;
            }
            // Relaxed: read under `queue` (`GP_IDLE_SEEN`).
            GP_THREAD_ASLEEP.store(true, Ordering::Relaxed);
            q = e.gp_work.wait(q).unwrap_or_else(|p| p.into_inner());
            GP_THREAD_ASLEEP.store(false, Ordering::Relaxed);
        };
        drop(q);
        drive(c);
        // Through `queue`: the callback thread checks the sequence under it
        // and waits releasing it, so this wake-up cannot fall between the
        // two.
        drop(lock(&e.queue));
        e.work.notify_one();
    }
}

fn this_pid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

fn report_start_failure(failed: Option<std::io::Error>) {
    if let Some(e) = failed {
        crate::runtime::report_start_failure(DOMAIN_NAME, "the usrcu-trace thread", &e);
    }
}

fn callback_thread() {
    ON_TRACE_THREAD.with(|c| c.set(true));
    let e = engine();
    loop {
        let mut q = lock(&e.queue);
        q.busy = false;
        q.running.clear();
        loop {
            if q.items.front().is_some_and(|(c, _)| e.seq.done(*c)) {
                break;
            }
            if needed(e, &q).is_some() {
                e.gp_work.notify_one();
            } else {
                // Relaxed: written and read by this thread, under `queue`.
                GP_IDLE_SEEN.store(GP_THREAD_ASLEEP.load(Ordering::Relaxed), Ordering::Relaxed);
                crate::runtime::pause_on_way_to_sleep(crate::runtime::Sleeper::Trace);
            }
            q = e.work.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        {
            {
                let mut ready = Vec::new();
                while let Some((c, _)) = q.items.front() {
                    if !e.seq.done(*c) {
                        break;
                    }
                    ready.extend(q.items.pop_front().map(|(_, i)| i));
                }
                q.busy = !ready.is_empty();
                // Refilled in place: no allocation per batch once grown.
                let running = ready.iter().filter_map(|i| match i {
                    Item::Call(h, f) => Some((*h as usize, *f as usize)),
                    Item::Marker(_) => None,
                });
                q.running.clear();
                q.running.extend(running);
                // Acquire: pairs with this thread's own Release counts (the
                // batches before are done).
                q.batch_base = e.invoked.load(Ordering::Acquire);
                drop(q);
                for item in ready {
                    match item {
                        Item::Call(head, func) => {
                            // SAFETY: `call_raw`'s contract: `func(head)` is
                            // the callback, run once.
                            unsafe { func(head) };
                            // No rseq descriptor of a plugin's read sections
                            // left behind (`reader/rseq.rs`).
                            crate::reader::rseq::clear_descriptor();
                            // Release: the callback returned before it
                            // counts (`Queue::ran_past`); also a statistic.
                            e.invoked.fetch_add(1, Ordering::Release);
                        }
                        Item::Marker(m) => {
                            *lock(&m.ran) = true;
                            m.cv.notify_all();
                        }
                    }
                }
            }
        }
    }
}

unsafe extern "C" fn rt_register() -> *const ThreadRecord {
    threads::register()
}

unsafe extern "C" fn rt_synchronize() {
    drive(engine().seq.snap());
}

unsafe extern "C" fn rt_call(head: *mut CallbackHead, func: unsafe extern "C" fn(*mut CallbackHead)) {
    let e = engine();
    let mut q = lock(&e.queue);
    let c = e.seq.snap();
    q.items.push_back((c, Item::Call(head, func)));
    // Relaxed: a statistic.
    e.queued.fetch_add(1, Ordering::Relaxed);
    let failed = ensure_thread(&mut q);
    drop(q);
    e.gp_work.notify_one();
    report_start_failure(failed);
}

unsafe extern "C" fn rt_barrier() {
    barrier_until(None);
}

unsafe extern "C" fn rt_barrier_timeout_ms(ms: u64) -> u32 {
    // `u64::MAX` ms, or a deadline past what an `Instant` holds: no limit.
    let deadline = (ms != u64::MAX)
        .then(|| Instant::now().checked_add(Duration::from_millis(ms)))
        .flatten();
    barrier_until(deadline) as u32
}

/// Wait until every item queued before the call has run, or until
/// `deadline`; true if they all ran. A marker that the deadline left behind
/// stays queued and is dropped when the thread reaches it: nothing waits on
/// it any more.
fn barrier_until(deadline: Option<Instant>) -> bool {
    let e = engine();
    if ON_TRACE_THREAD.with(|c| c.get()) {
        diagnostics::warn(
            WarningKind::IllegalSynchronize,
            DOMAIN_NAME,
            "usrcu::trace: barrier() from inside a trace callback would wait for itself; skipped".into(),
        );
        return false;
    }
    let mut m = Arc::new(Marker::default());
    let (failed, mut started) = {
        let mut q = lock(&e.queue);
        // Every callback queued so far has returned (none is queued, and
        // the running batch's have all run; the thread may still be busy
        // with the rest of a batch, markers, as when an earlier barrier's
        // marker has just woken its waiter): nothing to wait for, and a zero
        // timeout is no failure then (red team 7's zero-timeout test saw
        // `false` right after a `barrier`, under load).
        let none_queued = !q.items.iter().any(|(_, i)| matches!(i, Item::Call(..)));
        // Acquire: pairs with the Release count after each callback returns
        // (`callback_thread`): what they did happens before our return.
        let batch_ran =
            q.running.is_empty() || e.invoked.load(Ordering::Acquire) >= q.batch_base + q.running.len() as u64;
        if none_queued && batch_ran {
            return true;
        }
        if q.thread_pid != this_pid() && q.items.is_empty() {
            // No callback was ever queued in this process (a queued one
            // stays queued until the thread starts; a child of `fork` has
            // no batch of its parent's thread in flight).
            return true;
        }
        // Behind every queued item, and behind any batch the thread has
        // already taken off the queue (it invokes a batch before it looks
        // at the queue again).
        // A marker already last in the queue is behind everything this one
        // would wait for: share it (waiters that time out leave theirs
        // queued; a loop of zero-timeout barriers under a reader that holds
        // the grace period piled one up per call, red team 8).
        match q.items.back() {
            Some((_, Item::Marker(last))) => m = last.clone(),
            _ => q.items.push_back((0, Item::Marker(m.clone()))),
        }
        let failed = ensure_thread(&mut q);
        (failed, q.thread_pid == this_pid())
    };
    e.work.notify_one();
    report_start_failure(failed);
    let mut ran = lock(&m.ran);
    while !*ran {
        let left = match deadline {
            None => None,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return false,
            },
        };
        if started {
            ran = match left {
                None => m.cv.wait(ran).unwrap_or_else(|p| p.into_inner()),
                Some(left) => m.cv.wait_timeout(ran, left).unwrap_or_else(|p| p.into_inner()).0,
            };
            continue;
        }
        // The thread could not be started: retry now and then (the failure
        // was reported), with the marker's lock dropped.
        drop(ran);
        std::thread::sleep(left.map_or(Duration::from_millis(10), |l| l.min(Duration::from_millis(10))));
        {
            let mut q = lock(&e.queue);
            let _ = ensure_thread(&mut q);
            started = q.thread_pid == this_pid();
        }
        e.work.notify_one();
        ran = lock(&m.ran);
    }
    true
}

unsafe extern "C" fn rt_get_state(start: u32) -> u64 {
    let e = engine();
    let c = e.seq.snap();
    if start != 0 && !e.seq.done(c) {
        let mut q = lock(&e.queue);
        if q.poll_target < c {
            q.poll_target = c;
        }
        let failed = ensure_thread(&mut q);
        drop(q);
        e.gp_work.notify_one();
        report_start_failure(failed);
    }
    c
}

unsafe extern "C" fn rt_poll_state(c: u64) -> u32 {
    engine().seq.done(c) as u32
}

unsafe extern "C" fn rt_stats(out: *mut TraceStats) {
    let e = engine();
    let (allocated, in_use) = threads::counts();
    // SAFETY: the caller passes a writable `out`.
    unsafe {
        *out = TraceStats {
            grace_periods: e.seq.completed(),
            // Relaxed: statistics.
            callbacks_queued: e.queued.load(Ordering::Relaxed),
            callbacks_invoked: e.invoked.load(Ordering::Relaxed),
            records_allocated: allocated,
            records_in_use: in_use,
        }
    };
}

/// Is the calling thread the `usrcu-trace` callback thread?
pub(crate) fn on_trace_thread() -> bool {
    ON_TRACE_THREAD.with(|c| c.get())
}

/// Is the flavor idle: nothing queued, no batch being invoked, no polled
/// grace period pending, no grace period in progress? A snapshot (see the
/// module docs, "`fork`"). False while another thread holds `queue` or `gp`.
pub(crate) fn idle() -> bool {
    let Some(e) = E.get() else {
        return true;
    };
    let Some(q) = crate::sync::try_lock(&e.queue) else {
        return false;
    };
    q.items.is_empty() && !q.busy && e.seq.done(q.poll_target) && e.gp.try_lock().is_ok()
}

/// In a child of `fork` (its fork handler, queue lock held): the parent's
/// `usrcu-trace` does not run here, whatever the pids say.
pub(crate) fn forget_thread(q: &mut Queue) {
    q.thread_pid = 0;
    q.gp_thread_pid = 0;
    // A batch the parent's thread was running runs in the parent only.
    q.busy = false;
    q.running.clear();
}

/// `queue`, for the fork handler (`runtime/fork.rs`); `None` while the
/// engine does not exist (then no thread of it does either). Never creates
/// the engine: that reads the environment, whose lock a forking `Command`
/// holds.
pub(crate) fn lock_queue_for_fork() -> Option<MutexGuard<'static, Queue>> {
    E.get().map(|e| lock(&e.queue))
}

/// Is `gp` free right now, and did `usrcu-trace` see `usrcu-trace-gp`
/// asleep with nothing to drive on its way to sleep (for the test pause,
/// `runtime/fork.rs`, which `usrcu-trace` runs holding `queue`)?
pub(crate) fn gp_free() -> bool {
    // Relaxed: written by the caller's own thread.
    E.get().is_none_or(|e| e.gp.try_lock().is_ok()) && GP_IDLE_SEEN.load(Ordering::Relaxed)
}
