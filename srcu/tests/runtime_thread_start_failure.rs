//! A runtime thread that cannot be started is not fatal: `call_srcu` does
//! not abort the process, one `ThreadStartFailed` warning is reported, the
//! callbacks stay queued, `synchronize` still works (its caller drives the
//! grace period), and once threads can be created again a later
//! `call_srcu` + `barrier` runs every queued callback. The same holds for
//! the Tasks Trace flavor's `usrcu-trace` thread and the Tasks flavor's
//! `usrcu-tasks` thread (whose `synchronize` waits for that thread: it
//! retries the start while it waits, and is not called while it cannot).
//!
//! Thread creation fails for real: each case runs in a fresh process (a
//! re-exec of this binary) that lowers its soft `RLIMIT_AS` to its current
//! address-space size plus 1 MiB, less than a thread's 2 MiB stack mapping,
//! so `pthread_create` fails with `EAGAIN` while the process's small
//! allocations still succeed (`RLIMIT_NPROC` would not do: the tests run
//! as root). Before the fix, the driver's failed start panicked inside the
//! `extern "C"` `call_srcu` of the vtable (the process aborted), and the
//! first invoker's failed start panicked on the driver thread (the driver
//! died, and no callback ever ran again).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::Srcu;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_THREAD_START_CASE";
const DOMAIN: &str = "thread-start-failure";
const QUEUED: usize = 100;

fn run_case(case: &str) {
    child::Child::new("start_failure_entry")
        .env(CHILD_ENV, case)
        .must_pass(&format!("thread start {case}: done"));
}

#[test]
fn call_srcu_survives_a_driver_thread_that_cannot_start_and_its_callbacks_run_once_threads_can_start() {
    run_case("driver");
}

#[test]
fn callbacks_survive_an_invoker_thread_that_cannot_start_and_run_once_threads_can_start() {
    run_case("invoker");
}

#[test]
fn trace_call_survives_a_callback_thread_that_cannot_start_and_its_callbacks_run_once_threads_can_start() {
    run_case("trace");
}

#[test]
fn tasks_call_survives_an_engine_thread_that_cannot_start_and_its_callbacks_run_once_threads_can_start() {
    run_case("tasks");
}

/// Names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|s| s.trim_end().to_owned())
        .collect()
}

/// Lower the soft address-space limit to what the process maps now plus
/// 1 MiB; returns the limit to restore.
fn limit_address_space() -> libc::rlimit {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid rlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
    let new = libc::rlimit {
        rlim_cur: pages * page + (1 << 20),
        rlim_max: old.rlim_max,
    };
    // SAFETY: a valid rlimit; lowering the soft limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &new) }, 0);
    old
}

fn restore_address_space(old: libc::rlimit) {
    // SAFETY: a valid rlimit, the one `getrlimit` returned.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) }, 0);
}

#[test]
fn start_failure_entry() {
    let Ok(case) = std::env::var(CHILD_ENV) else {
        return;
    };
    // A hang (the driver dead, a barrier waiting forever) fails the case.
    // SAFETY: alarm has no preconditions.
    unsafe { libc::alarm(60) };
    match case.as_str() {
        "trace" => return trace_case(),
        "tasks" => return tasks_case(),
        _ => {}
    }
    let cap = Capture::start();
    let d = Srcu::new(DOMAIN);
    let ran = Arc::new(AtomicUsize::new(0));
    let queue_one = |d: &Srcu| {
        let r = ran.clone();
        d.call_srcu(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
    };
    // Attach the domain; `synchronize` starts no runtime thread.
    d.synchronize();
    if case == "invoker" {
        // The driver runs (a polled grace period needs it), no invoker yet.
        let c = d.start_poll();
        while !d.poll_state(c) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(thread_names().iter().any(|n| n == "usrcu-gp"));
    }
    assert!(!thread_names().iter().any(|n| n.starts_with("usrcu-cb")));

    let old = limit_address_space();
    assert!(
        std::thread::Builder::new().spawn(|| {}).is_err(),
        "the lowered RLIMIT_AS did not stop thread creation"
    );
    for _ in 0..QUEUED {
        queue_one(&d);
    }
    // The driver reports from its own thread in the invoker case.
    let w = cap
        .wait_for(DOMAIN, WarningKind::ThreadStartFailed, Duration::from_secs(30))
        .expect("no ThreadStartFailed warning");
    let what = if case == "invoker" {
        "a callback invoker thread"
    } else {
        "the grace-period driver thread"
    };
    assert!(w.message.contains(what), "{}", w.message);
    // Grace periods need no runtime thread.
    d.synchronize();
    d.synchronize_expedited();
    // No invoker exists: nothing could run the callbacks.
    assert!(!thread_names().iter().any(|n| n.starts_with("usrcu-cb")));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert!(!d.barrier_timeout(Duration::from_millis(20)));
    restore_address_space(old);

    queue_one(&d);
    d.barrier();
    assert_eq!(ran.load(Ordering::SeqCst), QUEUED + 1);
    // Once per episode, however many retries failed.
    assert_eq!(cap.find(DOMAIN, WarningKind::ThreadStartFailed).len(), 1);
    println!("thread start {case}: done");
}

/// The flavors' callback: counts into `RAN`.
static RAN: AtomicUsize = AtomicUsize::new(0);

fn count() {
    RAN.fetch_add(1, Ordering::SeqCst);
}

/// The warning of `domain` naming `thread`, exactly one by the end.
fn expect_one_warning(cap: &Capture, domain: &str, thread: &str) {
    let w = cap
        .wait_for(domain, WarningKind::ThreadStartFailed, Duration::from_secs(30))
        .expect("no ThreadStartFailed warning");
    assert!(w.message.contains(thread), "{}", w.message);
}

fn trace_case() {
    use usrcu::trace;
    let cap = Capture::start();
    trace::synchronize();
    let old = limit_address_space();
    assert!(std::thread::Builder::new().spawn(|| {}).is_err());
    for _ in 0..QUEUED {
        trace::call(count);
    }
    expect_one_warning(&cap, trace::DOMAIN_NAME, "usrcu-trace");
    // Its caller drives a Tasks Trace grace period.
    trace::synchronize();
    assert!(!thread_names().iter().any(|n| n == "usrcu-trace"));
    assert_eq!(RAN.load(Ordering::SeqCst), 0);
    restore_address_space(old);
    trace::call(count);
    trace::barrier();
    assert_eq!(RAN.load(Ordering::SeqCst), QUEUED + 1);
    assert_eq!(cap.find(trace::DOMAIN_NAME, WarningKind::ThreadStartFailed).len(), 1);
    println!("thread start trace: done");
}

fn tasks_case() {
    use usrcu::tasks;
    let cap = Capture::start();
    let old = limit_address_space();
    assert!(std::thread::Builder::new().spawn(|| {}).is_err());
    for _ in 0..QUEUED {
        tasks::call(count);
    }
    expect_one_warning(&cap, tasks::DOMAIN_NAME, "usrcu-tasks");
    // Waiting retries the start, and gives up at its timeout.
    assert!(!tasks::barrier_timeout(Duration::from_millis(30)));
    assert!(!thread_names().iter().any(|n| n == "usrcu-tasks"));
    assert_eq!(RAN.load(Ordering::SeqCst), 0);
    restore_address_space(old);
    tasks::call(count);
    tasks::barrier();
    tasks::synchronize();
    assert_eq!(RAN.load(Ordering::SeqCst), QUEUED + 1);
    assert_eq!(cap.find(tasks::DOMAIN_NAME, WarningKind::ThreadStartFailed).len(), 1);
    println!("thread start tasks: done");
}
