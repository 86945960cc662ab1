//! Bounded waits for tests that must not hang CI: a generous bound for
//! "this must happen", whose expiry is reported as a hang of the named
//! step. Included by path (`#[path = "common/bounded.rs"] mod bounded;`).

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A generous bound for "this must happen": reaching it means a hang.
pub const HANG: Duration = Duration::from_secs(60);

/// Poll `cond` until it holds; panic (naming `what`) after [`HANG`].
#[allow(dead_code)] // not every test binary that includes this file uses it
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < HANG, "hang: {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Run `f` on a thread; panic (naming `what`) if it does not finish within
/// [`HANG`].
#[allow(dead_code)]
pub fn finishes<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG).unwrap_or_else(|_| panic!("hang: {what}"))
}

/// Is a runtime thread inside the sleep pause armed with
/// `usrcu::__testing::arm_sleep_pause`, or does one get there within
/// `bound`? A bound on a wait for a flag, not a timing assertion: the pause
/// gives up (and stays armed) if the thread does not go idle.
#[allow(dead_code)]
pub fn sleep_paused_within(bound: Duration) -> bool {
    let end = Instant::now() + bound;
    while !usrcu::__testing::sleep_pause_inside() && Instant::now() < end {
        thread::sleep(Duration::from_millis(1));
    }
    usrcu::__testing::sleep_pause_inside()
}
