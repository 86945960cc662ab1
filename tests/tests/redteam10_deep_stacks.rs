//! Red team (round 10): the "interrupted" unload proof
//! (`module-loader/src/proofs/interrupted.rs`) reads a blocked thread's
//! stack from its stack pointer up, at most `SCAN_LIMIT` (1 MiB). Host code
//! that runs *above* the plugin's frames and uses more stack than that
//! before it blocks hides the plugin's frames from the scan:
//!
//! * a signal handler (host code, async-signal-safe) that interrupts a
//!   plugin hook, uses a 2 MiB buffer on its (16 MiB) thread stack, and
//!   sleeps: the `rt_sigframe` lies 2 MiB above the stack pointer;
//! * the host's logger, reached from a plugin hook's `log::error!`
//!   (a callout), that formats into a 2 MiB stack buffer and then waits on
//!   a condvar: the plugin's return addresses lie 2 MiB above.
//!
//! Both are legitimate host code on a thread whose stack is big enough for
//! it. The unload then sees the thread blocked and clear, the Tasks grace
//! period ends (a blocked thread counts as having left every hook), the
//! object is unmapped, and the thread returns into unmapped code: SIGSEGV.
//!
//! Each scenario runs in a child; the parent asserts that it exited
//! cleanly and printed its marker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::{fixture_path, Child};

const CHILD: &str = "RT10_DEEP_CHILD";
/// Host stack used above the plugin's frames before blocking.
const DEEP: usize = 2 << 20;
/// The stack of the thread that calls the hook.
const THREAD_STACK: usize = 16 << 20;

fn parent(test: &str, fixture: &str, marker: &str) {
    let _ = fixture_path(fixture);
    Child::new(test).env(CHILD, "1").run().assert_passed(
        marker,
        "the host died after an unload while host code deep above the plugin's frames was blocked",
    );
}

static IN_HANDLER: AtomicBool = AtomicBool::new(false);

/// Use `DEEP` bytes of stack, then sleep 400 ms (async-signal-safe).
#[inline(never)]
fn deep_sleep() {
    let mut buf = [0u8; DEEP];
    std::hint::black_box(&mut buf);
    IN_HANDLER.store(true, Ordering::SeqCst);
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 400_000_000,
    };
    // SAFETY: nanosleep is async-signal-safe; `ts` is valid.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    std::hint::black_box(&mut buf);
}

extern "C" fn deep_handler(_: libc::c_int) {
    deep_sleep();
}

static SPIN: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

#[test]
fn a_signal_handler_with_a_deep_stack_over_a_hook_does_not_let_the_plugin_unmap_under_it() {
    if std::env::var_os(CHILD).is_none() {
        return parent(
            "a_signal_handler_with_a_deep_stack_over_a_hook_does_not_let_the_plugin_unmap_under_it",
            "redteam7-plain",
            "RT10-DEEP-HANDLER-SURVIVED",
        );
    }
    // SAFETY: a plain handler, installed before any thread uses the signal.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = deep_handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract.
    let h = unsafe { loader.load(fixture_path("redteam7-plain")) }.unwrap();
    // SAFETY: `fx_spin_hook: extern "C" fn(u64) -> u64` never blocks,
    // touches nothing, stores no pointer.
    unsafe { loader.install_hook(h, &SPIN, "fx_spin_hook") }.unwrap();
    // SAFETY: `alarm` only arms a timer: a hang dies of SIGALRM.
    unsafe { libc::alarm(60) };
    let entered = std::sync::Arc::new(AtomicBool::new(false));
    let e = entered.clone();
    let caller = std::thread::Builder::new()
        .stack_size(THREAD_STACK)
        .spawn(move || {
            e.store(true, Ordering::SeqCst);
            // Each call stays inside the plugin's hook for 200 ms.
            while let Some(v) = SPIN.call(200) {
                assert_eq!(v, 200);
            }
        })
        .unwrap();
    while !entered.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(50)); // well inside the first call
    use std::os::unix::thread::JoinHandleExt;
    // SAFETY: the caller thread is alive (it loops until the slot empties).
    unsafe { libc::pthread_kill(caller.as_pthread_t() as libc::pthread_t, libc::SIGUSR1) };
    while !IN_HANDLER.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(20)); // the handler sleeps now
    let r = loader.unload(h).unwrap();
    println!("unloaded: unmapped {} ({r:?})", r.unmapped);
    // The handler returns into the hook 400 ms after it began.
    caller.join().unwrap();
    println!("RT10-DEEP-HANDLER-SURVIVED");
}

static IN_LOGGER: AtomicBool = AtomicBool::new(false);
static RELEASE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// The host's logger: formats a record of target `rt9.reenter` into a
/// 2 MiB stack buffer, then waits until the test releases it.
struct DeepBlocking;

impl DeepBlocking {
    #[inline(never)]
    fn deep(&self, record: &log::Record<'_>) {
        let mut buf = [0u8; DEEP];
        use std::io::Write;
        let _ = write!(&mut buf[..], "{}", record.args());
        std::hint::black_box(&mut buf);
        IN_LOGGER.store(true, Ordering::SeqCst);
        let mut released = RELEASE.0.lock().unwrap_or_else(|p| p.into_inner());
        while !*released {
            released = RELEASE.1.wait(released).unwrap_or_else(|p| p.into_inner());
        }
        drop(released);
        std::hint::black_box(&mut buf);
    }
}

impl log::Log for DeepBlocking {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target() == "rt9.reenter" {
            self.deep(record);
        }
    }
    fn flush(&self) {}
}

static DEEP_BLOCKING: DeepBlocking = DeepBlocking;
static LOG_HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

#[test]
fn a_host_logger_with_a_deep_stack_under_a_plugin_hook_does_not_let_the_plugin_unmap_under_it() {
    if std::env::var_os(CHILD).is_none() {
        return parent(
            "a_host_logger_with_a_deep_stack_under_a_plugin_hook_does_not_let_the_plugin_unmap_under_it",
            "redteam9-reenter",
            "RT10-DEEP-LOGGER-SURVIVED",
        );
    }
    log::set_logger(&DEEP_BLOCKING).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(2),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixture upholds the plugin contract.
    let m = unsafe { loader.load(fixture_path("redteam9-reenter")) }.unwrap();
    // SAFETY: `fx_log_hook` has the slot's type in the fixture.
    unsafe { loader.install_hook(m, &LOG_HOOK, "fx_log_hook") }.unwrap();
    // SAFETY: `alarm` only arms a timer: a hang dies of SIGALRM.
    unsafe { libc::alarm(60) };
    let t = std::thread::Builder::new()
        .stack_size(THREAD_STACK)
        .spawn(|| {
            let _ = LOG_HOOK.call(1);
        })
        .unwrap();
    let t0 = Instant::now();
    while !IN_LOGGER.load(Ordering::SeqCst) {
        assert!(t0.elapsed() < Duration::from_secs(30), "the plugin never logged");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50)); // blocked on the condvar now
    let r = loader.unload(m);
    println!("unload while a deep host logger is blocked over the hook: {r:?}");
    *RELEASE.0.lock().unwrap() = true;
    RELEASE.1.notify_all();
    t.join().unwrap();
    println!("RT10-DEEP-LOGGER-SURVIVED");
}
