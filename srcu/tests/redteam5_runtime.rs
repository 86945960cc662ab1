//! Red-team (round 5): the runtime engine's promises (issue 8), tried as a
//! host or plugin author would, through the public API only, in the
//! scenarios the other runtime tests leave out:
//!
//! - starvation: 48 domains (dynamic, `static`, leaked `new_static`) with
//!   readers asleep, timed-out synchronizes and barriers, callbacks pending,
//!   callbacks that block, and callbacks that sleep inside a read section of
//!   another stuck domain hold up no unrelated domain's `call_srcu`,
//!   `call_srcu_raw`, `barrier`, `synchronize`, `synchronize_expedited`,
//!   polled grace periods, bounded waits, nor the Tasks and Tasks Trace
//!   flavors;
//! - order: a callback whose `call_srcu` returned before another's began
//!   runs first (real-time order across threads, `callbacks.rs`), with
//!   producers hopping between two CPUs, mixed callback kinds, expedited
//!   grace periods and barriers from other threads;
//! - bounded waits with 0, 1 ns and `Duration::MAX`, repeated, and what
//!   100,000 timed-out barriers leave behind;
//! - the inventory as a loader uses it, while callbacks of every flavor
//!   block.
//!
//! Scenarios that may hang run in a child process with an alarm. Ordering
//! (flags, counters), never timing, decides every assertion.
#![allow(clippy::single_range_in_vec_init)] // one range is the common query

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;
use usrcu::runtime::inventory;
use usrcu::{CallbackHead, Srcu};

#[path = "common/bounded.rs"]
mod bounded;
#[path = "common/child.rs"]
mod child;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[allow(dead_code)] // not every helper is used here
#[path = "common/cpus.rs"]
mod cpus;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

use bounded::{wait_until, HANG};

const CHILD_ENV: &str = "USRCU_REDTEAM5_CHILD";

fn run_entry(entry: &str, marker: &str) {
    child::Child::new(entry).env(CHILD_ENV, "1").must_pass(marker);
}

fn in_child(alarm_secs: u32) -> bool {
    child::in_child(CHILD_ENV, Some(alarm_secs))
}

/// The executable's own text, from `/proc/self/maps`: what a loader would
/// pass for a plugin (every closure and trampoline of this file lies in it).
fn own_text() -> Vec<std::ops::Range<usize>> {
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let exe = exe.to_string_lossy().into_owned();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if !line.ends_with(&exe) || !perms.contains('x') {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        out.push(usize::from_str_radix(a, 16).unwrap()..usize::from_str_radix(b, 16).unwrap());
    }
    assert!(!out.is_empty(), "no executable mapping of {exe}");
    out
}

// --- starvation --------------------------------------------------------------

static ST_A: Srcu = Srcu::new_static("rt5-static-a");
static ST_B: Srcu = Srcu::new_static("rt5-static-b");
static ST_C: Srcu = Srcu::new_static("rt5-static-c");
static ST_D: Srcu = Srcu::new_static("rt5-static-d");
static FREE_STATIC: Srcu = Srcu::new_static("rt5-free-static");

static RAW_FREE_RAN: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn raw_free_cb(h: *mut CallbackHead) {
    // SAFETY: `h` is a leaked `Box<CallbackHead>`, handed back once.
    drop(unsafe { Box::from_raw(h) });
    RAW_FREE_RAN.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn forty_eight_stuck_domains_hold_up_no_other_domain_nor_the_tasks_flavors() {
    run_entry("stuck_domains_entry", "stuck domains: done");
}

/// The same with stall warnings due after 1 ms: the driver reports the 36
/// stuck domains' stalls (again at each doubling) while it serves the others.
#[test]
fn stuck_domains_reported_as_stalls_every_millisecond_hold_up_no_other_domain() {
    let ran = child::Child::new("stuck_domains_entry")
        .env(CHILD_ENV, "1")
        .env("USRCU_STALL_TIMEOUT_MS", "1")
        .must_pass("stuck domains: done");
    let text = &ran.stdout;
    let stalls: usize = text
        .lines()
        .find_map(|l| l.split("stall warnings while stuck: ").nth(1))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(stalls > 0, "no stall was reported:\n{text}");
}

/// Everything an unrelated user of the runtime may do, each of which must
/// return while the stuck domains stay stuck.
fn use_a_free_domain(free: &Srcu) {
    let ran = Arc::new(AtomicUsize::new(0));
    for i in 0..64u64 {
        let r = ran.clone();
        if i % 2 == 0 {
            free.call_srcu(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
        } else {
            let pad = [i as u8; 200];
            free.call_srcu(move || {
                assert_eq!(pad[199], i as u8);
                r.fetch_add(1, Ordering::SeqCst);
            });
        }
    }
    let h = Box::into_raw(Box::new(CallbackHead::new()));
    let raw_before = RAW_FREE_RAN.load(Ordering::SeqCst);
    // SAFETY: `h` stays valid until `raw_free_cb` takes it back.
    unsafe { free.call_srcu_raw(h, raw_free_cb) };
    free.barrier();
    assert_eq!(ran.load(Ordering::SeqCst), 64);
    assert_eq!(RAW_FREE_RAN.load(Ordering::SeqCst), raw_before + 1);
    free.synchronize();
    free.synchronize_expedited();
    assert!(free.synchronize_timeout(HANG));
    let r = ran.clone();
    free.call_srcu(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    assert!(free.barrier_timeout(HANG));
    assert_eq!(ran.load(Ordering::SeqCst), 65);
    let c = free.start_poll();
    wait_until("a polled grace period of the free domain", || free.poll_state(c));
    let c = free.get_state();
    free.synchronize();
    assert!(free.poll_state(c));
}

#[test]
fn stuck_domains_entry() {
    if !in_child(120) {
        return;
    }
    let cap = usrcu::diagnostics::Capture::start();
    let stuck_cb_ran = Arc::new(AtomicUsize::new(0));
    let reader_woke = Arc::new(AtomicUsize::new(0));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let mut to_release = 0usize;
    let mut raw: Vec<(&'static Srcu, usrcu::ReadIndex)> = Vec::new();
    let mut dynamic: Vec<Arc<Srcu>> = Vec::new();
    let mut all: Vec<&'static Srcu> = Vec::new();

    // 16 dynamic domains with a reader asleep on a thread of its own.
    let mut sleepers = Vec::new();
    for i in 0..16 {
        let d = Arc::new(Srcu::new(&format!("rt5-stuck-dyn-{i}")));
        let (inside_tx, inside_rx) = mpsc::channel();
        let (d2, rx, woke) = (d.clone(), release_rx.clone(), reader_woke.clone());
        sleepers.push(thread::spawn(move || {
            let _g = d2.read_lock();
            inside_tx.send(()).unwrap();
            let _ = rx.lock().unwrap().recv_timeout(HANG);
            woke.fetch_add(1, Ordering::SeqCst);
        }));
        to_release += 1;
        inside_rx.recv().unwrap();
        dynamic.push(d);
    }
    // 4 real statics and 16 leaked `new_static` domains, each with a raw
    // section left open (no thread at all).
    for d in [&ST_A, &ST_B, &ST_C, &ST_D] {
        raw.push((d, d.read_lock_raw()));
        all.push(d);
    }
    for i in 0..16 {
        let d: &'static Srcu = Box::leak(Box::new(Srcu::new_static(Box::leak(
            format!("rt5-stuck-leaked-{i}").into_boxed_str(),
        ))));
        raw.push((d, d.read_lock_raw()));
        all.push(d);
    }
    // Every stuck domain: callbacks pending behind the reader, a polled
    // grace period, a synchronize and a barrier that time out (their grace
    // periods are left to the runtime).
    let stuck_doms: Vec<&Srcu> = dynamic.iter().map(|d| &**d).chain(all.iter().copied()).collect();
    for d in &stuck_doms {
        for _ in 0..4 {
            let r = stuck_cb_ran.clone();
            d.call_srcu(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
        }
        let _ = d.start_poll();
        assert!(!d.synchronize_timeout(Duration::from_millis(1)));
        assert!(!d.barrier_timeout(Duration::from_nanos(1)));
    }
    // 8 domains whose first callback blocks (holding an invoker), with more
    // callbacks queued behind it.
    let blocked_started = Arc::new(AtomicUsize::new(0));
    let mut blocked = Vec::new();
    for i in 0..8 {
        let d = Arc::new(Srcu::new(&format!("rt5-blocked-{i}")));
        let (rx, started) = (release_rx.clone(), blocked_started.clone());
        d.call_srcu(move || {
            started.fetch_add(1, Ordering::SeqCst);
            let _ = rx.lock().unwrap().recv_timeout(HANG);
        });
        to_release += 1;
        for _ in 0..3 {
            let r = stuck_cb_ran.clone();
            d.call_srcu(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
        }
        blocked.push(d);
    }
    // 8 domains whose callback sleeps inside a read section of one of the
    // stuck static domains (a reader asleep on an invoker).
    let nested_inside = Arc::new(AtomicUsize::new(0));
    let mut nesting = Vec::new();
    for i in 0..8 {
        let d = Arc::new(Srcu::new(&format!("rt5-nesting-{i}")));
        let target: &'static Srcu = all[4 + i];
        let (rx, inside, woke) = (release_rx.clone(), nested_inside.clone(), reader_woke.clone());
        d.call_srcu(move || {
            let _g = target.read_lock();
            inside.fetch_add(1, Ordering::SeqCst);
            let _ = rx.lock().unwrap().recv_timeout(HANG);
            woke.fetch_add(1, Ordering::SeqCst);
        });
        to_release += 1;
        nesting.push(d);
    }
    wait_until("every blocking callback started", || {
        blocked_started.load(Ordering::SeqCst) == 8 && nested_inside.load(Ordering::SeqCst) == 8
    });

    // An unrelated dynamic and an unrelated static domain do everything.
    let free = Srcu::new("rt5-free-dyn");
    for _ in 0..3 {
        use_a_free_domain(&free);
        use_a_free_domain(&FREE_STATIC);
    }
    // The process-wide flavors too.
    usrcu::tasks::synchronize();
    let tasks_ran = Arc::new(AtomicBool::new(false));
    {
        let r = tasks_ran.clone();
        usrcu::tasks::call(move || r.store(true, Ordering::SeqCst));
    }
    usrcu::tasks::barrier();
    assert!(tasks_ran.load(Ordering::SeqCst));
    assert!(usrcu::tasks::barrier_timeout(HANG));
    let c = usrcu::tasks::start_poll();
    wait_until("a polled Tasks grace period", || usrcu::tasks::poll_state(c));
    usrcu::trace::synchronize();
    let trace_ran = Arc::new(AtomicBool::new(false));
    {
        let r = trace_ran.clone();
        usrcu::trace::call(move || r.store(true, Ordering::SeqCst));
    }
    usrcu::trace::barrier();
    assert!(trace_ran.load(Ordering::SeqCst));
    assert!(usrcu::trace::barrier_timeout(HANG));
    let c = usrcu::trace::start_poll();
    wait_until("a polled Tasks Trace grace period", || usrcu::trace::poll_state(c));

    // Ordering: everything above returned while every stuck reader is still
    // inside and no stuck callback has run.
    assert_eq!(reader_woke.load(Ordering::SeqCst), 0, "a stuck reader woke early");
    assert_eq!(stuck_cb_ran.load(Ordering::SeqCst), 0, "a stuck callback ran");
    let stalls = cap
        .warnings()
        .iter()
        .filter(|w| w.kind == usrcu::diagnostics::WarningKind::Stall)
        .count();
    println!("stall warnings while stuck: {stalls}");
    for d in &stuck_doms {
        assert!(!d.barrier_timeout(Duration::ZERO));
    }

    // Release everything: every stuck domain drains.
    for _ in 0..to_release {
        release_tx.send(()).unwrap();
    }
    for (d, idx) in raw {
        // SAFETY: `idx` came from `d.read_lock_raw()` and is ended once.
        unsafe { d.read_unlock_raw(idx) };
    }
    for s in sleepers {
        s.join().unwrap();
    }
    for d in stuck_doms.iter().copied().chain(blocked.iter().map(|d| &**d)) {
        d.barrier();
    }
    for d in &nesting {
        d.barrier();
    }
    assert_eq!(stuck_cb_ran.load(Ordering::SeqCst), 36 * 4 + 8 * 3);
    assert_eq!(reader_woke.load(Ordering::SeqCst), 16 + 8);
    // Nothing is left that blocks: the dynamic domains clean up.
    for d in dynamic.into_iter().chain(blocked).chain(nesting) {
        d.synchronize();
        let d = Arc::try_unwrap(d).ok().unwrap();
        // SAFETY: no other thread uses `d`.
        unsafe { d.cleanup() }.unwrap();
    }
    println!("stuck domains: done");
}

// --- order -------------------------------------------------------------------

const RT_THREADS: usize = 8;
const RT_PER: usize = 4000;

/// Per thread: the last sequence number whose callback ran.
static RAN: [AtomicU64; RT_THREADS] = [const { AtomicU64::new(0) }; RT_THREADS];
/// Per thread: the last sequence number whose `call_srcu` returned.
static RETURNED: [AtomicU64; RT_THREADS] = [const { AtomicU64::new(0) }; RT_THREADS];
static FIFO_BROKEN: AtomicUsize = AtomicUsize::new(0);
static REALTIME_BROKEN: AtomicUsize = AtomicUsize::new(0);
static BARRIER_BROKEN: AtomicUsize = AtomicUsize::new(0);
static FIRST_BREAK: Mutex<Option<String>> = Mutex::new(None);

/// `SNAP[(t * RT_PER + seq - 1) * RT_THREADS + x]`: `RETURNED[x]` as thread
/// `t` saw it just before it queued its callback `seq`.
fn snaps() -> &'static [AtomicU64] {
    static S: std::sync::OnceLock<Vec<AtomicU64>> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        (0..RT_THREADS * RT_PER * RT_THREADS)
            .map(|_| AtomicU64::new(0))
            .collect()
    })
}

fn note_break(what: String) {
    let mut f = FIRST_BREAK.lock().unwrap_or_else(|p| p.into_inner());
    if f.is_none() {
        *f = Some(what);
    }
}

/// The check every callback of the order test runs.
fn ran(t: usize, seq: u64) {
    let prev = RAN[t].swap(seq, Ordering::SeqCst);
    if prev != seq - 1 {
        FIFO_BROKEN.fetch_add(1, Ordering::SeqCst);
        note_break(format!("thread {t}: callback {seq} ran after {prev}"));
    }
    let base = (t * RT_PER + seq as usize - 1) * RT_THREADS;
    for (x, r) in RAN.iter().enumerate() {
        let must_have_run = snaps()[base + x].load(Ordering::Relaxed);
        let has_run = r.load(Ordering::SeqCst);
        if x != t && has_run < must_have_run {
            REALTIME_BROKEN.fetch_add(1, Ordering::SeqCst);
            note_break(format!(
                "thread {t} callback {seq} ran before thread {x} callback {must_have_run}, whose call_srcu returned before it was queued (only {has_run} ran)"
            ));
        }
    }
}

#[repr(C)]
struct Node {
    head: CallbackHead,
    t: usize,
    seq: u64,
}

unsafe extern "C" fn node_cb(h: *mut CallbackHead) {
    // SAFETY: `h` is the first field of a leaked `Box<Node>`, handed back once.
    let n = unsafe { Box::from_raw(h as *mut Node) };
    ran(n.t, n.seq);
}

extern "C" fn nap_handler(_: libc::c_int) {
    // SAFETY: usleep is async-signal-safe; errno is saved and restored.
    unsafe {
        let e = *libc::__errno_location();
        libc::usleep(200);
        *libc::__errno_location() = e;
    }
}

/// Make every `SIGUSR1` that reaches a thread of this process nap 200 us in
/// its handler: a producer interrupted between taking its ticket and
/// pushing its head leaves a gap that long (`callbacks.rs`).
fn install_nap_handler() {
    // SAFETY: a zeroed sigaction with a valid handler and an empty mask is
    // valid; the handler is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = nap_handler as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
}

/// Real-time order (`callbacks.rs`: "a callback whose `call_srcu` returned
/// before another's began runs first") and per-thread FIFO, with 8
/// producers hopping between two CPUs, interrupted by signals whose handler
/// naps (so that tickets are taken and not yet pushed: gaps), mixing small
/// closures, boxed closures and intrusive heads, while two threads run
/// expedited grace periods and one runs barriers and timed-out barriers.
/// No fault switch breaks this property: `Fault::TakePastGap` reorders only
/// calls that overlap (the late push's `call_srcu` has not returned), which
/// this claim does not order; a scratch run with it on passed.
#[test]
fn a_callback_queued_after_another_threads_call_srcu_returned_runs_after_it() {
    install_nap_handler();
    let d = Arc::new(Srcu::new("rt5-realtime-order"));
    let cpus = cpus::two_allowed_cpus();
    let stop = Arc::new(AtomicBool::new(false));
    let mut helpers = Vec::new();
    for k in 0..3 {
        let (d, stop) = (d.clone(), stop.clone());
        helpers.push(thread::spawn(move || {
            // At least one round, even when the producers finish before this
            // thread is first scheduled.
            let mut n = 0u64;
            loop {
                if k < 2 {
                    d.synchronize_expedited();
                } else {
                    // `barrier` waits for every callback whose `call_srcu`
                    // returned before it began, on any thread.
                    let before: Vec<u64> = RETURNED.iter().map(|r| r.load(Ordering::SeqCst)).collect();
                    d.barrier();
                    for (x, r) in RAN.iter().enumerate() {
                        let has_run = r.load(Ordering::SeqCst);
                        if has_run < before[x] {
                            BARRIER_BROKEN.fetch_add(1, Ordering::SeqCst);
                            note_break(format!(
                                "barrier returned before thread {x} callback {} ran (only {has_run})",
                                before[x]
                            ));
                        }
                    }
                    let _ = d.barrier_timeout(Duration::from_nanos(1));
                }
                n += 1;
                if stop.load(Ordering::Relaxed) {
                    break n;
                }
            }
        }));
    }
    // Producers stay alive until the signaller stopped (a `pthread_t` of an
    // exited thread must not be signalled).
    let tids = Arc::new(Mutex::new(Vec::new()));
    let produced = Arc::new(AtomicUsize::new(0));
    let signaller_done = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..RT_THREADS)
        .map(|t| {
            let (d, cpus) = (d.clone(), cpus.clone());
            let (tids, produced, signaller_done) = (tids.clone(), produced.clone(), signaller_done.clone());
            thread::spawn(move || {
                // SAFETY: pthread_self has no preconditions.
                tids.lock().unwrap().push(unsafe { libc::pthread_self() });
                for seq in 1..=RT_PER as u64 {
                    if seq % 16 == 0 {
                        // Hop to the other CPU while queueing.
                        cpus::pin_to(cpus[(t + seq as usize / 16) % cpus.len()]);
                    }
                    let base = (t * RT_PER + seq as usize - 1) * RT_THREADS;
                    for (x, r) in RETURNED.iter().enumerate() {
                        snaps()[base + x].store(r.load(Ordering::SeqCst), Ordering::Relaxed);
                    }
                    match seq % 3 {
                        0 => d.call_srcu(move || ran(t, seq)),
                        1 => {
                            let pad = [seq as u8; 300];
                            d.call_srcu(move || {
                                assert_eq!(pad[299], seq as u8);
                                ran(t, seq)
                            })
                        }
                        _ => {
                            let n = Box::into_raw(Box::new(Node {
                                head: CallbackHead::new(),
                                t,
                                seq,
                            }));
                            // SAFETY: `n` stays valid until `node_cb` takes it back.
                            unsafe { d.call_srcu_raw(n as *mut CallbackHead, node_cb) };
                        }
                    }
                    RETURNED[t].store(seq, Ordering::SeqCst);
                    if seq % 5 == 0 {
                        thread::yield_now();
                    }
                }
                produced.fetch_add(1, Ordering::SeqCst);
                wait_until("the signaller stopped", || signaller_done.load(Ordering::SeqCst));
            })
        })
        .collect();
    wait_until("every producer registered", || tids.lock().unwrap().len() == RT_THREADS);
    let mut signals = 0u64;
    while produced.load(Ordering::SeqCst) < RT_THREADS {
        for &tid in tids.lock().unwrap().iter() {
            // SAFETY: every producer stays alive until `signaller_done`.
            unsafe { libc::pthread_kill(tid, libc::SIGUSR1) };
            signals += 1;
        }
        thread::sleep(Duration::from_millis(1));
    }
    signaller_done.store(true, Ordering::SeqCst);
    for p in producers {
        p.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let helper_rounds: Vec<u64> = helpers.into_iter().map(|h| h.join().unwrap()).collect();
    d.barrier();
    assert!(signals > 0);
    assert!(helper_rounds.iter().all(|&n| n > 0));
    for r in &RAN {
        assert_eq!(r.load(Ordering::SeqCst), RT_PER as u64);
    }
    assert_eq!(
        (
            FIFO_BROKEN.load(Ordering::SeqCst),
            REALTIME_BROKEN.load(Ordering::SeqCst),
            BARRIER_BROKEN.load(Ordering::SeqCst)
        ),
        (0, 0, 0),
        "first break: {:?}",
        FIRST_BREAK.lock().unwrap()
    );
}

static REATTACH: Srcu = Srcu::new_static("rt5-reattach-order");
static A2_RAN: AtomicBool = AtomicBool::new(false);
static B_RAN_BEFORE_A2: AtomicUsize = AtomicUsize::new(0); // 0 unknown, 1 yes, 2 no
static GO: AtomicBool = AtomicBool::new(false);

#[test]
fn callbacks_queued_before_a_cleanup_in_a_callback_run_before_those_queued_after_it() {
    // a1 waits for `GO`, cleans the domain up from inside its own callback
    // (allowed: no reader inside, no other thread uses the domain), then
    // queues b. a2 was queued, and its `call_srcu` returned, before `GO`:
    // so before b's `call_srcu` began, and with an older cookie (cookies
    // are monotonic across cleanup and re-attach). b must not run first.
    REATTACH.call_srcu(|| {
        wait_until("GO", || GO.load(Ordering::SeqCst));
        // SAFETY: no reader is inside and no other thread uses the domain
        // (the test thread only waits on atomics now).
        unsafe { REATTACH.cleanup() }.unwrap();
        REATTACH.call_srcu(|| {
            let a2 = A2_RAN.load(Ordering::SeqCst);
            B_RAN_BEFORE_A2.store(if a2 { 2 } else { 1 }, Ordering::SeqCst);
        });
        // Give b every chance to run while this callback (and so a2, behind
        // it on the same invoker) is still running; not an assertion.
        let t0 = std::time::Instant::now();
        while B_RAN_BEFORE_A2.load(Ordering::SeqCst) == 0 && t0.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(1));
        }
    });
    REATTACH.synchronize();
    let c_a2 = REATTACH.get_state();
    REATTACH.call_srcu(|| A2_RAN.store(true, Ordering::SeqCst));
    GO.store(true, Ordering::SeqCst);
    wait_until("b ran", || B_RAN_BEFORE_A2.load(Ordering::SeqCst) != 0);
    wait_until("a2 ran", || A2_RAN.load(Ordering::SeqCst));
    let c_b_at_least = REATTACH.get_state();
    assert!(c_b_at_least > c_a2);
    assert_eq!(
        B_RAN_BEFORE_A2.load(Ordering::SeqCst),
        2,
        "b (queued after a2's call_srcu returned, newer cookie) ran before a2"
    );
}

static REATTACH3: Srcu = Srcu::new_static("rt5-reattach-barrier-inside");
/// 0: not yet; 1: the barrier returned true; 2: it returned false.
static INSIDE_BARRIER: AtomicUsize = AtomicUsize::new(0);

/// A barrier from inside the callback that cleaned the domain up does not
/// wait for the orphaned state it is itself running on (it would wait for
/// itself): it covers the fresh state and returns. Seen failing (the
/// bounded barrier timed out) with `rt_barrier`'s skip of the orphan this
/// thread serves removed.
#[test]
fn a_barrier_from_the_callback_that_cleaned_up_does_not_wait_for_itself() {
    REATTACH3.call_srcu(|| {
        // SAFETY: no reader is inside; the test thread only waits on atomics.
        unsafe { REATTACH3.cleanup() }.unwrap();
        let ok = REATTACH3.barrier_timeout(Duration::from_secs(5));
        INSIDE_BARRIER.store(if ok { 1 } else { 2 }, Ordering::SeqCst);
    });
    wait_until("the barrier inside the callback", || {
        INSIDE_BARRIER.load(Ordering::SeqCst) != 0
    });
    assert_eq!(
        INSIDE_BARRIER.load(Ordering::SeqCst),
        1,
        "the barrier waited for its own callback"
    );
}

static REATTACH2: Srcu = Srcu::new_static("rt5-reattach-barrier");
static A2B_RAN: AtomicBool = AtomicBool::new(false);
static GO2: AtomicBool = AtomicBool::new(false);
static CLEANED2: AtomicBool = AtomicBool::new(false);
static RELEASE2: AtomicBool = AtomicBool::new(false);

#[test]
fn barrier_after_a_cleanup_in_a_callback_waits_for_the_callbacks_queued_before_it() {
    // a1 cleans the domain up from inside its own callback, then stays
    // inside until released; a2, queued before, runs behind it on the
    // orphaned state. The test thread calls `barrier` after the cleanup
    // returned (no concurrent use): a2 was queued before that call, so the
    // barrier waits for it. A releaser lets a1 go once the barrier was
    // issued (its count on the fresh state), so a barrier that returned at
    // once is caught with a2 not run (seen failing before `rt_barrier`
    // waited for the orphaned state).
    REATTACH2.call_srcu(|| {
        wait_until("GO2", || GO2.load(Ordering::SeqCst));
        // SAFETY: no reader is inside; the test thread only waits on atomics.
        unsafe { REATTACH2.cleanup() }.unwrap();
        CLEANED2.store(true, Ordering::SeqCst);
        wait_until("RELEASE2", || RELEASE2.load(Ordering::SeqCst));
    });
    REATTACH2.call_srcu(|| A2B_RAN.store(true, Ordering::SeqCst));
    GO2.store(true, Ordering::SeqCst);
    wait_until("the cleanup in the callback", || CLEANED2.load(Ordering::SeqCst));
    let before = REATTACH2.stats().barriers_issued;
    let releaser = thread::spawn(move || {
        wait_until("the barrier to be issued", || {
            REATTACH2.stats().barriers_issued > before
        });
        RELEASE2.store(true, Ordering::SeqCst);
    });
    REATTACH2.barrier();
    let a2_ran_at_barrier = A2B_RAN.load(Ordering::SeqCst);
    RELEASE2.store(true, Ordering::SeqCst);
    releaser.join().unwrap();
    wait_until("a2 ran", || A2B_RAN.load(Ordering::SeqCst));
    assert!(
        a2_ran_at_barrier,
        "barrier returned while a callback queued before it (on the orphaned state) had not run"
    );
}

// --- bounded waits -----------------------------------------------------------

#[test]
fn synchronize_timeout_of_zero_one_ns_and_max_is_false_while_a_reader_is_inside_and_true_after() {
    let d = Arc::new(Srcu::new("rt5-sync-timeouts"));
    // Idle: even a zero timeout completes a grace period nobody holds up.
    assert!(d.synchronize_timeout(Duration::ZERO));
    assert!(d.synchronize_timeout(Duration::from_nanos(1)));
    assert!(d.synchronize_timeout(Duration::MAX));
    let idx = d.read_lock_raw();
    for i in 0..2000 {
        let t = match i % 3 {
            0 => Duration::ZERO,
            1 => Duration::from_nanos(1),
            _ => Duration::from_micros(50),
        };
        assert!(!d.synchronize_timeout(t), "round {i}: completed with a reader inside");
    }
    let c = d.get_state();
    assert!(!d.poll_state(c));
    let left = Arc::new(AtomicBool::new(false));
    let releaser = {
        let (d, left) = (d.clone(), left.clone());
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            left.store(true, Ordering::SeqCst);
            // SAFETY: `idx` came from `d.read_lock_raw()` and is ended once.
            unsafe { d.read_unlock_raw(idx) };
        })
    };
    assert!(d.synchronize_timeout(Duration::MAX));
    assert!(left.load(Ordering::SeqCst), "returned true while the reader was inside");
    releaser.join().unwrap();
    assert!(d.poll_state(c));
    // The timed-out grace periods are finished: nothing left in flight.
    let here = Arc::as_ptr(&d) as usize;
    wait_until("the runtime finished the grace periods", || {
        let q = inventory::query(&[here..here + 1]);
        assert_eq!(q.domains.len(), 1);
        q.domains.iter().all(|u| !u.grace_period_in_flight)
    });
    let d = Arc::try_unwrap(d).ok().unwrap();
    // SAFETY: no other thread uses `d`.
    unsafe { d.cleanup() }.unwrap();
}

/// A timed-out `synchronize_timeout` leaves its grace period to the driver;
/// once the reader left, nothing may still use the domain, so dropping it
/// must free its state (not leak it with a warning).
#[test]
fn a_domain_dropped_after_a_timed_out_synchronize_and_its_reader_leaving_is_freed() {
    let cap = usrcu::diagnostics::Capture::start();
    let mut leaked = 0;
    for i in 0..20 {
        let name = format!("rt5-drop-after-timeout-{i}");
        let d = Srcu::new(&name);
        let idx = d.read_lock_raw();
        assert!(!d.synchronize_timeout(Duration::from_micros(100)));
        // SAFETY: `idx` came from `d.read_lock_raw()` and is ended once.
        unsafe { d.read_unlock_raw(idx) };
        drop(d);
        leaked += usize::from(!cap.find(&name, usrcu::diagnostics::WarningKind::Leak).is_empty());
    }
    assert_eq!(leaked, 0, "{leaked} of 20 domains leaked: {:?}", cap.warnings().first());
}

#[test]
fn barrier_timeout_of_zero_one_ns_and_max_behind_a_blocked_callback() {
    let d = Srcu::new("rt5-barrier-timeouts");
    assert!(d.barrier_timeout(Duration::ZERO)); // never used
    let (tx, rx) = mpsc::channel::<()>();
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = ran.clone();
        d.call_srcu(move || {
            let _ = rx.recv_timeout(HANG);
            ran.store(true, Ordering::SeqCst);
        });
    }
    for i in 0..3000 {
        let t = match i % 3 {
            0 => Duration::ZERO,
            1 => Duration::from_nanos(1),
            _ => Duration::from_micros(20),
        };
        assert!(!d.barrier_timeout(t));
    }
    assert!(!ran.load(Ordering::SeqCst));
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        tx.send(()).unwrap();
    });
    assert!(d.barrier_timeout(Duration::MAX));
    assert!(ran.load(Ordering::SeqCst));
    releaser.join().unwrap();
    // SAFETY: no other thread uses `d`.
    unsafe { d.cleanup() }.unwrap();
}

/// What a domain holds on the heap, measured as the bytes in use while it
/// lives: (after 100,000 timed-out barriers behind a blocked callback,
/// after the callback returned and a barrier, after 20 more rounds of one
/// callback and a barrier, after cleanup), each relative to before the
/// barriers; and the tickets pending after the timed-out barriers.
fn timed_out_barriers_footprint(name: &str) -> ([isize; 4], usize, u64) {
    let d = Srcu::new(name);
    let (tx, rx) = mpsc::channel::<()>();
    let started = Arc::new(AtomicBool::new(false));
    {
        let started = started.clone();
        d.call_srcu(move || {
            started.store(true, Ordering::SeqCst);
            let _ = rx.recv_timeout(HANG);
        });
    }
    wait_until("the blocking callback started", || started.load(Ordering::SeqCst));
    // Warm up whatever a first timed-out barrier allocates.
    for _ in 0..100 {
        assert!(!d.barrier_timeout(Duration::ZERO));
    }
    let before = counting_alloc::in_use();
    for _ in 0..100_000 {
        assert!(!d.barrier_timeout(Duration::ZERO));
    }
    let during = counting_alloc::in_use() - before;
    let here = &d as *const Srcu as usize;
    let pending = inventory::query(&[here..here + 1]).domains[0].callbacks_pending;
    tx.send(()).unwrap();
    d.barrier();
    let after = counting_alloc::in_use() - before;
    for _ in 0..20 {
        d.call_srcu(|| {});
        d.barrier();
    }
    let later = counting_alloc::in_use() - before;
    let reported = d.stats().runtime_bytes;
    // SAFETY: no other thread uses `d`.
    unsafe { d.cleanup() }.unwrap();
    drop(d);
    let cleaned = settled(before);
    ([during, after, later, cleaned], pending, reported)
}

/// Bytes in use relative to `before`, once the runtime's threads have let
/// go of what they still held (a freed state may be dropped by the driver
/// after its last look): the smallest value seen over a few rounds of
/// another domain's callback and barrier.
fn settled(before: isize) -> isize {
    let other = Srcu::new("rt5-settle");
    let mut best = counting_alloc::in_use() - before;
    for _ in 0..50 {
        other.call_srcu(|| {});
        other.barrier();
        thread::sleep(Duration::from_millis(2));
        best = best.min(counting_alloc::in_use() - before);
    }
    best
}

/// The same for a burst of 100,000 callbacks (no barrier timing out):
/// (after the burst ran and a barrier, after 20 more rounds, after cleanup)
/// relative to before the burst; and `stats().runtime_bytes` then.
fn burst_footprint(name: &str) -> ([isize; 3], u64) {
    let d = Srcu::new(name);
    d.call_srcu(|| {});
    d.barrier();
    let before = counting_alloc::in_use();
    let (tx, rx) = mpsc::channel::<()>();
    d.call_srcu(move || {
        let _ = rx.recv_timeout(HANG);
    });
    for _ in 0..100_000 {
        d.call_srcu(|| {});
    }
    tx.send(()).unwrap();
    d.barrier();
    let after = counting_alloc::in_use() - before;
    for _ in 0..20 {
        d.call_srcu(|| {});
        d.barrier();
    }
    let later = counting_alloc::in_use() - before;
    let reported = d.stats().runtime_bytes;
    // SAFETY: no other thread uses `d`.
    unsafe { d.cleanup() }.unwrap();
    drop(d);
    let cleaned = settled(before);
    ([after, later, cleaned], reported)
}

/// The heap counter is process-wide: the tests that read it run alone, in
/// a child each.
#[test]
fn a_hundred_thousand_timed_out_barriers_leave_nothing_after_cleanup() {
    run_entry("barriers_cleanup_entry", "barriers cleanup: done");
}

#[test]
fn barriers_cleanup_entry() {
    if !in_child(120) {
        return;
    }
    let (b, pending, _) = timed_out_barriers_footprint("rt5-100k-barriers-cleanup");
    println!("timed-out barriers: bytes {b:?}, pending {pending}");
    assert!(b[3] < 64 << 10, "{} bytes left after cleanup", b[3]);
    println!("barriers cleanup: done");
}

#[test]
fn a_hundred_thousand_timed_out_barriers_do_not_grow_memory_while_the_callback_blocks() {
    run_entry("barriers_during_entry", "barriers during: done");
}

#[test]
fn barriers_during_entry() {
    if !in_child(120) {
        return;
    }
    let (b, pending, _) = timed_out_barriers_footprint("rt5-100k-barriers-during");
    assert!(
        b[0] < 1 << 20,
        "100,000 timed-out barriers hold {} bytes ({pending} tickets pending) behind one blocked callback",
        b[0]
    );
    println!("barriers during: done");
}

#[test]
fn a_burst_of_callbacks_leaves_no_buffers_behind_on_a_live_domain() {
    run_entry("burst_entry", "burst: done");
}

#[test]
fn burst_entry() {
    if !in_child(120) {
        return;
    }
    let (b, reported) = burst_footprint("rt5-burst");
    let (t, _, treported) = timed_out_barriers_footprint("rt5-100k-barriers-live");
    println!("burst: bytes {b:?} runtime_bytes {reported}; timed-out barriers: bytes {t:?} runtime_bytes {treported}");
    assert!(
        b[1] < 1 << 20 && t[2] < 1 << 20,
        "a live, idle domain still holds {} bytes after a burst of 100,000 callbacks and {} after 100,000 timed-out barriers (stats().runtime_bytes says {reported} and {treported})",
        b[1],
        t[2]
    );
    println!("burst: done");
}

#[test]
fn the_inventory_counts_callbacks_not_the_markers_of_timed_out_barriers() {
    let d = Srcu::new("rt5-inventory-markers");
    let (tx, rx) = mpsc::channel::<()>();
    let started = Arc::new(AtomicBool::new(false));
    {
        let started = started.clone();
        d.call_srcu(move || {
            started.store(true, Ordering::SeqCst);
            let _ = rx.recv_timeout(HANG);
        });
    }
    wait_until("the blocking callback started", || started.load(Ordering::SeqCst));
    for _ in 0..10 {
        assert!(!d.barrier_timeout(Duration::ZERO));
    }
    let here = &d as *const Srcu as usize;
    let q = inventory::query(&[here..here + 1]);
    tx.send(()).unwrap();
    d.barrier();
    assert_eq!(d.stats().callbacks_queued, 1);
    assert_eq!(
        (q.callbacks, q.domains[0].callbacks_pending),
        (1, 1),
        "one callback queued (and running), ten timed-out barriers: {q:?}"
    );
}

#[test]
fn tasks_and_trace_bounded_barriers_accept_zero_and_max() {
    assert!(usrcu::tasks::barrier_timeout(Duration::MAX));
    assert!(usrcu::trace::barrier_timeout(Duration::MAX));
    usrcu::tasks::call(|| {});
    usrcu::trace::call(|| {});
    assert!(usrcu::tasks::barrier_timeout(Duration::MAX));
    assert!(usrcu::trace::barrier_timeout(Duration::MAX));
    // Zero: nothing queued since, so done.
    assert!(usrcu::tasks::barrier_timeout(Duration::ZERO));
    assert!(usrcu::trace::barrier_timeout(Duration::ZERO));
    assert!(usrcu::tasks::start_poll().wait_timeout(Duration::MAX));
}

// --- inventory -----------------------------------------------------------------

#[test]
fn inventory_deferred_sees_blocked_callbacks_of_every_flavor_and_returns_while_they_block() {
    run_entry("inventory_blocked_entry", "inventory blocked: done");
}

#[test]
fn inventory_blocked_entry() {
    if !in_child(120) {
        return;
    }
    let text = own_text();
    // Nothing queued yet: idle, and cheap (no domain walked).
    let q = inventory::deferred(&text);
    assert!(q.is_idle(), "{q:?}");
    assert!(inventory::drain(&text, Duration::ZERO).is_ok());
    assert!(inventory::drain(&text, Duration::MAX).is_ok());
    assert!(inventory::query(&[]).callbacks == 0);

    let (tx, rx) = mpsc::channel::<()>();
    let rx = Arc::new(Mutex::new(rx));
    let started = Arc::new(AtomicUsize::new(0));
    let host = Srcu::new("rt5-inv-host");
    let mut stuck = Vec::new();
    for i in 0..16 {
        // Domains with callbacks pending behind a reader: not in the range
        // as domains (created here, but by the host's copy of the crate,
        // which is this executable: so they are).
        let d: &'static Srcu = Box::leak(Box::new(Srcu::new_static("rt5-inv-stuck")));
        let idx = d.read_lock_raw();
        d.call_srcu(move || {
            let _ = i;
        });
        stuck.push((d, idx));
    }
    {
        let (rx, s) = (rx.clone(), started.clone());
        host.call_srcu(move || {
            s.fetch_add(1, Ordering::SeqCst);
            let _ = rx.lock().unwrap().recv_timeout(HANG);
        });
    }
    {
        let (rx, s) = (rx.clone(), started.clone());
        usrcu::tasks::call(move || {
            s.fetch_add(1, Ordering::SeqCst);
            let _ = rx.lock().unwrap().recv_timeout(HANG);
        });
    }
    {
        let (rx, s) = (rx.clone(), started.clone());
        usrcu::trace::call(move || {
            s.fetch_add(1, Ordering::SeqCst);
            let _ = rx.lock().unwrap().recv_timeout(HANG);
        });
    }
    wait_until("a callback of each flavor is running", || {
        started.load(Ordering::SeqCst) == 3
    });
    // Queued behind the blocked ones.
    usrcu::tasks::call(|| {});
    usrcu::trace::call(|| {});
    host.call_srcu(|| {});

    for _ in 0..50 {
        let q = inventory::deferred(&text);
        assert!(q.trace_callbacks >= 2, "{q:?}");
        assert!(q.tasks_callbacks >= 2, "{q:?}");
        assert!(q.srcu.callbacks >= 2 + 16, "{q:?}");
        assert!(!q.is_idle());
        let e = inventory::drain(&text, Duration::from_nanos(1)).unwrap_err();
        assert!(e.callbacks >= 2 + 16);
    }
    // A range that holds nothing of ours: nothing, even while all that blocks.
    let nothing = 8usize..4096usize;
    let q = inventory::deferred(std::slice::from_ref(&nothing));
    assert!(q.is_idle(), "{q:?}");

    for _ in 0..3 {
        tx.send(()).unwrap();
    }
    for (d, idx) in stuck {
        // SAFETY: `idx` came from `d.read_lock_raw()` and is ended once.
        unsafe { d.read_unlock_raw(idx) };
    }
    usrcu::tasks::barrier();
    usrcu::trace::barrier();
    inventory::drain(&text, HANG).unwrap();
    let q = inventory::deferred(&text);
    assert_eq!(
        (q.srcu.callbacks, q.trace_callbacks, q.tasks_callbacks),
        (0, 0, 0),
        "{q:?}"
    );
    println!("inventory blocked: done");
}

// --- the process-wide flavors behind a blocked callback ------------------------

/// Run `wait` on a thread while a callback queued by `queue` blocks; true
/// if `wait` returned before the callback was released (a bound of 10 s,
/// not a timing assertion: only the order of the two events is checked).
fn returns_while_a_callback_blocks(
    queue: impl FnOnce(Box<dyn FnOnce() + Send>),
    wait: impl FnOnce() + Send + 'static,
) -> bool {
    let (tx, rx) = mpsc::channel::<()>();
    let started = Arc::new(AtomicBool::new(false));
    {
        let started = started.clone();
        queue(Box::new(move || {
            started.store(true, Ordering::SeqCst);
            let _ = rx.recv_timeout(HANG);
        }));
    }
    wait_until("the blocking callback runs", || started.load(Ordering::SeqCst));
    let done = Arc::new(AtomicBool::new(false));
    {
        let done = done.clone();
        thread::spawn(move || {
            wait();
            done.store(true, Ordering::SeqCst);
        });
    }
    let t0 = std::time::Instant::now();
    while !done.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(5));
    }
    let before_release = done.load(Ordering::SeqCst);
    tx.send(()).unwrap();
    wait_until("the wait returns after the release", || done.load(Ordering::SeqCst));
    before_release
}

fn trace_queue(f: Box<dyn FnOnce() + Send>) {
    usrcu::trace::call(f)
}

fn tasks_queue(f: Box<dyn FnOnce() + Send>) {
    usrcu::tasks::call(f)
}

#[test]
fn a_blocked_tasks_trace_callback_does_not_hold_up_trace_synchronize() {
    run_entry("trace_sync_blocked_entry", "trace sync blocked: done");
}

#[test]
fn trace_sync_blocked_entry() {
    if !in_child(60) {
        return;
    }
    assert!(
        returns_while_a_callback_blocks(trace_queue, usrcu::trace::synchronize),
        "trace::synchronize waited for a blocked Tasks Trace callback"
    );
    println!("trace sync blocked: done");
}

#[test]
fn a_blocked_tasks_trace_callback_does_not_hold_up_polled_trace_grace_periods() {
    run_entry("trace_poll_blocked_entry", "trace poll blocked: done");
}

#[test]
fn trace_poll_blocked_entry() {
    if !in_child(60) {
        return;
    }
    let poll = || {
        let c = usrcu::trace::start_poll();
        while !usrcu::trace::poll_state(c) {
            thread::sleep(Duration::from_millis(1));
        }
    };
    assert!(
        returns_while_a_callback_blocks(trace_queue, poll),
        "a polled Tasks Trace grace period waited for a blocked Tasks Trace callback"
    );
    println!("trace poll blocked: done");
}

/// The same with a callback whose grace period is complete waiting, ready,
/// behind the blocked one: the grace-period thread must not take the ready
/// front of the queue for "nothing to drive" and leave the poll behind it.
#[test]
fn a_polled_trace_grace_period_completes_while_a_ready_callback_waits_behind_a_blocked_one() {
    run_entry("trace_poll_behind_entry", "trace poll behind: done");
}

#[test]
fn trace_poll_behind_entry() {
    if !in_child(20) {
        return;
    }
    let (tx, rx) = mpsc::channel::<()>();
    let started = Arc::new(AtomicBool::new(false));
    {
        let started = started.clone();
        usrcu::trace::call(move || {
            started.store(true, Ordering::SeqCst);
            let _ = rx.recv_timeout(HANG);
        });
    }
    wait_until("the blocking callback started", || started.load(Ordering::SeqCst));
    let behind = Arc::new(AtomicBool::new(false));
    {
        let behind = behind.clone();
        usrcu::trace::call(move || behind.store(true, Ordering::SeqCst));
    }
    // Its grace period is complete after this: it waits, ready, in front of
    // the queue, behind the callback that blocks.
    usrcu::trace::synchronize();
    let c = usrcu::trace::start_poll();
    wait_until("the polled grace period (a hang here dies by the alarm)", || {
        usrcu::trace::poll_state(c)
    });
    assert!(
        !behind.load(Ordering::SeqCst),
        "ran behind a callback that still blocks"
    );
    tx.send(()).unwrap();
    usrcu::trace::barrier();
    assert!(behind.load(Ordering::SeqCst));
    println!("trace poll behind: done");
}

#[test]
fn a_blocked_tasks_callback_does_not_hold_up_tasks_synchronize() {
    run_entry("tasks_sync_blocked_entry", "tasks sync blocked: done");
}

#[test]
fn tasks_sync_blocked_entry() {
    if !in_child(60) {
        return;
    }
    assert!(
        returns_while_a_callback_blocks(tasks_queue, usrcu::tasks::synchronize),
        "tasks::synchronize waited for a blocked Tasks callback"
    );
    println!("tasks sync blocked: done");
}
