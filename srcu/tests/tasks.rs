//! Tasks RCU: which threads a grace period waits for, and which it does
//! not; stall warnings; a real SIGSTOP/SIGCONT during a grace period (in a
//! child process). Every claim is checked by ordering (flags a grace
//! period's completion must observe), never by timing.
//!
//! The tests run one at a time (a spinning thread of one test would be a
//! holdout of another's grace periods).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;
use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::tasks::{self, HookSlot};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Generous bound for "it completes"; a failure, never a measurement.
const BOUND: Duration = Duration::from_secs(60);

const N: usize = 4;
static ENTERED: [AtomicBool; N] = [const { AtomicBool::new(false) }; N];
static RELEASE: [AtomicBool; N] = [const { AtomicBool::new(false) }; N];
static LEFT: [AtomicBool; N] = [const { AtomicBool::new(false) }; N];
static STOP: [AtomicBool; N] = [const { AtomicBool::new(false) }; N];

/// The hook: spins, never blocks, until released.
extern "C" fn spin_hook(i: usize) -> usize {
    ENTERED[i].store(true, SeqCst);
    while !RELEASE[i].load(SeqCst) {
        std::hint::spin_loop();
    }
    LEFT[i].store(true, SeqCst);
    i
}

static SLOT: HookSlot<extern "C" fn(usize) -> usize> = HookSlot::new();

fn install() {
    // SAFETY: `spin_hook` never blocks, lives in the test binary's text,
    // touches only statics, and the pointer is stored nowhere else.
    unsafe { SLOT.set_sync(Some(spin_hook)) };
}

fn reset(i: usize) {
    for f in [&ENTERED[i], &RELEASE[i], &LEFT[i], &STOP[i]] {
        f.store(false, SeqCst);
    }
}

#[derive(Clone, Copy)]
enum After {
    /// Keep spinning, passing explicit quiescent points.
    Quiescent,
    /// Block on a channel.
    Block,
}

/// A thread named `name` that calls the hook with `i`, then does `after`.
fn spinner(i: usize, name: &str, after: After) -> thread::JoinHandle<()> {
    reset(i);
    let h = thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            assert_eq!(SLOT.call(i), Some(i));
            match after {
                After::Quiescent => {
                    while !STOP[i].load(SeqCst) {
                        tasks::quiescent();
                        std::hint::spin_loop();
                    }
                }
                After::Block => {
                    while !STOP[i].load(SeqCst) {
                        thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        })
        .unwrap();
    while !ENTERED[i].load(SeqCst) {
        thread::yield_now();
    }
    h
}

/// Run `synchronize` on a thread; the receiver gets whether spinner `i`
/// had left its hook when the grace period ended.
fn synchronize_then_observe(i: usize) -> mpsc::Receiver<bool> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        tasks::synchronize();
        let _ = tx.send(LEFT[i].load(SeqCst));
    });
    rx
}

/// Wait until a Tasks stall warning shows that a grace period is running
/// and holds thread `name`.
fn wait_for_stall_naming(cap: &Capture, name: &str) -> String {
    let end = std::time::Instant::now() + BOUND;
    loop {
        if let Some(w) = cap
            .find(tasks::DOMAIN_NAME, WarningKind::TasksStall)
            .into_iter()
            .find(|w| w.message.contains(name))
        {
            return w.message;
        }
        assert!(std::time::Instant::now() < end, "no stall warning naming {name}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn grace_period_holds_a_spinning_thread_until(after: After, name: &str) {
    let _s = serial();
    install();
    let cap = Capture::start();
    tasks::set_stall_timeout(Duration::from_millis(100));
    let h = spinner(0, name, after);
    let done = synchronize_then_observe(0);
    // The grace period is running and holds the spinner.
    wait_for_stall_naming(&cap, name);
    assert!(
        done.try_recv().is_err(),
        "the grace period ended while the spinner was inside the hook"
    );
    RELEASE[0].store(true, SeqCst);
    let left = done.recv_timeout(BOUND).expect("the grace period never ended");
    assert!(left, "the grace period ended before the spinner left the hook");
    STOP[0].store(true, SeqCst);
    h.join().unwrap();
    tasks::set_stall_timeout(Duration::from_secs(10));
}

#[test]
fn spinning_thread_holds_grace_period_until_it_passes_a_quiescent_point() {
    grace_period_holds_a_spinning_thread_until(After::Quiescent, "spin-then-qs");
}

#[test]
fn spinning_thread_holds_grace_period_until_it_leaves_and_blocks() {
    grace_period_holds_a_spinning_thread_until(After::Block, "spin-then-block");
}

#[test]
fn thread_blocked_in_read_does_not_hold_grace_period() {
    let _s = serial();
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let returned = std::sync::Arc::new(AtomicBool::new(false));
    let r = returned.clone();
    let entered = std::sync::Arc::new(AtomicBool::new(false));
    let e = entered.clone();
    let reader = thread::Builder::new()
        .name("blocked-read".into())
        .spawn(move || {
            let mut b = [0u8; 1];
            e.store(true, SeqCst);
            // SAFETY: reading one byte into our buffer from our pipe.
            let n = unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 1) };
            r.store(true, SeqCst);
            assert_eq!(n, 1);
        })
        .unwrap();
    while !entered.load(SeqCst) {
        thread::yield_now();
    }
    // Grace periods end although the reader stays blocked for as long as
    // they take (several of them, seconds in all on a busy machine).
    for _ in 0..3 {
        assert!(
            tasks::start_poll().wait_timeout(BOUND),
            "a grace period waited for a blocked thread"
        );
    }
    assert!(
        !returned.load(SeqCst),
        "the reader returned before the pipe was written"
    );
    // SAFETY: writing one byte from our buffer into our pipe.
    assert_eq!(unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) }, 1);
    reader.join().unwrap();
    // SAFETY: closing our own descriptors once.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}

#[test]
fn threads_created_during_a_grace_period_are_not_waited_for() {
    let _s = serial();
    install();
    let cap = Capture::start();
    tasks::set_stall_timeout(Duration::from_millis(100));
    let a = spinner(1, "holdout-a", After::Block);
    let done = synchronize_then_observe(1);
    // The grace period has listed the threads: it holds `holdout-a`.
    wait_for_stall_naming(&cap, "holdout-a");
    // Born now, spinning inside the hook with no quiescent point.
    let b = spinner(2, "newcomer-b", After::Block);
    RELEASE[1].store(true, SeqCst);
    let left = done
        .recv_timeout(BOUND)
        .expect("the grace period waited for a thread born during it");
    assert!(left);
    assert!(
        !LEFT[2].load(SeqCst),
        "the newcomer left the hook: the test proved nothing"
    );
    RELEASE[2].store(true, SeqCst);
    STOP[1].store(true, SeqCst);
    STOP[2].store(true, SeqCst);
    a.join().unwrap();
    b.join().unwrap();
    tasks::set_stall_timeout(Duration::from_secs(10));
}

#[test]
fn stall_warning_names_the_spinning_thread_with_tid_and_state() {
    let _s = serial();
    install();
    let cap = Capture::start();
    tasks::set_stall_timeout(Duration::from_millis(100));
    let tid = std::sync::Arc::new(AtomicUsize::new(0));
    reset(3);
    let t = tid.clone();
    let h = thread::Builder::new()
        .name("stall-spinner".into())
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            t.store(unsafe { libc::gettid() } as usize, SeqCst);
            SLOT.call(3);
            while !STOP[3].load(SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
        })
        .unwrap();
    while !ENTERED[3].load(SeqCst) {
        thread::yield_now();
    }
    let done = synchronize_then_observe(3);
    let msg = wait_for_stall_naming(&cap, "stall-spinner");
    let want = format!("tid {} (stall-spinner) state R", tid.load(SeqCst));
    assert!(msg.contains(&want), "{msg}\nwanted: {want}");
    RELEASE[3].store(true, SeqCst);
    assert!(done.recv_timeout(BOUND).unwrap());
    STOP[3].store(true, SeqCst);
    h.join().unwrap();
    tasks::set_stall_timeout(Duration::from_secs(10));
}

#[test]
fn hook_slot_call_is_none_when_empty_and_clear_waits_for_callers() {
    let _s = serial();
    static EMPTY: HookSlot<extern "C" fn() -> u32> = HookSlot::new();
    extern "C" fn seven() -> u32 {
        7
    }
    assert_eq!(EMPTY.call(), None);
    // SAFETY: `seven` keeps the contract trivially.
    unsafe { EMPTY.set_sync(Some(seven)) };
    assert!(EMPTY.is_set());
    assert_eq!(EMPTY.call(), Some(7));
    let c = EMPTY.clear().expect("a function was replaced");
    assert_eq!(EMPTY.call(), None);
    assert!(c.wait_timeout(BOUND));
    assert!(EMPTY.clear().is_none(), "clearing an empty slot needs no grace period");
}

#[test]
fn tasks_call_runs_after_a_grace_period_and_barrier_waits_for_it() {
    let _s = serial();
    let ran = std::sync::Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let r = ran.clone();
        tasks::call(move || {
            r.fetch_add(1, SeqCst);
        });
    }
    tasks::barrier();
    assert_eq!(ran.load(SeqCst), 10);
}

// ---------------------------------------------------------------------------
// Stopped threads: a real SIGSTOP/SIGCONT of the whole process during a grace
// period, driven from the parent (this test binary re-executed).

const CHILD_ENV: &str = "USRCU_TASKS_STOP_CHILD";
/// Exit code of a child whose grace period ended while the spinner was inside.
const TOO_SHORT: i32 = 3;

/// The child's side (does nothing unless run as the child).
#[test]
fn stop_child_entry() {
    let Ok(flavor) = std::env::var(CHILD_ENV) else { return };
    if flavor == "trust-counter" {
        // SAFETY: a child process run only to show the broken flavor ends a
        // grace period too early; set before its threads start, and nothing
        // it frees depends on the grace period.
        unsafe { usrcu::fault::set(usrcu::fault::Fault::TasksTrustCounterAcrossStop, true) };
    }
    install();
    let cap = Capture::start();
    tasks::set_stall_timeout(Duration::from_millis(50));
    let h = spinner(0, "stop-spinner", After::Quiescent);
    thread::spawn(|| {
        tasks::synchronize();
        let left = LEFT[0].load(SeqCst);
        let r = tasks::last_grace_period();
        println!("gp-ended left={left} restarts={}", r.restarts);
        std::io::stdout().flush().unwrap();
        std::process::exit(if left { 0 } else { TOO_SHORT });
    });
    wait_for_stall_naming(&cap, "stop-spinner");
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    RELEASE[0].store(true, SeqCst);
    h.join().unwrap();
}

/// Run the child with `flavor`, stop and continue it 3 times while its grace
/// period holds the spinner, then release the spinner; the exit code.
fn run_stopped_child(flavor: &str) -> (i32, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["stop_child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, flavor)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early: {seen}");
        seen.push_str(&line);
        if line.trim_end().ends_with("ready") {
            break;
        }
    }
    let mut exited = None;
    for _ in 0..3 {
        let mut st = 0;
        // SAFETY: signalling and reaping our own child.
        unsafe {
            assert_eq!(libc::kill(pid, libc::SIGSTOP), 0);
            assert_eq!(libc::waitpid(pid, &mut st, libc::WUNTRACED), pid);
        }
        if libc::WIFEXITED(st) {
            // Its grace period ended at the previous continue (the broken
            // flavor): the child is reaped here.
            exited = Some(libc::WEXITSTATUS(st));
            break;
        }
        assert!(libc::WIFSTOPPED(st), "child neither stopped nor exited: {st:#x}");
        thread::sleep(Duration::from_millis(20));
        // SAFETY: as above.
        unsafe { assert_eq!(libc::kill(pid, libc::SIGCONT), 0) };
        // Let the grace period re-read the spinner after the stop.
        thread::sleep(Duration::from_millis(150));
    }
    let _ = child.stdin.as_mut().unwrap().write_all(b"release\n");
    let code = match exited {
        Some(c) => c,
        None => child.wait().unwrap().code().unwrap_or(-1),
    };
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    seen.push_str(&rest);
    (code, seen)
}

#[test]
fn grace_period_does_not_end_while_a_stopped_and_continued_thread_is_in_the_hook() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let (code, out) = run_stopped_child("correct");
    assert_eq!(
        code, 0,
        "the grace period ended while the spinner was in the hook:\n{out}"
    );
    assert!(out.contains("left=true"), "{out}");
    eprintln!("child: {}", out.lines().last().unwrap_or(""));
}

#[test]
fn trusting_the_switch_count_across_a_stop_ends_the_grace_period_too_early() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    // The broken flavor: the checker above must be able to fail.
    let (code, out) = run_stopped_child("trust-counter");
    assert_eq!(code, TOO_SHORT, "the broken flavor was not caught:\n{out}");
}
