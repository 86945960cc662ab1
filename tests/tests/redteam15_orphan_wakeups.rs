//! Red team 15: what a domain cleaned up from its own callback and used
//! again meanwhile costs while the callback that cleaned it up still runs
//! (`Srcu::cleanup`: "If the domain is used again meanwhile, its fresh
//! state keeps the order: ... callbacks queued on the fresh state run
//! after them"). Counted: the voluntary context switches (wake-ups) of the
//! runtime's threads (`usrcu-gp`, `usrcu-cb-*`) over 2 s in which nothing
//! happens but one callback waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use usrcu::Srcu;
use usrcu_tests::{in_child, Child};

const CHILD: &str = "RT15_ORPHAN_WAKEUPS_CASE";

static D: Srcu = Srcu::new_static("rt15-orphan-wakeups");
static RELEASE: AtomicBool = AtomicBool::new(false);
static STARTED: AtomicBool = AtomicBool::new(false);
static SECOND_RAN: AtomicBool = AtomicBool::new(false);

/// Voluntary context switches of the runtime's threads together.
fn runtime_switches() -> u64 {
    let mut n = 0;
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let p = t.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(p.join("comm")) else {
            continue;
        };
        if !comm.starts_with("usrcu-") {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(p.join("status")) else {
            continue;
        };
        for l in status.lines() {
            if let Some(v) = l.strip_prefix("voluntary_ctxt_switches:") {
                n += v.trim().parse::<u64>().unwrap();
            }
        }
    }
    n
}

fn case(cleanup: bool) {
    D.call_srcu(move || {
        if cleanup {
            // SAFETY: from the domain's own callback, nobody else uses it
            // (the documented case: the runtime orphans the state).
            unsafe { D.cleanup() }.unwrap();
        }
        // Used again meanwhile: queued on the fresh state (or, without the
        // cleanup, behind this callback on the same state).
        D.call_srcu(|| SECOND_RAN.store(true, Ordering::SeqCst));
        STARTED.store(true, Ordering::SeqCst);
        // Then this callback waits for something for a while.
        while !RELEASE.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    while !STARTED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(200));
    let c0 = runtime_switches();
    std::thread::sleep(Duration::from_secs(2));
    let woke = runtime_switches() - c0;
    // The waiting callback's own sleeps: about 400 in 2 s (5 ms each).
    println!("cleanup={cleanup}: the runtime's threads woke {woke} times in 2 s");
    assert!(
        !SECOND_RAN.load(Ordering::SeqCst),
        "the second callback ran before the first"
    );
    RELEASE.store(true, Ordering::SeqCst);
    D.barrier();
    assert!(SECOND_RAN.load(Ordering::SeqCst));
    assert!(
        woke < 1000,
        "the runtime's threads woke {woke} times in 2 s while one callback waited"
    );
    println!("RT15-ORPHAN-OK {woke}");
}

#[test]
fn rt15_orphan_wakeups_child_entry() {
    if !in_child(CHILD, Some(60)) {
        return;
    }
    case(std::env::var(CHILD).unwrap() == "cleanup");
}

fn run(kind: &str, n: usize) -> (usize, String) {
    let mut failed = 0;
    let mut out = String::new();
    for _ in 0..n {
        let ran = Child::new("rt15_orphan_wakeups_child_entry")
            .env(CHILD, kind)
            .timeout(Duration::from_secs(60))
            .run();
        let t = ran.text();
        out += t
            .lines()
            .filter(|l| l.contains("woke"))
            .collect::<Vec<_>>()
            .join("\n")
            .as_str();
        out += "\n";
        if !t.contains("RT15-ORPHAN-OK") {
            failed += 1;
        }
    }
    (failed, out)
}

/// Control: a callback that queues a second one behind it and waits 2 s;
/// the runtime's threads wake only for the waiting callback's own sleeps.
#[test]
fn rt15_a_waiting_callback_with_one_queued_behind_it_costs_only_its_own_wakeups() {
    let (failed, out) = run("plain", 1);
    println!("{out}");
    assert_eq!(failed, 0, "{out}");
}

/// The same after the callback cleaned its domain up and the second
/// callback went on the fresh state. A user expects the second callback to
/// wait quietly for the first (the documented order), as in the control.
///
/// Observed: 6,842 to 6,994 wake-ups of the runtime's threads in 2 s (the
/// control: 389, the callback's own sleeps), 3/3 runs: about 3,200 extra a
/// second, for as long as the orphaned state's callback runs. The fresh
/// state's invoker pass returns at once while the orphan has callbacks
/// left, "as at a ticket gap" (`runtime/invoke.rs`, `pass`), and the
/// driver re-dispatches it after the gap back-off, capped at 640 us
/// (`runtime/driver.rs`, `after_pass`): a busy poll between the driver
/// and an invoker.
#[test]
fn rt15_a_waiting_callback_that_cleaned_its_domain_up_costs_only_its_own_wakeups() {
    let (failed, out) = run("cleanup", 3);
    println!("{out}");
    assert_eq!(failed, 0, "{failed} of 3 runs:\n{out}");
}
