//! A caller that waits for the grace-period driver while the driver thread
//! cannot be started (`RLIMIT_AS` too low for a thread stack) gets its
//! answer once threads can be created again, with no other call to the
//! domain: a `barrier` and a `start_poll` + `poll_state` loop retry the
//! start themselves (`runtime/vtable.rs`, `runtime/driver.rs`).
//!
//! Each case runs in a child process: it lowers the process's address-space
//! limit, which would break the other tests of this binary.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use usrcu::Srcu;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_START_RETRY_BARRIER_CASE";

/// Bound of every wait in a child: past it, the case failed.
const BOUND: Duration = Duration::from_secs(4);

fn run_child(case: &str) -> String {
    child::Child::new("start_retry_entry")
        .env(CHILD_ENV, case)
        .must_pass("")
        .stdout
}

#[test]
fn barrier_begun_while_the_driver_cannot_start_completes_once_threads_can_start() {
    let text = run_child("barrier");
    assert!(text.contains("barrier completed: true; ran 1"), "{text}");
}

#[test]
fn polled_grace_period_begun_while_the_driver_cannot_start_completes_once_threads_can_start() {
    let text = run_child("poll");
    assert!(text.contains("poll completed: true"), "{text}");
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

/// A thread, running before the limit is lowered, that restores the limit
/// it is sent a little later (while the caller waits).
fn restorer() -> (mpsc::Sender<libc::rlimit>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<libc::rlimit>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        // Started (its signal stack and malloc arena mapped) before the
        // limit is lowered: mapped after, they would not fit.
        ready_tx.send(()).unwrap();
        let old = rx.recv().unwrap();
        // Lets the caller begin its wait while the start still fails (not
        // a timing assertion: a late wait would start the driver itself and
        // pass without exercising the retry, it cannot fail).
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: `old` is a valid rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) }, 0);
    });
    ready_rx.recv().unwrap();
    (tx, h)
}

#[test]
fn start_retry_entry() {
    let Ok(case) = std::env::var(CHILD_ENV) else {
        return;
    };
    // A hang fails the case.
    // SAFETY: alarm has no preconditions.
    unsafe { libc::alarm(20) };
    let d = Srcu::new("start-retry-barrier");
    // Attach the domain; `synchronize` starts no runtime thread.
    d.synchronize();
    let (tx, helper) = restorer();
    let old = limit_address_space();
    match case.as_str() {
        "barrier" => {
            let ran = Arc::new(AtomicUsize::new(0));
            let r = ran.clone();
            // Its `schedule_at` fails to start the driver.
            d.call_srcu(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
            tx.send(old).unwrap();
            let ok = d.barrier_timeout(BOUND);
            helper.join().unwrap();
            println!("barrier completed: {ok}; ran {}", ran.load(Ordering::SeqCst));
        }
        "poll" => {
            // Its `schedule_at` fails to start the driver.
            let c = d.start_poll();
            tx.send(old).unwrap();
            let t0 = Instant::now();
            let mut done = d.poll_state(c);
            while !done && t0.elapsed() < BOUND {
                std::thread::sleep(Duration::from_millis(1));
                done = d.poll_state(c);
            }
            helper.join().unwrap();
            println!("poll completed: {done}");
        }
        other => panic!("unknown case {other}"),
    }
}
