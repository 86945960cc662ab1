//! Red team (round 10): the host's log bridge (`host_log` in
//! `module-loader/src/host_context.rs`) copies the plugin's target and
//! message into host `String`s *before* it marks the thread as inside a
//! callout. Those copies go through the host's global allocator, which may
//! block: a profiling or tracking allocator behind a lock, contended by the
//! host's other threads (exaggerated here: the allocator makes the logging
//! thread wait until the test releases it, napping in `nanosleep`).
//!
//! A plugin's hook logs; its thread blocks in the allocator, under the
//! hook's frame, not yet in a callout and with no signal frame. The
//! interrupted proof reads it as clear, the Tasks grace period ends (the
//! thread is blocked), the plugin is unmapped, and the thread returns into
//! it when the allocator lets go: SIGSEGV.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::{fixture_path, Child};

const CHILD: &str = "RT10_ALLOC_CHILD";

/// The thread whose next allocation waits (0: none).
static ARMED: AtomicI32 = AtomicI32::new(0);
static WAITING: AtomicBool = AtomicBool::new(false);
static RELEASED: AtomicBool = AtomicBool::new(false);

/// The system allocator, behind a "lock" the armed thread waits for.
struct Contended;

// SAFETY: forwards to `System`; the wait allocates nothing.
unsafe impl GlobalAlloc for Contended {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        if ARMED.load(Ordering::SeqCst) == me
            && ARMED
                .compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            WAITING.store(true, Ordering::SeqCst);
            while !RELEASED.load(Ordering::SeqCst) {
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 1_000_000,
                };
                // SAFETY: `ts` is valid; nanosleep allocates nothing.
                unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
            }
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Contended = Contended;

struct Quiet;

impl log::Log for Quiet {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, _: &log::Record<'_>) {}
    fn flush(&self) {}
}

static QUIET: Quiet = Quiet;
static LOG_HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

#[test]
fn a_blocking_host_allocator_under_a_hooks_log_call_does_not_let_the_plugin_unmap() {
    if std::env::var_os(CHILD).is_none() {
        let _ = fixture_path("redteam9-reenter");
        let test = "a_blocking_host_allocator_under_a_hooks_log_call_does_not_let_the_plugin_unmap";
        Child::new(test).env(CHILD, "1").run().assert_passed(
            "RT10-ALLOC-SURVIVED",
            "unload while the host allocator blocks under a hook's log call",
        );
        return;
    }
    // SAFETY: `alarm` only arms a timer: a hang dies of SIGALRM.
    unsafe { libc::alarm(60) };
    log::set_logger(&QUIET).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(2),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixture upholds the plugin contract.
    let a = unsafe { loader.load(fixture_path("redteam9-reenter")) }.unwrap();
    // SAFETY: `fx_log_hook` has the slot's type in the fixture.
    unsafe { loader.install_hook(a, &LOG_HOOK, "fx_log_hook") }.unwrap();
    let t = std::thread::spawn(|| {
        // A first call: whatever the thread allocates once (its Tasks
        // record, the plugin logger's first use) is done before arming.
        assert_eq!(LOG_HOOK.call(0), Some(1));
        // SAFETY: gettid has no preconditions.
        ARMED.store(unsafe { libc::gettid() }, Ordering::SeqCst);
        LOG_HOOK.call(1)
    });
    let t0 = Instant::now();
    while !WAITING.load(Ordering::SeqCst) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the hook's thread never allocated"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50)); // napping in the allocator
    let r = loader.unload(a);
    println!("unload while the allocator blocks under the hook: {r:?}");
    RELEASED.store(true, Ordering::SeqCst);
    assert_eq!(t.join().unwrap(), Some(2));
    println!("RT10-ALLOC-SURVIVED");
}
