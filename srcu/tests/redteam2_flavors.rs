//! Red-team (round 2) of the Tasks Trace and Tasks flavors: waits made
//! from places where they would wait for themselves.
//!
//! `trace::synchronize` inside a Tasks Trace section panics ("it would wait
//! for itself"), and so does SRCU's `barrier` inside a section of its own
//! domain (debug builds). `trace::barrier` inside a Tasks Trace section is
//! the same wait one step removed: it waits for callbacks queued before
//! it, each of which waits for a grace period, which waits for this very
//! section. And a Tasks grace period in a process that has run out of file
//! descriptors (its evidence is read from `/proc`). Scenarios that could
//! hang a flavor, or break it, for the whole process run in a child
//! process with an alarm.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use usrcu::trace;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_REDTEAM2_FLAVORS_CHILD";

fn run_entry(entry: &str, marker: &str) {
    child::Child::new(entry).env(CHILD_ENV, "1").must_pass(marker);
}

fn in_child(alarm_secs: u32) -> bool {
    child::in_child(CHILD_ENV, Some(alarm_secs))
}

#[test]
fn trace_barrier_inside_a_trace_section_with_a_callback_pending_is_refused_not_a_hang() {
    run_entry("trace_barrier_in_section_entry", "trace barrier in section: done");
}

#[test]
fn a_trace_callback_queued_inside_a_section_runs_by_the_barrier_after_the_section_ends() {
    // The same wait outside the section completes: the hang above is the
    // section's, not the callback's.
    run_entry(
        "trace_barrier_outside_section_entry",
        "trace barrier outside section: done",
    );
}

#[test]
fn trace_barrier_in_section_entry() {
    if !in_child(20) {
        return;
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let g = trace::read_lock();
    trace::call(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    // Either a refusal (a panic, as `synchronize` does here) or a return:
    // anything but waiting for this section.
    let refused = std::panic::catch_unwind(trace::barrier).is_err();
    drop(g);
    trace::barrier();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    println!("trace barrier in section: done (refused: {refused})");
}

#[test]
fn trace_barrier_outside_section_entry() {
    if !in_child(20) {
        return;
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let g = trace::read_lock();
    trace::call(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    drop(g);
    trace::barrier();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    println!("trace barrier outside section: done");
}

// --- Tasks grace periods in a process at its file-descriptor limit ---------

use std::sync::atomic::AtomicBool;
use usrcu::tasks::{self, HookSlot};

static SPIN_SLOT: HookSlot<extern "C" fn() -> u64> = HookSlot::new();
static ENTERED: AtomicBool = AtomicBool::new(false);
static RELEASE: AtomicBool = AtomicBool::new(false);
static LEFT: AtomicBool = AtomicBool::new(false);

/// A hook that never blocks: it spins until released (a long computation).
extern "C" fn spin_until_released() -> u64 {
    ENTERED.store(true, Ordering::SeqCst);
    let mut n = 0u64;
    while !RELEASE.load(Ordering::SeqCst) {
        std::hint::spin_loop();
        n += 1;
    }
    LEFT.store(true, Ordering::SeqCst);
    n
}

#[test]
fn a_tasks_grace_period_at_the_fd_limit_still_waits_for_a_thread_inside_a_hook() {
    run_entry("tasks_fd_limit_entry", "tasks fd limit: done");
}

#[test]
fn a_tasks_grace_period_below_the_fd_limit_waits_for_a_thread_inside_a_hook() {
    // The same scenario with descriptors to spare: what the test above expects.
    run_entry("tasks_fd_spare_entry", "tasks fd limit: done");
}

#[test]
fn tasks_fd_limit_entry() {
    if in_child(60) {
        spinner_holds_the_grace_period(true);
    }
}

#[test]
fn tasks_fd_spare_entry() {
    if in_child(60) {
        spinner_holds_the_grace_period(false);
    }
}

/// A thread spins inside a hook while `tasks::synchronize` runs, with the
/// process at its file-descriptor limit if `exhaust`; the grace period must
/// not end before the spinner left the hook.
fn spinner_holds_the_grace_period(exhaust: bool) {
    // SAFETY: `spin_until_released` never blocks or faults (it spins on an
    // atomic in the test binary's resident data), and is stored nowhere
    // else; `SPIN_SLOT` is a static.
    unsafe { SPIN_SLOT.set_sync(Some(spin_until_released)) };
    // One grace period first, so that the engine's thread, its stop canary
    // and its /proc/self/task directory exist before the limit is reached.
    tasks::synchronize();
    let spinner = std::thread::spawn(|| SPIN_SLOT.call());
    while !ENTERED.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    // Reach the file-descriptor limit: every later open fails with EMFILE.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is writable.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let low = libc::rlimit {
        rlim_cur: 256.min(lim.rlim_cur),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: lowering our own soft limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    let mut fillers = Vec::new();
    if exhaust {
        loop {
            // SAFETY: dup of stderr (if it is closed, dup fails and the
            // loop ends with nothing filled: the test then shows nothing).
            let fd = unsafe { libc::dup(2) };
            if fd < 0 {
                break;
            }
            fillers.push(fd);
        }
    }
    // The grace period must wait for the spinner, which is inside the hook
    // and neither blocks nor passes a quiescent point until released.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tasks::synchronize();
        let _ = tx.send(LEFT.load(Ordering::SeqCst));
    });
    // Hold the spinner inside for a while, then release it; what is checked
    // is only whether the grace period ended before it left.
    let early = rx.recv_timeout(std::time::Duration::from_secs(2)).ok();
    RELEASE.store(true, Ordering::SeqCst);
    for fd in fillers {
        // SAFETY: our own descriptors, closed once.
        unsafe { libc::close(fd) };
    }
    // SAFETY: restoring our own soft limit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    spinner.join().unwrap();
    assert_eq!(
        early, None,
        "tasks::synchronize returned while a thread was still inside the hook (Some(false))"
    );
    let left_at_end = rx.recv().unwrap();
    assert!(left_at_end, "the grace period ended after the spinner left");
    SPIN_SLOT.clear_sync();
    println!("tasks fd limit: done");
}
