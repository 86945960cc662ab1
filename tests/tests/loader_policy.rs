//! The unmap policy: a loader that cannot prove a module idle on this
//! platform says so when it is built and runs as `UnmapPolicy::Never`,
//! instead of turning every unload into a surprise `Zombie`.
//!
//! The platform check is forced to fail with the test switch
//! `USRCU_LOADER_FORCE_NO_PROOF=1`, in a child process (the switch is read
//! from the environment when a loader is built).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use usrcu::diagnostics::Capture;
use usrcu_module_loader::policy::FORCE_NO_PROOF_ENV;
use usrcu_module_loader::{LoaderConfig, ModuleLoader, ModuleState, ResidentCause, UnmapPolicy};
use usrcu_tests::{fixture_path, leak, object_is_mapped, Child};

type QueueFn = unsafe extern "C" fn(usize, u64, *const AtomicUsize);

fn wait_until(c: &AtomicUsize, n: usize) -> bool {
    let end = Instant::now() + Duration::from_secs(60);
    while c.load(Ordering::SeqCst) < n {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Load the callbacks fixture, leave `n` slow callbacks queued, unload; the
/// report must say "kept mapped by policy", never Zombie, and the callbacks
/// must then run in the object that stayed mapped.
fn unload_keeps_mapped_by_policy(loader: &ModuleLoader) {
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    let ran = leak(AtomicUsize::new(0));
    // SAFETY: the fixture exports it with this signature.
    let queue = unsafe { loader.symbol::<QueueFn>(m, "fx_queue_callbacks") }.unwrap();
    // SAFETY: `ran` lives for the process.
    queue.call(|f| unsafe { f.call(4, 30, ran) }).unwrap();

    let report = loader.unload(m).unwrap();
    assert_eq!(report.state, ModuleState::Unloaded, "{report}");
    assert_eq!(report.zombie_cause, None, "{report}");
    assert_eq!(
        report.resident_cause,
        Some(ResidentCause::KeptMappedByPolicy),
        "{report}"
    );
    assert!(!report.dlclosed && !report.unmapped, "{report}");
    assert!(report.to_string().contains("kept mapped by policy"), "{report}");
    assert!(object_is_mapped(&path), "the object stays mapped");
    assert_eq!(loader.state(m), Some(ModuleState::Unloaded));
    assert!(loader.list().is_empty());
    assert!(wait_until(ran, 4), "the callbacks ran in the object kept mapped");
}

const CHILD: &str = "USRCU_POLICY_TEST_CHILD";

#[test]
fn without_a_proof_the_loader_says_so_at_new_and_runs_as_never_with_no_surprise_zombies() {
    if std::env::var_os(CHILD).is_none() {
        Child::new("without_a_proof_the_loader_says_so_at_new_and_runs_as_never_with_no_surprise_zombies")
            .env(CHILD, "1")
            .env(FORCE_NO_PROOF_ENV, "1")
            .run()
            .assert_passed("", "the child died of a signal or failed");
        return;
    }
    let capture = Capture::start();
    let loader = ModuleLoader::new();
    // Said up front: a warning when the loader is built, and a field to ask.
    let warned: Vec<String> = capture
        .warnings()
        .into_iter()
        .map(|w| w.message)
        .filter(|m| m.contains("cannot prove modules idle"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", capture.warnings());
    assert!(
        warned[0].contains(FORCE_NO_PROOF_ENV) && warned[0].contains("Never"),
        "{}",
        warned[0]
    );
    assert_eq!(loader.unmap_policy(), UnmapPolicy::Never);
    let platform = loader.platform();
    assert_eq!(platform.configured, UnmapPolicy::WhenProvablyIdle);
    assert!(platform
        .cannot_prove_idle
        .as_deref()
        .unwrap()
        .contains(FORCE_NO_PROOF_ENV));

    unload_keeps_mapped_by_policy(&loader);
    // With the barrier off too (callbacks left pending at unload): still no
    // Zombie, since nothing is ever unmapped.
    let no_barrier = ModuleLoader::with_config(LoaderConfig {
        auto_barrier: false,
        ..Default::default()
    });
    unload_keeps_mapped_by_policy(&no_barrier);
}

#[test]
fn a_loader_configured_never_keeps_modules_mapped_without_a_warning() {
    let capture = Capture::start();
    let loader = ModuleLoader::with_config(LoaderConfig {
        unmap_policy: UnmapPolicy::Never,
        ..Default::default()
    });
    assert_eq!(loader.unmap_policy(), UnmapPolicy::Never);
    assert!(!capture
        .warnings()
        .iter()
        .any(|w| w.message.contains("cannot prove modules idle") && w.tid == usrcu::diagnostics::current_tid()));
    unload_keeps_mapped_by_policy(&loader);
}

#[test]
#[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
fn on_this_glibc_the_loader_can_prove_idleness() {
    if std::env::var_os(FORCE_NO_PROOF_ENV).is_some() {
        return; // the switch is set for the whole run
    }
    let loader = ModuleLoader::new();
    assert_eq!(loader.platform().cannot_prove_idle, None, "{}", loader.platform());
    assert_eq!(loader.unmap_policy(), UnmapPolicy::WhenProvablyIdle);
}
