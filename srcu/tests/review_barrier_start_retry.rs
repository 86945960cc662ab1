//! Review demo: an SRCU `barrier` that begins while the driver thread
//! cannot be started never retries that start, so it waits past the point
//! where threads can be created again (no later event re-kicks the driver).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usrcu::Srcu;

const CHILD_ENV: &str = "USRCU_REVIEW_BARRIER_CASE";

fn limit_address_space() -> libc::rlimit {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
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
fn barrier_started_while_driver_cannot_start_completes_once_threads_can_start() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.contains("barrier completed: true"), "{text}");
}

#[test]
fn entry() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    // SAFETY: no preconditions.
    unsafe { libc::alarm(60) };
    let d = Srcu::new("review-barrier");
    d.synchronize();
    let ran = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel::<libc::rlimit>();
    // Started before the limit: restores it 300 ms after it is set.
    let helper = std::thread::spawn(move || {
        let old = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: valid rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) }, 0);
        println!("limit restored");
    });
    let old = limit_address_space();
    assert!(std::thread::Builder::new().spawn(|| {}).is_err());
    let r = ran.clone();
    d.call_srcu(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    tx.send(old).unwrap();
    let ok = d.barrier_timeout(Duration::from_secs(5));
    helper.join().unwrap();
    let can_spawn = std::thread::Builder::new().spawn(|| {}).is_ok();
    println!("barrier completed: {ok}; ran {}; threads can start again: {can_spawn}", ran.load(Ordering::SeqCst));
    // A later producer's kick retries the start: then it completes.
    d.call_srcu(|| {});
    let ok2 = d.barrier_timeout(Duration::from_secs(5));
    println!("after one more call_srcu: barrier {ok2}, ran {}", ran.load(Ordering::SeqCst));
}
