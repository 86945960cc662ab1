//! Review 12: two of the new unload checks refuse (or give up on) unloads
//! that nothing is using.
//!
//! 1. `symbol::own_stack_holds_code_in`: an unload from a fiber searches
//!    every word of the thread's own stack mapping, dead words below the
//!    saved stack pointer included. The load itself (the module's
//!    constructors and install hook, run on the loading thread), or a hook
//!    called earlier on that thread, long returned, leaves return
//!    addresses into the module there: an unload from a fiber of that
//!    thread is `FromInsideModuleCode` though no frame of the module is
//!    live.
//!    And the search is skipped when the fiber's stack lies inside the
//!    thread's own stack (a fiber stack that is a local buffer of the host
//!    function that resumes it): the unwinder stops at the fiber's entry,
//!    the search is not made, A is unmapped under its hook, and the host
//!    function returns into unmapped code (red team 10's crash, back).
//!    Fixed: on the thread's own stack, every word above the walk's last
//!    frame is searched (`symbol::runs_code_in`); seen dying of SIGSEGV
//!    without that search.
//! 2. `proofs::interrupted::in_a_handler`: a running thread that blocks a
//!    handled signal holds the proof. A busy host worker that blocks a
//!    signal the host handles elsewhere (the usual "block in the workers,
//!    handle in one thread" mask) holds every unload until its timeout: a
//!    Zombie, though the worker never ran the module's code. Fixed: each
//!    scan watches such a thread (about every 20 µs, up to 50 ms) and
//!    sees it by its first sighting blocked, whose stack can be read, and
//!    `SIG_DFL` counts as handled only with `SA_RESETHAND`. (A first fix,
//!    a mask "at rest" that cleared a running thread, was unsound: red
//!    team 14, `redteam14_interrupted.rs`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleHandle, ModuleLoader};
use usrcu_tests::{fixture_path, in_child, Child};

type HostFn = extern "C" fn(u64) -> u64;

static CALLS_HOST: HookSlot<extern "C" fn(HostFn, u64) -> u64> = HookSlot::new();

extern "C" fn plus_zero(x: u64) -> u64 {
    std::hint::black_box(x)
}

const FIBER_CHILD: &str = "RV12_FIBER_CHILD";

static LOADER: OnceLock<ModuleLoader> = OnceLock::new();
static VICTIM: OnceLock<ModuleHandle> = OnceLock::new();
static OUTCOME: Mutex<Option<String>> = Mutex::new(None);

struct Contexts {
    host: libc::ucontext_t,
    fiber: libc::ucontext_t,
}

static mut CONTEXTS: *mut Contexts = std::ptr::null_mut();

/// A host task on a fiber: unload A (no hook of A runs anywhere).
extern "C" fn fiber_main() {
    let _ = std::panic::catch_unwind(|| {
        let r = LOADER.get().unwrap().unload(*VICTIM.get().unwrap());
        println!("fiber: unload returned {r:?}");
        *OUTCOME.lock().unwrap() = Some(format!("{r:?}"));
    });
}

/// Call A's hook `depth` frames of 4 KiB below here, then return.
#[inline(never)]
fn call_hook_deep(depth: u32) -> u64 {
    let pad = std::hint::black_box([depth as u8; 4096]);
    let v = if depth == 0 {
        CALLS_HOST.call(plus_zero, 7).unwrap()
    } else {
        call_hook_deep(depth - 1)
    };
    std::hint::black_box(pad);
    v
}

#[test]
#[ignore = "FINDING: an unload from a fiber of the thread that loaded the module is FromInsideModuleCode (stale return addresses of the load on the thread's own stack)"]
fn an_unload_on_a_fiber_of_the_loading_thread_goes_ahead() {
    if !in_child(FIBER_CHILD, Some(60)) {
        let _ = fixture_path("redteam7-plain");
        Child::new("an_unload_on_a_fiber_of_the_loading_thread_goes_ahead")
            .env(FIBER_CHILD, "1")
            .run()
            .assert_passed("RV12-FIBER-UNMAPPED", "unload from a fiber, no hook running");
        return;
    }
    // SAFETY: an all-zero `ucontext_t` is a valid value of the plain C
    // struct; both are written by getcontext/swapcontext before use. Set
    // before any other thread could look (none does).
    unsafe { CONTEXTS = Box::leak(Box::new(std::mem::zeroed::<Contexts>())) };
    let loader = LOADER.get_or_init(ModuleLoader::new);
    // SAFETY: the fixture upholds the plugin contract.
    let a = unsafe { loader.load(fixture_path("redteam7-plain")) }.unwrap();
    VICTIM.set(a).unwrap();
    // Variant (`RV12_CALL_HOOK` set): A's hook runs and returns, 64 frames
    // down. Without it, only the load ran A's code (its constructors and
    // install hook), on this thread's own stack.
    if std::env::var_os("RV12_CALL_HOOK").is_some() {
        // SAFETY: `fx_calls_host: extern "C" fn(HostFn, u64) -> u64` calls
        // the host function it is given and adds one; it stores nothing.
        unsafe { loader.install_hook(a, &CALLS_HOST, "fx_calls_host") }.unwrap();
        assert_eq!(call_hook_deep(64), 8);
    }
    // SAFETY: `CONTEXTS` is only used on this thread; the fiber's stack is
    // a leaked buffer; `uc_link` points at the host context, in the same
    // leaked allocation.
    unsafe {
        let c = CONTEXTS;
        assert_eq!(libc::getcontext(&mut (*c).fiber), 0);
        let stack: &'static mut [u8] = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
        (*c).fiber.uc_stack.ss_sp = stack.as_mut_ptr().cast();
        (*c).fiber.uc_stack.ss_size = stack.len();
        (*c).fiber.uc_link = &mut (*c).host;
        libc::makecontext(&mut (*c).fiber, fiber_main, 0);
        assert_eq!(libc::swapcontext(&mut (*c).host, &(*c).fiber), 0);
    }
    let outcome = OUTCOME.lock().unwrap().take();
    println!("unload on the fiber: {outcome:?}");
    assert!(
        outcome.as_deref().is_some_and(|o| o.contains("unmapped: true")),
        "no code of A runs on this thread: the unload from the fiber goes ahead: {outcome:?}"
    );
    println!("RV12-FIBER-UNMAPPED");
}

const LOCAL_CHILD: &str = "RV12_LOCAL_FIBER_CHILD";

/// Called by A's hook: run the fiber to its end on a stack that is a local
/// buffer of this function (inside the thread's own stack).
extern "C" fn resume_fiber_on_local_stack(x: u64) -> u64 {
    let mut stack = [0u8; 1 << 20];
    // SAFETY: `CONTEXTS` was set before the hook ran and is only used on
    // this thread; the fiber's stack is `stack`, alive until the fiber has
    // ended (it returns to `uc_link`, the context saved here, before this
    // function returns); `uc_link` lives in the leaked allocation.
    unsafe {
        let c = CONTEXTS;
        assert_eq!(libc::getcontext(&mut (*c).fiber), 0);
        (*c).fiber.uc_stack.ss_sp = stack.as_mut_ptr().cast();
        (*c).fiber.uc_stack.ss_size = stack.len();
        (*c).fiber.uc_link = &mut (*c).host;
        libc::makecontext(&mut (*c).fiber, fiber_main, 0);
        assert_eq!(libc::swapcontext(&mut (*c).host, &(*c).fiber), 0);
    }
    std::hint::black_box(&mut stack);
    x
}

#[test]
fn an_unload_on_a_fiber_with_a_local_stack_under_a_hook_is_refused() {
    if !in_child(LOCAL_CHILD, Some(60)) {
        let _ = fixture_path("redteam7-plain");
        Child::new("an_unload_on_a_fiber_with_a_local_stack_under_a_hook_is_refused")
            .env(LOCAL_CHILD, "1")
            // The test's thread holds the fiber's 1 MiB stack.
            .env("RUST_MIN_STACK", "16777216")
            .run()
            .assert_passed(
                "RV12-LOCAL-FIBER-REFUSED",
                "unload from a fiber on a local stack under A's hook",
            );
        return;
    }
    // SAFETY: as in the first test.
    unsafe { CONTEXTS = Box::leak(Box::new(std::mem::zeroed::<Contexts>())) };
    let loader = LOADER.get_or_init(ModuleLoader::new);
    // SAFETY: the fixture upholds the plugin contract.
    let a = unsafe { loader.load(fixture_path("redteam7-plain")) }.unwrap();
    VICTIM.set(a).unwrap();
    // SAFETY: `fx_calls_host: extern "C" fn(HostFn, u64) -> u64` calls the
    // host function it is given and adds one; it stores nothing.
    unsafe { loader.install_hook(a, &CALLS_HOST, "fx_calls_host") }.unwrap();
    let v = CALLS_HOST.call(resume_fiber_on_local_stack, 7);
    let outcome = OUTCOME.lock().unwrap().take();
    println!("hook returned {v:?}; unload on the fiber: {outcome:?}");
    assert!(
        outcome.as_deref().is_some_and(|o| o.contains("FromInsideModuleCode")),
        "the unload on the fiber is refused as from inside A's code: {outcome:?}"
    );
    println!("RV12-LOCAL-FIBER-REFUSED");
}

const BUSY_CHILD: &str = "RV12_BUSY_CHILD";

extern "C" fn on_usr1(_: libc::c_int) {}

static STOP: AtomicBool = AtomicBool::new(false);

/// Unload A while a host worker that blocks `sig` computes (it never calls
/// A; it naps 100 us every 20 ms, so Tasks sees it switch); A's hook ran
/// once on this thread. Prints the marker if A is unmapped.
fn unload_beside_a_busy_worker(sig: libc::c_int) {
    let worker = std::thread::spawn(move || {
        // SAFETY: a zeroed sigset, emptied then given `sig`; blocking it on
        // this thread only.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()), 0);
        }
        let mut x = 0u64;
        while !STOP.load(Ordering::Relaxed) {
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(20) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        x
    });
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(3),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixture upholds the plugin contract.
    let a = unsafe { loader.load(fixture_path("redteam7-plain")) }.unwrap();
    // SAFETY: `fx_calls_host: extern "C" fn(HostFn, u64) -> u64` calls the
    // host function it is given and adds one; it stores nothing.
    unsafe { loader.install_hook(a, &CALLS_HOST, "fx_calls_host") }.unwrap();
    assert_eq!(CALLS_HOST.call(plus_zero, 7), Some(8));
    let t0 = Instant::now();
    let r = loader.unload(a);
    let took = t0.elapsed();
    STOP.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    println!("unload took {took:?}: {r:?}");
    assert!(
        r.as_ref().is_ok_and(|r| r.unmapped),
        "the worker never ran A's code: A is unmapped"
    );
    println!("RV12-BUSY-UNMAPPED");
}

#[test]
fn a_busy_worker_that_blocks_a_handled_signal_does_not_hold_unloads() {
    if !in_child(BUSY_CHILD, Some(60)) {
        let _ = fixture_path("redteam7-plain");
        Child::new("a_busy_worker_that_blocks_a_handled_signal_does_not_hold_unloads")
            .env(BUSY_CHILD, "1")
            .run()
            .assert_passed("RV12-BUSY-UNMAPPED", "unload with a busy worker blocking SIGUSR1");
        return;
    }
    // The host handles SIGUSR1 (say, "reopen the logs"), and its compute
    // worker blocks it so that the signal goes to the other threads.
    // SAFETY: a zeroed `sigaction` with a plain handler that does nothing
    // is a valid action; no other thread runs yet.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    unload_beside_a_busy_worker(libc::SIGUSR1);
}

const DFL_CHILD: &str = "RV12_DFL_CHILD";

#[test]
fn a_busy_worker_that_blocks_a_default_signal_does_not_hold_unloads() {
    if !in_child(DFL_CHILD, Some(60)) {
        let _ = fixture_path("redteam7-plain");
        Child::new("a_busy_worker_that_blocks_a_default_signal_does_not_hold_unloads")
            .env(DFL_CHILD, "1")
            .run()
            .assert_passed(
                "RV12-BUSY-UNMAPPED",
                "unload with a busy worker blocking SIGUSR2 (SIG_DFL)",
            );
        return;
    }
    // No handler anywhere: the host only makes sure SIGUSR2 has its default
    // action (as hosts that `sigwait` for it do), and blocks it in the
    // worker. glibc's `sigaction` gives every action `SA_RESTORER`; the
    // proof once took this for a one-shot handler reset on delivery (which
    // keeps `SA_RESETHAND` in its flags) and made the unload a Zombie.
    // SAFETY: SIG_DFL is a valid disposition; no other thread runs yet.
    assert_ne!(unsafe { libc::signal(libc::SIGUSR2, libc::SIG_DFL) }, libc::SIG_ERR);
    unload_beside_a_busy_worker(libc::SIGUSR2);
}
