//! Red team (round 7): the loader used as a host author would, with
//! inputs earlier rounds did not pass: a notifier whose panic payload
//! panics again when dropped, fifty live copies of one file, one handle
//! unloaded by eight threads at once, a `Live` notifier still calling the
//! module while another thread unloads it. Each case runs under `bounded`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use usrcu_module_loader::{CallError, ModuleEvent, ModuleHandle, ModuleLoader, ModuleState};
use usrcu_tests::{bounded, fixture_path, leak, object_is_mapped, Child};

fn load(loader: &ModuleLoader, fixture: &str) -> ModuleHandle {
    // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
    unsafe { loader.load(fixture_path(fixture)) }.unwrap()
}

/// A panic payload whose drop panics (host code: a host notifier's panic).
struct Bomb;
impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("the notifier's panic payload panics on drop");
        }
    }
}

/// A panicking notifier is documented as reported, with the load failed or
/// the unload completed. A payload that panics again when dropped (the
/// runtime already guards callbacks against exactly this) must not unwind
/// out of `load`/`unload` nor abort the host.
#[test]
fn a_notifier_whose_panic_payload_panics_on_drop_is_reported_not_propagated() {
    let ran = Child::new("bomb_notifier_entry").env("RT7_BOMB_CHILD", "1").run();
    ran.assert_passed("RT7-BOMB-OK", "the host did not survive a notifier's panicking payload");
}

#[test]
fn bomb_notifier_entry() {
    if std::env::var_os("RT7_BOMB_CHILD").is_none() {
        return;
    }
    let loader: &'static ModuleLoader = leak(ModuleLoader::new());
    loader.register_notifier("bomb on going", |ev, info| -> Result<(), String> {
        if ev == ModuleEvent::Going && info.name == "callbacks" {
            std::panic::panic_any(Bomb);
        }
        Ok(())
    });
    let m = load(loader, "callbacks");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loader.unload(m)));
    match r {
        Ok(r) => println!("unload returned {:?}", r.map(|r| r.unmapped)),
        Err(_) => {
            println!("unload unwound out of the loader");
            println!(
                "state after: {:?}; list: {:?}",
                loader.state(m),
                loader.list().iter().map(|i| (i.handle, i.state)).collect::<Vec<_>>()
            );
            let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loader.unload(m).map(|r| r.unmapped)));
            println!("second unload: {again:?}; state {:?}", loader.state(m));
            std::process::exit(3);
        }
    }
    // The loader still works afterwards.
    let m2 = load(loader, "callbacks");
    let _ = loader.unload(m2);
    println!("RT7-BOMB-OK");
}

/// Fifty live copies of one file, loaded back to back: each independent,
/// all unloaded by `unload_all`, every copy's object gone.
#[test]
fn fifty_copies_of_one_file_load_and_unload_all_unmaps_every_one() {
    bounded("fifty copies", || {
        let loader = ModuleLoader::new();
        let mut paths = Vec::new();
        let mut hs = Vec::new();
        for _ in 0..50 {
            let h = load(&loader, "callbacks");
            paths.push(loader.info(h).unwrap().loaded_path);
            hs.push(h);
        }
        assert_eq!(loader.list().len(), 50);
        // Every copy answers through its own symbol.
        for &h in &hs {
            // SAFETY: `fx_add` is `extern "C" fn(u64, u64) -> u64` in the fixture.
            let add = unsafe { loader.symbol::<extern "C" fn(u64, u64) -> u64>(h, "fx_add") }.unwrap();
            assert_eq!(add.call(|f| f.call(2, 3)).unwrap(), 5);
        }
        let all = loader.unload_all();
        assert_eq!(all.len(), 50);
        for (h, r) in &all {
            let r = r.as_ref().unwrap_or_else(|e| panic!("{h}: {e}"));
            assert!(r.unmapped, "{h}: {r}");
        }
        assert!(loader.list().is_empty(), "{:?}", loader.list());
        for p in &paths {
            assert!(!object_is_mapped(p), "{} still mapped", p.display());
        }
    });
}

/// Eight threads unload one handle at once: exactly one succeeds, the
/// others get typed errors, nobody panics or hangs, the object is gone.
#[test]
fn one_handle_unloaded_by_eight_threads_at_once_unloads_once() {
    bounded("eight unloaders", || {
        let loader: &'static ModuleLoader = leak(ModuleLoader::new());
        for round in 0..10 {
            let m = load(loader, "callbacks");
            let path = loader.info(m).unwrap().loaded_path;
            let go = Arc::new(Barrier::new(8));
            let ths: Vec<_> = (0..8)
                .map(|_| {
                    let go = go.clone();
                    std::thread::spawn(move || {
                        go.wait();
                        loader.unload(m)
                    })
                })
                .collect();
            let rs: Vec<_> = ths
                .into_iter()
                .map(|t| t.join().expect("an unloader panicked"))
                .collect();
            let oks = rs.iter().filter(|r| r.is_ok()).count();
            assert_eq!(oks, 1, "round {round}: {rs:?}");
            for r in rs.iter().flatten() {
                assert!(r.unmapped, "round {round}: {r}");
            }
            assert!(!object_is_mapped(&path), "round {round}: still mapped");
            assert_eq!(loader.state(m), Some(ModuleState::Unloaded), "round {round}");
        }
    });
}

/// A `Live` notifier that keeps calling the new module (a host warming it
/// up) while another thread, which found it with `find`, unloads it: the
/// calls end `Ok` or with a typed error, the unload ends `Ok` or typed, the
/// host survives, and once both are done nothing is left mapped.
#[test]
fn a_live_notifier_calling_the_module_while_another_thread_unloads_it() {
    bounded("live notifier vs unload", || {
        let loader: &'static ModuleLoader = leak(ModuleLoader::new());
        let in_live = leak(AtomicBool::new(false));
        let calls_ok = leak(AtomicUsize::new(0));
        let calls_err: &'static Mutex<Vec<String>> = leak(Mutex::new(Vec::new()));
        loader.register_notifier("warm up", move |ev, info| -> Result<(), String> {
            if ev == ModuleEvent::Live && info.name == "callbacks" {
                // SAFETY: `fx_add` is `extern "C" fn(u64, u64) -> u64` in the fixture.
                let add = unsafe { loader.symbol::<extern "C" fn(u64, u64) -> u64>(info.handle, "fx_add") }
                    .map_err(|e| e.to_string())?;
                in_live.store(true, Ordering::SeqCst);
                let t0 = std::time::Instant::now();
                while t0.elapsed() < Duration::from_millis(500) {
                    match add.call(|f| f.call(1, 2)) {
                        Ok(3) => {
                            calls_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(v) => panic!("wrong answer {v}"),
                        Err(e @ (CallError::NoLiveModule { .. } | CallError::NotLive { .. })) => {
                            calls_err.lock().unwrap().push(e.to_string());
                            break;
                        }
                        Err(e) => {
                            calls_err.lock().unwrap().push(format!("other: {e}"));
                            break;
                        }
                    }
                }
            }
            Ok(())
        });
        let unloader = std::thread::spawn(move || {
            while !in_live.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            let h = loader
                .find("callbacks")
                .expect("the module is Live during its Live notifiers");
            loader.unload(h).map(|r| r.unmapped).map_err(|e| e.to_string())
        });
        // SAFETY: the fixture upholds the plugin contract.
        let loaded = unsafe { loader.load(fixture_path("callbacks")) };
        let un = unloader.join().expect("the unloader panicked");
        eprintln!(
            "load: {loaded:?}; unload: {un:?}; calls ok {}; errors {:?}",
            calls_ok.load(Ordering::Relaxed),
            calls_err.lock().unwrap()
        );
        // Whatever the interleaving, nothing of it stays mapped once
        // everything returned and leftovers are unloaded.
        let _ = loader.unload_all();
        let left = loader.list();
        assert!(left.is_empty(), "left over: {left:?}");
        let errs = calls_err.lock().unwrap();
        assert!(errs.iter().all(|e| !e.starts_with("other")), "{errs:?}");
    });
}

/// A host thread that sees a module in `list()` while its `Coming`
/// notifiers run (init not yet called) and unloads it: a typed error or a
/// clean unload, and the loading thread's `load` ends `Ok` or typed; no
/// hang, no crash, nothing left mapped.
#[test]
fn unload_and_unload_all_of_a_module_still_coming_are_typed_and_leave_nothing() {
    bounded("unload during Coming", || {
        let loader: &'static ModuleLoader = leak(ModuleLoader::new());
        let coming = leak(AtomicBool::new(false));
        let release = leak(AtomicBool::new(false));
        loader.register_notifier("slow coming", move |ev, info| -> Result<(), String> {
            if ev == ModuleEvent::Coming && info.name == "callbacks" {
                coming.store(true, Ordering::SeqCst);
                while !release.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok(())
        });
        for round in 0..2 {
            coming.store(false, Ordering::SeqCst);
            release.store(false, Ordering::SeqCst);
            let other = std::thread::spawn(move || {
                while !coming.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                let h = loader.list().first().expect("the coming module is listed").handle;
                let st = loader.state(h);
                let r = if round == 0 {
                    format!("{:?}", loader.unload(h).map(|r| r.unmapped))
                } else {
                    format!(
                        "{:?}",
                        loader
                            .unload_all()
                            .into_iter()
                            .map(|(h, r)| (h, r.map(|r| r.unmapped)))
                            .collect::<Vec<_>>()
                    )
                };
                release.store(true, Ordering::SeqCst);
                (st, r)
            });
            // SAFETY: the fixture upholds the plugin contract.
            let loaded = unsafe { loader.load(fixture_path("callbacks")) };
            let (st, r) = other.join().expect("the other thread panicked");
            eprintln!("round {round}: state seen {st:?}; other: {r}; load: {loaded:?}");
            if let Ok(h) = loaded {
                if loader.state(h) == Some(ModuleState::Live) {
                    let r = loader.unload(h).expect("unload after load");
                    assert!(r.unmapped, "{r}");
                }
            }
            assert!(loader.list().is_empty(), "round {round}: {:?}", loader.list());
        }
    });
}

/// Two threads reload the same module at once (two file watchers firing on
/// one save). Each `reload` is "load the new copy, then unload the old":
/// afterwards the host should have one live copy of the module, or the
/// loser should have been told with an error that leaves nothing extra
/// live. Prints how many live copies remain; fails if more than one does
/// while both reloads reported success.
#[test]
fn two_threads_reloading_one_module_at_once_leave_one_live_copy_or_say_so() {
    bounded("concurrent reloads", || {
        let loader: &'static ModuleLoader = leak(ModuleLoader::new());
        let path = fixture_path("callbacks");
        load(loader, "callbacks");
        let mut outcomes = Vec::new();
        for round in 0..10 {
            let go = Arc::new(Barrier::new(2));
            let ths: Vec<_> = (0..2)
                .map(|_| {
                    let go = go.clone();
                    let path = path.clone();
                    std::thread::spawn(move || {
                        go.wait();
                        // SAFETY: the fixture upholds the plugin contract.
                        unsafe { loader.reload("callbacks", &path) }
                            .map(|(h, r)| (h, r.unmapped))
                            .map_err(|e| e.to_string())
                    })
                })
                .collect();
            let rs: Vec<_> = ths
                .into_iter()
                .map(|t| t.join().expect("a reloader panicked"))
                .collect();
            let live: Vec<_> = loader
                .list()
                .into_iter()
                .filter(|i| i.state == ModuleState::Live)
                .map(|i| i.handle)
                .collect();
            outcomes.push(format!("round {round}: {rs:?} -> live {live:?}"));
            // Reloads run one at a time (`ModuleLoader::reload`): both
            // succeed, and the copy left live is the one the later returned.
            assert!(rs.iter().all(|r| r.is_ok()), "a reload failed: {outcomes:#?}");
            assert_eq!(live.len(), 1, "{} copies are live: {outcomes:#?}", live.len());
            assert!(
                rs.iter().any(|r| r.as_ref().is_ok_and(|(h, _)| *h == live[0])),
                "the live copy is neither reload's: {outcomes:#?}"
            );
            // Converge to one live copy for the next round.
            while loader.list().iter().filter(|i| i.state == ModuleState::Live).count() > 1 {
                let oldest = loader
                    .list()
                    .into_iter()
                    .find(|i| i.state == ModuleState::Live)
                    .unwrap()
                    .handle;
                loader.unload(oldest).unwrap();
            }
        }
        eprintln!("{outcomes:#?}");
        let _ = loader.unload_all();
    });
}
