//! Review demo: with one invoker running (blocked in a callback of domain
//! A that waits for a callback of domain B), a failed start of a second
//! invoker for B is never retried (`grow`: `Err(_) if n > 0 => None`, no
//! `start_failed`), so B's callback does not run after threads can be
//! created again, until A's callback gives up.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use usrcu::Srcu;

const CHILD_ENV: &str = "USRCU_REVIEW_GROW";

fn limit_address_space() -> libc::rlimit {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
    let new = libc::rlimit { rlim_cur: pages * page + (1 << 20), rlim_max: old.rlim_max };
    // SAFETY: valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &new) }, 0);
    old
}

#[test]
fn a_second_invoker_that_could_not_start_is_retried_once_threads_can_start() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.contains("B ran while A waited: true"), "{text}");
}

#[test]
fn entry() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    // SAFETY: no preconditions.
    unsafe { libc::alarm(60) };
    let a = Box::leak(Box::new(Srcu::new("review-grow-a")));
    let b = Box::leak(Box::new(Srcu::new("review-grow-b")));
    let b_ran = Arc::new(AtomicBool::new(false));
    let (inside_tx, inside_rx) = mpsc::channel::<()>();
    let (res_tx, res_rx) = mpsc::channel::<bool>();
    let seen = b_ran.clone();
    a.call_srcu(move || {
        inside_tx.send(()).unwrap();
        let t0 = Instant::now();
        while !seen.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        res_tx.send(seen.load(Ordering::SeqCst)).unwrap();
    });
    inside_rx.recv().unwrap();
    let (tx, rx) = mpsc::channel::<libc::rlimit>();
    let helper = std::thread::spawn(move || {
        let old = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: valid rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) }, 0);
    });
    let control = std::env::var_os("REVIEW_CONTROL").is_some();
    let old = if control {
        let mut o = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: valid rlimit.
        unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut o) };
        o
    } else {
        let o = limit_address_space();
        assert!(std::thread::Builder::new().spawn(|| {}).is_err());
        o
    };
    let r = b_ran.clone();
    b.call_srcu(move || r.store(true, Ordering::SeqCst));
    tx.send(old).unwrap();
    helper.join().unwrap();
    println!("B ran while A waited: {}", res_rx.recv().unwrap());
}
