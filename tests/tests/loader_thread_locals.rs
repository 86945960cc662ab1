//! Plugin code that leaves per-thread state on host threads: a thread-local
//! destructor pins the object (reported as resident, nothing crashes); a
//! pthread key from `std::thread::current()` does not pin it, so the loader
//! deletes the key before `dlclose` (the host thread then exits without
//! crashing, and reloads leak no keys).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread;

use usrcu_module_loader::pthread_keys::keys_in_use;
use usrcu_module_loader::{ModuleLoader, ModuleState, ResidentCause};
use usrcu_tests::{fixture_path, leak, object_is_mapped};

/// The tests of this file run one at a time: the key-leak check counts the
/// process's pthread keys, which another test's plugin would change.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

type TouchFn = unsafe extern "C" fn(*const AtomicUsize);
type NameFn = unsafe extern "C" fn(*mut u8, usize) -> usize;

#[test]
fn thread_local_destructor_plugin_is_reported_resident_and_nothing_crashes() {
    let _serial = serial();
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("tls-destructor")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    let dropped = leak(AtomicUsize::new(0));
    // SAFETY: the fixture exports it with this signature.
    let touch = unsafe { loader.symbol::<TouchFn>(m, "fx_touch_tls").unwrap() };
    let (go, wait) = mpsc::channel::<()>();
    let (done_tx, done) = mpsc::channel::<()>();
    let host_thread = thread::spawn(move || {
        // SAFETY: `dropped` lives for the process.
        touch.call(|f| unsafe { f.call(dropped) }).unwrap();
        drop(touch);
        done_tx.send(()).unwrap();
        // Stay alive across the unload.
        wait.recv().unwrap();
    });
    done.recv().unwrap();

    let report = loader.unload(m).unwrap();

    assert_eq!(report.state, ModuleState::Unloaded);
    assert!(report.dlclosed);
    assert!(!report.unmapped, "{report}");
    assert_eq!(report.resident_cause, Some(ResidentCause::ThreadLocalDestructor));
    assert!(object_is_mapped(&path));
    // The thread exits: the plugin's destructor runs, in code glibc kept mapped.
    go.send(()).unwrap();
    host_thread.join().unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

fn name_from_plugin(loader: &ModuleLoader, m: usrcu_module_loader::ModuleHandle) -> String {
    // SAFETY: the fixture exports it with this signature.
    let name = unsafe { loader.symbol::<NameFn>(m, "fx_thread_name").unwrap() };
    let mut buf = [0u8; 64];
    // SAFETY: `buf` has 64 writable bytes.
    let n = name.call(|f| unsafe { f.call(buf.as_mut_ptr(), buf.len()) }).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn thread_current_plugin_key_is_deleted_and_thread_exit_does_not_crash() {
    let _serial = serial();
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("thread-current")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    thread::scope(|s| {
        let (go, wait) = mpsc::channel::<()>();
        let (name_tx, name) = mpsc::channel::<String>();
        let loader = &loader;
        let host_thread = thread::Builder::new()
            .name("host-caller".into())
            .spawn_scoped(s, move || {
                name_tx.send(name_from_plugin(loader, m)).unwrap();
                // Exit only after the plugin is unmapped.
                wait.recv().unwrap();
            })
            .unwrap();
        // The plugin's own std does not know the host's name for the thread;
        // it made itself a handle for it, and with it the pthread key.
        assert!(!name.recv().unwrap().is_empty());

        let report = loader.unload(m).unwrap();

        assert!(report.pthread_keys_deleted >= 1, "{report:?}");
        assert!(report.unmapped, "{report}");
        assert!(!object_is_mapped(&path));
        // Without the key deleted, glibc would call its destructor here, in
        // unmapped code.
        go.send(()).unwrap();
        host_thread.join().unwrap();
    });
}

#[test]
fn reloading_a_thread_current_plugin_leaks_no_pthread_keys() {
    let _serial = serial();
    let loader = ModuleLoader::new();
    let path = fixture_path("thread-current");
    // Warm up whatever this thread's own std lazily creates.
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(&path) }.unwrap();
    name_from_plugin(&loader, m);
    assert!(loader.unload(m).unwrap().unmapped);
    let before = keys_in_use().expect("glibc's key table is readable here");
    for _ in 0..40 {
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(&path) }.unwrap();
        name_from_plugin(&loader, m);
        let report = loader.unload(m).unwrap();
        assert!(report.unmapped && report.pthread_keys_deleted >= 1, "{report:?}");
    }
    assert_eq!(keys_in_use(), Some(before));
}
