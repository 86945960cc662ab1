//! Red team 15: the driver's list of pending trims (`driver::Heap::trims`,
//! "a handful at most") when many domains each saw one pass above
//! `TRIM_FLOOR` (256 callbacks) and then stay busy: every trim falls due,
//! finds its domain busy and is re-armed, each re-arm scanning the list
//! (`driver::run`), every 100 ms. Measured: the `usrcu-gp` thread's CPU
//! time over 2 s, against the same domains without the earlier pass.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use usrcu::{ReadIndex, Srcu};
use usrcu_tests::{in_child, Child};

const CHILD: &str = "RT15_TRIM_MANY_CASE";

/// The `usrcu-gp` thread's CPU time (user + system), in clock ticks.
fn driver_ticks() -> u64 {
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let p = t.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(p.join("comm")) else {
            continue;
        };
        if comm.trim() != "usrcu-gp" {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        // Fields 14 and 15 (utime, stime), counted from the state (field 3).
        return f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    }
    panic!("no usrcu-gp thread");
}

fn case(burst: bool, n: usize) {
    let domains: Vec<Arc<Srcu>> = (0..n).map(|i| Arc::new(Srcu::new(&format!("rt15-many-{i}")))).collect();
    let ran = Arc::new(AtomicBool::new(false));
    let mut idx: Vec<ReadIndex> = Vec::new();
    for d in &domains {
        let k = if burst { 300 } else { 1 };
        {
            let _g = d.read_lock();
            for _ in 0..k {
                d.call_srcu(|| {});
            }
        }
        d.barrier();
        // Then, at once (before its trim falls due), one callback waiting
        // behind a reader that stays (a slow reader: the domain is busy,
        // its grace period polled).
        idx.push(d.read_lock_raw());
        let r = ran.clone();
        d.call_srcu(move || r.store(true, Ordering::Relaxed));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = driver_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = driver_ticks() - t0;
    println!("burst={burst} n={n}: the driver used {used} ticks (1/100 s) in 2 s");
    for (d, i) in domains.iter().zip(idx) {
        // SAFETY: from `read_lock_raw` on this thread, ended once.
        unsafe { d.read_unlock_raw(i) };
    }
    for d in &domains {
        d.barrier();
    }
    println!("RT15-MANY-OK {used}");
}

#[test]
fn rt15_trim_many_child_entry() {
    if !in_child(CHILD, Some(120)) {
        return;
    }
    let n = std::env::var("RT15_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    case(std::env::var(CHILD).unwrap() == "burst", n);
}

fn used(kind: &str, n: usize) -> u64 {
    let ran = Child::new("rt15_trim_many_child_entry")
        .env(CHILD, kind)
        .env("RT15_N", n.to_string())
        .timeout(Duration::from_secs(120))
        .must_pass("RT15-MANY-OK");
    let t = ran.text();
    let l = t.lines().find(|l| l.contains("RT15-MANY-OK")).unwrap();
    l.rsplit(' ').next().unwrap().trim().parse().unwrap()
}

/// 3,000 domains, each with a reader that stays and one callback behind
/// it (a slow reader; the driver polls each grace period): the driver's
/// CPU time over 2 s, without and with an earlier pass of 300 callbacks on
/// each domain (which leaves a trim pending that is re-armed every 100 ms,
/// each re-arm scanning the whole list of trims, `driver::run`, and each of
/// the driver's wake-ups scanning it too). A host expects the trim of a
/// few MiB to cost next to nothing next to the polling it already pays.
///
/// Was a finding at d37fd84: debug build 49 ticks without, 132 with
/// (6,000 domains: 78 and 198, the driver then at 100 % of a CPU); release
/// 24 and 51, 3/3 runs. Fixed: the pending trims are a heap, one per
/// domain by a flag, and a trim that finds work waiting is dropped (the
/// pass that runs it asks again), so these domains re-arm nothing.
#[test]
fn rt15_many_busy_domains_with_trims_pending_cost_the_driver_little() {
    let n = std::env::var("RT15_MEASURE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let plain = used("plain", n);
    let burst = used("burst", n);
    println!("{n} domains: driver CPU in 2 s: {plain} ticks without trims, {burst} with");
    assert!(
        burst <= plain * 3 / 2 + 5,
        "{n} domains: the driver used {burst} ticks with trims pending, {plain} without"
    );
}
