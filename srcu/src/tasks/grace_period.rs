//! One Tasks grace period, host side: the steps of `docs/memory-model.md`,
//! section "Tasks RCU" (T1 to T5).
//!
//! T1. Full `membarrier` (`fence::full_barrier`): every thread's later loads
//!     see what the caller unpublished before the grace period.
//! T2. List `/proc/self/task` after T1; drop the excluded tids (the caller
//!     and the threads waiting in `synchronize`, the engine's own threads).
//!     Threads born after the listing are ignored.
//! T3. A pass reads, for each thread still pending, its `status` (state,
//!     voluntary switches, tracer) and its explicit quiescent count, between
//!     two readings of the stop canary. A thread is quiescent when
//!       * it is gone, or blocked (`S`, `D`) at the reading;
//!       * its explicit count moved since T2 (or it registered a record);
//!       * its voluntary-switch count moved since its baseline, the thread
//!         is neither stopped nor traced, and the canary shows that no stop
//!         can lie between the baseline and this reading ("clean").
//!     A pass that is not clean re-baselines the switch counts ("restarts
//!     the count").
//!     Callouts (`runtime::callouts`: the host's logger, reached from a
//!     hook or probe) are part of the hook that called them: a blocked
//!     reading counts only if the thread's callout word (its Tasks record)
//!     was the same before and after the reading and shows no callout in
//!     progress, and switches count only if the word has not changed since
//!     the baseline (a change re-baselines the thread).
//! T4. Holdouts are re-read with back-off (50 µs doubling to 20 ms); past
//!     the stall timeout a warning names each holdout's tid, name and state.
//! T5. Full `membarrier`: the holdouts' accesses inside hooks happen before
//!     whatever the caller does next (frees, unmaps).
//!
//! # The stop canary
//!
//! A stop (`SIGSTOP`, `SIGTSTP`, a tracer) counts as a voluntary switch, yet
//! the thread resumes where it stopped, possibly inside a hook. The canary
//! is a host thread (`usrcu-stopwatch`) that blocks every signal and sits in
//! `pause()`: nothing wakes it but job control (and the cgroup freezer's
//! trap). A group stop sets a pending stop on every thread and wakes each one
//! (`signal_wake_up`) before the first thread to stop does its switch; the
//! canary then either stops or, if `SIGCONT` came first, goes back to sleep,
//! and either way its own switch count moves when it sleeps again. So if the
//! canary reads `S` with the same count before and after a pass, and the same
//! count as when the baselines were taken, no thread's switch count in that
//! window can include a group stop. Ptrace stops that are not group stops
//! are covered by `TracerPid`: a traced thread's switch count is never
//! trusted (a tracer that seizes, interrupts and detaches entirely between
//! two readings is not seen; see the memory-model notes).

use super::proc::{gettid, thread_name, Opened, Sample, SchedState, StatusFile, TaskDir};
use super::record;
use crate::diagnostics::{self, ReaderInfo, Warning, WarningKind};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What one grace period did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GpOutcome {
    /// Threads examined at T2.
    pub(crate) threads: usize,
    /// Passes after the first.
    pub(crate) rechecks: u32,
    /// Passes that were not clean (a stop may have intervened).
    pub(crate) restarts: u32,
}

/// Tid of the canary; 0 until it runs. Relaxed: published by `CANARY_PID`.
static CANARY: AtomicI32 = AtomicI32::new(0);

/// Pid that started the canary (a forked child starts its own).
static CANARY_PID: AtomicI32 = AtomicI32::new(0);
static CANARY_START: Mutex<()> = Mutex::new(());

/// In a child of `fork` (its fork handler; the only thread): the parent's
/// canary does not run here, whatever the pids say.
pub(crate) fn forget_canary() {
    // Release: as the store in `canary`; 0 is no pid.
    CANARY_PID.store(0, Ordering::Release);
}

/// Start the canary thread once per process; returns its tid (0 if it
/// could not be started: counter evidence is then never used).
fn canary() -> i32 {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    // Acquire: pairs with the Release store of `CANARY_PID` below, which
    // follows the store of `CANARY`.
    if CANARY_PID.load(Ordering::Acquire) == pid {
        return CANARY.load(Ordering::Relaxed);
    }
    let _g = CANARY_START.lock().unwrap_or_else(|p| p.into_inner());
    // Relaxed: under `CANARY_START`, which orders it after the store.
    if CANARY_PID.load(Ordering::Relaxed) == pid {
        return CANARY.load(Ordering::Relaxed);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("usrcu-stopwatch".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            // SAFETY: a zeroed sigset is filled; blocking every signal on
            // this thread only is sound (SIGKILL and SIGSTOP stay).
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
            }
            let _ = tx.send(gettid());
            loop {
                // SAFETY: pause has no preconditions; with every signal
                // blocked it never returns; job control switches the
                // thread out and restarts it.
                unsafe { libc::pause() };
            }
        });
    let tid = match spawned {
        Ok(_) => rx.recv().unwrap_or(0),
        Err(_) => 0,
    };
    CANARY.store(tid, Ordering::Relaxed);
    // Release: publishes `CANARY` to the Acquire load above.
    CANARY_PID.store(pid, Ordering::Release);
    tid
}

/// The tids a grace period never waits for: the engine's own threads.
pub(crate) fn canary_tid() -> i32 {
    canary()
}

struct Pending {
    tid: i32,
    /// `None` while it could not be opened (no evidence: still a holdout).
    file: Option<StatusFile>,
    /// Voluntary switches at the baseline (`None`: not usable).
    base: Option<u64>,
    /// Explicit quiescent count at T2 (`None`: no record then).
    qs0: Option<u64>,
    /// Callout word at the baseline (`record::callouts_snapshot`).
    c0: u64,
    last: Option<Sample>,
}

/// The reusable state of the grace-period driver (one at a time).
pub(crate) struct Driver {
    dir: Option<TaskDir>,
    tids: Vec<i32>,
    qs: Vec<Option<u64>>,
    buf: Vec<u8>,
}

impl Driver {
    pub(crate) const fn new() -> Driver {
        Driver {
            dir: None,
            tids: Vec::new(),
            qs: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// The task directory of this process, opened on first use (and again
    /// in a child of `fork`).
    fn dir(&mut self) -> std::io::Result<&mut TaskDir> {
        if !self.dir.as_ref().is_some_and(|d| d.is_current()) {
            self.dir = Some(TaskDir::open()?);
        }
        Ok(self.dir.as_mut().expect("opened above"))
    }

    /// Open thread `tid`'s status file; `Unknown` while the directory
    /// itself cannot be opened.
    fn open_status(&mut self, tid: i32) -> Opened {
        match self.dir() {
            Ok(d) => d.open_status(tid),
            Err(_) => Opened::Unknown,
        }
    }

    /// List every thread of the process into `tids`. Without the list there
    /// is no evidence at all, and a grace period must not end unproven: a
    /// failure (out of descriptors, say) is retried with back-off, warned
    /// about once the stall timeout has passed, for as long as it lasts.
    fn list(&mut self, tids: &mut Vec<i32>, t0: Instant, stall: Duration) {
        let mut nap = Duration::from_millis(1);
        let mut warned = false;
        loop {
            let e = match self.dir() {
                Ok(d) => match d.list(tids) {
                    Ok(()) => return,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if !warned && t0.elapsed() >= stall {
                warned = true;
                crate::diagnostics::emit(crate::diagnostics::Warning::new(
                    crate::diagnostics::WarningKind::TasksStall,
                    super::DOMAIN_NAME,
                    format!("usrcu::tasks: cannot list /proc/self/task ({e}); the grace period waits until it can"),
                ));
            }
            // A fresh directory next time (the failure may be its own).
            self.dir = None;
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(100));
        }
    }

    /// Read the canary: (state, switches).
    fn canary_sample(&mut self, canary: &Option<StatusFile>) -> Option<Sample> {
        if self.buf.len() < 4096 {
            self.buf.resize(4096, 0);
        }
        canary.as_ref()?.sample(&mut self.buf).map(|(s, _)| s)
    }

    /// Run one grace period, excluding `exclude` (sorted or not).
    pub(crate) fn run(&mut self, exclude: &[i32], stall: Duration) -> GpOutcome {
        let t0 = Instant::now();
        let canary_tid = canary();
        // T1: unpublishes before the call are seen by every later load.
        super::membarrier::full();
        // T2.
        let mut tids = std::mem::take(&mut self.tids);
        self.list(&mut tids, t0, stall);
        let me = gettid();
        tids.retain(|t| *t != me && *t != canary_tid && !exclude.contains(t));
        let mut qs = std::mem::take(&mut self.qs);
        record::snapshot(&tids, &mut qs);
        let mut out = GpOutcome {
            threads: tids.len(),
            ..GpOutcome::default()
        };
        if self.buf.len() < 4096 {
            self.buf.resize(4096, 0);
        }
        // Without the canary's file every reading counts as unsettled,
        // which only makes the counter evidence wait longer.
        let mut canary_file = match canary_tid {
            0 => None,
            t => match self.open_status(t) {
                Opened::File(f) => Some(f),
                Opened::Gone | Opened::Unknown => None,
            },
        };
        let skip_running = crate::fault::is_set(crate::fault::Fault::TasksSkipRunning);
        let trust_across_stop = crate::fault::is_set(crate::fault::Fault::TasksTrustCounterAcrossStop);

        // The first pass: blocked threads are done; the others are pending
        // with a baseline.
        let pre = self.canary_sample(&canary_file);
        let mut pending: Vec<Pending> = Vec::new();
        // Callout words before and after the readings (see "callouts" in
        // the module docs).
        let mut c_pre = Vec::new();
        record::callouts_snapshot(&tids, &mut c_pre);
        let mut readings = Vec::with_capacity(tids.len());
        for &tid in tids.iter() {
            let file = self.open_status(tid);
            let s = match &file {
                Opened::File(f) => Some(f.sample_or_gone(&mut self.buf)),
                _ => None,
            };
            readings.push((file, s));
        }
        let mut c_post = Vec::new();
        record::callouts_snapshot(&tids, &mut c_post);
        for (i, (&tid, (file, s))) in tids.iter().zip(readings).enumerate() {
            let callouts_still = c_pre[i] == c_post[i];
            let outside_callouts = callouts_still && !record::inside_callout(c_post[i]);
            // Gone only on the kernel's word; a thread whose file cannot be
            // opened or read for another reason (out of descriptors) stays
            // a holdout without evidence, re-examined below.
            let file = match file {
                Opened::File(f) => f,
                Opened::Gone => continue,
                Opened::Unknown => {
                    pending.push(Pending {
                        tid,
                        file: None,
                        base: None,
                        qs0: qs[i],
                        c0: c_post[i],
                        last: None,
                    });
                    continue;
                }
            };
            let s = match s.expect("sampled when opened") {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(()) => {
                    pending.push(Pending {
                        tid,
                        file: Some(file),
                        base: None,
                        qs0: qs[i],
                        c0: c_post[i],
                        last: None,
                    });
                    continue;
                }
            };
            if (s.state.blocked() && outside_callouts) || s.state == SchedState::Dead {
                continue;
            }
            if skip_running && s.state == SchedState::Running {
                // Broken flavor (torture only): trust that a running thread
                // is not inside a hook.
                continue;
            }
            // A baseline taken while a callout began or ended around the
            // reading is not usable (a switch after it may be the callout's).
            let counter_ok = !s.state.stopped() && s.tracer == 0 && s.nvcsw != u64::MAX && callouts_still;
            pending.push(Pending {
                tid,
                file: Some(file),
                base: counter_ok.then_some(s.nvcsw),
                qs0: qs[i],
                c0: c_post[i],
                last: Some(s),
            });
        }
        // Pairs with the kernel's full barrier between a stop's wake-up of
        // the canary and the stopping thread's switch (see the module docs).
        std::sync::atomic::fence(Ordering::SeqCst);
        let post = self.canary_sample(&canary_file);
        let mut epoch = clean_reading(pre, post);

        let mut nap = Duration::from_micros(50);
        let mut next_stall = stall;
        publish_holdouts(&pending);
        let mut qs_now: Vec<Option<u64>> = Vec::new();
        let mut ptids: Vec<i32> = Vec::new();
        let mut c_pre: Vec<u64> = Vec::new();
        let mut c_post: Vec<u64> = Vec::new();
        while !pending.is_empty() {
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(20));
            out.rechecks += 1;
            ptids.clear();
            ptids.extend(pending.iter().map(|p| p.tid));
            // Holdouts whose file could not be opened: try again.
            let mut gone_now = vec![false; pending.len()];
            for (k, p) in pending.iter_mut().enumerate() {
                if p.file.is_none() {
                    match self.open_status(p.tid) {
                        Opened::File(f) => p.file = Some(f),
                        Opened::Gone => gone_now[k] = true,
                        Opened::Unknown => {}
                    }
                }
            }
            // The canary's file, if it could not be opened before: again.
            if canary_file.is_none() && canary_tid != 0 {
                if let Opened::File(f) = self.open_status(canary_tid) {
                    canary_file = Some(f);
                }
            }
            let pre = self.canary_sample(&canary_file);
            record::snapshot(&ptids, &mut qs_now);
            record::callouts_snapshot(&ptids, &mut c_pre);
            // Per holdout: Ok(Some) a reading, Ok(None) gone, Err nothing known.
            let mut samples: Vec<Result<Option<Sample>, ()>> = Vec::with_capacity(pending.len());
            for (k, p) in pending.iter().enumerate() {
                samples.push(match &p.file {
                    _ if gone_now[k] => Ok(None),
                    Some(f) => f.sample_or_gone(&mut self.buf),
                    None => Err(()),
                });
            }
            record::callouts_snapshot(&ptids, &mut c_post);
            std::sync::atomic::fence(Ordering::SeqCst);
            let post = self.canary_sample(&canary_file);
            let now = clean_reading(pre, post);
            let clean = trust_across_stop || (now.is_some() && now == epoch);
            if !clean {
                out.restarts += 1;
            }
            let mut k = 0;
            pending.retain_mut(|p| {
                let s = samples[k];
                let q = qs_now[k];
                let (cp, cq) = (c_pre[k], c_post[k]);
                k += 1;
                // Callouts: the reading is evidence only if no callout began
                // or ended around it and none is in progress; switches count
                // only if no callout began or ended since the baseline.
                let outside_callouts = cp == cq && !record::inside_callout(cq);
                let callouts_since_base = cp != p.c0 || cq != p.c0;
                if callouts_since_base {
                    p.c0 = cq;
                }
                let s = match s {
                    Ok(Some(s)) => s,
                    Ok(None) => return false, // gone
                    Err(()) => {
                        // No reading: only an explicit quiescent point
                        // ends its part; the counter restarts later.
                        p.base = None;
                        return !(q.is_some() && q != p.qs0);
                    }
                };
                p.last = Some(s);
                if (s.state.blocked() && outside_callouts) || s.state == SchedState::Dead {
                    return false;
                }
                // An explicit quiescent point after T2 (or a first
                // registration after it, which only `quiescent` does).
                if q.is_some() && q != p.qs0 {
                    return false;
                }
                let counter_ok = !s.state.stopped() && s.tracer == 0 && s.nvcsw != u64::MAX;
                if callouts_since_base {
                    // Its switches since the baseline may be a callout's:
                    // count from this reading, if none began or ended
                    // around it.
                    p.base = (clean && counter_ok && cp == cq).then_some(s.nvcsw);
                    return true;
                }
                if clean && counter_ok && outside_callouts && p.base.is_some_and(|b| b != s.nvcsw) {
                    return false;
                }
                if clean && counter_ok && p.base.is_none() {
                    // No usable baseline yet (its first reading failed, or
                    // came from a stop): this settled reading, taken after
                    // T2, is one.
                    p.base = Some(s.nvcsw);
                }
                if !clean {
                    // Restart the count from this reading, usable only if
                    // the canary was settled around it.
                    p.base = if counter_ok && now.is_some() {
                        Some(s.nvcsw)
                    } else {
                        None
                    };
                }
                true
            });
            if !clean {
                epoch = now;
            }
            publish_holdouts(&pending);
            if !pending.is_empty() && t0.elapsed() >= next_stall {
                stall_warning(&pending, t0.elapsed());
                next_stall = next_stall.saturating_mul(2);
            }
        }
        // T5: holdouts' accesses inside hooks before what the caller does next.
        super::membarrier::full();
        self.tids = tids;
        self.qs = qs;
        out
    }
}

/// The threads the grace period in progress still waits for (tids), for
/// [`holdouts`]: published after each pass over them, emptied at its end.
static HOLDOUTS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn publish_holdouts(pending: &[Pending]) {
    let mut g = HOLDOUTS.lock().unwrap_or_else(|p| p.into_inner());
    g.clear();
    g.extend(pending.iter().map(|p| p.tid));
}

/// The threads (tid, name) the grace period in progress still waits for;
/// empty when none is in progress. A snapshot, as of the engine's last
/// look at them.
pub(crate) fn holdouts() -> Vec<(i32, String)> {
    let tids = HOLDOUTS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    tids.into_iter().map(|t| (t, thread_name(t))).collect()
}

/// The canary's count if it read `S` with the same count on both sides.
fn clean_reading(pre: Option<Sample>, post: Option<Sample>) -> Option<u64> {
    match (pre, post) {
        (Some(a), Some(b)) if a.state.blocked() && b.state.blocked() && a.nvcsw == b.nvcsw && a.nvcsw != u64::MAX => {
            Some(a.nvcsw)
        }
        _ => None,
    }
}

fn stall_warning(pending: &[Pending], waited: Duration) {
    let mut who = Vec::new();
    for p in pending {
        let state = p.last.map(|s| s.state.letter()).unwrap_or('?');
        who.push((p.tid, thread_name(p.tid), state));
    }
    let list: Vec<String> = who.iter().map(|(t, n, s)| format!("tid {t} ({n}) state {s}")).collect();
    let first = who.first().map(|(t, n, s)| ReaderInfo {
        tid: *t as i64,
        thread_name: n.clone(),
        location: format!("state {s}"),
        held_for: waited,
    });
    diagnostics::emit(Warning {
        kind: WarningKind::TasksStall,
        domain: String::from(super::DOMAIN_NAME),
        message: format!(
            "usrcu: Tasks grace-period stall: waited {} ms for {} holdout(s): {}",
            waited.as_millis(),
            who.len(),
            list.join(", ")
        ),
        oldest_reader: first,
        tid: diagnostics::current_tid(),
    });
}

/// The one driver of the process (grace periods run one at a time).
pub(crate) static DRIVER: Mutex<Driver> = Mutex::new(Driver::new());
