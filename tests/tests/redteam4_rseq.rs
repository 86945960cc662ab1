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
use usrcu_tests::{fixture_path, in_child, object_is_mapped, Child, CHILD_ENV};

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
    Some(std::path::PathBuf::from(std::ffi::OsString::from(
        name.to_string_lossy().into_owned(),
    )))
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
        let rc = unsafe { libc::pthread_key_create(&mut k, Some(host_key_destructor)) };
        assert_eq!(rc, 0);
        k
    })
}

/// Rounds of each thread-local destructor scenario (before the fix, every
/// round showed the exiting thread pointing into the plugin).
const TLS_ROUNDS: usize = 3;

/// A plugin thread-local whose destructor runs read sections on a host
/// thread. The unload is reported resident (`ThreadLocalDestructor`): glibc
/// keeps the object until the thread exits. The thread then exits: glibc
/// runs the plugin's destructor directly (no host code clears `rseq_cs`
/// after it) and drops its hold on the object, and the thread, still
/// alive, blocks in a host key destructor. The next `dlclose` of any
/// object, here the loader's unload of another plugin, makes glibc unmap
/// the resident object too, and that unload's rseq proof looks only at its
/// own object. When the thread wakes, the kernel reads the descriptor in
/// the unmapped object: SIGSEGV. Claims: the exiting thread does not point
/// into the plugin once its destructor has run, and the host survives.
///
/// Two defenses: the loader pins an object that `dlclose` left mapped
/// (`address_space::pin_forever` in `unload`), so glibc never unmaps it;
/// and the loader interposes the plugin's `__cxa_thread_atexit_impl`
/// (`key_interposer::thread_atexit`), so host code clears `rseq_cs` after
/// each of its thread-local destructors. Before the interposer existed, with
/// the pin off (`USRCU_LOADER_TEST_NO_PIN=1` in the child), the child died
/// of SIGSEGV when the exiting thread woke (seen, 5 of 5); with the
/// interposer off (`USRCU_LOADER_TEST_SKIP_PROOFS=key-interposer`) this
/// test fails on its `rseq_cs` check.
#[test]
fn a_thread_local_destructor_of_a_resident_plugin_leaves_no_stale_descriptor_for_a_later_dlclose() {
    if !usrcu::rseq_active() {
        eprintln!("SKIPPED: the rseq read path is not in use here; this test checks nothing");
        return;
    }
    if !in_child(CHILD_ENV, None) {
        return Child::new(
            "a_thread_local_destructor_of_a_resident_plugin_leaves_no_stale_descriptor_for_a_later_dlclose",
        )
        .run()
        .assert_passed(
            "",
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
            unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<c_void>()) };
            touch.call(|f| f.call(1000)).unwrap();
            drop(touch);
            touched_tx.send(()).unwrap();
            exit_rx.recv().unwrap();
            // Exits: the plugin's thread-local destructor, then ours.
        });
        touched.recv().unwrap();
        let report = loader.unload(m).unwrap();
        assert_eq!(
            report.resident_cause,
            Some(ResidentCause::ThreadLocalDestructor),
            "{report}"
        );
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
        eprintln!(
            "redteam4 tls: round {round}: rseq_cs {cs:#x} in {holder:?}, plugin unmapped by the other dlclose: {gone}"
        );
        assert!(
            !stale,
            "round {round}: after the plugin's thread-local destructor ran, the exiting thread's rseq_cs \
             pointed at {cs:#x}, in the plugin: nothing cleared it (key_interposer::thread_atexit)"
        );
    }
}

/// A host domain whose callbacks the runtime's SRCU invoker runs.
static HOST_DOMAIN: usrcu::Srcu = usrcu::Srcu::new_static("redteam4-rseq.host");

/// What the invoker thread reported from inside a callback.
#[derive(Debug)]
struct InvokerSaw {
    unmapped: bool,
    tid: i32,
    rseq_active: bool,
    descriptor: u64,
}

/// The unloading thread is the runtime's SRCU invoker: a host callback
/// unloads a plugin whose ELF destructor enters read sections (so
/// `without_rseq` unregisters and re-registers the *invoker's* rseq), then
/// the invoker sleeps and runs more callbacks. Claims: the child survives
/// (no descriptor of the unmapped plugin left on the invoker), and the
/// invoker has its rseq registration back (`usrcu::rseq_active()` in the
/// next callback on the same thread) with no descriptor pointing anywhere
/// right after the unload.
#[test]
fn an_unload_run_by_the_srcu_invoker_gives_the_invoker_its_rseq_back_and_leaves_no_descriptor() {
    if !usrcu::rseq_active() {
        eprintln!("SKIPPED: the rseq read path is not in use here; this test checks nothing");
        return;
    }
    if !in_child(CHILD_ENV, None) {
        return Child::new(
            "an_unload_run_by_the_srcu_invoker_gives_the_invoker_its_rseq_back_and_leaves_no_descriptor",
        )
        .run()
        .assert_passed(
            "",
            "the SRCU invoker that ran the unload kept rseq_cs pointing into the plugin it unmapped",
        );
    }
    let loader = std::sync::Arc::new(ModuleLoader::new());
    for round in 0..5 {
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(fixture_path("reader-call")) }.unwrap();
        // SAFETY: the fixture exports it with this type.
        let arm = unsafe { loader.symbol::<extern "C" fn()>(m, "fx_reader_arm_fini") }.unwrap();
        arm.call(|f| f.call()).unwrap();
        drop(arm);
        let (tx, rx) = std::sync::mpsc::channel::<InvokerSaw>();
        let l = loader.clone();
        let tx2 = tx.clone();
        HOST_DOMAIN.call_srcu(move || {
            let report = l.unload(m).unwrap();
            tx.send(InvokerSaw {
                unmapped: report.unmapped,
                // SAFETY: gettid has no preconditions.
                tid: unsafe { libc::gettid() },
                rseq_active: usrcu::rseq_active(),
                descriptor: usrcu::__testing::rseq_descriptor(),
            })
            .unwrap();
            // Switched out and back in: a stale descriptor kills the child.
            for _ in 0..5 {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let first = rx.recv().unwrap();
        assert!(first.unmapped, "round {round}: {first:?}");
        // No descriptor of the unmapped plugin on the invoker: it either is
        // 0 or lies in a live object.
        assert!(
            first.descriptor == 0 || object_of(first.descriptor).is_some(),
            "round {round}: the invoker's rseq_cs points at {:#x}, in no loaded object",
            first.descriptor
        );
        assert!(
            first.rseq_active,
            "round {round}: the invoker lost its rseq registration: {first:?}"
        );
        HOST_DOMAIN.call_srcu(move || {
            tx2.send(InvokerSaw {
                unmapped: true,
                // SAFETY: gettid has no preconditions.
                tid: unsafe { libc::gettid() },
                rseq_active: usrcu::rseq_active(),
                descriptor: usrcu::__testing::rseq_descriptor(),
            })
            .unwrap();
        });
        let second = rx.recv().unwrap();
        if second.tid == first.tid {
            assert!(
                second.rseq_active,
                "round {round}: the invoker lost its rseq registration: {second:?}"
            );
        }
        eprintln!("redteam4 invoker: round {round}: {first:?} then {second:?}");
    }
}

/// A host thread that ran the plugin's read side through a raw address, then
/// called the public `usrcu::clear_rseq_descriptor` before falling asleep:
/// the unload finds nothing (no `RseqDescriptorInObject` zombie) and unmaps,
/// and the thread survives waking up (docs/abi.md: a host that calls plugin
/// code by a raw address should call it).
#[test]
fn a_host_thread_that_cleared_after_a_raw_call_never_keeps_the_plugin_a_zombie() {
    if !usrcu::rseq_active() {
        eprintln!("SKIPPED: the rseq read path is not in use here; this test checks nothing");
        return;
    }
    if !in_child(CHILD_ENV, None) {
        return Child::new("a_host_thread_that_cleared_after_a_raw_call_never_keeps_the_plugin_a_zombie")
            .run()
            .assert_passed(
                "",
                "a host thread woke with rseq_cs pointing into the unmapped plugin after clearing it",
            );
    }
    let loader = ModuleLoader::new();
    let mut pointed_in = 0usize;
    for round in 0..20 {
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(fixture_path("reader-call")) }.unwrap();
        // SAFETY: the fixture exports it with this type.
        let addr = unsafe { loader.symbol::<extern "C" fn() -> usize>(m, "fx_reader_call_addr") }.unwrap();
        let addr = addr.call(|f| f.call()).unwrap();
        let (ready_tx, ready) = std::sync::mpsc::channel::<u64>();
        let (wake_tx, wake) = std::sync::mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || {
            // SAFETY: `addr` is the loaded object's `fx_reader_call(u64) -> u64`;
            // the call returns before the unload begins (the main thread
            // waits for the message sent after it).
            let f = unsafe { std::mem::transmute::<usize, extern "C" fn(u64) -> u64>(addr) };
            f(1000);
            let before = usrcu::__testing::rseq_descriptor();
            usrcu::clear_rseq_descriptor();
            ready_tx.send(before).unwrap();
            wake.recv().unwrap();
            for _ in 0..5 {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let before = ready.recv().unwrap();
        // Looked up while the plugin is mapped: did the raw call leave the
        // thread pointing into it (so that the clear had work to do)?
        let host = object_of(object_of as *const () as usize as u64);
        let holder = object_of(before);
        pointed_in += (before != 0 && holder.is_some() && holder != host) as usize;
        let report = loader.unload(m).unwrap();
        wake_tx.send(()).unwrap();
        sleeper.join().unwrap();
        assert!(
            report.zombie_cause.is_none() && report.unmapped,
            "round {round}: {report}"
        );
        eprintln!("redteam4 clear: round {round}: rseq_cs before the clear {before:#x}; unmapped");
    }
    assert!(
        pointed_in > 0,
        "in no round did the raw call leave the thread pointing into the plugin: the clear was never tested"
    );
}

/// A plugin's ELF constructor (run by `dlopen`, on the loading thread,
/// before any check) enters read sections of its own domain; used before
/// the host hands the runtime over, that domain keeps the plugin's own
/// runtime, so the load is refused (`RuntimeMismatch`) and the loader closes
/// the object again at once. Claims: the loading thread is left pointing at
/// no descriptor of the object it unmapped (its `rseq_cs` is 0 or lies in a
/// loaded object), and it survives its next context switches.
#[test]
fn a_refused_load_whose_constructor_ran_read_sections_leaves_no_stale_descriptor() {
    if !usrcu::rseq_active() {
        eprintln!("SKIPPED: the rseq read path is not in use here; this test checks nothing");
        return;
    }
    if !in_child(CHILD_ENV, None) {
        let name = "a_refused_load_whose_constructor_ran_read_sections_leaves_no_stale_descriptor";
        Child::new(name).env("USRCU_RT4_CTOR_READS", "1").run().assert_passed(
            "",
            "the loading thread kept rseq_cs pointing into the plugin that the refused load \
             closed (module.rs `open`, error path)",
        );
        return;
    }
    let loader = ModuleLoader::new();
    for round in 0..5 {
        // SAFETY: the fixture upholds the plugin contract but for the domain
        // its constructor used early, which the load refuses.
        let r = unsafe { loader.load(fixture_path("redteam4-rseq")) };
        let cs = usrcu::__testing::rseq_descriptor();
        let holder = object_of(cs);
        let err = r.expect_err("a plugin whose domain kept its own runtime must be refused");
        eprintln!("redteam4 ctor: round {round}: refused ({err}); rseq_cs {cs:#x} in {holder:?}");
        assert!(
            cs == 0 || holder.is_some(),
            "round {round}: after the refused load ({err}) this thread's rseq_cs points at {cs:#x}, \
             in no loaded object: the kernel kills the process at its next context switch"
        );
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A plugin thread-local destructor that runs *after* the unload's proofs,
/// before its `dlclose`: a host thread that holds such a thread-local exits
/// while the unload is stopped between its proofs (the rseq proof saw the
/// thread clean) and its `dlclose` (the loader's `UnloadBeforeDlclose` test
/// pause, reached because the plugin has a `DT_NEEDED` library). glibc runs
/// the plugin's destructor (read sections: the thread's `rseq_cs` now
/// points into the plugin) and drops its hold on the object; the thread
/// then blocks in a host key destructor. The `dlclose` finds no pending
/// destructor and unmaps the object. Claims: the exiting thread does not
/// point into the plugin once its destructor has run, and when it wakes the
/// host survives. Before `key_interposer::thread_atexit` (host code that
/// clears `rseq_cs` after each of the plugin's thread-local destructors),
/// the child died of SIGSEGV (seen, 3 of 3; it survived with
/// `USRCU_RSEQ=0`); with the interposer off
/// (`USRCU_LOADER_TEST_SKIP_PROOFS=key-interposer`) it dies again.
#[test]
fn a_thread_local_destructor_run_between_the_proofs_and_dlclose_leaves_no_stale_descriptor() {
    if !usrcu::rseq_active() {
        eprintln!("SKIPPED: the rseq read path is not in use here; this test checks nothing");
        return;
    }
    if !in_child(CHILD_ENV, None) {
        return Child::new("a_thread_local_destructor_run_between_the_proofs_and_dlclose_leaves_no_stale_descriptor")
            .run()
            .assert_passed(
                "",
                "an exiting host thread woke with rseq_cs pointing into the plugin unmapped after its \
             thread-local destructor ran between the rseq proof and dlclose",
            );
    }
    use usrcu_module_loader::__testing::{pause_at, PausePoint};
    let loader = std::sync::Arc::new(ModuleLoader::new());
    let key = host_key();
    for round in 0..TLS_ROUNDS {
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(fixture_path("redteam4-rseq-needed")) }.unwrap();
        let path = loader.info(m).unwrap().loaded_path;
        // SAFETY: the fixture exports it with this type.
        let touch = unsafe { loader.symbol::<extern "C" fn(u64) -> u32>(m, "fx_rt4n_touch_tls") }.unwrap();
        let (touched_tx, touched) = std::sync::mpsc::channel::<()>();
        let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
        let host = std::thread::spawn(move || {
            // SAFETY: `key` is a live key; any non-null value runs its destructor.
            unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<c_void>()) };
            assert_eq!(touch.call(|f| f.call(1000)).unwrap(), 42);
            drop(touch);
            touched_tx.send(()).unwrap();
            exit_rx.recv().unwrap();
            // Exits: the plugin's thread-local destructor, then ours.
        });
        touched.recv().unwrap();
        let pause = pause_at(PausePoint::UnloadBeforeDlclose);
        let l = loader.clone();
        let unloader = std::thread::spawn(move || l.unload(m).unwrap());
        assert!(
            pause.wait_until_paused(Duration::from_secs(20)),
            "the unload never reached UnloadBeforeDlclose"
        );
        // The proofs are done; the host thread exits now.
        exit_tx.send(()).unwrap();
        let mut b = [0u8];
        // SAFETY: the pipe made by `host_key`; one byte.
        unsafe { libc::read(READY[0].load(Ordering::SeqCst), b.as_mut_ptr().cast(), 1) };
        let cs = SEEN_CS.load(Ordering::SeqCst);
        let stale = cs != 0 && object_of(cs).as_deref() == Some(path.as_path());
        pause.resume();
        let report = unloader.join().unwrap();
        let gone = !object_is_mapped(&path);
        // Wake the exiting thread: a stale descriptor kills the process here.
        // SAFETY: the pipe made by `host_key`; one byte.
        unsafe { libc::write(GO[1].load(Ordering::SeqCst), b.as_ptr().cast(), 1) };
        host.join().unwrap();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(1));
        }
        eprintln!(
            "redteam4 tls-late: round {round}: rseq_cs {cs:#x} in the plugin: {stale}; unmapped {gone}: {report}"
        );
        assert!(gone, "round {round}: the plugin was to be unmapped: {report}");
        assert!(
            !stale,
            "round {round}: after the plugin's thread-local destructor ran, the exiting thread's rseq_cs \
             pointed at {cs:#x}, in the plugin: nothing cleared it (key_interposer::thread_atexit)"
        );
    }
}
