//! Red team 15: what the deferred trim (commit d37fd84, `driver::run`'s
//! re-arm of a `Trimmed::Busy` trim) costs a process whose domain's
//! invoker is held in a callback for a long time: the driver thread's
//! wake-ups, counted from `/proc/self/task/<tid>/status`
//! (`voluntary_ctxt_switches` of the thread named `usrcu-gp`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use usrcu::Srcu;
use usrcu_tests::{in_child, Child};

const CHILD: &str = "RT15_TRIM_WAKEUPS_CASE";

/// The `usrcu-gp` thread's voluntary context switches (each a wake-up
/// from a wait).
fn driver_switches() -> u64 {
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let p = t.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(p.join("comm")) else {
            continue;
        };
        if comm.trim() != "usrcu-gp" {
            continue;
        }
        let status = std::fs::read_to_string(p.join("status")).unwrap();
        for l in status.lines() {
            if let Some(v) = l.strip_prefix("voluntary_ctxt_switches:") {
                return v.trim().parse().unwrap();
            }
        }
    }
    panic!("no usrcu-gp thread");
}

static RELEASE: AtomicBool = AtomicBool::new(false);

fn case(burst_first: bool) {
    let d = Srcu::new("rt15-wakeups");
    let count = Arc::new(AtomicU64::new(0));
    if burst_first {
        // One batch of 60,000 then a barrier: the pass asks for a trim.
        {
            let _g = d.read_lock();
            for _ in 0..60_000 {
                let c = count.clone();
                d.call_srcu(move || {
                    c.fetch_add(1, Ordering::Relaxed);
                });
            }
        }
    } else {
        d.call_srcu(|| {});
    }
    d.barrier();
    // Let the barrier's pass end (it asks for the trim when it leaves the
    // queue empty; were the next callback queued before, it would not).
    std::thread::sleep(Duration::from_millis(20));
    // Then one callback that waits for something for a long time (here:
    // until the test is done counting).
    let started = Arc::new(AtomicBool::new(false));
    let s2 = started.clone();
    d.call_srcu(move || {
        s2.store(true, Ordering::SeqCst);
        while !RELEASE.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    while !started.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Let whatever was due settle, then count the driver's wake-ups over
    // two seconds in which nothing at all happens in the runtime.
    std::thread::sleep(Duration::from_millis(300));
    let c0 = driver_switches();
    std::thread::sleep(Duration::from_secs(2));
    let woke = driver_switches() - c0;
    println!("burst_first={burst_first}: the driver woke {woke} times in 2 s while one callback waited");
    RELEASE.store(true, Ordering::SeqCst);
    d.barrier();
    assert!(
        woke <= 4,
        "the driver woke {woke} times in 2 s with nothing to do but a trim it cannot make"
    );
    println!("RT15-WAKEUPS-OK {burst_first}");
}

#[test]
fn rt15_trim_wakeups_child_entry() {
    if !in_child(CHILD, Some(60)) {
        return;
    }
    case(std::env::var(CHILD).unwrap() == "burst");
}

fn runs(kind: &str, n: usize) -> (usize, String) {
    let mut failed = 0;
    let mut out = String::new();
    for _ in 0..n {
        let ran = Child::new("rt15_trim_wakeups_child_entry")
            .env(CHILD, kind)
            .timeout(Duration::from_secs(60))
            .run();
        let text = ran.text();
        out += text
            .lines()
            .filter(|l| l.contains("the driver woke"))
            .collect::<Vec<_>>()
            .join("\n")
            .as_str();
        out += "\n";
        if !text.contains("RT15-WAKEUPS-OK") {
            failed += 1;
        }
    }
    (failed, out)
}

/// Control: a domain whose invoker waits in a long callback, no burst
/// before it. The driver has nothing to do and sleeps (0 wake-ups in 2 s).
#[test]
fn rt15_a_long_callback_alone_leaves_the_driver_asleep() {
    let (failed, out) = runs("plain", 1);
    println!("{out}");
    assert_eq!(failed, 0, "{out}");
}

/// The same after a burst of 60,000 callbacks: the pass before the long
/// callback asked for a trim; the trim finds the invoker busy and is
/// re-armed every 100 ms for as long as the callback waits, though it can
/// never free anything meanwhile. A user expects an otherwise idle process
/// to stay asleep (as in the control); observed: about 20 driver wake-ups
/// in 2 s, forever, 3/3 runs.
#[test]
fn rt15_a_long_callback_after_a_burst_leaves_the_driver_asleep() {
    let (failed, out) = runs("burst", 3);
    println!("{out}");
    assert_eq!(failed, 0, "{failed} of 3 runs:\n{out}");
}
