//! Red team, round 6: unloads of plugins with tracepoint probes, since the
//! probe notifier waits for the object's own Tasks and Tasks Trace
//! callbacks instead of barriers of every callback
//! (`usrcu_registry::tracepoint::remove_probes_in_within`).
//!
//! Every scenario runs in a child process (this binary, one ignored test,
//! `--exact`): a host that runs unmapped code dies of SIGSEGV, and the
//! parent reports it. Flags and counters decide; waits are bounded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_registry::define_tracepoint;
use usrcu_registry::tracepoint::Tracepoint;
use usrcu_tests::{fixture_path, Child};

const HANG: Duration = Duration::from_secs(20);

/// Run the ignored test `entry` of this binary in a child; it must exit 0
/// and print `marker`.
fn run_child(entry: &str, marker: &str) {
    // Build the fixtures here, not in the child under its alarm.
    let _ = fixture_path("redteam6-probes");
    Child::new(entry).must_pass(marker);
}

fn alarm(secs: u32) {
    // SAFETY: alarm has no preconditions.
    unsafe { libc::alarm(secs) };
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < HANG, "hang: {what}");
        thread::sleep(Duration::from_micros(200));
    }
}

// --- 1. a probe whose function and data are the host's --------------------

define_tracepoint!(static FOREIGN: Tracepoint<u64> = normal "rt6.foreign");
static FOREIGN_COUNT: AtomicU64 = AtomicU64::new(0);

/// The host's own counting probe, which it hands to plugins to attach.
fn host_count(c: &AtomicU64, x: &u64) {
    c.fetch_add(*x, Ordering::Relaxed);
}

type AttachForeign = unsafe extern "C" fn(*const Tracepoint<u64>, *const (), *const AtomicU64) -> u32;

/// A plugin attaches the host's counting probe (host function, host data)
/// to a host tracepoint with its own copy of the registry, and forgets the
/// handle, as the probe fixture forgets its own. The probe array then holds
/// the plugin's instance of the registry's trampoline: after the unload,
/// the next fire calls it.
#[test]
fn a_probe_attached_by_a_plugin_with_host_function_and_data_does_not_run_plugin_code_after_unload() {
    run_child("child_foreign_probe", "foreign probe: host survived");
}

#[test]
#[ignore = "child of a_probe_attached_by_a_plugin_with_host_function_and_data_does_not_run_plugin_code_after_unload"]
fn child_foreign_probe() {
    alarm(60);
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("redteam6-probes")) }.unwrap();
    // SAFETY: the fixture exports it with this signature.
    let attach = unsafe { loader.symbol::<AttachForeign>(m, "fx_attach_foreign") }.unwrap();
    let f: fn(&AtomicU64, &u64) = host_count;
    // SAFETY: a `'static` host tracepoint, a host `fn(&AtomicU64, &u64)`,
    // a `'static` host counter.
    let n = attach
        .call(|p| unsafe { p.call(&FOREIGN, f as *const (), &FOREIGN_COUNT) })
        .unwrap();
    assert_eq!(n, 1);
    drop(attach);
    FOREIGN.fire(&1);
    assert_eq!(FOREIGN_COUNT.load(Ordering::Relaxed), 1);
    let report = loader.unload(m).unwrap();
    println!(
        "unloaded: unmapped {}, probes removed {:?}, still attached: {}",
        report.unmapped,
        report.probes_removed,
        FOREIGN.probe_count()
    );
    // The host fires its tracepoint, as it always does.
    FOREIGN.fire(&1);
    println!("foreign probe: host survived");
}

// --- 2. hot reload with busy probes under fire ----------------------------

define_tracepoint!(static BUSY_F: Tracepoint<u64> = faultable "rt6.busy.faultable");
define_tracepoint!(static BUSY_N: Tracepoint<u64> = normal "rt6.busy.normal");

type AttachBusy = unsafe extern "C" fn(*const Tracepoint<u64>, *const Tracepoint<u64>) -> u32;

fn firers(
    f: &'static Tracepoint<u64>,
    n: &'static Tracepoint<u64>,
    stop: &Arc<AtomicBool>,
    fired: &Arc<AtomicU64>,
) -> Vec<thread::JoinHandle<()>> {
    (0..2)
        .map(|_| {
            let (stop, fired) = (stop.clone(), fired.clone());
            thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    f.fire(&i);
                    n.fire(&i);
                    usrcu_registry::usrcu::tasks::quiescent();
                    i += 1;
                    fired.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

fn attach_busy(loader: &ModuleLoader, m: usrcu_module_loader::ModuleHandle) {
    // SAFETY: the fixture exports it with this signature.
    let attach = unsafe { loader.symbol::<AttachBusy>(m, "fx_attach_busy") }.unwrap();
    // SAFETY: `'static` host tracepoints.
    assert_eq!(attach.call(|p| unsafe { p.call(&BUSY_F, &BUSY_N) }).unwrap(), 2);
}

/// Reload a plugin 3 times while two host threads fire its probes; the
/// probes queue Tasks Trace callbacks that hop to Tasks (every 4th fire)
/// and churn a probe of their own (register, `unregister_deferred`)
/// during the unloads. Each old copy must be unmapped: once its probes are
/// detached and their grace period has passed, its work drains in
/// milliseconds. The unload's waits for "no callback of the object queued
/// or running" (polled, `proofs::wait_flavor_callbacks_gone`, in the hook
/// step, which runs before `exit` and the probe notifier, while the probes
/// still fire and queue) never see zero: each reload ends as a Zombie after
/// its whole `unload_timeout` (a barrier there, as before, completes).
#[test]
fn hot_reload_of_a_plugin_whose_probes_queue_work_and_churn_probes_under_fire_unmaps_each_copy() {
    run_child("child_busy_reload", "busy reload: done");
}

const ROUNDS: usize = 3;

#[test]
#[ignore = "child of hot_reload_of_a_plugin_whose_probes_queue_work_and_churn_probes_under_fire_unmaps_each_copy"]
fn child_busy_reload() {
    alarm(90);
    let path = fixture_path("redteam6-probes");
    let loader = ModuleLoader::with_config(LoaderConfig {
        // Generous: an idle unload takes milliseconds.
        unload_timeout: Duration::from_secs(3),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let mut m = unsafe { loader.load(&path) }.unwrap();
    attach_busy(&loader, m);
    let stop = Arc::new(AtomicBool::new(false));
    let fired = Arc::new(AtomicU64::new(0));
    let threads = firers(&BUSY_F, &BUSY_N, &stop, &fired);
    let mut zombies = Vec::new();
    let rounds = std::env::var("RT6_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS);
    for round in 0..rounds {
        let at = fired.load(Ordering::Relaxed);
        wait_until("fires", || fired.load(Ordering::Relaxed) >= at + 300);
        // SAFETY: as above.
        let t0 = Instant::now();
        // SAFETY: as above.
        let (new, report) = unsafe { loader.reload("redteam6-probes", &path) }.unwrap();
        println!(
            "round {round}: reload took {:?}, unmapped {}: {report}",
            t0.elapsed(),
            report.unmapped
        );
        if !report.unmapped {
            zombies.push(format!("round {round}: {report}"));
        }
        m = new;
        attach_busy(&loader, m);
    }
    let report = loader.unload(m).unwrap();
    let at = fired.load(Ordering::Relaxed);
    wait_until("fires after the last unload", || {
        fired.load(Ordering::Relaxed) >= at + 300
    });
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    usrcu_registry::usrcu::trace::barrier();
    usrcu_registry::usrcu::tasks::barrier();
    BUSY_F.fire(&0);
    BUSY_N.fire(&0);
    println!("last unload: unmapped {}; zombies: {zombies:?}", report.unmapped);
    assert!(
        zombies.is_empty() && report.unmapped,
        "not unmapped: {zombies:?} / {report}"
    );
    println!("busy reload: done");
}

// --- 3. concurrent unloads of two different plugins with probes ----------

define_tracepoint!(static PAIR_F: Tracepoint<u64> = faultable "rt6.pair.faultable");
define_tracepoint!(static PAIR_N: Tracepoint<u64> = normal "rt6.pair.normal");

type Attach2 = unsafe extern "C" fn(*const Tracepoint<u64>, *const Tracepoint<u64>) -> u32;

/// Two different plugins with probes on the same host tracepoints,
/// unloaded at the same moment from two threads, ten times, while the host
/// fires.
#[test]
fn concurrent_unloads_of_two_plugins_with_probes_under_fire() {
    run_child("child_pair_unloads", "pair unloads: done");
}

#[test]
#[ignore = "child of concurrent_unloads_of_two_plugins_with_probes_under_fire"]
fn child_pair_unloads() {
    alarm(60);
    let probes = fixture_path("probes");
    let rt6 = fixture_path("redteam6-probes");
    let loader = Arc::new(ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(5),
        ..LoaderConfig::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let fired = Arc::new(AtomicU64::new(0));
    let threads = firers(&PAIR_F, &PAIR_N, &stop, &fired);
    let mut bad = Vec::new();
    for round in 0..10 {
        // SAFETY: the fixtures uphold the plugin contract.
        let a = unsafe { loader.load(&probes) }.unwrap();
        // SAFETY: as above.
        let b = unsafe { loader.load(&rt6) }.unwrap();
        // SAFETY: the fixtures export these with these signatures.
        let (sa, sb) = unsafe {
            (
                loader.symbol::<Attach2>(a, "fx_attach_probes").unwrap(),
                loader.symbol::<Attach2>(b, "fx_attach_plain").unwrap(),
            )
        };
        // SAFETY: `'static` host tracepoints.
        assert_eq!(sa.call(|p| unsafe { p.call(&PAIR_F, &PAIR_N) }).unwrap(), 2);
        // SAFETY: `'static` host tracepoints.
        assert_eq!(sb.call(|p| unsafe { p.call(&PAIR_F, &PAIR_N) }).unwrap(), 2);
        drop((sa, sb));
        let at = fired.load(Ordering::Relaxed);
        wait_until("fires", || fired.load(Ordering::Relaxed) >= at + 200);
        let go = Arc::new(AtomicBool::new(false));
        let other = {
            let (loader, go) = (loader.clone(), go.clone());
            thread::spawn(move || {
                while !go.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                loader.unload(b).unwrap()
            })
        };
        go.store(true, Ordering::SeqCst);
        let ra = loader.unload(a).unwrap();
        let rb = other.join().unwrap();
        for (name, r) in [("probes", &ra), ("redteam6-probes", &rb)] {
            if !r.unmapped {
                bad.push(format!("round {round} {name}: {r}"));
            }
        }
    }
    let at = fired.load(Ordering::Relaxed);
    wait_until("fires after the unloads", || fired.load(Ordering::Relaxed) >= at + 200);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    usrcu_registry::usrcu::trace::barrier();
    usrcu_registry::usrcu::tasks::barrier();
    PAIR_F.fire(&0);
    PAIR_N.fire(&0);
    println!("pair unloads: not unmapped {bad:?}");
    assert!(bad.is_empty(), "{bad:?}");
    println!("pair unloads: done");
}

// --- 4. a blocked host callback and a tracepoint with a host probe --------

define_tracepoint!(static SHARED_F: Tracepoint<u64> = faultable "rt6.shared.faultable");
define_tracepoint!(static SHARED_N: Tracepoint<u64> = normal "rt6.shared.normal");
static HOST_SEEN: AtomicU64 = AtomicU64::new(0);

/// The host's own probe (metrics), attached before any plugin's.
fn host_metrics(c: &AtomicU64, _x: &u64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The unload of a plugin with probes is not held up by an unrelated host
/// Tasks or Tasks Trace callback that blocks (docs/abi.md, unload step 6;
/// `loader_probes.rs`). Here the host's tracepoints already carry a host
/// probe when the plugin attaches its own, so the plugin's `register`
/// replaces a probe array and queues its free, with the plugin's code,
/// behind the blocked host callback of the same flavor (one callback
/// thread per flavor, FIFO): waiting for "the object's callbacks" is then
/// waiting for the unrelated one.
#[test]
fn a_blocked_host_callback_does_not_hold_up_the_unload_of_a_plugin_that_attached_beside_a_host_probe() {
    run_child("child_blocked_beside_host_probe", "beside host probe: done");
}

#[test]
#[ignore = "child of a_blocked_host_callback_does_not_hold_up_the_unload_of_a_plugin_that_attached_beside_a_host_probe"]
fn child_blocked_beside_host_probe() {
    alarm(60);
    let rt6 = fixture_path("redteam6-probes");
    // Dropping the handle leaves the probe attached.
    let _ = SHARED_F.register(host_metrics, &HOST_SEEN).unwrap();
    let _ = SHARED_N.register(host_metrics, &HOST_SEEN).unwrap();
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(3),
        ..LoaderConfig::default()
    });
    // Unrelated host callbacks that block until the end of the test.
    let release = Arc::new(AtomicBool::new(false));
    let blocked = Arc::new(AtomicU64::new(0));
    {
        let (r, b) = (release.clone(), blocked.clone());
        usrcu_registry::usrcu::trace::call(move || {
            b.fetch_add(1, Ordering::SeqCst);
            while !r.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
        });
        let (r, b) = (release.clone(), blocked.clone());
        usrcu_registry::usrcu::tasks::call(move || {
            b.fetch_add(1, Ordering::SeqCst);
            while !r.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
        });
    }
    wait_until("the host callbacks block", || blocked.load(Ordering::SeqCst) == 2);
    // SAFETY: the fixture upholds the plugin contract.
    let m = unsafe { loader.load(&rt6) }.unwrap();
    // SAFETY: the fixture exports it with this signature.
    let s = unsafe { loader.symbol::<Attach2>(m, "fx_attach_plain") }.unwrap();
    // SAFETY: `'static` host tracepoints.
    assert_eq!(s.call(|p| unsafe { p.call(&SHARED_F, &SHARED_N) }).unwrap(), 2);
    drop(s);
    SHARED_F.fire(&1);
    SHARED_N.fire(&1);
    let report = loader.unload(m).unwrap();
    release.store(true, Ordering::SeqCst);
    usrcu_registry::usrcu::trace::barrier();
    usrcu_registry::usrcu::tasks::barrier();
    println!("unload with blocked host callbacks: {report}");
    assert!(report.unmapped, "{report}");
    println!("beside host probe: done");
}

// --- 5. a probe attached by the plugin's code after the sweep -------------

define_tracepoint!(static LATE_F: Tracepoint<u64> = faultable "rt6.late.faultable");
define_tracepoint!(static LATE_N: Tracepoint<u64> = normal "rt6.late.normal");

/// The plugin's code still running when the loader detaches its probes (a
/// faultable probe, inside its Tasks Trace section) attaches a new probe
/// of the plugin to a host tracepoint, after the sweep. The probe notifier
/// sweeps again after its grace periods, until a sweep finds nothing
/// (`remove_probes_in_within`); the deferred-work proof sweeps again after
/// its snapshot. With the
/// notifier's single sweep and the deferred proof skipped
/// (`USRCU_LOADER_TEST_SKIP_PROOFS=deferred`), the late probe stayed
/// attached after the unmap and the next fire died of SIGSEGV (seen); with
/// either defense alone the test passes.
static LATE_ENTERED: AtomicBool = AtomicBool::new(false);

fn late_entered(flag: &AtomicBool, _x: &u64) {
    flag.store(true, Ordering::SeqCst);
}

#[test]
fn a_probe_the_plugins_running_code_attaches_after_the_sweep_is_removed_too() {
    run_child("child_late_probe", "late probe: done");
}

#[test]
#[ignore = "child of a_probe_the_plugins_running_code_attaches_after_the_sweep_is_removed_too"]
fn child_late_probe() {
    alarm(60);
    let loader = ModuleLoader::new();
    // Dropping the handle leaves the probe attached.
    let _ = LATE_F.register(late_entered, &LATE_ENTERED).unwrap();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("redteam6-probes")) }.unwrap();
    // SAFETY: the fixture exports it with this signature.
    let s = unsafe { loader.symbol::<Attach2>(m, "fx_attach_late") }.unwrap();
    // SAFETY: `'static` host tracepoints.
    assert_eq!(s.call(|p| unsafe { p.call(&LATE_F, &LATE_N) }).unwrap(), 1);
    drop(s);
    // Fire the faultable tracepoint on a thread of its own: the host's
    // probe, attached first, says the fire has begun; the plugin's probe
    // then waits until the unload has detached it, and attaches the late one.
    let firer = thread::spawn(|| LATE_F.fire(&1));
    wait_until("the fire began", || LATE_ENTERED.load(Ordering::SeqCst));
    let report = loader.unload(m).unwrap();
    firer.join().unwrap();
    println!("late probe: {report}; normal probes left: {}", LATE_N.probe_count());
    assert!(report.unmapped || LATE_N.probe_count() == 0, "{report}");
    // The late probe, if still attached after the unmap, runs unmapped code.
    LATE_N.fire(&1);
    println!("late probe: done");
}
