//! Red-team (round 6): the invoker's ordering buffers after a burst
//! (`srcu/src/callbacks.rs`, `SHRINK_AFTER`), as a host author's service
//! would use a domain: a burst at startup (a cache warmed, a config
//! reloaded with many objects retired at once), then a steady, light stream
//! of `call_srcu` for the rest of the process's life.
//!
//! When the buffers were shrunk only after three passes in a row left
//! nothing queued, a steady stream kept the burst's buffers (32 bytes a
//! callback, several buffers, about 60 MiB here) while it ran without a
//! pause: it leaves the callbacks queued after each pass's grace period
//! began, so no pass is calm (seen failing, 6 of 6, when the memory was
//! read after 50,000 callbacks of the stream). They are now also shrunk at
//! the end of every window (`SHRINK_WINDOW`, 1 s) in which no pass needed a
//! quarter of them. The test waits, while the stream runs, for the memory
//! to go (a bound of 30 s only reports a hang): on a 2-vCPU machine the
//! stream's threads are descheduled now and then, calm passes happen, and
//! the memory goes with the window rule switched off too (0.1 to 1.9 s);
//! the unit test `a_stream_that_never_pauses_gives_a_bursts_buffers_back_at_a_window_end`
//! in `callbacks.rs` is the one that fails without the window rule.
//!
//! The heap counter is process-wide: the test runs alone, in a child.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};
use usrcu::Srcu;

#[path = "common/bounded.rs"]
mod bounded;
#[path = "common/child.rs"]
mod child;
#[path = "common/counting_alloc.rs"]
#[allow(dead_code)]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

use bounded::{wait_until, HANG};

const CHILD_ENV: &str = "USRCU_REDTEAM6_BUFFERS_CHILD";

static DOMAIN: Srcu = Srcu::new_static("rt6-burst-then-stream");
static RAN: AtomicU64 = AtomicU64::new(0);

const BURST: usize = 400_000;
/// Callbacks of the light stream before the memory is first looked at.
const STREAM: u64 = 50_000;
/// Each producer of the stream queues one callback every this long (a
/// busy wait: a sleeping producer could leave passes with nothing queued,
/// which count as calm): light enough that the stream's own queue costs
/// little, steady enough that every pass leaves callbacks queued.
const PACE: Duration = Duration::from_micros(2);
/// What a live domain may hold beyond its baseline while a light stream
/// runs: the stream's own pending callbacks and buffers for its passes.
const LIMIT: isize = 8 << 20;
/// Threads of the stream.
const PRODUCERS: usize = 2;

#[test]
fn a_burst_then_a_light_steady_stream_gives_the_bursts_buffers_back() {
    child::Child::new("burst_then_stream_entry")
        .env(CHILD_ENV, "1")
        .must_pass("burst then stream: done");
}

#[test]
fn burst_then_stream_entry() {
    if !child::in_child(CHILD_ENV, Some(120)) {
        return;
    }
    let d = &DOMAIN;
    d.call_srcu(|| {});
    d.barrier();
    let before = counting_alloc::in_use();

    // The burst, behind a callback that blocks, so that one pass takes it.
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
    for _ in 0..BURST {
        d.call_srcu(|| {
            RAN.fetch_add(1, Ordering::Relaxed);
        });
    }
    // A light steady stream, started before the burst runs (a service's
    // traffic does not wait for its startup burst to drain).
    let stop = Arc::new(AtomicBool::new(false));
    let base = BURST as u64;
    // Two producers: a pass is calm only if neither queued anything since
    // its grace period began (both descheduled for a whole pass).
    let queued = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let (stop, queued) = (stop.clone(), queued.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    while t.elapsed() < PACE {
                        std::hint::spin_loop();
                    }
                    DOMAIN.call_srcu(|| {
                        RAN.fetch_add(1, Ordering::Relaxed);
                    });
                    queued.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    wait_until("the stream queued behind the burst", || {
        queued.load(Ordering::Relaxed) >= 100
    });
    tx.send(()).unwrap();
    d.barrier();
    let after_burst = counting_alloc::in_use() - before;
    let gp0 = d.stats().grace_periods;
    wait_until("the stream ran", || {
        RAN.load(Ordering::Relaxed).saturating_sub(base) >= STREAM
    });
    let t0 = Instant::now();
    let mut during = counting_alloc::in_use() - before;
    while during >= LIMIT && t0.elapsed() < Duration::from_secs(30) {
        thread::sleep(Duration::from_millis(10));
        during = counting_alloc::in_use() - before;
    }
    let passes = d.stats().grace_periods - gp0;
    let streamed = RAN.load(Ordering::Relaxed).saturating_sub(base);
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().unwrap();
    }
    d.barrier();
    println!(
        "bytes beyond the baseline: after the burst {after_burst}, while the stream ran {during} \
         ({passes} grace periods, {streamed} callbacks of the stream, {:?})",
        t0.elapsed()
    );
    assert!(
        during < LIMIT,
        "a live domain still holds {during} bytes ({} MiB) beyond its baseline after a burst of {BURST} \
         callbacks, while a light stream ran {streamed} callbacks over {passes} grace periods, 30 s \
         (after the burst: {after_burst} bytes)",
        during >> 20
    );
    println!("burst then stream: done");
}

static DOMAIN2: Srcu = Srcu::new_static("rt6-burst-then-one-update");

/// A burst, then one more update (one `call_srcu` and a `barrier`), then
/// the domain goes quiet for good, while the rest of the process keeps
/// using the runtime (another domain's callbacks). Held: the buffers are
/// given back within a few seconds (the test waits for it, while the other
/// domain works, up to 30 s, which only reports a hang).
///
/// The update's callback is queued while a reader holds its grace period,
/// so a pass sees it waiting (not a calm pass) and the two passes after it
/// count only two calm takes: the calm-pass rule (three in a row) never
/// fires, and before the driver's deferred trim (`Callbacks::trim_if_quiet`)
/// nothing visited the quiet domain again, so it kept the burst's 56 MiB
/// for good (seen failing in CI, at random, before the reader was added;
/// every run with it, with the trim switched off).
#[test]
fn a_burst_then_one_update_then_quiet_gives_the_bursts_buffers_back_on_a_live_domain() {
    child::Child::new("burst_then_quiet_entry")
        .env(CHILD_ENV, "1")
        .must_pass("burst then quiet: done");
}

#[test]
fn burst_then_quiet_entry() {
    if !child::in_child(CHILD_ENV, Some(120)) {
        return;
    }
    let d = &DOMAIN2;
    d.call_srcu(|| {});
    d.barrier();
    let before = counting_alloc::in_use();
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
    for _ in 0..BURST {
        d.call_srcu(|| {});
    }
    tx.send(()).unwrap();
    d.barrier();
    let after_burst = counting_alloc::in_use() - before;
    // One more update, queued under a reader: the driver dispatches it (new
    // ticket) while its grace period cannot end, so that pass finds it
    // waiting.
    let seen_waiting = {
        let g = d.read_lock();
        let invoked = d.stats().callbacks_invoked;
        d.call_srcu(|| {});
        // The pass that finds it waiting leaves the count as it was; give
        // the driver a moment to dispatch it (ordering is not needed: a
        // later dispatch only makes the calm rule less likely to fire).
        thread::sleep(Duration::from_millis(20));
        let same = d.stats().callbacks_invoked == invoked;
        drop(g);
        same
    };
    assert!(
        seen_waiting,
        "the update's callback ran while a reader held its grace period"
    );
    d.barrier();
    // The rest of the process goes on using the runtime.
    let other = Srcu::new("rt6-other");
    let start = Instant::now();
    let mut quiet;
    loop {
        for _ in 0..20 {
            other.call_srcu(|| {});
            other.barrier();
        }
        quiet = counting_alloc::in_use() - before;
        if quiet < 1 << 20 || start.elapsed() > Duration::from_secs(30) {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    println!(
        "bytes beyond the baseline: after the burst {after_burst}, quiet after one more update {quiet} \
         ({:?} after the update)",
        start.elapsed()
    );
    assert!(
        quiet < 1 << 20,
        "a live, quiet domain holds {quiet} bytes ({} MiB) beyond its baseline 30 s after a burst of {BURST} \
         callbacks and one more update (after the burst: {after_burst})",
        quiet >> 20
    );
    // SAFETY: no other thread uses `other`.
    unsafe { other.cleanup() }.unwrap();
    println!("burst then quiet: done");
}
