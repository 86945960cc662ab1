//! Red team (round 11): after `fork`, the child's thread keeps its parent's
//! cached Tasks record pointer (`tasks/record.rs`: `MINE`), and that record
//! is filed under the *parent* thread's tid. The module docs accept that
//! the child's explicit quiescent points are not seen; but the record also
//! carries the thread's callouts, and a grace period reads them by tid: the
//! child's thread is never seen inside a callout.
//!
//! A forked child (a worker process of a pre-fork server) calls a hook
//! that reports through `usrcu::diagnostics::emit`; the host's logger blocks
//! (a slow sink). Another thread of the child waits for a Tasks grace
//! period (it would retire the hook, unload its plugin): the grace period
//! must not end while the hook's thread is inside the callout (a callout is
//! part of the hook that called it). It ends: the hook's code may be freed
//! or unmapped under it.
//!
//! The parent thread had its record cached before the fork (it passed
//! `usrcu::tasks::quiescent()`, as a thread that spins should).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use usrcu::diagnostics::{Warning, WarningKind};
use usrcu::tasks::HookSlot;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_REDTEAM11_FORK_CALLOUTS_CHILD";

static ARMED: AtomicBool = AtomicBool::new(false);
static IN_LOGGER: AtomicBool = AtomicBool::new(false);
static RELEASE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

struct SlowSink;

impl log::Log for SlowSink {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target() != "usrcu" || !ARMED.load(Ordering::SeqCst) {
            return;
        }
        IN_LOGGER.store(true, Ordering::SeqCst);
        let mut released = RELEASE.0.lock().unwrap_or_else(|p| p.into_inner());
        while !*released {
            released = RELEASE.1.wait(released).unwrap_or_else(|p| p.into_inner());
        }
    }
    fn flush(&self) {}
}

static SINK: SlowSink = SlowSink;

/// A hook that reports one warning, inside a callout as a plugin's `log`
/// bridge is (since session 11 the host's own `emit` is not a callout).
extern "C" fn reporting_hook(x: u64) -> u64 {
    let _callout = usrcu::runtime::callouts::enter();
    usrcu::diagnostics::emit(Warning::new(WarningKind::Other, "rt11", format!("hook {x}")));
    x + 1
}

static HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

/// The scenario on the calling thread: true if the grace period waited for
/// the callout.
fn scenario() -> bool {
    ARMED.store(true, Ordering::SeqCst);
    let waiter = std::thread::spawn(|| {
        let t0 = Instant::now();
        while !IN_LOGGER.load(Ordering::SeqCst) {
            assert!(t0.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50)); // blocked in the sink
        let ended = usrcu::tasks::start_poll().wait_timeout(Duration::from_secs(2));
        *RELEASE.0.lock().unwrap() = true;
        RELEASE.1.notify_all();
        ended
    });
    assert_eq!(HOOK.call(1), Some(2));
    let ended_under_the_hook = waiter.join().unwrap();
    !ended_under_the_hook
}

fn setup() {
    log::set_logger(&SINK).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    // SAFETY: the hook never stores a pointer; it reports and returns.
    unsafe { HOOK.set_sync(Some(reporting_hook)) };
    usrcu::tasks::quiescent();
}

#[test]
fn control_in_the_parent_a_grace_period_waits_for_a_hooks_callout() {
    child::Child::new("parent_entry")
        .env(CHILD_ENV, "1")
        .must_pass("RT11-PARENT-OK");
}

#[test]
fn parent_entry() {
    if !child::in_child(CHILD_ENV, Some(60)) {
        return;
    }
    setup();
    assert!(scenario(), "a Tasks grace period ended under a hook's callout");
    println!("RT11-PARENT-OK");
}

#[test]
fn in_a_forked_child_a_grace_period_waits_for_a_hooks_callout() {
    child::Child::new("fork_entry")
        .env(CHILD_ENV, "1")
        .must_pass("RT11-FORKED-OK");
}

#[test]
fn fork_entry() {
    if !child::in_child(CHILD_ENV, Some(60)) {
        return;
    }
    setup();
    assert!(usrcu::runtime::idle());
    // SAFETY: the child runs the scenario and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: `alarm` only arms a timer.
        unsafe { libc::alarm(20) };
        let waited = scenario();
        // SAFETY: ends the forked child.
        unsafe { libc::_exit(if waited { 0 } else { 3 }) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "forked child: status {status:#x} (exit 3: a Tasks grace period ended while the hook's thread was inside a callout)"
    );
    println!("RT11-FORKED-OK");
}
