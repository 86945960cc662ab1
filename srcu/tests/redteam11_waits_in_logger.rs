//! Red team (round 11): a host logger that waits for Tasks work while it
//! serves a `usrcu` warning of plain host code (`catch_panic` on a host
//! thread, no hook below). `usrcu::tasks::synchronize` from there works:
//! the caller is excluded from its own grace period. But the same wait
//! through `usrcu::tasks::barrier` (a logger that flushes deferred Tasks
//! work before it writes) or a polled grace period
//! (`start_poll().wait_timeout`) waits for the calling thread itself: it is
//! inside a callout, blocked, and not excluded; the grace period never
//! ends while it waits (bounded here).

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use usrcu::tasks::HookSlot;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_REDTEAM11_WAITS_CHILD";

/// What the logger does on a `usrcu` record: 1 synchronize, 2 barrier,
/// 3 a polled grace period. Result: 10 + done, 20 + timed out.
static MODE: AtomicU8 = AtomicU8::new(0);
static RESULT: AtomicU8 = AtomicU8::new(0);

struct Waiting;

impl log::Log for Waiting {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target() != "usrcu" {
            return;
        }
        let ok = match MODE.swap(0, Ordering::SeqCst) {
            1 => {
                usrcu::tasks::synchronize();
                true
            }
            2 => {
                usrcu::tasks::call(|| {});
                usrcu::tasks::barrier_timeout(Duration::from_secs(5))
            }
            3 => usrcu::tasks::start_poll().wait_timeout(Duration::from_secs(5)),
            _ => return,
        };
        RESULT.store(if ok { 10 } else { 20 }, Ordering::SeqCst);
    }
    fn flush(&self) {}
}

static LOGGER: Waiting = Waiting;

extern "C" fn host_hook(x: u64) -> u64 {
    x + 1
}

static HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

fn run(mode: u8) {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    // SAFETY: `host_hook` never blocks, touches nothing, stores no pointer.
    unsafe { HOOK.set_sync(Some(host_hook)) };
    MODE.store(mode, Ordering::SeqCst);
    usrcu::diagnostics::catch_panic("rt11: host job", || panic!("host job failed"));
    assert_eq!(
        RESULT.load(Ordering::SeqCst),
        10,
        "mode {mode}: the logger's wait for Tasks work timed out (20) or never ran (0)"
    );
}

#[test]
fn a_logger_serving_a_host_warning_may_synchronize() {
    child::Child::new("synchronize_entry")
        .env(CHILD_ENV, "1")
        .must_pass("RT11-SYNC-OK");
}

#[test]
fn synchronize_entry() {
    if !child::in_child(CHILD_ENV, Some(60)) {
        return;
    }
    run(1);
    println!("RT11-SYNC-OK");
}

#[test]
fn a_logger_serving_a_host_warning_may_wait_for_tasks_callbacks() {
    child::Child::new("barrier_entry")
        .env(CHILD_ENV, "1")
        .must_pass("RT11-BARRIER-OK");
}

#[test]
fn barrier_entry() {
    if !child::in_child(CHILD_ENV, Some(60)) {
        return;
    }
    run(2);
    println!("RT11-BARRIER-OK");
}

#[test]
fn a_logger_serving_a_host_warning_may_wait_for_a_polled_grace_period() {
    child::Child::new("poll_entry")
        .env(CHILD_ENV, "1")
        .must_pass("RT11-POLL-OK");
}

#[test]
fn poll_entry() {
    if !child::in_child(CHILD_ENV, Some(60)) {
        return;
    }
    run(3);
    println!("RT11-POLL-OK");
}
