//! Red team 4: stale rseq descriptors and unload, through the public API.
//!
//! usrcu's read side leaves the thread's `rseq->rseq_cs` pointing at the
//! `struct rseq_cs` of the object whose code ran the section (as librseq
//! does); once that object is unmapped, the kernel kills the process with
//! SIGSEGV at the thread's next return to user space after a context switch
//! (docs/abi.md, "rseq and unload"). The loader's defenses look at the
//! object *it* unloads. Each scenario runs in a child process, so that a
//! crash shows as a failed assertion naming the signal.
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use std::ffi::c_void;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use usrcu_module_loader::{ModuleLoader, ResidentCause};
use usrcu_tests::{fixture_path, in_child, killed_by, object_is_mapped, rerun_in_child};

/// Run test `name` in a child process and require it to exit cleanly,
/// naming a fatal signal as the stale descriptor it means.
fn in_child_must_survive(name: &str, what: &str) {
    let status = rerun_in_child(name, &[]);
    match killed_by(status) {
        None => assert!(status.success(), "the child failed: {status} (its stderr is above)"),
        Some(sig) => panic!("the child died of signal {sig}: {what}"),
    }
}

/// The file of the loaded object that holds `addr` (`dladdr`), if any.
fn object_of(addr: u64) -> Option<std::path::PathBuf> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only looks `addr` up and fills `info`.
    if unsafe { libc::dladdr(addr as *const c_void, info.as_mut_ptr()) } == 0 {
        return None;
    }
    // SAFETY: filled by the successful call; `dli_fname` is a C string
    // owned by the dynamic linker (copied at once).
    let name = unsafe { std::ffi::CStr::from_ptr(info.assume_init().dli_fname) };
    Some(std::path::PathBuf::from(std::ffi::OsString::from(name.to_string_lossy().into_owned())))
}

/// The pipes between an exiting host thread's key destructor and the main
/// thread: the destructor writes `READY_W` and then blocks reading `GO_R`.
static READY: [AtomicI32; 2] = [AtomicI32::new(-1), AtomicI32::new(-1)];
static GO: [AtomicI32; 2] = [AtomicI32::new(-1), AtomicI32::new(-1)];
/// The exiting thread's `rseq_cs` as its key destructor found it.
static SEEN_CS: AtomicU64 = AtomicU64::new(0);

/// A host pthread-key destructor: glibc runs it at thread exit after the
/// thread-local destructors (`__call_tls_dtors`, then
/// `__nptl_deallocate_tsd`). It records the thread's `rseq_cs`, then blocks
/// in `read` (asleep in the kernel: nothing clears `rseq_cs` until it
/// returns to user space) until the main thread says go.
extern "C" fn host_key_destructor(_: *mut c_void) {
    SEEN_CS.store(usrcu::__testing::rseq_descriptor(), Ordering::SeqCst);
    let mut b = [1u8];
    // SAFETY: the fds are the pipes `pipes()` made for the process; `b` is
    // one byte, readable and writable.
    unsafe {
        libc::write(READY[1].load(Ordering::SeqCst), b.as_ptr().cast(), 1);
        libc::read(GO[0].load(Ordering::SeqCst), b.as_mut_ptr().cast(), 1);
    }
}

/// The host key whose destructor is `host_key_destructor`, and the pipes.
fn host_key() -> libc::pthread_key_t {
    static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();
    *KEY.get_or_init(|| {
        for p in [&READY, &GO] {
            let mut fds = [0i32; 2];
            // SAFETY: `fds` has room for the two descriptors.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            p[0].store(fds[0], Ordering::SeqCst);
            p[1].store(fds[1], Ordering::SeqCst);
        }
        let mut k: libc::pthread_key_t = 0;
        // SAFETY: `k` is writable; the destructor lives for the process.
        assert_eq!(unsafe { libc::pthread_key_create(&mut k, Some(host_key_destructor)) }, 0);
        k
    })
}

/// Rounds tried for one in which the exiting thread still pointed into the
/// plugin when its key destructor looked (it was not switched out in the
/// few instructions between the plugin's thread-local destructor and it).
const TLS_ROUNDS: usize = 50;

/// A plugin thread-local whose destructor runs read sections on a host
/// thread. The unload is reported resident (`ThreadLocalDestructor`): glibc
/// keeps the object until the thread exits. The thread then exits: glibc
/// runs the plugin's destructor directly (no host code clears `rseq_cs`
/// after it) and drops its hold on the object, and the thread, still
/// alive, blocks in a host key destructor. The next `dlclose` of any
/// object, here the loader's unload of another plugin, makes glibc unmap
/// the resident object too, and that unload's rseq proof looks only at its
/// own object. When the thread wakes, the kernel reads the descriptor in
/// the unmapped object: SIGSEGV. The correct behaviour: the host survives.
///
/// Held: the loader pins an object that `dlclose` left mapped
/// (`address_space::pin_forever` in `unload`), so glibc never unmaps it.
/// With that pin off (`USRCU_LOADER_TEST_NO_PIN=1` in the child) the child
/// dies of SIGSEGV when the exiting thread wakes (seen).
#[test]
fn a_thread_local_destructor_of_a_resident_plugin_leaves_no_stale_descriptor_for_a_later_dlclose() {
    if !usrcu::rseq_active() {
        eprintln!("SKIPPED: the rseq read path is not in use here; this test checks nothing");
        return;
    }
    if !in_child() {
        return in_child_must_survive(
            "a_thread_local_destructor_of_a_resident_plugin_leaves_no_stale_descriptor_for_a_later_dlclose",
            "an exiting host thread woke with rseq_cs pointing into a plugin that glibc unmapped \
             during the loader's dlclose of another plugin",
        );
    }
    let loader = ModuleLoader::new();
    let key = host_key();
    for round in 0..TLS_ROUNDS {
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(fixture_path("redteam4-rseq")) }.unwrap();
        let path = loader.info(m).unwrap().loaded_path;
        // SAFETY: the fixture exports it with this type.
        let touch = unsafe { loader.symbol::<extern "C" fn(u64)>(m, "fx_rt4_touch_tls") }.unwrap();
        let (touched_tx, touched) = std::sync::mpsc::channel::<()>();
        let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
        let host = std::thread::spawn(move || {
            // SAFETY: `key` is a live key; any non-null value runs its destructor.
            unsafe { libc::pthread_setspecific(key, 1 as *const c_void) };
            touch.call(|f| f.call(1000)).unwrap();
            drop(touch);
            touched_tx.send(()).unwrap();
            exit_rx.recv().unwrap();
            // Exits: the plugin's thread-local destructor, then ours.
        });
        touched.recv().unwrap();
        let report = loader.unload(m).unwrap();
        assert_eq!(report.resident_cause, Some(ResidentCause::ThreadLocalDestructor), "{report}");
        exit_tx.send(()).unwrap();
        let mut b = [0u8];
        // SAFETY: the pipe made by `host_key`; one byte.
        unsafe { libc::read(READY[0].load(Ordering::SeqCst), b.as_mut_ptr().cast(), 1) };
        let cs = SEEN_CS.load(Ordering::SeqCst);
        let holder = object_of(cs);
        let stale = cs != 0 && holder.as_deref() == Some(path.as_path());
        // Another plugin's load and unload: its dlclose lets glibc unmap the
        // resident object whose thread-local destructor has now run.
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let other = unsafe { loader.load(fixture_path("reader-call")) }.unwrap();
        let again = loader.unload(other).unwrap();
        assert!(again.unmapped, "{again}");
        let gone = !object_is_mapped(&path);
        // Wake the exiting thread: a stale descriptor kills the process here.
        // SAFETY: the pipe made by `host_key`; one byte.
        unsafe { libc::write(GO[1].load(Ordering::SeqCst), b.as_ptr().cast(), 1) };
        host.join().unwrap();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(1));
        }
        if stale {
            eprintln!(
                "redteam4 tls: round {round}: the exiting thread pointed into the resident plugin \
                 (unmapped by the other dlclose: {gone}); survived"
            );
            return;
        }
        eprintln!("redteam4 tls: round {round} shows nothing (stale {stale}, unmapped {gone}, cs {cs:#x} in {holder:?}, plugin {path:?})");
    }
    panic!("in {TLS_ROUNDS} rounds the exiting thread never still pointed into the plugin when its key destructor looked");
}
