//! A plugin's copy of usrcu looks up the rseq offset (`__rseq_offset`, with
//! `dlsym`) before the plugin's code can run, not the first time the plugin
//! needs it: `usrcu::runtime::install` primes it (srcu/src/runtime/vtable.rs,
//! `prime`). `dlsym` takes glibc's loader lock, which a concurrent `dlopen`
//! or `dlclose` holds for as long as the object's constructors or
//! destructors run; a probe trampoline that clears the rseq descriptor
//! (`usrcu::clear_rseq_descriptor`) inside a Tasks read side would then wait
//! there, counted as quiescent, while the plugin was unmapped under it
//! (tests/tests/redteam6_unload.rs: 4 crashes in 80 loaded runs before).
//!
//! Here a thread holds the loader lock for as long as the test wants: it
//! `dlopen`s a fixture whose constructor blocks on a pipe. Meanwhile another
//! thread calls the plugin's first `clear_rseq_descriptor`. It must return
//! while the lock is still held. Without the priming in `install` it waits
//! until the test lets the constructor go (seen failing).
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::fixture_path;

type PluginU32 = extern "C" fn() -> u32;

/// How long the plugin's call may stay blocked before the test calls it a
/// deadlock on the loader lock and lets the constructor go.
const HANG: Duration = Duration::from_secs(20);

fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

#[test]
fn a_plugins_first_rseq_lookup_does_not_wait_for_the_loader_lock() {
    let plugin = fixture_path("redteam6-probes");
    let holder = fixture_path("dl-lock-holder");
    let loader = Arc::new(ModuleLoader::new());
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(&plugin) }.unwrap();

    // The caller thread is started, and has called into the plugin once
    // (a function that does not touch rseq), before the loader lock is
    // held: a thread's first thread-local with a destructor registers it
    // with `__cxa_thread_atexit_impl`, which takes the same lock (glibc),
    // and a new thread's start-up or the host's first call on it would wait
    // there for reasons that have nothing to do with the priming.
    let go = Arc::new(AtomicBool::new(false));
    let returned = Arc::new(AtomicBool::new(false));
    let warmed = Arc::new(AtomicBool::new(false));
    let caller = {
        let (loader, go, returned, warmed) = (loader.clone(), go.clone(), returned.clone(), warmed.clone());
        thread::spawn(move || {
            // SAFETY: the fixture exports both with this signature.
            let (nothing, clear) = unsafe {
                (
                    loader.symbol::<PluginU32>(m, "fx_nothing").unwrap(),
                    loader.symbol::<PluginU32>(m, "fx_clear_rseq").unwrap(),
                )
            };
            assert_eq!(nothing.call(|f| f.call()).unwrap(), 1);
            warmed.store(true, Ordering::SeqCst);
            while !go.load(Ordering::SeqCst) {
                std::hint::spin_loop();
                thread::yield_now();
            }
            let n = clear.call(|f| f.call()).unwrap();
            returned.store(true, Ordering::SeqCst);
            n
        })
    };
    while !warmed.load(Ordering::SeqCst) {
        thread::yield_now();
    }

    // The constructor's pipes: it writes to `started`, reads from `release`.
    let (started_r, started_w) = pipe();
    let (release_r, release_w) = pipe();
    std::env::set_var("DL_LOCK_HOLDER_FDS", format!("{release_r} {started_w}"));
    let path = std::ffi::CString::new(holder.as_os_str().as_bytes()).unwrap();
    let opener = thread::spawn(move || {
        // SAFETY: a NUL-terminated path; the fixture's only constructor is
        // the pipe handshake.
        let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
        assert!(!h.is_null(), "dlopen of the lock holder failed");
        h as usize
    });
    let mut b = [0u8];
    // SAFETY: a live pipe end and a one-byte buffer.
    assert_eq!(unsafe { libc::read(started_r, b.as_mut_ptr().cast(), 1) }, 1);
    // The constructor runs: the opener holds glibc's loader lock until the
    // test writes to `release`.

    go.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    while !returned.load(Ordering::SeqCst) && t0.elapsed() < HANG {
        thread::sleep(Duration::from_millis(1));
    }
    let in_time = returned.load(Ordering::SeqCst);
    // Let the constructor go, whatever happened.
    // SAFETY: a live pipe end and a one-byte buffer.
    assert_eq!(unsafe { libc::write(release_w, b.as_ptr().cast(), 1) }, 1);
    let h = opener.join().unwrap();
    assert_eq!(caller.join().unwrap(), 1);
    assert!(
        in_time,
        "the plugin's first clear_rseq_descriptor waited for glibc's loader lock, held by a dlopen"
    );
    // SAFETY: the handle `dlopen` returned, closed once.
    unsafe { libc::dlclose(h as *mut libc::c_void) };
    let report = loader.unload(m).unwrap();
    assert!(report.unmapped, "{report}");
    for fd in [started_r, started_w, release_r, release_w] {
        // SAFETY: descriptors this test opened, closed once.
        unsafe { libc::close(fd) };
    }
}
