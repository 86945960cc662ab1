//! Red-team of the stall timeout taken from `USRCU_STALL_TIMEOUT_MS`: a
//! zero there must not turn "warn at the timeout, then at each doubling"
//! into a warning at every check (zero doubled is zero).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;
use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::Srcu;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_REDTEAM_STALL_CHILD";

/// Warnings a stall of `hold` can give at one per doubling from 1 ms,
/// with a wide margin for a slow machine (a hold 1000 times longer).
const MAX_WARNINGS: usize = 24;

fn run_child(test: &str) -> String {
    child::Child::new(test)
        .env(CHILD_ENV, "1")
        .env("USRCU_STALL_TIMEOUT_MS", "0")
        .must_pass("")
        .stdout
}

#[test]
fn a_zero_stall_timeout_from_the_environment_warns_once_per_doubling_not_at_every_check() {
    let text = run_child("stall_env_child");
    assert!(text.contains("stall child: done"), "{text}");
}

#[test]
fn stall_env_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let cap = Capture::start();
    // SRCU: a synchronize and the driver (a callback) wait for a reader.
    let d = Arc::new(Srcu::new("rt-stall-zero"));
    let idx = d.read_lock_raw();
    d.call_srcu(|| {});
    let d2 = d.clone();
    let h = thread::spawn(move || d2.synchronize());
    thread::sleep(Duration::from_millis(300));
    // SAFETY: `idx` came from `d.read_lock_raw()` and is ended once.
    unsafe { d.read_unlock_raw(idx) };
    h.join().unwrap();
    d.barrier();
    let srcu = cap.find("rt-stall-zero", WarningKind::Stall).len();
    // Tasks Trace: a synchronize waits for a sleeping reader.
    let inside = Arc::new(AtomicBool::new(false));
    let leave = Arc::new(AtomicBool::new(false));
    let (i2, l2) = (inside.clone(), leave.clone());
    let r = thread::spawn(move || {
        let _g = usrcu::trace::read_lock();
        i2.store(true, Ordering::SeqCst);
        while !l2.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
    });
    while !inside.load(Ordering::SeqCst) {
        thread::yield_now();
    }
    let s = thread::spawn(usrcu::trace::synchronize);
    thread::sleep(Duration::from_millis(300));
    leave.store(true, Ordering::SeqCst);
    r.join().unwrap();
    s.join().unwrap();
    let trace = cap.find(usrcu::trace::DOMAIN_NAME, WarningKind::TraceStall).len();
    println!("stall warnings: srcu {srcu}, trace {trace}");
    assert!(
        (1..=MAX_WARNINGS).contains(&srcu),
        "srcu: {srcu} stall warnings for one 300 ms stall"
    );
    assert!(
        (1..=MAX_WARNINGS).contains(&trace),
        "trace: {trace} stall warnings for one 300 ms stall"
    );
    println!("stall child: done");
}
