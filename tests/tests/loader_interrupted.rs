//! The loader's "interrupted" proof (`module-loader/src/proofs/interrupted.rs`):
//! a host signal handler that sleeps while it interrupts a plugin's hook
//! makes the thread look quiescent to Tasks RCU (it is blocked), while the
//! hook's frame is still on its stack. The unload must not unmap the plugin
//! until the handler has returned and the hook has been left.
//!
//! Each case runs in a child (it installs a signal handler, and without the
//! proof the child dies of SIGSEGV):
//!
//! * the handler interrupts *host* code the hook called (`fx_calls_host`):
//!   the interrupted `rip` is the host's, the plugin's return address is
//!   above it on the stack;
//! * the handler runs on an alternate signal stack (`SA_ONSTACK`): the
//!   signal frame is on a heap buffer, the interrupted stack elsewhere;
//! * the handler interrupts a host function attached as a probe of a
//!   normal host tracepoint by the plugin's copy of the registry (the
//!   plugin's trampoline is on the stack): no hook slot ever pointed into
//!   the plugin, and the proof runs because the registry recorded the
//!   probe (`usrcu::tasks::note_reader_code`, read by `hooks_ever_into`;
//!   with that record ignored, the host died of SIGSEGV);
//! * the handler sleeps longer than the unload's budget: the unload keeps
//!   the plugin as a Zombie naming the thread (`InterruptedInObject`), and
//!   the next unload, once the handler has returned, unmaps it.
//!
//! `tests/tests/redteam7_hook_signal.rs` is the first case found (the
//! handler interrupts the plugin's own code). The negative twin here runs
//! the first case with the proof switched off and requires the SIGSEGV, and
//! so does the probe case's.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader, ZombieCause};
use usrcu_registry::tracepoint::Tracepoint;
use usrcu_tests::{fixture_path, Child, Ran};

type HostFn = extern "C" fn(u64) -> u64;
static CALLS_HOST: HookSlot<extern "C" fn(HostFn, u64) -> u64> = HookSlot::new();
static SPIN: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

usrcu_registry::define_tracepoint!(static PROBED: Tracepoint<u64> = normal "interrupted.probed");
type AttachForeign = unsafe extern "C" fn(*const Tracepoint<u64>, *const (), *const AtomicU64) -> u32;
static PROBE_RUNS: AtomicU64 = AtomicU64::new(0);

/// A host probe, attached by the plugin's copy of the registry (whose
/// trampoline, plugin code, calls it): spins for `ms`.
fn host_probe(runs: &AtomicU64, ms: &u64) {
    runs.fetch_add(1, Ordering::SeqCst);
    host_spin(*ms);
}

static IN_HOST: AtomicBool = AtomicBool::new(false);
static IN_HANDLER: AtomicBool = AtomicBool::new(false);
/// The handler sleeps until this is set (case "zombie") or for 300 ms.
static RELEASE: AtomicBool = AtomicBool::new(false);
static WAIT_FOR_RELEASE: AtomicBool = AtomicBool::new(false);
/// Case "busy-handler": after each nap the handler spins 20 ms, so that a
/// scan almost always sees its thread running (`Seen::InHandler`).
static BUSY_HANDLER: AtomicBool = AtomicBool::new(false);
static CALLER_TID: AtomicI32 = AtomicI32::new(0);

/// Host code a hook calls: spins for `ms`.
extern "C" fn host_spin(ms: u64) -> u64 {
    IN_HOST.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(ms) {
        std::hint::spin_loop();
    }
    ms
}

extern "C" fn sleepy_handler(_: libc::c_int) {
    IN_HANDLER.store(true, Ordering::SeqCst);
    let nap = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    let mut slept = 0;
    // Only atomics and nanosleep: async-signal-safe.
    while if WAIT_FOR_RELEASE.load(Ordering::SeqCst) {
        !RELEASE.load(Ordering::SeqCst)
    } else {
        slept < 300
    } {
        // SAFETY: nanosleep with a valid timespec; async-signal-safe.
        unsafe { libc::nanosleep(&nap, std::ptr::null_mut()) };
        slept += 1;
        if BUSY_HANDLER.load(Ordering::SeqCst) {
            // Spin (no call but the clock's vDSO read: async-signal-safe).
            let mut t0: libc::timespec = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: clock_gettime with a valid out pointer; async-signal-safe.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t0) };
            loop {
                let mut t: libc::timespec = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                // SAFETY: as above.
                unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
                let ns = (t.tv_sec - t0.tv_sec) * 1_000_000_000 + (t.tv_nsec - t0.tv_nsec);
                if ns >= 20_000_000 {
                    break;
                }
                std::hint::spin_loop();
            }
            slept += 20;
        }
    }
}

fn install_handler(on_stack: bool) {
    // SAFETY: a plain handler (atomics and nanosleep only), installed
    // before any thread receives the signal.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = sleepy_handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART | if on_stack { libc::SA_ONSTACK } else { 0 };
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
}

/// Give the calling thread an alternate signal stack (leaked: it must
/// outlive every handler run on it).
fn alt_stack() {
    let size = 256 * 1024;
    let mem = Box::leak(vec![0u8; size].into_boxed_slice());
    let st = libc::stack_t {
        ss_sp: mem.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: size,
    };
    // SAFETY: `st` describes a leaked buffer that lives for the process.
    assert_eq!(unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) }, 0);
}

fn pthread_of<T>(t: &std::thread::JoinHandle<T>) -> libc::pthread_t {
    use std::os::unix::thread::JoinHandleExt;
    t.as_pthread_t() as libc::pthread_t
}

/// The child's body: a thread calls a hook of the plugin in a loop; the
/// main thread signals it while it is inside, waits until the handler
/// runs, and unloads. Returns the unload's report and the caller's join.
fn run_case(case: &str) {
    let zombie = case == "zombie";
    let on_stack = case == "altstack";
    BUSY_HANDLER.store(case == "busy-handler", Ordering::SeqCst);
    WAIT_FOR_RELEASE.store(zombie, Ordering::SeqCst);
    install_handler(on_stack);
    let mut config = LoaderConfig::default();
    if zombie {
        config.unload_timeout = Duration::from_millis(300);
    }
    let loader = ModuleLoader::with_config(config);
    let fixture = if case == "probe" {
        "redteam6-probes"
    } else {
        "redteam7-plain"
    };
    // SAFETY: the fixture upholds the plugin contract.
    let h = unsafe { loader.load(fixture_path(fixture)) }.unwrap();
    let host_code = case == "host-code" || case == "busy-handler" || case == "probe";
    let probe = case == "probe";
    if probe {
        // SAFETY: the fixture exports it with this signature.
        let attach = unsafe { loader.symbol::<AttachForeign>(h, "fx_attach_foreign") }.unwrap();
        let f: fn(&AtomicU64, &u64) = host_probe;
        // SAFETY: a `'static` host tracepoint, a host `fn(&AtomicU64, &u64)`
        // that never blocks, a `'static` host counter.
        let n = attach
            .call(|p| unsafe { p.call(&PROBED, f as *const (), &PROBE_RUNS) })
            .unwrap();
        assert_eq!(n, 1);
    } else if host_code {
        // SAFETY: `fx_calls_host: extern "C" fn(HostFn, u64) -> u64` calls
        // the host function it is given and adds one; it stores nothing.
        unsafe { loader.install_hook(h, &CALLS_HOST, "fx_calls_host") }.unwrap();
    } else {
        // SAFETY: `fx_spin_hook: extern "C" fn(u64) -> u64` spins and
        // returns; it touches nothing else.
        unsafe { loader.install_hook(h, &SPIN, "fx_spin_hook") }.unwrap();
    }
    let entered = std::sync::Arc::new(AtomicBool::new(false));
    let e = entered.clone();
    let caller = std::thread::spawn(move || {
        if on_stack {
            alt_stack();
        }
        // SAFETY: gettid has no preconditions.
        CALLER_TID.store(unsafe { libc::gettid() }, Ordering::SeqCst);
        e.store(true, Ordering::SeqCst);
        let mut calls = 0u64;
        if probe {
            // The probe is detached at unload; then firing does nothing.
            while PROBED.enabled() {
                PROBED.fire(&200);
                calls += 1;
            }
        } else if host_code {
            while let Some(v) = CALLS_HOST.call(host_spin, 200) {
                assert_eq!(v, 201);
                calls += 1;
            }
        } else {
            while let Some(v) = SPIN.call(200) {
                assert_eq!(v, 200);
                calls += 1;
            }
        }
        calls
    });
    while !entered.load(Ordering::SeqCst) || (host_code && !IN_HOST.load(Ordering::SeqCst)) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(30)); // well inside the first call
                                                   // SAFETY: the caller thread is alive (it loops until the slot empties).
    unsafe { libc::pthread_kill(pthread_of(&caller), libc::SIGUSR1) };
    while !IN_HANDLER.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(20)); // the handler sleeps now
    let r = loader.unload(h).unwrap();
    println!("first unload: {r}");
    if zombie {
        let tid = CALLER_TID.load(Ordering::SeqCst);
        match &r.zombie_cause {
            Some(ZombieCause::InterruptedInObject { threads }) => assert_eq!(threads, &vec![tid], "{r}"),
            other => panic!("expected InterruptedInObject naming thread {tid}, got {other:?}: {r}"),
        }
        assert!(!r.unmapped, "{r}");
        RELEASE.store(true, Ordering::SeqCst);
        let calls = caller.join().unwrap();
        assert!(calls >= 1);
        let again = loader.unload(h).unwrap();
        assert!(again.unmapped && again.zombie_cause.is_none(), "{again}");
        println!("second unload: {again}");
    } else {
        assert!(r.unmapped && r.zombie_cause.is_none(), "{r}");
        let calls = caller.join().unwrap();
        assert!(calls >= 1);
    }
    println!("INTERRUPTED-SURVIVED {case}");
}

#[test]
fn interrupted_child_entry() {
    let Some(case) = std::env::var_os("INTERRUPTED_CASE") else {
        return;
    };
    run_case(case.to_str().unwrap());
}

fn child(case: &str, skip_proof: bool) -> Ran {
    child_skipping(case, if skip_proof { "interrupted" } else { "" })
}

fn child_skipping(case: &str, skip: &str) -> Ran {
    let _ = fixture_path("redteam7-plain");
    let _ = fixture_path("redteam6-probes");
    Child::new("interrupted_child_entry")
        .env("INTERRUPTED_CASE", case)
        .env("USRCU_LOADER_TEST_SKIP_PROOFS", skip)
        .run()
}

fn survives(case: &str) {
    child(case, false).assert_passed(&format!("INTERRUPTED-SURVIVED {case}"), &format!("case {case}"));
}

#[test]
fn a_handler_asleep_over_host_code_a_hook_called_keeps_the_plugin_mapped_until_the_hook_is_left() {
    survives("host-code");
}

#[test]
fn a_handler_asleep_on_an_alternate_stack_keeps_the_plugin_mapped_until_the_hook_is_left() {
    survives("altstack");
}

#[test]
fn a_handler_asleep_past_the_unload_timeout_leaves_a_zombie_naming_the_thread_then_unmaps() {
    survives("zombie");
}

/// A handler that mostly runs (20 ms spins between 1 ms naps) over host
/// code a hook called: a scan almost never sees its thread blocked, so its
/// stack is almost never read; the thread is held as inside a handler
/// (its signal blocked) until the handler returns.
#[test]
fn a_handler_that_mostly_runs_between_naps_keeps_the_plugin_mapped_until_the_hook_is_left() {
    survives("busy-handler");
}

/// Its negative twin: with the in-handler check off, a scan sees the
/// thread running, the Tasks grace period ends at its next nap, and the
/// plugin is unmapped under the handler. A scan may land in a nap (about
/// 1 in 21) and catch the frame, so the twin gets three tries to die.
#[test]
fn without_the_in_handler_check_a_mostly_running_handler_returns_into_unmapped_code() {
    let mut last = None;
    for _ in 0..3 {
        let ran = child_skipping("busy-handler", "in-handler");
        if ran.signal() == Some(libc::SIGSEGV) {
            return;
        }
        last = Some(ran);
    }
    last.unwrap().assert_died_of(
        &[libc::SIGSEGV],
        "the host should die of SIGSEGV with the in-handler check off",
    );
}

/// The negative twin: without the proof the same host dies when the
/// handler returns into the unmapped plugin.
#[test]
fn without_the_proof_the_host_dies_when_the_handler_returns() {
    child("host-code", true).assert_died_of(&[libc::SIGSEGV], "the host should die of SIGSEGV with the proof off");
}

/// A normal tracepoint's probe instead of a hook: a host function attached
/// by the plugin's copy of the registry, so the plugin's trampoline is on
/// the stack under it. No hook slot ever pointed into the plugin: the proof
/// runs because the registry recorded the probe in the host's runtime
/// (`usrcu::tasks::note_reader_code`).
#[test]
fn a_handler_asleep_over_a_host_probe_the_plugin_attached_keeps_the_plugin_mapped_until_the_probe_is_left() {
    survives("probe");
}

/// Its twin: without the proof, the handler returns into the host probe,
/// which returns into the unmapped trampoline.
#[test]
fn without_the_proof_the_host_dies_when_the_handler_returns_into_a_probe() {
    child("probe", true).assert_died_of(&[libc::SIGSEGV], "the host should die of SIGSEGV with the proof off");
}
