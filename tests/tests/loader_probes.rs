//! The loader's built-in probe notifier: a plugin that attaches probes to
//! host tracepoints and forgets them is unloaded cleanly, with the probes
//! listed; without the notifier the same unload crashes the host.

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_registry::define_tracepoint;
use usrcu_registry::tracepoint::Tracepoint;
use usrcu_tests::fixture_path;

define_tracepoint!(static HOST_FAULTABLE: Tracepoint<u64> = faultable "host.faultable");
define_tracepoint!(static HOST_NORMAL: Tracepoint<u64> = normal "host.normal");

type Attach = unsafe extern "C" fn(*const Tracepoint<u64>, *const Tracepoint<u64>) -> u32;
type Hits = extern "C" fn() -> u64;

/// Load the fixture, let it attach its probes, check they run, then unload
/// it while two threads keep firing both tracepoints; fire again afterwards.
fn forgetful_plugin_unloads(config: LoaderConfig) -> usrcu_module_loader::UnloadReport {
    let loader = ModuleLoader::with_config(config);
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("probes")) }.unwrap();
    // SAFETY: the fixture exports these with these signatures.
    let (attach, hits) = unsafe {
        (
            loader.symbol::<Attach>(m, "fx_attach_probes").unwrap(),
            loader.symbol::<Hits>(m, "fx_probe_hits").unwrap(),
        )
    };
    // SAFETY: both are `'static` host tracepoints.
    let n = attach
        .call(|f| unsafe { f.call(&HOST_FAULTABLE, &HOST_NORMAL) })
        .unwrap();
    assert_eq!(n, 2);
    HOST_FAULTABLE.fire(&1);
    HOST_NORMAL.fire(&2);
    assert_eq!(hits.call(|f| f.call()).unwrap(), 3, "the plugin's probes did not run");
    drop((attach, hits));

    let stop = Arc::new(AtomicBool::new(false));
    let fired = Arc::new(AtomicU64::new(0));
    let firers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, fired) = (stop.clone(), fired.clone());
            thread::spawn(move || {
                let mut i = 0u64;
                // Relaxed: a stop flag.
                while !stop.load(Ordering::Relaxed) {
                    HOST_FAULTABLE.fire(&i);
                    HOST_NORMAL.fire(&i);
                    i += 1;
                    // Relaxed: a count.
                    fired.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Let the firers get going (ordering, not timing: wait for fires).
    // Relaxed: a count.
    while fired.load(Ordering::Relaxed) < 100 {
        thread::yield_now();
    }
    let report = loader.unload(m).unwrap();
    // Relaxed: a count.
    let at_unload = fired.load(Ordering::Relaxed);
    while fired.load(Ordering::Relaxed) < at_unload + 100 {
        thread::yield_now();
    }
    // Relaxed: a stop flag.
    stop.store(true, Ordering::Relaxed);
    for f in firers {
        f.join().unwrap();
    }
    HOST_FAULTABLE.fire(&1);
    HOST_NORMAL.fire(&1);
    report
}

#[test]
fn a_plugin_that_forgets_its_probes_is_unloaded_cleanly_with_the_probes_listed() {
    let report = forgetful_plugin_unloads(LoaderConfig::default());
    assert!(report.unmapped, "{report}");
    let mut names: Vec<&str> = report.probes_removed.iter().map(|p| p.tracepoint).collect();
    names.sort();
    assert_eq!(names, ["host.faultable", "host.normal"], "{:?}", report.probes_removed);
    assert!(report.probes_removed.iter().any(|p| p.may_block));
    assert!(!HOST_FAULTABLE.enabled() && !HOST_NORMAL.enabled());
}

/// The child side of the test below: the same unload with the notifier off.
#[test]
#[ignore = "run by without_the_probe_notifier_the_same_unload_crashes_the_host in a child process"]
fn child_unload_without_probe_notifier() {
    let report = forgetful_plugin_unloads(LoaderConfig {
        remove_probes: false,
        ..LoaderConfig::default()
    });
    // Reaching this line means the host survived.
    println!("child survived: {report}");
}

#[test]
fn without_the_probe_notifier_the_same_unload_crashes_the_host() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_unload_without_probe_notifier",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let sig = out.status.signal();
    assert!(
        matches!(sig, Some(libc::SIGSEGV) | Some(libc::SIGBUS) | Some(libc::SIGILL)),
        "the child was expected to die of a fault after the unmap, got {:?}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
