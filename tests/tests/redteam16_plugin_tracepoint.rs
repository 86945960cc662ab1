//! Red team 16: tracepoints *defined in a plugin* and fired by the host,
//! against the per-object Tasks record (commit 9013887).
//!
//! The interrupted proof (a thread asleep in a signal handler over the
//! object's code) now runs only when the records say the object's code may
//! have run as a Tasks reader: the hook-slot record (host runtime, every
//! copy stores through it) or the registry's probe record, which the
//! *host's* copy of the registry answered (fixed since: probes are noted in
//! the host's runtime, `usrcu::tasks::note_reader_code`). But a probe is noted by
//! the copy that defines the tracepoint (`replace_probes`, "the defining
//! object's code"): a probe on a normal tracepoint that a *plugin* defines
//! is noted in the plugin's own copy of the registry, which the loader
//! never asks. So a plugin that offers a normal tracepoint to its host, and
//! whose probe a handler sleeps over, is unmapped under that handler.
//!
//! Cases (each in a child process):
//! * `normal-host`: the plugin attaches the host's probe to its own normal
//!   tracepoint (its trampoline under the host's probe), the host fires it,
//!   SIGUSR1's handler sleeps 300 ms over the probe, the host unloads;
//! * `normal-own`: the same with the plugin's own (spinning) probe;
//! * `normal-host-always`: `normal-host` with the loader's test switch
//!   `__set_tasks_wait_always(true)` (the rule before the record): control;
//! * `faultable-own`: a faultable tracepoint of the plugin (probes run in a
//!   Tasks Trace read section, which has a marker): control.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_registry::tracepoint::Tracepoint;
use usrcu_tests::{fixture_path, Child, Ran};

const FIXTURE: &str = "redteam16-plugin-tp";

static IN_PROBE: AtomicBool = AtomicBool::new(false);
static IN_HANDLER: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);
static PROBE_RUNS: AtomicU64 = AtomicU64::new(0);

/// The host's probe: spins for `ms`.
fn host_probe(runs: &AtomicU64, ms: &u64) {
    runs.fetch_add(1, Ordering::SeqCst);
    IN_PROBE.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(*ms) {
        std::hint::spin_loop();
    }
}

extern "C" fn sleepy_handler(_: libc::c_int) {
    IN_HANDLER.store(true, Ordering::SeqCst);
    let nap = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    for _ in 0..300 {
        // SAFETY: nanosleep with a valid timespec; async-signal-safe.
        unsafe { libc::nanosleep(&nap, std::ptr::null_mut()) };
    }
}

fn install_handler() {
    // SAFETY: a plain handler (an atomic and nanosleep), installed before
    // any thread receives the signal.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = sleepy_handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
}

fn pthread_of<T>(t: &std::thread::JoinHandle<T>) -> libc::pthread_t {
    use std::os::unix::thread::JoinHandleExt;
    t.as_pthread_t() as libc::pthread_t
}

type TpFn = extern "C" fn() -> *const Tracepoint<u64>;
type AttachFn = unsafe extern "C" fn(u32, *const (), *const AtomicU64) -> u32;
type AttachOwnFn = extern "C" fn(u32) -> u32;
type HitsFn = extern "C" fn() -> u64;

struct TpRef(&'static Tracepoint<u64>);

fn run_case(case: &str) {
    if case.ends_with("-always") {
        usrcu_module_loader::__set_tasks_wait_always(true);
    }
    install_handler();
    let loader = ModuleLoader::with_config(LoaderConfig::default());
    // SAFETY: the fixture upholds the plugin contract.
    let h = unsafe { loader.load(fixture_path(FIXTURE)) }.unwrap();
    let faultable = case.starts_with("faultable");
    let own = case.contains("-own");
    let which = u32::from(faultable);
    let tp_sym = if faultable { "fx_tp_faultable" } else { "fx_tp_normal" };
    // SAFETY: the fixture exports these with these signatures.
    let tp = unsafe { loader.symbol::<TpFn>(h, tp_sym) }
        .unwrap()
        .call(|p| p.call())
        .unwrap();
    // SAFETY: a `'static` tracepoint of the plugin, which the host stops
    // firing before it unloads the plugin (`STOP`).
    let tp = TpRef(unsafe { &*tp });
    if own {
        // SAFETY: as above.
        let own = unsafe { loader.symbol::<AttachOwnFn>(h, "fx_attach_own") }.unwrap();
        assert_eq!(own.call(|p| p.call(which)).unwrap(), 1);
    } else {
        // SAFETY: as above.
        let attach = unsafe { loader.symbol::<AttachFn>(h, "fx_attach") }.unwrap();
        let f: fn(&AtomicU64, &u64) = host_probe;
        // SAFETY: a host `fn(&AtomicU64, &u64)` that never blocks, a
        // `'static` host counter.
        let n = attach
            .call(|p| unsafe { p.call(which, f as *const (), &PROBE_RUNS) })
            .unwrap();
        assert_eq!(n, 1);
    }
    // SAFETY: as above.
    let hits = unsafe { loader.symbol::<HitsFn>(h, "fx_own_hits") }.unwrap();
    let caller = std::thread::spawn(move || {
        let tp = tp;
        let mut fires = 0u64;
        while !STOP.load(Ordering::SeqCst) {
            tp.0.fire(&200);
            fires += 1;
        }
        fires
    });
    // Inside the first probe run.
    if own {
        while hits.call(|p| p.call()).unwrap() == 0 {
            std::thread::yield_now();
        }
    } else {
        while !IN_PROBE.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
    }
    drop(hits);
    std::thread::sleep(Duration::from_millis(30));
    // SAFETY: the caller thread is alive (it loops until `STOP`).
    unsafe { libc::pthread_kill(pthread_of(&caller), libc::SIGUSR1) };
    while !IN_HANDLER.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(20)); // the handler sleeps now
                                                   // The host stops firing the plugin's tracepoint before it unloads it;
                                                   // the fire in flight is under the sleeping handler.
    STOP.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let r = loader.unload(h).unwrap();
    println!("unload after {:?}: {r}", t0.elapsed());
    let fires = caller.join().unwrap();
    assert!(fires >= 1);
    println!("RT16-TP-SURVIVED {case} unmapped={}", r.unmapped);
}

#[test]
fn rt16_tp_child_entry() {
    let Some(case) = std::env::var_os("RT16_TP_CASE") else {
        return;
    };
    run_case(case.to_str().unwrap());
}

fn child(case: &str) -> Ran {
    let _ = fixture_path(FIXTURE);
    Child::new("rt16_tp_child_entry")
        .env("RT16_TP_CASE", case)
        .timeout(Duration::from_secs(30))
        .run()
}

fn survives(case: &str) {
    child(case).assert_passed(&format!("RT16-TP-SURVIVED {case}"), &format!("case {case}"));
}

/// A host expects a plugin that offers a normal tracepoint (and attaches
/// the host's probe to it with its own copy of the registry, unregistering
/// it in `exit`) to stay mapped while a signal handler sleeps over the
/// probe, as it does for a probe on a *host* tracepoint
/// (`loader_interrupted.rs`, case "probe"). Seen: SIGSEGV when the handler
/// returns (the probe's trampoline, plugin code, was unmapped), 3 of 3
/// runs. Cause: `replace_probes` notes the probe in the *defining* copy's
/// `NORMAL_EVER` (the plugin's), while the loader's `ran_as_tasks_reader`
/// (`module-loader/src/proofs/interrupted.rs`) asks the host's copy, so the
/// interrupted proof is skipped; `exit`'s `unregister` waited for a Tasks
/// grace period, which the sleeping thread does not hold.
#[test]
fn a_handler_asleep_over_a_probe_of_a_plugin_defined_normal_tracepoint_keeps_the_plugin_mapped() {
    survives("normal-host");
}

/// As above with the plugin's own probe (its code directly under the
/// handler). Seen: SIGSEGV 3 of 3.
#[test]
fn a_handler_asleep_over_the_plugins_own_probe_on_its_own_normal_tracepoint_keeps_the_plugin_mapped() {
    survives("normal-own");
}

/// Control: the rule before the record (any Tasks use in the process runs
/// the proof) keeps the plugin mapped until the handler returns.
#[test]
fn control_with_the_process_wide_rule_the_plugin_stays_mapped_under_the_handler() {
    survives("normal-host-always");
}

/// Control: a faultable tracepoint's probes run in a Tasks Trace read
/// section, which the sleeping handler does not leave.
#[test]
fn control_a_handler_asleep_over_a_faultable_probe_of_the_plugin_keeps_it_mapped() {
    survives("faultable-own");
}
