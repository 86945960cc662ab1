//! Two loads of modules that need the same `DT_NEEDED` library, at the same
//! time, with real `dlopen` and real threads (two copies of the
//! `needed-lib` fixture share `libfxneeded.so`): both must count the
//! library as theirs. A load tells the libraries it brought in from the
//! host's by a snapshot taken before its `dlopen`; before the fix, a load
//! whose snapshot came after another load's `dlopen` but whose count came
//! before that load's saw the library neither new nor counted, and did not
//! count it. The other module's unload then proved the library idle and
//! deleted its key while this module still used it (seen in
//! `redteam_loader_host_stress.rs`, about one run in a hundred under load).
//! Now one load at a time is between its gate and its count
//! (`proofs::needed::load_gate`); the others wait at the gate, bounded.
//!
//! A load is held between its `dlopen` and its count by a test-only pause
//! point (`usrcu_module_loader::__testing`); every wait is on a flag or a
//! counter. The pause points are process-wide, so the tests run one at a
//! time ([`serial`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use usrcu_module_loader::__testing::{loads_waiting_at_gate, pause_at, wait_for_loads_at_gate, PausePoint};
use usrcu_module_loader::{LoadError, LoaderConfig, ModuleHandle, ModuleLoader};
use usrcu_tests::{bounded, fixture_path, fxneeded_holder, fxneeded_mapped};

/// How long a test waits for a state it expects (a bound against hangs,
/// never the thing tested).
const EXPECT_WITHIN: Duration = Duration::from_secs(20);

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Load the fixture at `so` with `loader`.
fn load(loader: &ModuleLoader, so: &Path) -> Result<ModuleHandle, LoadError> {
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    unsafe { loader.load(so) }
}

#[test]
fn a_load_waits_while_another_load_of_its_library_has_not_counted_it_and_both_count_it() {
    let _serial = serial();
    bounded("the ordered loads test", || {
        let loader = Arc::new(ModuleLoader::new());
        let so = fixture_path("needed-lib");
        assert!(!fxneeded_mapped());

        // A has dlopened (the library is mapped) and not counted it yet.
        let pause = pause_at(PausePoint::LoadBeforeCount);
        let load_a = {
            let (loader, so) = (loader.clone(), so.clone());
            thread::spawn(move || load(&loader, &so))
        };
        assert!(
            pause.wait_until_paused(EXPECT_WITHIN),
            "the load of A never reached its count"
        );
        assert!(fxneeded_mapped());

        // B must not take its snapshot (and dlopen) meanwhile.
        let returned = Arc::new(AtomicBool::new(false));
        let load_b = {
            let (loader, so, returned) = (loader.clone(), so.clone(), returned.clone());
            thread::spawn(move || {
                let r = load(&loader, &so);
                returned.store(true, Ordering::SeqCst);
                r
            })
        };
        let t0 = Instant::now();
        while !returned.load(Ordering::SeqCst)
            && !wait_for_loads_at_gate(1, Duration::from_millis(10))
            && t0.elapsed() < EXPECT_WITHIN
        {}
        let b_returned_early = returned.load(Ordering::SeqCst);
        let b_waited = loads_waiting_at_gate() == 1;

        pause.resume();
        let a = load_a.join().unwrap().unwrap();
        let b = load_b.join().unwrap().unwrap();
        assert!(
            !b_returned_early && b_waited,
            "the load of B went ahead while A had not counted the library"
        );

        // Both count the library: A's unload leaves it (and its key) to B,
        // and B's unload proves it idle and takes it.
        let (go, holder) = fxneeded_holder(&loader, b);
        let ra = loader.unload(a).unwrap();
        let still_mapped = fxneeded_mapped();
        let rb = loader.unload(b).unwrap();
        if !fxneeded_mapped() && rb.pthread_keys_deleted == 0 && ra.pthread_keys_deleted == 0 {
            // The holder's exit would run the destructor in unmapped code.
            std::mem::forget(go);
            std::mem::forget(holder);
            panic!("libfxneeded.so unmapped with its key alive: A {ra:?}\nB {rb:?}");
        }
        go.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(ra.pthread_keys_deleted, 0, "A's unload left B's library alone: {ra:?}");
        assert!(ra.unmapped && ra.libraries_still_mapped.is_empty(), "{ra:?}");
        assert!(still_mapped, "the library stayed with B");
        assert!(rb.pthread_keys_deleted >= 1, "B proved its library idle: {rb:?}");
        assert!(rb.unmapped && rb.libraries_still_mapped.is_empty(), "{rb:?}");
        assert!(!fxneeded_mapped());
    });
}

#[test]
fn a_load_whose_wait_for_another_load_runs_out_fails_typed_before_its_dlopen() {
    let _serial = serial();
    bounded("the load wait timeout test", || {
        let loader = Arc::new(ModuleLoader::new());
        let impatient = ModuleLoader::with_config(LoaderConfig {
            unload_timeout: Duration::from_millis(300),
            ..LoaderConfig::default()
        });
        let so = fixture_path("needed-lib");
        let pause = pause_at(PausePoint::LoadBeforeCount);
        let load_a = {
            let (loader, so) = (loader.clone(), so.clone());
            thread::spawn(move || load(&loader, &so))
        };
        assert!(
            pause.wait_until_paused(EXPECT_WITHIN),
            "the load of A never reached its count"
        );
        match load(&impatient, &so) {
            Err(LoadError::SharedLibraryLoading { path, .. }) => assert_eq!(path, so),
            other => panic!("expected SharedLibraryLoading while A's load had not counted, got {other:?}"),
        }
        assert!(impatient.list().is_empty(), "{:?}", impatient.list());
        assert_eq!(loads_waiting_at_gate(), 0);
        pause.resume();
        let a = load_a.join().unwrap().unwrap();
        // A retry loads.
        let b = load(&impatient, &so).unwrap();
        let ra = loader.unload(a).unwrap();
        assert!(ra.unmapped && ra.libraries_still_mapped.is_empty(), "{ra:?}");
        let rb = impatient.unload(b).unwrap();
        assert!(rb.unmapped && rb.libraries_still_mapped.is_empty(), "{rb:?}");
        assert!(!fxneeded_mapped());
    });
}

/// An `unload_timeout` of zero (or any shorter than the gate's floor,
/// `ModuleLoader::LOAD_GATE_MIN_WAIT`) does not fail a load that only has
/// to wait for another load's `dlopen` to be counted: before the floor, such
/// a load failed at once with `SharedLibraryLoading` (seen as a flake of
/// `redteam_loader_timeouts` when another test's load was in flight).
#[test]
fn a_load_with_a_zero_unload_timeout_waits_for_another_load_at_the_gate() {
    let _serial = serial();
    bounded("the zero-timeout gate test", || {
        let loader = Arc::new(ModuleLoader::new());
        let zero = Arc::new(ModuleLoader::with_config(LoaderConfig {
            unload_timeout: Duration::ZERO,
            ..LoaderConfig::default()
        }));
        let so = fixture_path("needed-lib");
        let pause = pause_at(PausePoint::LoadBeforeCount);
        let load_a = {
            let (loader, so) = (loader.clone(), so.clone());
            thread::spawn(move || load(&loader, &so))
        };
        assert!(
            pause.wait_until_paused(EXPECT_WITHIN),
            "the load of A never reached its count"
        );
        let load_b = {
            let (zero, so) = (zero.clone(), so.clone());
            thread::spawn(move || load(&zero, &so))
        };
        // B waits at the gate (or, without the floor, has already failed).
        let waiting = wait_for_loads_at_gate(1, EXPECT_WITHIN);
        pause.resume();
        let a = load_a.join().unwrap().unwrap();
        let b = match load_b.join().unwrap() {
            Ok(b) => b,
            Err(e) => {
                panic!("a load with a zero unload_timeout failed behind another load (seen waiting: {waiting}): {e:?}")
            }
        };
        assert!(waiting, "B was never seen waiting at the gate");
        let ra = loader.unload(a).unwrap();
        assert!(ra.unmapped, "{ra:?}");
        let rb = zero.unload(b).unwrap();
        assert!(rb.unmapped && rb.libraries_still_mapped.is_empty(), "{rb:?}");
        assert!(!fxneeded_mapped());
    });
}
