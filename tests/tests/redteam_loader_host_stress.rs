//! Red team of a busy plugin host through the public API: two loaders in
//! one process; threads loading copies of several fixtures (one with a
//! `DT_NEEDED` C library, one whose std makes a pthread key, one with
//! callbacks) while another thread unloads whatever is live, callers keep
//! calling into the newest copy, and short-lived host threads take values
//! under the plugins' keys. Every unload ends unmapped or as a Zombie that
//! names its cause; nothing crashes (the host runs in a child process, so a
//! signal is seen) and nothing hangs (a bounded wait).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use usrcu_module_loader::{ModuleLoader, ModuleState, UnloadError, UnloadReport};
use usrcu_tests::{fixture_path, in_child, leak, Child, CHILD_ENV};

type QueueFn = unsafe extern "C" fn(usize, u64, *const AtomicUsize);
type AddFn = extern "C" fn(u64, u64) -> u64;
type HoldFn = extern "C" fn() -> u32;
type NameFn = unsafe extern "C" fn(*mut u8, usize) -> usize;

const FIXTURES: [&str; 3] = ["callbacks", "needed-lib", "thread-current"];
const LOADS_PER_THREAD: usize = 12;

/// One call into the newest live copy of `fixture`, on a short-lived thread
/// (its exit runs the key destructors of whatever it touched).
fn touch(loader: &'static ModuleLoader, fixture: &str, ran: &'static AtomicUsize) {
    let Some(m) = loader.find(fixture) else { return };
    thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: each fixture exports its function with these types.
            let _ = unsafe {
                match fixture {
                    "callbacks" => loader
                        .symbol::<QueueFn>(m, "fx_queue_callbacks")
                        .map(|q| q.call(|f| f.call(2, 0, ran)).map(|_| ())),
                    "needed-lib" => loader
                        .symbol::<HoldFn>(m, "fx_needed_hold")
                        .map(|h| h.call(|f| f.call()).map(|_| ())),
                    _ => loader.symbol::<NameFn>(m, "fx_thread_name").map(|n| {
                        let mut buf = [0u8; 32];
                        n.call(|f| f.call(buf.as_mut_ptr(), buf.len())).map(|_| ())
                    }),
                }
            };
        });
    });
}

/// An unload's outcome for a failure message, with a Zombie's cause by name.
fn outcome(r: &Result<UnloadReport, UnloadError>) -> String {
    match r {
        Ok(r) => format!("{r} (zombie cause: {:?})", r.zombie_cause),
        Err(e) => format!("error: {e}"),
    }
}

fn host(loaders: [&'static ModuleLoader; 2]) {
    let ran = leak(AtomicUsize::new(0));
    let done = leak(AtomicBool::new(false));
    let outcomes = leak(std::sync::Mutex::new(Vec::<String>::new()));
    thread::scope(|s| {
        let mut loading = Vec::new();
        for (i, loader) in loaders.iter().copied().enumerate() {
            for t in 0..2 {
                loading.push(s.spawn(move || {
                    for k in 0..LOADS_PER_THREAD {
                        let fixture = FIXTURES[(i + t + k) % FIXTURES.len()];
                        // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
                        unsafe { loader.load(fixture_path(fixture)) }.unwrap();
                        touch(loader, fixture, ran);
                    }
                }));
            }
        }
        for loader in loaders {
            // Callers into the newest copy.
            s.spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    if let Some(m) = loader.find("callbacks") {
                        // SAFETY: the fixture exports it with this type.
                        if let Ok(add) = unsafe { loader.symbol::<AddFn>(m, "fx_add") } {
                            if let Ok(v) = add.call(|f| f.call(20, 22)) {
                                assert_eq!(v, 42);
                            }
                        }
                    }
                    thread::yield_now();
                }
            });
            // The unloader: whatever is live, as it comes.
            s.spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    for info in loader.list() {
                        if info.state != ModuleState::Live {
                            continue;
                        }
                        for f in FIXTURES {
                            touch(loader, f, ran);
                        }
                        match loader.unload(info.handle) {
                            Ok(r) => {
                                let ok = r.unmapped || (r.state == ModuleState::Zombie && r.zombie_cause.is_some());
                                if !ok {
                                    outcomes.lock().unwrap().push(format!("{r}"));
                                }
                            }
                            // Raced with the other unloaders of this loader: not live any more.
                            Err(UnloadError::NotLive { .. }) => {}
                            Err(e) => outcomes.lock().unwrap().push(e.to_string()),
                        }
                    }
                    thread::yield_now();
                }
            });
        }
        for t in loading {
            t.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
    });
    // The rest, retried until every zombie's cause is gone.
    for (n, loader) in loaders.into_iter().enumerate() {
        // Each module's latest unload outcome, for the failure message.
        let mut last = std::collections::BTreeMap::new();
        for _ in 0..200 {
            for (h, r) in loader.unload_all() {
                last.insert(h, outcome(&r));
                match r {
                    Ok(r) if r.unmapped || r.state == ModuleState::Zombie => {}
                    Ok(r) => outcomes.lock().unwrap().push(format!("{r}")),
                    Err(e) => outcomes.lock().unwrap().push(e.to_string()),
                }
            }
            let zombies: Vec<_> = loader
                .list()
                .into_iter()
                .filter(|i| i.state == ModuleState::Zombie)
                .collect();
            if zombies.is_empty() {
                break;
            }
            for z in zombies {
                last.insert(z.handle, outcome(&loader.unload(z.handle)));
            }
            thread::sleep(Duration::from_millis(5));
        }
        let left = loader.list();
        assert!(
            left.is_empty(),
            "loader {n}: still held after 200 retries:\n{}",
            left.iter()
                .map(|i| format!(
                    "{} '{}' {:?} ({}); last unload: {}",
                    i.handle,
                    i.name,
                    i.state,
                    i.loaded_path.display(),
                    last.get(&i.handle).map_or("none", String::as_str)
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let outcomes = outcomes.lock().unwrap();
    assert!(outcomes.is_empty(), "{outcomes:#?}");
    assert!(
        !usrcu_tests::fxneeded_mapped(),
        "the shared C library left with its last user"
    );
}

#[test]
fn two_loaders_loading_calling_and_unloading_from_many_threads_never_crash_or_hang_the_host() {
    if in_child(CHILD_ENV, None) {
        host([leak(ModuleLoader::new()), leak(ModuleLoader::new())]);
        // Threads that held plugin keys have exited; one more round of exits.
        thread::spawn(|| ()).join().unwrap();
        std::process::exit(0);
    }
    let ran = Child::new("two_loaders_loading_calling_and_unloading_from_many_threads_never_crash_or_hang_the_host")
        .timeout(Duration::from_secs(120))
        .run();
    assert!(!ran.timed_out, "the host hung\n{}", ran.describe());
    ran.assert_passed("", "the host died or a check failed in the child");
}
