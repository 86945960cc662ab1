//! A callback invoker that could not be started while another invoker runs
//! is retried once threads can be created again (`runtime/invoke.rs`,
//! `grow`; the driver's `starved_after_retry`): with the only invoker
//! blocked in a callback of domain A that waits for a callback of domain
//! B, B's callback runs on a second invoker.
//!
//! The case runs in a child process: it lowers the process's address-space
//! limit, which would break the other tests of this binary.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use usrcu::Srcu;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_START_RETRY_INVOKER_CASE";

/// How long A's callback waits for B's: past it, the case failed.
const BOUND: Duration = Duration::from_secs(4);

#[test]
fn second_invoker_that_could_not_start_is_retried_once_threads_can_start() {
    child::Child::new("start_retry_entry")
        .env(CHILD_ENV, "1")
        .must_pass("B ran while A waited: true");
}

/// Lower `RLIMIT_AS` to just above the current mapping size, so no thread
/// stack can be mapped; the old limit is returned.
fn limit_address_space() -> libc::rlimit {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid, writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
    let new = libc::rlimit {
        rlim_cur: pages * page + (1 << 20),
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &new) }, 0);
    assert!(
        std::thread::Builder::new().spawn(|| {}).is_err(),
        "the lowered RLIMIT_AS did not stop thread creation"
    );
    old
}

#[test]
fn start_retry_entry() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    // A hang fails the case.
    // SAFETY: alarm has no preconditions.
    unsafe { libc::alarm(20) };
    let a: &'static Srcu = Box::leak(Box::new(Srcu::new("start-retry-invoker-a")));
    let b: &'static Srcu = Box::leak(Box::new(Srcu::new("start-retry-invoker-b")));
    let b_ran = Arc::new(AtomicBool::new(false));
    let (inside_tx, inside_rx) = mpsc::channel::<()>();
    let (res_tx, res_rx) = mpsc::channel::<bool>();
    let seen = b_ran.clone();
    // Occupies the only invoker (started now, threads still can) until B's
    // callback ran, or `BOUND`.
    a.call_srcu(move || {
        inside_tx.send(()).unwrap();
        let t0 = Instant::now();
        while !seen.load(Ordering::SeqCst) && t0.elapsed() < BOUND {
            std::thread::sleep(Duration::from_millis(1));
        }
        res_tx.send(seen.load(Ordering::SeqCst)).unwrap();
    });
    inside_rx.recv().unwrap();
    let (tx, rx) = mpsc::channel::<libc::rlimit>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let helper = std::thread::spawn(move || {
        // Started (its signal stack and malloc arena mapped) before the
        // limit is lowered: mapped after, they would not fit.
        ready_tx.send(()).unwrap();
        let old = rx.recv().unwrap();
        // Lets the driver fail to start B's invoker first (not a timing
        // assertion: a late failure only leaves the start to succeed at
        // once, which cannot fail the case).
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: `old` is a valid rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) }, 0);
    });
    ready_rx.recv().unwrap();
    let old = limit_address_space();
    let r = b_ran.clone();
    // The driver dispatches B; the pool's one invoker is busy in A's
    // callback and a second one cannot start.
    b.call_srcu(move || r.store(true, Ordering::SeqCst));
    tx.send(old).unwrap();
    helper.join().unwrap();
    println!("B ran while A waited: {}", res_rx.recv().unwrap());
}
