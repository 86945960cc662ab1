//! The loader's shared-library gate at its call sites, with real `dlopen`
//! and real threads: two copies of the `needed-lib` fixture share
//! `libfxneeded.so`. The unload of the library's last user decides to close
//! it (`proofs::needed::partition`), deletes its pthread key, and only then
//! `dlclose`s it; a load that starts in between must not share the library
//! (its key is gone, its `pthread_once` done). The unload is held at that
//! step by a test-only pause point (`usrcu_module_loader::__testing`), and
//! every wait is on a flag or a counter, never on a sleep.
//!
//! The tests share the process-wide gate and pause points, so they run one
//! at a time ([`serial`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use usrcu_module_loader::__testing::{loads_waiting_at_gate, pause_at, wait_for_loads_at_gate, PausePoint};
use usrcu_module_loader::{LoadError, LoaderConfig, ModuleLoader, ModuleState};
use usrcu_tests::{bounded, fixture_path, fxneeded_holder, fxneeded_mapped};

/// How long a test waits for a state it expects (a bound against hangs,
/// never the thing tested).
const EXPECT_WITHIN: Duration = Duration::from_secs(20);

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The distinct copies of the `needed-lib` fixture mapped now (their memfd
/// names in `/proc/self/maps`).
fn fixture_copies_mapped() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut copies: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|name| name.contains("usrcu-module:libfixture_needed_lib"))
        .map(str::to_owned)
        .collect();
    copies.sort();
    copies.dedup();
    copies
}

/// Load the fixture at `so` with `loader`.
fn load(loader: &ModuleLoader, so: &Path) -> Result<usrcu_module_loader::ModuleHandle, LoadError> {
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    unsafe { loader.load(so) }
}

/// Module `b` works with its library, and its unload takes the library
/// with it: through `b`'s `fx_needed_hold` the library sets a value under
/// its key (made anew by a library mapped afresh for `b`, or kept alive by
/// an unload that left the library to `b`), and `b`'s unload deletes that
/// key (it is alive) and unmaps the library. A key deleted under `b`'s
/// feet by another module's unload reads as none deleted here.
fn works_and_its_unload_takes_the_library(loader: &ModuleLoader, b: usrcu_module_loader::ModuleHandle) {
    assert!(fxneeded_mapped(), "B's library is mapped");
    let (go, holder) = fxneeded_holder(loader, b);
    let r = loader.unload(b).unwrap();
    // Its destructor would run here if the library were unmapped with the
    // key alive (checked before the report, so a wrong one cannot hide it).
    go.send(()).unwrap();
    holder.join().unwrap();
    assert!(
        r.pthread_keys_deleted >= 1,
        "B's library has a live key, and B's unload deleted it: {r:?}"
    );
    assert!(r.unmapped && r.libraries_still_mapped.is_empty(), "{r:?}");
    assert!(!fxneeded_mapped());
}

#[test]
fn a_load_waits_while_the_last_user_of_its_library_is_between_deciding_to_close_it_and_dlclose() {
    let _serial = serial();
    bounded("the gate test", || {
        let loader = Arc::new(ModuleLoader::new());
        let so = fixture_path("needed-lib");
        let a = load(&loader, &so).unwrap();
        // The library's key exists, with a value on a host thread.
        let (go_a, holder_a) = fxneeded_holder(&loader, a);

        let pause = pause_at(PausePoint::UnloadBeforeDlclose);
        let unload = {
            let loader = loader.clone();
            thread::spawn(move || loader.unload(a))
        };
        assert!(
            pause.wait_until_paused(EXPECT_WITHIN),
            "the unload of A never reached its dlclose"
        );
        // Decided and proven (the key is deleted), not yet closed.
        assert!(fxneeded_mapped());

        let returned = Arc::new(AtomicBool::new(false));
        let load_b = {
            let (loader, so, returned) = (loader.clone(), so.clone(), returned.clone());
            thread::spawn(move || {
                let r = load(&loader, &so);
                returned.store(true, Ordering::SeqCst);
                r
            })
        };
        // The load either waits at the gate or (the gate broken) returns.
        let t0 = Instant::now();
        while !returned.load(Ordering::SeqCst)
            && !wait_for_loads_at_gate(1, Duration::from_millis(10))
            && t0.elapsed() < EXPECT_WITHIN
        {}
        assert!(
            !returned.load(Ordering::SeqCst),
            "the load of B returned while the unload of A was between its decision to close \
             libfxneeded.so and its dlclose"
        );
        assert_eq!(loads_waiting_at_gate(), 1, "the load of B waits at the gate");

        pause.resume();
        let report_a = unload.join().unwrap().unwrap();
        let b = load_b.join().unwrap().unwrap();
        go_a.send(()).unwrap();
        holder_a.join().unwrap();
        // A's unload closed the library: it left with A (B mapped it anew).
        assert!(report_a.pthread_keys_deleted >= 1, "{report_a:?}");
        assert!(
            report_a.unmapped && report_a.libraries_still_mapped.is_empty(),
            "{report_a:?}"
        );
        works_and_its_unload_takes_the_library(&loader, b);
    });
}

#[test]
fn a_load_whose_wait_at_the_gate_runs_out_fails_typed_with_nothing_loaded_and_a_retry_loads() {
    let _serial = serial();
    bounded("the gate timeout test", || {
        let loader = Arc::new(ModuleLoader::new());
        let impatient = ModuleLoader::with_config(LoaderConfig {
            unload_timeout: Duration::from_secs(1),
            ..LoaderConfig::default()
        });
        let so = fixture_path("needed-lib");
        let a = load(&loader, &so).unwrap();
        let (go_a, holder_a) = fxneeded_holder(&loader, a);

        let pause = pause_at(PausePoint::UnloadBeforeDlclose);
        let unload = {
            let loader = loader.clone();
            thread::spawn(move || loader.unload(a))
        };
        assert!(
            pause.wait_until_paused(EXPECT_WITHIN),
            "the unload of A never reached its dlclose"
        );
        let copies = fixture_copies_mapped();
        assert_eq!(copies.len(), 1, "A's copy: {copies:?}");

        // Held past the load's deadline: the load fails before its dlopen.
        match load(&impatient, &so) {
            Err(LoadError::SharedLibraryClosing { path, .. }) => assert_eq!(path, so),
            other => panic!("expected SharedLibraryClosing while A's unload holds the library, got {other:?}"),
        }
        assert!(impatient.list().is_empty(), "{:?}", impatient.list());
        assert_eq!(fixture_copies_mapped(), copies, "nothing of B was mapped");
        assert_eq!(loads_waiting_at_gate(), 0);

        pause.resume();
        let report_a = unload.join().unwrap().unwrap();
        go_a.send(()).unwrap();
        holder_a.join().unwrap();
        assert!(
            report_a.unmapped && report_a.libraries_still_mapped.is_empty(),
            "{report_a:?}"
        );
        assert!(!fxneeded_mapped());

        // The unload is over: a retry goes through the gate at once.
        let b = load(&impatient, &so).unwrap();
        works_and_its_unload_takes_the_library(&impatient, b);
    });
}

#[test]
fn an_unload_reports_its_shared_library_gone_even_when_a_waiting_load_maps_it_again_at_once() {
    let _serial = serial();
    bounded("the report race test", || {
        let loader = Arc::new(ModuleLoader::new());
        let so = fixture_path("needed-lib");
        let a = load(&loader, &so).unwrap();
        let (go_a, holder_a) = fxneeded_holder(&loader, a);

        // Held after its dlclose and the release of its closing marks,
        // before its report is written.
        let pause = pause_at(PausePoint::UnloadAfterRelease);
        let unload = {
            let loader = loader.clone();
            thread::spawn(move || loader.unload(a))
        };
        assert!(
            pause.wait_until_paused(EXPECT_WITHIN),
            "the unload of A never released its library"
        );
        assert!(!fxneeded_mapped(), "the library left with A");
        // The gate is open: B maps the library anew, at the same path.
        let b = load(&loader, &so).unwrap();
        assert!(fxneeded_mapped());

        pause.resume();
        let report_a = unload.join().unwrap().unwrap();
        go_a.send(()).unwrap();
        holder_a.join().unwrap();
        assert!(
            report_a.unmapped && report_a.libraries_still_mapped.is_empty() && report_a.resident_cause.is_none(),
            "A's library left with A; B's new mapping is not A's: {report_a:?}"
        );
        works_and_its_unload_takes_the_library(&loader, b);
    });
}

#[test]
fn an_unload_whose_wait_for_a_load_in_progress_runs_out_keeps_the_module_and_its_library_for_that_load() {
    let _serial = serial();
    bounded("the decision timeout test", || {
        let loader = Arc::new(ModuleLoader::new());
        let impatient = ModuleLoader::with_config(LoaderConfig {
            unload_timeout: Duration::from_secs(1),
            ..LoaderConfig::default()
        });
        let so = fixture_path("needed-lib");
        let a = load(&impatient, &so).unwrap();
        let (go_a, holder_a) = fxneeded_holder(&impatient, a);

        // B is past the gate and dlopened (it shares the library, mapped
        // once), and has not counted it yet.
        let pause = pause_at(PausePoint::LoadBeforeCount);
        let load_b = {
            let (loader, so) = (loader.clone(), so.clone());
            thread::spawn(move || load(&loader, &so))
        };
        assert!(
            pause.wait_until_paused(EXPECT_WITHIN),
            "the load of B never reached its count"
        );

        // A's unload cannot know whether it is the library's last user: it
        // must neither delete the library's key nor close it.
        let r = impatient.unload(a).unwrap();
        assert_eq!(r.state, ModuleState::Zombie, "{r:?}");
        assert_eq!(r.pthread_keys_deleted, 0, "{r:?}");

        pause.resume();
        let b = load_b.join().unwrap().unwrap();
        // Retried, A leaves; the library stays, with B.
        let r = impatient.unload(a).unwrap();
        assert!(r.unmapped && r.libraries_still_mapped.is_empty(), "{r:?}");
        assert!(fxneeded_mapped());
        works_and_its_unload_takes_the_library(&loader, b);
        go_a.send(()).unwrap();
        holder_a.join().unwrap();
    });
}
