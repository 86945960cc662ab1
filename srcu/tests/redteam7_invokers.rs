//! Red team (round 7): the callback invoker pool has a hard cap
//! (`MAX_INVOKERS`), and a callback that waits for another domain's
//! callbacks (which the docs allow: "From a callback of *another* domain it
//! waits as usual (callbacks of different domains run on different
//! invokers)") can then wait forever, and with it every other domain of the
//! process: no invoker is left for anyone.
//!
//! FINDING: fails (hang) — see the test's doc.

#[path = "common/bounded.rs"]
mod bounded;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use usrcu::Srcu;

/// 300 domains; each one's callback waits until most callbacks have started
/// (so that they all hold an invoker at once, as 300 plugins' callbacks
/// that block on I/O would), then waits for the *next* domain's
/// callbacks with `barrier` (allowed by the docs). Every link must drain,
/// and meanwhile an unrelated domain's `call_srcu` + `barrier` must
/// complete ("a domain whose callbacks block holds only the invoker running
/// them").
#[test]
fn three_hundred_domains_whose_callbacks_wait_for_the_next_domains_barrier_drain_and_hold_up_no_one_else() {
    const N: usize = 300;
    let domains: &'static [Srcu] = Box::leak(
        (0..N)
            .map(|i| Srcu::new(&format!("rt7-chain-{i}")))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let started: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    let ran: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    for i in 0..N {
        domains[i].call_srcu(move || {
            started.fetch_add(1, Ordering::SeqCst);
            // Hold this invoker until 280 callbacks are running (at most 3 s).
            let t0 = Instant::now();
            while started.load(Ordering::SeqCst) < 280 && t0.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(1));
            }
            if i + 1 < N {
                domains[i + 1].barrier();
            }
            ran.fetch_add(1, Ordering::SeqCst);
        });
    }
    // An unrelated domain, used while the chain runs.
    let unrelated = bounded::finishes("an unrelated domain's call_srcu + barrier", || {
        std::thread::sleep(Duration::from_secs(4));
        let d = Srcu::new("rt7-unrelated");
        let ok = std::sync::Arc::new(AtomicUsize::new(0));
        let o = ok.clone();
        d.call_srcu(move || {
            o.fetch_add(1, Ordering::SeqCst);
        });
        let done = d.barrier_timeout(Duration::from_secs(20));
        (done, ok.load(Ordering::SeqCst))
    });
    eprintln!(
        "callbacks started {} ran {} of {N}; unrelated domain's barrier completed: {}",
        started.load(Ordering::SeqCst),
        ran.load(Ordering::SeqCst),
        unrelated.0
    );
    assert!(
        unrelated.0 && unrelated.1 == 1,
        "an unrelated domain's callback never ran: the {N} blocked callbacks hold every invoker \
         (started {}, ran {})",
        started.load(Ordering::SeqCst),
        ran.load(Ordering::SeqCst)
    );
    bounded::wait_until("every link of the chain ran", || ran.load(Ordering::SeqCst) == N);
}

/// The invokers a burst of blocked callbacks started do not all stay: once
/// idle, those past the few kept exit (`runtime/invoke.rs`, `IDLE_EXIT`).
/// Counted by name in `/proc/self/task` (this binary's only other test is
/// the one above, whose invokers count too).
#[test]
fn invokers_a_burst_of_blocked_callbacks_started_exit_once_idle() {
    const N: usize = 24;
    let domains: &'static [Srcu] = Box::leak(
        (0..N)
            .map(|i| Srcu::new(&format!("rt7-burst-{i}")))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let started: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    for d in domains {
        d.call_srcu(move || {
            started.fetch_add(1, Ordering::SeqCst);
            // Every callback holds its invoker until all have started.
            while started.load(Ordering::SeqCst) < N {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
    }
    bounded::wait_until("every callback started at once", || started.load(Ordering::SeqCst) == N);
    let peak = invokers();
    assert!(peak >= N, "{peak} invokers for {N} callbacks blocked at once");
    for d in domains {
        d.barrier();
    }
    // Bounded at 60 s by `wait_until`; the exit comes after 10 s idle.
    let wait = std::time::Instant::now();
    while invokers() > 4 + 8 {
        assert!(
            wait.elapsed() < Duration::from_secs(60),
            "{} invokers still running after 60 s",
            invokers()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The runtime's invoker threads (`usrcu-cb-<n>`) of this process.
fn invokers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|c| c.starts_with("usrcu-cb-"))
        .count()
}
