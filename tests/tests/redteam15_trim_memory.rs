//! Red team 15: `SrcuStats::runtime_bytes`' promise about the invoker's
//! buffers ("freed altogether once the queue has stayed empty for 100 ms
//! ...; `cleanup` frees them too") after shapes of load that red team 14
//! did not try: a burst followed by a long slow stream that then stops, a
//! `fork` right after a burst (the child's own runtime), and an explicit
//! `cleanup` right after a burst. Every case runs in a child (the heap
//! counter is process-wide).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use usrcu::Srcu;
use usrcu_tests::{in_child, Child};

#[path = "../../srcu/tests/common/counting_alloc.rs"]
#[allow(dead_code)]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

const CHILD: &str = "RT15_TRIM_MEMORY_CASE";

fn one_batch(d: &Srcu, n: u64, count: &Arc<AtomicU64>) {
    let _g = d.read_lock();
    for _ in 0..n {
        let c = count.clone();
        d.call_srcu(move || {
            c.fetch_add(1, Ordering::Relaxed);
        });
    }
}

fn warm(d: &Srcu) {
    d.call_srcu(|| {});
    d.barrier();
}

/// A burst, then one callback every 5 ms for 1.2 s (the buffers shrink to
/// the stream's size, never below 4,096 callbacks' worth), then nothing.
fn case_slow_stream() {
    let d = Srcu::new("rt15-slow-stream");
    warm(&d);
    let base = counting_alloc::in_use();
    let rt_base = d.stats().runtime_bytes;
    let count = Arc::new(AtomicU64::new(0));
    one_batch(&d, 100_000, &count);
    d.barrier();
    let t0 = Instant::now();
    let mut n = 100_000;
    while t0.elapsed() < Duration::from_millis(1200) {
        let c = count.clone();
        d.call_srcu(move || {
            c.fetch_add(1, Ordering::Relaxed);
        });
        n += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    d.barrier();
    assert_eq!(count.load(Ordering::SeqCst), n);
    let (buffers, took) = counting_alloc::settle_with(64 << 10, Duration::from_secs(15), || {
        counting_alloc::in_use() - base - (d.stats().runtime_bytes as isize - rt_base as isize)
    });
    let over = counting_alloc::in_use() - base;
    println!("slow stream of {n}: quiet {over} bytes over after {took:?}; buffers kept {buffers}");
    assert!(
        buffers < 64 << 10,
        "a quiet domain keeps {buffers} bytes {took:?} after a slow stream"
    );
    println!("RT15-MEM-OK slow-stream");
}

/// A burst, a barrier, `runtime::idle()`, then `fork` before the trim is
/// due. The child uses the domain once; its own runtime should free the
/// buffers it inherited, as the parent's does.
fn case_fork_after_burst() {
    let d = Srcu::new("rt15-fork-burst");
    warm(&d);
    let count = Arc::new(AtomicU64::new(0));
    let base = counting_alloc::in_use();
    let rt_base = d.stats().runtime_bytes;
    one_batch(&d, 60_000, &count);
    d.barrier();
    while !usrcu::runtime::idle() {
        std::thread::yield_now();
    }
    // SAFETY: fork while the runtime is idle, as `runtime::idle` allows.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: no preconditions; a hang dies by SIGALRM.
        unsafe { libc::alarm(30) };
        let c = count.clone();
        d.call_srcu(move || {
            c.fetch_add(1, Ordering::Relaxed);
        });
        let ok = d.barrier_timeout(Duration::from_secs(5));
        let ran = count.load(Ordering::SeqCst) == 60_001;
        let (buffers, took) = counting_alloc::settle_with(256 << 10, Duration::from_secs(10), || {
            counting_alloc::in_use() - base - (d.stats().runtime_bytes as isize - rt_base as isize)
        });
        let over = counting_alloc::in_use() - base;
        println!("child: barrier {ok}, ran {ran}; quiet {over} bytes over after {took:?}; buffers kept {buffers}");
        let code = if ok && ran && buffers < 256 << 10 { 0 } else { 3 };
        // SAFETY: leave without the parent's harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let (buffers, took) = counting_alloc::settle_with(256 << 10, Duration::from_secs(15), || {
        counting_alloc::in_use() - base - (d.stats().runtime_bytes as isize - rt_base as isize)
    });
    let over = counting_alloc::in_use() - base;
    println!("parent: quiet {over} bytes over after {took:?}; buffers kept {buffers}");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child failed: {status:#x}"
    );
    assert!(buffers < 256 << 10, "the parent keeps {buffers} bytes");
    println!("RT15-MEM-OK fork-after-burst");
}

/// A burst, a barrier, then at once `cleanup`: "`cleanup` frees them
/// too". The heap comes back to where it was before the domain was first
/// used.
fn case_cleanup_after_burst() {
    let base = counting_alloc::in_use();
    let d = Srcu::new("rt15-cleanup-burst");
    let count = Arc::new(AtomicU64::new(0));
    one_batch(&d, 60_000, &count);
    d.barrier();
    // SAFETY: no reader or callback is left (barrier); nobody else uses `d`.
    unsafe { d.cleanup() }.unwrap();
    let (over, took) = counting_alloc::settle(base, 64 << 10, Duration::from_secs(15));
    println!("cleanup after a burst: {over} bytes over after {took:?}");
    assert!(over < 64 << 10, "{over} bytes kept {took:?} after cleanup");
    drop(d);
    println!("RT15-MEM-OK cleanup-after-burst");
}

#[test]
fn rt15_trim_memory_child_entry() {
    if !in_child(CHILD, Some(60)) {
        return;
    }
    match std::env::var(CHILD).unwrap().as_str() {
        "slow-stream" => case_slow_stream(),
        "fork-after-burst" => case_fork_after_burst(),
        "cleanup-after-burst" => case_cleanup_after_burst(),
        other => panic!("unknown case {other}"),
    }
}

fn run(case: &str) {
    Child::new("rt15_trim_memory_child_entry")
        .env(CHILD, case)
        .timeout(Duration::from_secs(60))
        .must_pass(&format!("RT15-MEM-OK {case}"));
}

#[test]
fn rt15_a_burst_then_a_long_slow_stream_then_quiet_gives_the_buffers_back() {
    run("slow-stream");
}

#[test]
fn rt15_a_child_forked_after_a_burst_gives_the_buffers_back() {
    run("fork-after-burst");
}

#[test]
fn rt15_cleanup_right_after_a_burst_gives_everything_back() {
    run("cleanup-after-burst");
}
