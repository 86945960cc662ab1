//! Red team 15: `fork` while the driver's deferred trim (commit d37fd84,
//! `driver::run` -> `Callbacks::trim_if_quiet`) frees a quiet domain's
//! invoker buffers.
//!
//! `usrcu::runtime::idle()` documents: "fork while `idle()` holds, and the
//! child starts its own driver and invokers on first use". A pending trim
//! is not a heap entry, so `idle()` holds while one is due and while the
//! driver runs it; the trim frees the buffers under the domain's `ordered`
//! lock, which the `pthread_atfork` handler (`runtime/fork.rs`) does not
//! take. A host allocator that is slow to free large blocks (a profiler's,
//! a purging one) widens that window; the test's allocator holds frees of
//! 256 KiB and more made by the `usrcu-gp` thread until the test has forked,
//! so the window is hit every run instead of by chance.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use usrcu::Srcu;
use usrcu_tests::{in_child, Child};

/// Hold large frees of the driver thread (set by the test).
static SLOW: AtomicBool = AtomicBool::new(false);
/// The driver thread is inside such a free.
static IN_FREE: AtomicBool = AtomicBool::new(false);
/// Let it go on.
static RELEASE: AtomicBool = AtomicBool::new(false);

struct SlowFree;

fn on_driver_thread() -> bool {
    let mut name = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes and a NUL into `name`.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    name.starts_with(b"usrcu-gp\0")
}

// SAFETY: every call is passed to `System` unchanged; a free may only be
// delayed.
unsafe impl GlobalAlloc for SlowFree {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if l.size() >= 256 << 10 && SLOW.load(Ordering::SeqCst) && on_driver_thread() {
            IN_FREE.store(true, Ordering::SeqCst);
            let mut waited = 0;
            while !RELEASE.load(Ordering::SeqCst) && waited < 10_000 {
                // SAFETY: no preconditions.
                unsafe { libc::usleep(1000) };
                waited += 1;
            }
        }
        // SAFETY: forwarded.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: SlowFree = SlowFree;

const CHILD: &str = "RT15_TRIM_FORK_CASE";

fn case_fork_during_trim() {
    let d = Srcu::new("rt15-fork-trim");
    let count = Arc::new(AtomicU64::new(0));
    // One batch of 60,000 (queued under a reader, so that one grace period
    // makes them all ready: the invoker's buffers run to about 2 MiB), a
    // barrier, then nothing: the driver trims them about 100 ms later.
    {
        let _g = d.read_lock();
        for _ in 0..60_000 {
            let c = count.clone();
            d.call_srcu(move || {
                c.fetch_add(1, Ordering::Relaxed);
            });
        }
    }
    d.barrier();
    assert_eq!(count.load(Ordering::SeqCst), 60_000);
    SLOW.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    while !IN_FREE.load(Ordering::SeqCst) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the driver never trimmed the buffers"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // The host's check before a fork: the runtime says it is idle.
    let idle = usrcu::runtime::idle();
    println!("idle() while the driver trims: {idle}");
    assert!(
        idle,
        "idle() is false while the trim runs (then this fork breaks no promise)"
    );
    // SAFETY: fork; the child uses the runtime, as `runtime::idle` allows.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: no preconditions; a hang dies by SIGALRM.
        unsafe { libc::alarm(20) };
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        d.call_srcu(move || r.store(true, Ordering::SeqCst));
        let ok = d.barrier_timeout(Duration::from_secs(5));
        let code = if ok && ran.load(Ordering::SeqCst) { 0 } else { 3 };
        // SAFETY: leave the child without running the parent's harness.
        unsafe { libc::_exit(code) };
    }
    RELEASE.store(true, Ordering::SeqCst);
    let mut status = 0;
    // SAFETY: `pid` is our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let exited_ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    println!(
        "child: exited {:?}, signal {:?}",
        libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
    );
    assert!(
        exited_ok,
        "a child forked while idle() held (the driver trimming a quiet domain) could not run a callback on that domain"
    );
    println!("RT15-TRIM-FORK-OK");
}

/// The same without the slow allocator: fork at offsets spread around the
/// trim's due time (100 ms after the burst's last pass), `tries` times;
/// each child queues one callback and waits up to 2 s for it. Prints how
/// many children were stuck.
fn case_fork_near_trim(tries: u32) {
    let d = Srcu::new("rt15-fork-near-trim");
    let count = Arc::new(AtomicU64::new(0));
    let mut stuck = 0;
    for i in 0..tries {
        {
            let _g = d.read_lock();
            for _ in 0..60_000 {
                let c = count.clone();
                d.call_srcu(move || {
                    c.fetch_add(1, Ordering::Relaxed);
                });
            }
        }
        d.barrier();
        std::thread::sleep(Duration::from_micros(97_000 + 250 * u64::from(i % 32)));
        if !usrcu::runtime::idle() {
            continue;
        }
        // SAFETY: fork while idle() holds, as `runtime::idle` allows.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: no preconditions.
            unsafe { libc::alarm(10) };
            let ran = Arc::new(AtomicBool::new(false));
            let r = ran.clone();
            d.call_srcu(move || r.store(true, Ordering::SeqCst));
            let ok = d.barrier_timeout(Duration::from_secs(2)) && ran.load(Ordering::SeqCst);
            // SAFETY: leave without the parent's harness.
            unsafe { libc::_exit(if ok { 0 } else { 3 }) };
        }
        let mut status = 0;
        // SAFETY: our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            stuck += 1;
        }
    }
    println!("fork near the trim: {stuck} of {tries} children stuck");
    assert_eq!(
        stuck, 0,
        "{stuck} of {tries} children forked while idle() held could not run a callback"
    );
    println!("RT15-TRIM-FORK-OK near");
}

#[test]
fn rt15_trim_fork_child_entry() {
    if !in_child(CHILD, Some(60)) {
        return;
    }
    match std::env::var(CHILD).unwrap().as_str() {
        "fork-during-trim" => case_fork_during_trim(),
        "fork-near-trim" => case_fork_near_trim(
            std::env::var("RT15_TRIES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(300),
        ),
        other => panic!("unknown case {other}"),
    }
}

/// A host bursts on a domain, waits for `runtime::idle()` and forks; the
/// child queues one callback on that domain and waits for it
/// (`barrier_timeout(5 s)`). Expected, per `runtime::idle`'s doc: the child
/// starts its own invoker and the callback runs.
///
/// Observed: when the fork lands while the driver's deferred trim is
/// freeing the buffers (held open here by a slow-to-free allocator), the
/// child inherits the domain's `ordered` lock held by a thread that does
/// not exist there; its invoker blocks in `take_ready` and the barrier
/// times out: the child exits 3, 3/3 runs.
#[test]
fn rt15_fork_while_the_driver_trims_leaves_the_child_able_to_run_callbacks() {
    let mut failed = 0;
    let mut out = String::new();
    for _ in 0..3 {
        let ran = Child::new("rt15_trim_fork_child_entry")
            .env(CHILD, "fork-during-trim")
            .timeout(Duration::from_secs(60))
            .run();
        if !ran.text().contains("RT15-TRIM-FORK-OK") {
            failed += 1;
            out += &ran.describe();
        }
    }
    assert_eq!(failed, 0, "{failed} of 3 runs failed:\n{out}");
}

/// The finding above with the system allocator: `fork` at offsets spread
/// over the trim's due time, 300 tries. Expected: every child runs its
/// callback. Observed: 1 of 300 and 2 of 300 children stuck (2 runs,
/// both failed); each child's `barrier_timeout(2 s)` timed out.
#[test]
#[ignore = "slow stress (300 forks, ~45 s): fixed with its deterministic twin above (the trim takes the buffers under the heap lock, frees them with no lock held); 0 of 300 stuck children after the fix"]
fn rt15_fork_near_the_trims_due_time_leaves_the_child_able_to_run_callbacks() {
    let ran = Child::new("rt15_trim_fork_child_entry")
        .env(CHILD, "fork-near-trim")
        .timeout(Duration::from_secs(280))
        .run();
    println!(
        "{}",
        ran.text()
            .lines()
            .filter(|l| l.contains("children stuck"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ran.assert_passed("RT15-TRIM-FORK-OK near", "fork near the trim");
}
