//! Red-team (round 3): calls that could hang a flavor for the whole
//! process, each run in a child process with an alarm (a hang dies by
//! SIGALRM and fails the test instead of stalling it).
//!
//! - `runtime::inventory::deferred` takes the Tasks Trace queue's lock and
//!   the Tasks engine's lock for its whole snapshot: called from inside a
//!   callback of each flavor it must not wait for itself.
//! - `trace::barrier_timeout` / `tasks::barrier_timeout` that time out
//!   behind a blocked callback leave nothing blocked: once the callback is
//!   released, the flavor goes idle (`trace::idle`, `tasks::idle`).
//! - `read_lock` from a signal handler that interrupts a reader of the same
//!   domain on the same thread.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use usrcu::Srcu;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_REDTEAM3_CHILD";

fn run_entry(entry: &str, marker: &str) {
    child::Child::new(entry).env(CHILD_ENV, "1").must_pass(marker);
}

fn in_child(alarm_secs: u32) -> bool {
    child::in_child(CHILD_ENV, Some(alarm_secs))
}

/// The range of this test binary's text, roughly: from a function's
/// address, a window wide enough to hold every closure of this file.
fn own_code() -> std::ops::Range<usize> {
    let a = own_code as fn() -> std::ops::Range<usize> as usize;
    a.saturating_sub(1 << 24)..a + (1 << 24)
}

#[test]
fn inventory_deferred_called_from_a_callback_of_each_flavor_returns() {
    run_entry("deferred_in_callbacks_entry", "deferred in callbacks: done");
}

#[test]
fn deferred_in_callbacks_entry() {
    if !in_child(60) {
        return;
    }
    let (tx, rx) = mpsc::channel::<(&'static str, usrcu::runtime::inventory::Deferred)>();
    let d = Srcu::new("redteam3-deferred-in-callback");
    let t = tx.clone();
    d.call_srcu(move || {
        let _ = t.send(("srcu", usrcu::runtime::inventory::deferred(&[own_code()])));
    });
    d.barrier();
    let t = tx.clone();
    usrcu::trace::call(move || {
        let _ = t.send(("trace", usrcu::runtime::inventory::deferred(&[own_code()])));
    });
    usrcu::trace::barrier();
    let t = tx.clone();
    usrcu::tasks::call(move || {
        let _ = t.send(("tasks", usrcu::runtime::inventory::deferred(&[own_code()])));
    });
    usrcu::tasks::barrier();
    drop(tx);
    let got: Vec<_> = rx.iter().collect();
    assert_eq!(got.len(), 3, "{got:?}");
    for (flavor, snap) in &got {
        // The calling callback itself is running, and its code is ours.
        assert!(!snap.is_idle(), "{flavor}: its own running callback not seen: {snap:?}");
    }
    println!("deferred in callbacks: done");
}

#[test]
fn a_trace_barrier_that_times_out_behind_a_blocked_callback_leaves_the_flavor_able_to_go_idle() {
    run_entry("trace_timeout_entry", "trace timeout: done");
}

#[test]
fn trace_timeout_entry() {
    if !in_child(60) {
        return;
    }
    let release = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(AtomicUsize::new(0));
    let (r, n) = (Arc::clone(&release), Arc::clone(&ran));
    usrcu::trace::call(move || {
        while !r.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        n.fetch_add(1, Ordering::SeqCst);
    });
    let n = Arc::clone(&ran);
    usrcu::trace::call(move || {
        n.fetch_add(1, Ordering::SeqCst);
    });
    assert!(!usrcu::trace::barrier_timeout(Duration::ZERO));
    assert!(!usrcu::trace::barrier_timeout(Duration::from_nanos(1)));
    assert!(!usrcu::trace::barrier_timeout(Duration::from_millis(5)));
    assert!(!usrcu::trace::idle());
    release.store(true, Ordering::SeqCst);
    while !usrcu::trace::idle() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    assert_eq!(
        usrcu::trace::stats().callbacks_queued,
        usrcu::trace::stats().callbacks_invoked
    );
    assert!(usrcu::trace::barrier_timeout(Duration::ZERO));
    println!("trace timeout: done");
}

#[test]
fn a_tasks_barrier_that_times_out_behind_a_blocked_callback_leaves_the_flavor_able_to_go_idle() {
    run_entry("tasks_timeout_entry", "tasks timeout: done");
}

#[test]
fn tasks_timeout_entry() {
    if !in_child(60) {
        return;
    }
    let release = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(AtomicUsize::new(0));
    let (r, n) = (Arc::clone(&release), Arc::clone(&ran));
    usrcu::tasks::call(move || {
        while !r.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        n.fetch_add(1, Ordering::SeqCst);
    });
    assert!(!usrcu::tasks::barrier_timeout(Duration::ZERO));
    assert!(!usrcu::tasks::barrier_timeout(Duration::from_nanos(1)));
    assert!(!usrcu::tasks::barrier_timeout(Duration::from_millis(5)));
    assert!(!usrcu::tasks::idle());
    release.store(true, Ordering::SeqCst);
    while !usrcu::tasks::idle() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(usrcu::tasks::callbacks_pending(), 0);
    println!("tasks timeout: done");
}

static SIG_DOMAIN: Srcu = Srcu::new_static("redteam3-signal-reader");
static SIG_READS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_alarm(_: libc::c_int) {
    let _g = SIG_DOMAIN.read_lock();
    SIG_READS.fetch_add(1, Ordering::Relaxed);
}

/// Nothing in the docs says `read_lock` is async-signal-safe, yet it is
/// the kernel's NMI-safe reader's job and a natural thing to do (a
/// profiler's handler reading a table under the domain). In debug builds
/// `read_lock` records the reader in a `Mutex`-protected table and
/// allocates (runtime/readers.rs:48-63): a signal that lands while the
/// interrupted thread holds that lock deadlocks the thread.
#[test]
fn a_signal_handler_reader_interrupting_a_reader_of_the_same_domain_does_not_deadlock() {
    run_entry("signal_reader_entry", "signal reader: done");
}

#[test]
fn signal_reader_entry() {
    if !in_child(30) {
        return;
    }
    // SAFETY: installs a handler for SIGPROF (the watchdog uses SIGALRM).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGPROF, &sa, std::ptr::null_mut()), 0);
        let it = libc::itimerval {
            it_interval: libc::timeval { tv_sec: 0, tv_usec: 50 },
            it_value: libc::timeval { tv_sec: 0, tv_usec: 50 },
        };
        assert_eq!(libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut()), 0);
    }
    let mut i = 0u64;
    while SIG_READS.load(Ordering::Relaxed) < 1_000 {
        let _g = SIG_DOMAIN.read_lock();
        i += 1;
    }
    // SAFETY: stops the timer.
    unsafe {
        let it: libc::itimerval = std::mem::zeroed();
        libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut());
    }
    // Every section, the handler's included, ended: a grace period ends.
    SIG_DOMAIN.synchronize();
    println!(
        "signal reader: done ({i} reads, {} in the handler)",
        SIG_READS.load(Ordering::Relaxed)
    );
}

#[test]
fn trace_barrier_timeout_forever_inside_a_trace_callback_returns_false_at_once() {
    run_entry(
        "trace_barrier_timeout_in_callback_entry",
        "trace timeout in callback: done",
    );
}

#[test]
fn trace_barrier_timeout_in_callback_entry() {
    if !in_child(60) {
        return;
    }
    let (tx, rx) = mpsc::channel();
    usrcu::trace::call(move || {
        let forever = usrcu::trace::barrier_timeout(Duration::MAX);
        let zero = usrcu::trace::barrier_timeout(Duration::ZERO);
        let _ = tx.send((forever, zero));
    });
    let (forever, zero) = rx.recv().unwrap();
    assert!(
        !forever,
        "a barrier inside a trace callback claimed to have waited for itself"
    );
    assert!(!zero);
    assert!(usrcu::trace::barrier_timeout(Duration::MAX));
    println!("trace timeout in callback: done");
}

static TRACE_SIG_READS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_prof_trace(_: libc::c_int) {
    let _g = usrcu::trace::read_lock();
    TRACE_SIG_READS.fetch_add(1, Ordering::Relaxed);
}

/// The Tasks Trace read side is a plain load and store of the thread's
/// nesting count: a signal handler's section that interrupts the thread's
/// own `read_lock` or guard drop must leave the count as it found it, or
/// the thread reads as inside for ever (grace periods hang) or as outside
/// while inside.
#[test]
fn a_trace_reader_in_a_signal_handler_interrupting_a_trace_reader_leaves_the_nesting_balanced() {
    run_entry("trace_signal_reader_entry", "trace signal reader: done");
}

#[test]
fn trace_signal_reader_entry() {
    if !in_child(60) {
        return;
    }
    // The thread's record exists before any handler runs.
    drop(usrcu::trace::read_lock());
    // SAFETY: installs a handler for SIGPROF (the watchdog uses SIGALRM).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_prof_trace as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGPROF, &sa, std::ptr::null_mut()), 0);
        let it = libc::itimerval {
            it_interval: libc::timeval { tv_sec: 0, tv_usec: 50 },
            it_value: libc::timeval { tv_sec: 0, tv_usec: 50 },
        };
        assert_eq!(libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut()), 0);
    }
    let mut i = 0u64;
    while TRACE_SIG_READS.load(Ordering::Relaxed) < 1_000 {
        let _outer = usrcu::trace::read_lock();
        let _inner = usrcu::trace::read_lock();
        i += 1;
    }
    // SAFETY: stops the timer.
    unsafe {
        let it: libc::itimerval = std::mem::zeroed();
        libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut());
    }
    assert!(!usrcu::trace::in_read_section(), "nesting left unbalanced");
    // A grace period ends: this thread reads as outside.
    usrcu::trace::synchronize();
    println!(
        "trace signal reader: done ({i} reads, {} in the handler)",
        TRACE_SIG_READS.load(Ordering::Relaxed)
    );
}

unsafe extern "C" fn late_raw_destructor(_: *mut libc::c_void) {
    // A section begun and never ended, after usrcu's own key destructor
    // (which ends sections left open) has run.
    usrcu::trace::read_lock_raw();
}

/// The trace docs: "Thread exit is noticed by a pthread key created in the
/// host, whose destructor ends any section left open". A section opened by
/// a later key's destructor is opened after that; the thread is gone all
/// the same, and grace periods must not wait for it for ever.
#[test]
fn a_trace_section_left_open_by_a_late_key_destructor_does_not_hold_grace_periods() {
    run_entry("late_raw_section_entry", "late raw section: done");
}

#[test]
fn late_raw_section_entry() {
    if !in_child(60) {
        return;
    }
    drop(usrcu::trace::read_lock());
    let mut k: libc::pthread_key_t = 0;
    // SAFETY: a fresh key with a destructor that does not unwind.
    let rc = unsafe { libc::pthread_key_create(&mut k, Some(late_raw_destructor)) };
    assert_eq!(rc, 0);
    std::thread::spawn(move || {
        drop(usrcu::trace::read_lock());
        // SAFETY: a valid key; a non-null value makes its destructor run.
        unsafe { libc::pthread_setspecific(k, std::ptr::dangling::<libc::c_void>()) };
    })
    .join()
    .unwrap();
    usrcu::trace::synchronize();
    println!("late raw section: done");
}
