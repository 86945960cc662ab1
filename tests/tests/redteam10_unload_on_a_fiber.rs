//! Red team (round 10): `UnloadError::FromInsideModuleCode` is found by
//! walking the calling thread's frames with the unwinder
//! (`backtrace::trace`). A host whose code runs on fibers (stackful
//! coroutines: `makecontext`/`swapcontext` here, as coroutine crates do)
//! switches stacks: the walk from a fiber ends at the fiber's entry
//! (`__start_context`) and never sees the frames of the stack it was
//! resumed from.
//!
//! Plugin A's hook calls a host function, which resumes a host fiber
//! (a task of the host's scheduler) that unloads A. A's frames are on this
//! thread, below the switch: the unload should be refused as it is without
//! the fiber (`redteam9_unload_from_logger`, `loader_unload`). If it goes
//! ahead (the calling thread counts as quiescent for Tasks RCU, and the
//! interrupted proof skips it), A is unmapped and the host function
//! returns into unmapped code: SIGSEGV. Fixed: on a stack other than the
//! thread's own, the loader also searches the thread's own stack for
//! return addresses into A (`symbol::runs_code_in`); seen dying of SIGSEGV
//! without that search.
//!
//! The second test: the same stack switch hides plugin frames from the
//! interrupted proof. The host's logger, serving A's hook's `log::error!`
//! (a callout), does its write on a fiber, which waits there (a slow
//! sink). The proof reads the blocked thread's stack from its stack
//! pointer, on the fiber's stack, to the end of that mapping: A's frames,
//! on the thread's own stack, are not there. The thread reads as clear, the
//! Tasks grace period ends (it is blocked), A is unmapped, and the logger
//! returns into it: SIGSEGV.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{ModuleHandle, ModuleLoader};
use usrcu_tests::{fixture_path, Child};

const CHILD: &str = "RT10_FIBER_CHILD";

type HostFn = extern "C" fn(u64) -> u64;

static CALLS_HOST: HookSlot<extern "C" fn(HostFn, u64) -> u64> = HookSlot::new();
static LOADER: OnceLock<ModuleLoader> = OnceLock::new();
static VICTIM: OnceLock<ModuleHandle> = OnceLock::new();
static OUTCOME: Mutex<Option<String>> = Mutex::new(None);
static UNMAPPED: AtomicBool = AtomicBool::new(false);

struct Contexts {
    host: libc::ucontext_t,
    fiber: libc::ucontext_t,
}

static mut CONTEXTS: *mut Contexts = std::ptr::null_mut();

/// The fiber: a host task that unloads A.
extern "C" fn fiber_main() {
    let _ = std::panic::catch_unwind(|| {
        let r = LOADER.get().unwrap().unload(*VICTIM.get().unwrap());
        if let Ok(r) = &r {
            UNMAPPED.store(r.unmapped, Ordering::SeqCst);
        }
        println!("unload on the fiber: {r:?}");
        *OUTCOME.lock().unwrap() = Some(format!("{r:?}"));
    });
    // Returning resumes `uc_link`, the host function's context.
}

/// Called by A's hook: run the fiber until it finishes.
extern "C" fn resume_fiber(x: u64) -> u64 {
    // SAFETY: `CONTEXTS` was set before the hook ran and is only used on
    // this thread; the fiber's stack is a leaked buffer; `uc_link` points at
    // the host context, which lives in the same leaked allocation.
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
    x
}

#[test]
fn an_unload_on_a_fiber_resumed_from_a_hook_is_refused() {
    if std::env::var_os(CHILD).is_none() {
        let _ = fixture_path("redteam7-plain");
        let test = "an_unload_on_a_fiber_resumed_from_a_hook_is_refused";
        Child::new(test)
            .env(CHILD, "1")
            .run()
            .assert_passed("RT10-FIBER-SURVIVED", "unload from a fiber under A's hook");
        return;
    }
    // SAFETY: `alarm` only arms a timer: a hang dies of SIGALRM.
    unsafe { libc::alarm(60) };
    // SAFETY: an all-zero `ucontext_t` is a valid value of the plain C
    // struct; both are written by getcontext/swapcontext before use. Set
    // before any other thread could look (none does).
    unsafe { CONTEXTS = Box::leak(Box::new(std::mem::zeroed::<Contexts>())) };
    let loader = LOADER.get_or_init(ModuleLoader::new);
    // SAFETY: the fixture upholds the plugin contract.
    let a = unsafe { loader.load(fixture_path("redteam7-plain")) }.unwrap();
    VICTIM.set(a).unwrap();
    // SAFETY: `fx_calls_host: extern "C" fn(HostFn, u64) -> u64` calls the
    // host function it is given and adds one; it stores nothing.
    unsafe { loader.install_hook(a, &CALLS_HOST, "fx_calls_host") }.unwrap();
    let v = CALLS_HOST.call(resume_fiber, 7);
    let outcome = OUTCOME.lock().unwrap().take();
    println!("hook returned {v:?}; unload on the fiber: {outcome:?}");
    assert_eq!(v, Some(8));
    assert!(
        !UNMAPPED.load(Ordering::SeqCst),
        "A was unmapped under its hook and the host survived by luck"
    );
    assert!(
        outcome.as_deref().is_some_and(|o| o.contains("FromInsideModuleCode")),
        "the unload on the fiber is refused as from inside A's code: {outcome:?}"
    );
    // Back on the thread's own stack, A's hook has returned: the unload
    // goes ahead.
    assert!(LOADER.get().unwrap().unload(a).unwrap().unmapped);
    println!("RT10-FIBER-SURVIVED");
}

static IN_LOGGER: AtomicBool = AtomicBool::new(false);
static RELEASE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());
static LOG_HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

/// The logger's fiber: the write to a slow sink, which waits.
extern "C" fn writer_fiber() {
    let _ = std::panic::catch_unwind(|| {
        IN_LOGGER.store(true, Ordering::SeqCst);
        let mut released = RELEASE.0.lock().unwrap_or_else(|p| p.into_inner());
        while !*released {
            released = RELEASE.1.wait(released).unwrap_or_else(|p| p.into_inner());
        }
    });
}

/// The host's logger: B's records are written on a fiber.
struct FiberLogger;

impl log::Log for FiberLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target() != "rt9.reenter" {
            return;
        }
        // SAFETY: as in `resume_fiber`; only the one logging thread uses
        // `CONTEXTS`.
        unsafe {
            let c = CONTEXTS;
            assert_eq!(libc::getcontext(&mut (*c).fiber), 0);
            let stack: &'static mut [u8] = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
            (*c).fiber.uc_stack.ss_sp = stack.as_mut_ptr().cast();
            (*c).fiber.uc_stack.ss_size = stack.len();
            (*c).fiber.uc_link = &mut (*c).host;
            libc::makecontext(&mut (*c).fiber, writer_fiber, 0);
            assert_eq!(libc::swapcontext(&mut (*c).host, &(*c).fiber), 0);
        }
    }
    fn flush(&self) {}
}

static FIBER_LOGGER: FiberLogger = FiberLogger;

#[test]
fn a_logger_that_waits_on_a_fiber_under_a_hook_does_not_let_the_plugin_unmap() {
    if std::env::var_os(CHILD).is_none() {
        let _ = fixture_path("redteam9-reenter");
        let test = "a_logger_that_waits_on_a_fiber_under_a_hook_does_not_let_the_plugin_unmap";
        Child::new(test).env(CHILD, "1").run().assert_passed(
            "RT10-FIBER-LOGGER-SURVIVED",
            "unload while the logger waits on a fiber under A's hook",
        );
        return;
    }
    // SAFETY: `alarm` only arms a timer: a hang dies of SIGALRM.
    unsafe { libc::alarm(60) };
    // SAFETY: as in the first test.
    unsafe { CONTEXTS = Box::leak(Box::new(std::mem::zeroed::<Contexts>())) };
    log::set_logger(&FIBER_LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let loader = LOADER.get_or_init(ModuleLoader::new);
    // SAFETY: the fixture upholds the plugin contract.
    let a = unsafe { loader.load(fixture_path("redteam9-reenter")) }.unwrap();
    // SAFETY: `fx_log_hook` has the slot's type in the fixture.
    unsafe { loader.install_hook(a, &LOG_HOOK, "fx_log_hook") }.unwrap();
    let t = std::thread::spawn(|| LOG_HOOK.call(1));
    let t0 = Instant::now();
    while !IN_LOGGER.load(Ordering::SeqCst) {
        assert!(t0.elapsed() < Duration::from_secs(30), "the plugin never logged");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50)); // waiting on the fiber now
    let r = loader.unload(a);
    println!("unload while the logger waits on a fiber: {r:?}");
    *RELEASE.0.lock().unwrap() = true;
    RELEASE.1.notify_all();
    assert_eq!(t.join().unwrap(), Some(2));
    println!("RT10-FIBER-LOGGER-SURVIVED");
}
