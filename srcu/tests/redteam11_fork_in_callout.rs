//! Red team (round 11): `fork` while another thread is blocked inside a
//! callout (the host's logger, serving a `usrcu` warning of a host thread's
//! `catch_panic`), with the Tasks flavor otherwise idle. The child has only
//! the forking thread; its Tasks grace periods (`HookSlot::set_sync`,
//! `synchronize`) must end, and the same with the forking thread itself
//! inside a callout (a logger that forks: a crash reporter).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_REDTEAM11_FORK_CHILD";

static BLOCKED: AtomicBool = AtomicBool::new(false);
static FORK_IN_LOGGER: AtomicBool = AtomicBool::new(false);
static FORKED_OK: AtomicBool = AtomicBool::new(false);
static RELEASE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

extern "C" fn host_hook(x: u64) -> u64 {
    x + 1
}

extern "C" fn other_hook(x: u64) -> u64 {
    x + 2
}

static HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

/// Fork; the child swaps the hook and waits for a grace period, then
/// `_exit`s 0 (or 1 past a bounded wait). True if the child exited 0.
fn fork_and_use_tasks() -> bool {
    // SAFETY: the child only swaps a hook, polls, and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: `alarm` only arms a timer.
        unsafe { libc::alarm(20) };
        // SAFETY: both hooks never block, touch nothing, store no pointer.
        unsafe { HOOK.set_sync(Some(other_hook)) };
        let ok = HOOK.call(1) == Some(3) && usrcu::tasks::start_poll().wait_timeout(Duration::from_secs(10));
        // SAFETY: `_exit` ends the child without running the parent's atexit.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target() != "usrcu" {
            return;
        }
        if FORK_IN_LOGGER.swap(false, Ordering::SeqCst) {
            FORKED_OK.store(fork_and_use_tasks(), Ordering::SeqCst);
            return;
        }
        BLOCKED.store(true, Ordering::SeqCst);
        let mut released = RELEASE.0.lock().unwrap_or_else(|p| p.into_inner());
        while !*released {
            released = RELEASE.1.wait(released).unwrap_or_else(|p| p.into_inner());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

#[test]
fn tasks_grace_periods_end_in_a_child_forked_around_a_callout() {
    child::Child::new("fork_entry")
        .env(CHILD_ENV, "1")
        .must_pass("RT11-FORK-OK");
}

#[test]
fn fork_entry() {
    if !child::in_child(CHILD_ENV, Some(60)) {
        return;
    }
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    // SAFETY: `host_hook` never blocks, touches nothing, stores no pointer.
    unsafe { HOOK.set_sync(Some(host_hook)) };
    assert_eq!(HOOK.call(1), Some(2));
    usrcu::tasks::barrier();
    // The forking thread inside a callout.
    FORK_IN_LOGGER.store(true, Ordering::SeqCst);
    usrcu::diagnostics::catch_panic("rt11: crash reporter", || panic!("fork from the logger"));
    assert!(
        FORKED_OK.load(Ordering::SeqCst),
        "a child forked inside a callout could not use Tasks"
    );
    // Another thread blocked inside a callout.
    let t = std::thread::spawn(|| {
        usrcu::diagnostics::catch_panic("rt11: host job", || panic!("host job failed"));
    });
    let t0 = Instant::now();
    while !BLOCKED.load(Ordering::SeqCst) {
        assert!(t0.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    let ok = fork_and_use_tasks();
    *RELEASE.0.lock().unwrap() = true;
    RELEASE.1.notify_all();
    t.join().unwrap();
    assert!(ok, "a child forked while a thread was in a callout could not use Tasks");
    println!("RT11-FORK-OK");
}
