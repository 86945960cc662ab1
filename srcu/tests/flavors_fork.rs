//! `fork` and the process-wide flavors' threads (`usrcu-trace`,
//! `usrcu-tasks`): the rule is the SRCU runtime's, fork while the flavor is
//! idle, and the child starts its own thread on first use.
//!
//! Two claims per flavor, each case in a fresh process (a re-exec of this
//! binary) that forks children which use the flavor under `alarm`:
//!
//! * a child forked while the flavor is idle, after the parent's thread
//!   ran, gets its own thread: its callbacks, barrier and `synchronize`
//!   complete (before the pid check, trace's child waited forever for a
//!   thread that exists only in the parent);
//! * a child forked while the flavor's thread holds its lock on its way
//!   back to sleep (held open by the test-only pause,
//!   `__testing::arm_sleep_pause`) finds the lock free: the fork handler
//!   takes it across the fork. The twins without the handler show that the
//!   test hits the window: their children hang until SIGALRM kills them.
//!
//! And one window that is not a flavor thread's: a thread that used Tasks
//! Trace takes the record table's lock once more as it exits; a child
//! forked then would find it held at its first grace period.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usrcu::__testing::{self, Sleeper};

#[path = "common/bounded.rs"]
mod bounded;
#[path = "common/child.rs"]
mod child;
use bounded::sleep_paused_within;

const CHILD_ENV: &str = "USRCU_FLAVORS_FORK_CASE";

/// Run `case_entry` in a fresh process for `case`; its stdout.
fn run_case(case: &str) -> String {
    child::Child::new("case_entry")
        .env(CHILD_ENV, case)
        .must_pass(&format!("flavors fork {case}: done"))
        .stdout
}

#[test]
fn a_child_forked_after_the_trace_thread_ran_starts_its_own_and_its_barrier_returns() {
    let text = run_case("trace-idle");
    assert!(text.contains("children exited 0: 10 of 10"), "{text}");
}

#[test]
fn a_child_forked_after_the_tasks_thread_ran_starts_its_own_and_its_barrier_returns() {
    let text = run_case("tasks-idle");
    assert!(text.contains("children exited 0: 10 of 10"), "{text}");
}

#[test]
fn a_child_forked_while_the_trace_thread_holds_its_queue_lock_on_its_way_to_sleep_runs_callbacks() {
    let text = run_case("trace-window");
    assert!(text.contains("child exited 0"), "{text}");
}

#[test]
fn a_child_forked_while_the_tasks_thread_holds_its_engine_lock_on_its_way_to_sleep_runs_callbacks() {
    let text = run_case("tasks-window");
    assert!(text.contains("child exited 0"), "{text}");
}

#[test]
fn a_child_forked_while_an_exiting_thread_holds_the_trace_record_table_runs_grace_periods() {
    let text = run_case("trace-exit-window");
    assert!(text.contains("child exited 0"), "{text}");
}

#[test]
fn without_the_fork_handler_a_child_forked_while_a_trace_reader_thread_exits_hangs() {
    let text = run_case("trace-exit-window-no-handler");
    assert!(
        text.contains(&format!("child killed by signal {}", libc::SIGALRM)),
        "{text}"
    );
}

#[test]
fn without_the_fork_handler_a_child_forked_in_the_trace_window_hangs() {
    let text = run_case("trace-window-no-handler");
    assert!(
        text.contains(&format!("child killed by signal {}", libc::SIGALRM)),
        "{text}"
    );
}

#[test]
fn without_the_fork_handler_a_child_forked_in_the_tasks_window_hangs() {
    let text = run_case("tasks-window-no-handler");
    assert!(
        text.contains(&format!("child killed by signal {}", libc::SIGALRM)),
        "{text}"
    );
}

/// One flavor's operations, as the cases use them.
#[derive(Clone, Copy)]
enum Flavor {
    Trace,
    Tasks,
}

impl Flavor {
    fn call(self, f: impl FnOnce() + Send + 'static) {
        match self {
            Flavor::Trace => usrcu::trace::call(f),
            Flavor::Tasks => usrcu::tasks::call(f),
        }
    }

    fn barrier(self) {
        match self {
            Flavor::Trace => usrcu::trace::barrier(),
            Flavor::Tasks => usrcu::tasks::barrier(),
        }
    }

    fn synchronize(self) {
        match self {
            Flavor::Trace => usrcu::trace::synchronize(),
            Flavor::Tasks => usrcu::tasks::synchronize(),
        }
    }

    fn idle(self) -> bool {
        match self {
            Flavor::Trace => usrcu::trace::idle(),
            Flavor::Tasks => usrcu::tasks::idle(),
        }
    }

    /// Use the flavor the way a program does: a read section (Tasks Trace;
    /// Tasks has no read-side marker), a callback, a barrier.
    fn use_it(self, ran: &Arc<AtomicUsize>) {
        if let Flavor::Trace = self {
            let _g = usrcu::trace::read_lock();
        }
        let r = ran.clone();
        self.call(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        self.barrier();
    }
}

/// Fork; in the child, run `body` under `alarm(secs)` and leave with its
/// exit code. In the parent, the child's pid.
fn fork_child(secs: u32, body: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: this process runs only this test; the child only uses usrcu
    // and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: alarm has no preconditions.
        unsafe { libc::alarm(secs) };
        let code = body();
        // SAFETY: leaving the child without the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Wait for `pid`; print and return how it ended.
fn reap(pid: libc::pid_t) -> (bool, String) {
    let mut status = 0;
    // SAFETY: `pid` is our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let how = if libc::WIFEXITED(status) {
        format!("child exited {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("child killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("child status {status:#x}")
    };
    println!("{how}");
    (libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, how)
}

/// In a child: a callback, a barrier, a grace period; 0 if the callback ran.
fn child_uses(f: Flavor, ran: &Arc<AtomicUsize>, before: usize) -> i32 {
    let r = ran.clone();
    f.call(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    f.barrier();
    f.synchronize();
    if ran.load(Ordering::SeqCst) == before + 1 {
        0
    } else {
        3
    }
}

/// Claim (a): children forked while the flavor is idle, after its thread
/// ran in the parent, each start their own thread.
fn idle_case(f: Flavor) {
    let ran = Arc::new(AtomicUsize::new(0));
    let rounds = 10;
    let mut ok = 0;
    for _ in 0..rounds {
        f.use_it(&ran);
        f.synchronize();
        while !f.idle() {
            std::thread::yield_now();
        }
        let before = ran.load(Ordering::SeqCst);
        let pid = fork_child(5, || child_uses(f, &ran, before));
        if reap(pid).0 {
            ok += 1;
        }
    }
    println!("children exited 0: {ok} of {rounds}");
}

/// A child forked while a thread that used Tasks Trace is held in its
/// exit, in its record's destructor, holding the record table's lock:
/// the child's grace periods scan the table.
fn exit_window_case(handler: bool) {
    if !handler {
        __testing::skip_fork_handler();
    }
    let f = Flavor::Trace;
    let ran = Arc::new(AtomicUsize::new(0));
    // Starts `usrcu-trace`, whose first start registers the handler.
    f.use_it(&ran);
    __testing::arm_sleep_pause(Sleeper::TraceExit);
    let reader = std::thread::spawn(|| {
        let _g = usrcu::trace::read_lock();
    });
    // A bound on a wait for a flag, not a timing assertion.
    let end = Instant::now() + Duration::from_secs(2);
    while !__testing::sleep_pause_inside() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(__testing::sleep_pause_inside(), "the exiting reader never paused");
    let before = ran.load(Ordering::SeqCst);
    let pid = fork_child(if handler { 5 } else { 2 }, || child_uses(f, &ran, before));
    __testing::release_sleep_pause();
    reap(pid);
    reader.join().unwrap();
    f.use_it(&ran);
    f.synchronize();
    assert_eq!(ran.load(Ordering::SeqCst), before + 1);
}

/// Claim (b): a child forked while the flavor's thread is held inside its
/// window (see the module docs).
fn window_case(f: Flavor, who: Sleeper, handler: bool) {
    if !handler {
        // Before the crate's first thread starts, which registers it.
        __testing::skip_fork_handler();
    }
    let ran = Arc::new(AtomicUsize::new(0));
    // Start the thread, then arm the pause and give the thread a reason to
    // wake and go back to sleep.
    f.use_it(&ran);
    let mut inside = false;
    for _ in 0..20 {
        // Armed afresh each time: one pause per arming, and a pause can
        // begin and end unseen while `f.call` below waits for the lock it
        // holds.
        __testing::arm_sleep_pause(who);
        // The thread may be on its way to sleep already (late, on a loaded
        // machine, after `use_it`): it pauses there, holding the lock that
        // `f.call` would then wait for until the pause's own time limit. So
        // look for that pause first.
        if sleep_paused_within(Duration::from_millis(500)) {
            inside = true;
            break;
        }
        // No barrier here: a Tasks barrier needs the lock the paused thread
        // holds to return. The callback's own count says it ran.
        let want = ran.load(Ordering::SeqCst) + 1;
        let r = ran.clone();
        f.call(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let end = Instant::now() + Duration::from_secs(2);
        while ran.load(Ordering::SeqCst) < want && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        if sleep_paused_within(Duration::from_secs(2)) {
            inside = true;
            break;
        }
    }
    assert!(inside, "the {who:?} thread never paused on its way to sleep");
    let before = ran.load(Ordering::SeqCst);

    let pid = fork_child(if handler { 5 } else { 2 }, || child_uses(f, &ran, before));
    __testing::release_sleep_pause();
    reap(pid);
    // The parent's thread goes on.
    let r = ran.clone();
    f.call(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    f.barrier();
    assert_eq!(ran.load(Ordering::SeqCst), before + 1);
}

#[test]
fn case_entry() {
    let Ok(case) = std::env::var(CHILD_ENV) else {
        return;
    };
    match case.as_str() {
        "trace-idle" => idle_case(Flavor::Trace),
        "tasks-idle" => idle_case(Flavor::Tasks),
        "trace-window" => window_case(Flavor::Trace, Sleeper::Trace, true),
        "tasks-window" => window_case(Flavor::Tasks, Sleeper::Tasks, true),
        "trace-exit-window" => exit_window_case(true),
        "trace-exit-window-no-handler" => exit_window_case(false),
        "trace-window-no-handler" => window_case(Flavor::Trace, Sleeper::Trace, false),
        "tasks-window-no-handler" => window_case(Flavor::Tasks, Sleeper::Tasks, false),
        other => panic!("unknown case {other}"),
    }
    println!("flavors fork {case}: done");
}
