//! Host threads that ran a plugin's read side, and the plugin's unload:
//! every thread survives its context switches after the unmap.
//!
//! The plugin's lock and unlock are inlined into its own code, so each
//! commits in a restartable sequence whose `struct rseq_cs` descriptor lies
//! in the plugin's object, and leaves the thread's `rseq->rseq_cs` pointing
//! there (as librseq does; srcu/src/reader/rseq.rs). Once the object is
//! unmapped, the kernel, on such a thread's next return to user space after
//! a context switch, fails to read the descriptor and kills the process
//! with SIGSEGV. The defenses (docs/abi.md, "rseq and unload"): the
//! loader's `rseq` proof (module-loader/src/proofs/rseq.rs) reads every
//! thread's `rseq_cs` before `dlclose` and has running threads cleared
//! with `membarrier(..._EXPEDITED_RSEQ)`, or keeps the object as a zombie
//! naming sleeping ones; the runtime's invokers clear it after each
//! callback; `dlclose` (the plugin's ELF destructors) runs without the
//! unloading thread's rseq registration. Each scenario runs in a child
//! process, so that a crash shows as a failed assertion naming the signal.
//!
//! In the first test, two things would hide the stale pointer, and the
//! scenario avoids both:
//! - the host's own copy of usrcu running an rseq sequence after the
//!   plugin's (it would overwrite `rseq_cs` with a descriptor in the test
//!   binary): `Symbol::call` holds a read section of the module's liveness
//!   domain around the call, so the host thread calls the plugin's function
//!   by its address instead, strictly before the unload begins;
//! - a context switch while the object is still mapped: the kernel then
//!   reads the descriptor, sees the thread outside the sequence and clears
//!   `rseq_cs` itself. So the host thread spins, without a syscall that
//!   could block, from its last call until the unload has returned, and
//!   counts its own context switches (`getrusage(RUSAGE_THREAD)`) across
//!   that window; a round in which it was switched out proves nothing and
//!   is repeated, and the test requires at least one round in which it was
//!   not. With the rseq proof off (`USRCU_LOADER_TEST_SKIP_PROOFS=rseq`)
//!   the child dies of SIGSEGV (seen).
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::{fixture_path, in_child, Child, CHILD_ENV};

type ReaderCallFn = extern "C" fn(u64) -> u64;
type UsizeFn = extern "C" fn() -> usize;

/// Read sections each round's host thread enters in the plugin before its
/// last call (enough for the CPU's chunk to be allocated, after which the
/// plugin's reads take the rseq path).
const CALLS: u64 = 1000;
/// Rounds that must see no context switch in the window before the child
/// stops; rounds tried at most (on a loaded machine most rounds can see one:
/// 3 clean of 16 were seen while other builds ran on 2 cores). A round that
/// is not clean skips its sleeps, so it costs a load and an unload only.
const CLEAN_ROUNDS: usize = 3;
const MAX_ROUNDS: usize = 400;
/// Sleeps (each one a context switch) after the unload; the first already
/// kills the process when `rseq_cs` is stale.
const SLEEPS: usize = 20;

/// Voluntary and involuntary context switches of the calling thread so far.
fn context_switches() -> i64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a writable `rusage`; RUSAGE_THREAD reports on the
    // calling thread only.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD) failed");
    // SAFETY: initialised by the successful call (and zeroed before it).
    let ru = unsafe { ru.assume_init() };
    ru.ru_nvcsw + ru.ru_nivcsw
}

/// What one round's host thread saw.
struct Round {
    /// Read sections it entered in the plugin.
    reads: u64,
    /// It was not switched out between its last plugin call and the end of
    /// the unload (so the rseq state the plugin left reached the unmap).
    clean: bool,
}

/// One round: load the plugin, run its reader on a host thread, unload it
/// (unmapped, checked) while that thread spins, then let the thread sleep
/// and come back.
fn round(loader: &ModuleLoader) -> Round {
    let path = fixture_path("reader-call");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(&path) }.unwrap();
    let loaded = loader.info(m).unwrap().loaded_path;
    // SAFETY: the fixture exports each of these with the type given.
    let addr = unsafe { loader.symbol::<UsizeFn>(m, "fx_reader_call_addr") }.unwrap();
    // SAFETY: as above.
    let locks = unsafe { loader.symbol::<UsizeFn>(m, "fx_reader_rseq_locks") }.unwrap();
    // SAFETY: as above.
    let active = unsafe { loader.symbol::<extern "C" fn() -> bool>(m, "fx_reader_rseq_active") }.unwrap();
    let addr = addr.call(|f| f.call()).unwrap();
    assert!(
        active.call(|f| f.call()).unwrap(),
        "the host's usrcu takes the rseq path but the plugin's copy does not"
    );

    let ready = AtomicBool::new(false);
    let unloaded = AtomicBool::new(false);
    let (seen, rseq_locks, report) = std::thread::scope(|s| {
        let host = s.spawn(|| {
            // SAFETY: `addr` is the loaded object's `fx_reader_call`, of
            // type `ReaderCallFn` (the fixture says so); every call below returns before `ready` is
            // set, and the unload that unmaps the object starts only after
            // the main thread has seen `ready`.
            let reader_call: ReaderCallFn = unsafe { std::mem::transmute::<usize, ReaderCallFn>(addr) };
            let mut reads = reader_call(CALLS);
            let before = context_switches();
            reads += reader_call(1);
            // Release: pairs with the Acquire load before the unload, which
            // so begins after every call into the object has returned.
            ready.store(true, Ordering::Release);
            // Acquire: pairs with the Release store after the unload.
            while !unloaded.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let clean = context_switches() == before;
            // Only a clean round can show the stale pointer; the others
            // already had it cleared by the kernel before the unmap.
            if clean {
                for _ in 0..SLEEPS {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Round { reads, clean }
        });
        while !ready.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        let rseq_locks = locks.call(|f| f.call()).unwrap();
        let report = loader.unload(m).unwrap();
        // Release: pairs with the host thread's Acquire loop.
        unloaded.store(true, Ordering::Release);
        (host.join().unwrap(), rseq_locks, report)
    });
    assert_eq!(seen.reads, CALLS + 1, "the host thread ran the plugin's reader");
    assert!(
        rseq_locks as u64 > CALLS / 2,
        "only {rseq_locks} of the plugin's {} read sections took the rseq path",
        seen.reads
    );
    assert!(report.unmapped, "the plugin must leave the address space: {report}");
    assert!(!usrcu_tests::object_is_mapped(&loaded), "{report}");
    seen
}

#[test]
fn host_thread_that_ran_a_plugin_reader_survives_context_switches_after_the_unload() {
    if !usrcu::rseq_active() {
        eprintln!(
            "SKIPPED: the rseq read path is not in use here (glibc without rseq, \
             GLIBC_TUNABLES=glibc.pthread.rseq=0 or USRCU_RSEQ=0); this test checks nothing"
        );
        return;
    }
    if in_child(CHILD_ENV, None) {
        let loader = ModuleLoader::new();
        let (mut tried, mut clean) = (0, 0);
        while clean < CLEAN_ROUNDS && tried < MAX_ROUNDS {
            tried += 1;
            clean += round(&loader).clean as usize;
        }
        eprintln!("rseq unload: {clean} of {tried} rounds without a context switch before the unmap");
        assert!(
            clean > 0,
            "in each of {tried} rounds the host thread was switched out before the unmap, \
             so the kernel cleared rseq_cs itself and no round tested the clear"
        );
        return;
    }
    let ran = Child::new("host_thread_that_ran_a_plugin_reader_survives_context_switches_after_the_unload").run();
    let signal = ran.signal().map(|s| match s {
        libc::SIGSEGV => "SIGSEGV".to_owned(),
        libc::SIGBUS => "SIGBUS".to_owned(),
        s => format!("signal {s}"),
    });
    ran.assert_passed(
        "",
        &match signal {
            Some(sig) => format!(
                "the child died of {sig}: the kernel found rseq_cs pointing into the unloaded plugin \
                 (the loader's rseq proof, module-loader/src/proofs/rseq.rs, missed it?)"
            ),
            None => "the child failed".to_owned(),
        },
    );
}

/// Rounds tried for a round that shows the case (the thread not switched
/// out between its last plugin call and the unload's look).
const ASLEEP_ROUNDS: usize = 200;

/// A host thread that ran the plugin's read side by a raw address and then
/// fell asleep still points at the plugin's descriptor: the rseq proof keeps
/// the plugin mapped as a `Zombie` naming that thread. Woken, the thread is
/// cleared by the kernel (the object is still mapped), and unloading the
/// zombie again unmaps it. With the proof off
/// (`USRCU_LOADER_TEST_SKIP_PROOFS=rseq`) the child dies of SIGSEGV when the
/// thread wakes (seen).
#[test]
fn a_thread_asleep_pointing_at_the_plugins_descriptor_keeps_it_a_zombie_until_it_has_run() {
    if !usrcu::rseq_active() {
        eprintln!("SKIPPED: the rseq read path is not in use here; this test checks nothing");
        return;
    }
    if !in_child(CHILD_ENV, None) {
        return Child::new("a_thread_asleep_pointing_at_the_plugins_descriptor_keeps_it_a_zombie_until_it_has_run")
            .run()
            .assert_passed(
                "",
                "a thread woke with rseq_cs pointing into the unmapped plugin (proofs/rseq.rs)",
            );
    }
    let loader = ModuleLoader::new();
    let path = fixture_path("reader-call");
    for round in 0..ASLEEP_ROUNDS {
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(&path) }.unwrap();
        let loaded = loader.info(m).unwrap().loaded_path;
        // SAFETY: the fixture exports it with this type.
        let addr = unsafe { loader.symbol::<UsizeFn>(m, "fx_reader_call_addr") }.unwrap();
        let addr = addr.call(|f| f.call()).unwrap();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel::<i32>();
        let (wake_tx, wake_rx) = std::sync::mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || {
            // SAFETY: `addr` is the loaded object's `fx_reader_call`; the
            // call returns before the unload begins (the main thread waits
            // for the tid sent after it).
            let reader_call: ReaderCallFn = unsafe { std::mem::transmute::<usize, ReaderCallFn>(addr) };
            reader_call(CALLS);
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            wake_rx.recv().unwrap();
            // Switched out and back in a few times: a stale descriptor in
            // an unmapped object kills the process here.
            for _ in 0..SLEEPS {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let tid = tid_rx.recv().unwrap();
        let report = loader.unload(m).unwrap();
        match &report.zombie_cause {
            Some(usrcu_module_loader::ZombieCause::RseqDescriptorInObject { threads }) => {
                assert_eq!(threads, &vec![tid], "{report}");
                assert!(!report.unmapped && usrcu_tests::object_is_mapped(&loaded), "{report}");
                wake_tx.send(()).unwrap();
                sleeper.join().unwrap();
                let again = loader.unload(m).unwrap();
                assert!(again.unmapped, "the zombie stays after its thread ran: {again}");
                eprintln!("rseq asleep: round {round} kept a zombie naming thread {tid}, unmapped once it ran");
                return;
            }
            None => {
                // The thread was switched out before it slept (the kernel
                // cleared it): unmapped, and this round shows nothing.
                assert!(report.unmapped, "{report}");
                wake_tx.send(()).unwrap();
                sleeper.join().unwrap();
            }
            Some(other) => panic!("unexpected zombie cause: {other}"),
        }
    }
    panic!("in {ASLEEP_ROUNDS} rounds the sleeping thread was always cleared before the unload looked");
}

/// The runtime's callback invoker runs a plugin callback that enters the
/// plugin's read sections, then sleeps: it must not keep pointing at the
/// plugin's descriptor (`run_batch` clears it after each callback), or the
/// unload would have to keep the plugin as a `Zombie` (seen: with that
/// clear removed, this unload is a zombie naming the invoker thread).
#[test]
fn a_plugin_callback_with_read_sections_leaves_no_descriptor_on_the_invoker() {
    callbacks_with_read_sections_leave_no_descriptor("fx_reader_queue_reads");
}

/// The same for a Tasks Trace callback of the plugin, run by the host's
/// Tasks Trace callback thread (seen: a zombie naming that thread with the
/// clear after each callback in `trace/engine.rs` removed).
#[test]
fn a_plugin_trace_callback_with_read_sections_leaves_no_descriptor_on_its_thread() {
    callbacks_with_read_sections_leave_no_descriptor("fx_reader_trace_reads");
}

/// The same for a Tasks callback of the plugin, run by the host's Tasks
/// callback thread (seen: a zombie naming that thread with the clear after
/// each callback in `tasks/engine.rs` removed).
#[test]
fn a_plugin_tasks_callback_with_read_sections_leaves_no_descriptor_on_its_thread() {
    callbacks_with_read_sections_leave_no_descriptor("fx_reader_tasks_reads");
}

/// Load the plugin, have `queue` (a fixture function) queue a callback that
/// enters the plugin's read sections, unload: unmapped, never a zombie.
fn callbacks_with_read_sections_leave_no_descriptor(queue: &str) {
    if !usrcu::rseq_active() {
        eprintln!("SKIPPED: the rseq read path is not in use here; this test checks nothing");
        return;
    }
    let loader = ModuleLoader::new();
    let path = fixture_path("reader-call");
    for _ in 0..5 {
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(&path) }.unwrap();
        // SAFETY: the fixture exports it with this type.
        let queue = unsafe { loader.symbol::<extern "C" fn(u64)>(m, queue) }.unwrap();
        queue.call(|f| f.call(CALLS)).unwrap();
        let report = loader.unload(m).unwrap();
        assert!(report.unmapped, "{report}");
        assert!(report.zombie_cause.is_none(), "{report}");
    }
}

/// The plugin's ELF destructor (run by `dlclose` on the unloading thread,
/// right before the unmap) enters read sections: the loader runs `dlclose`
/// without the thread's rseq registration (`proofs::rseq::without_rseq`),
/// so no descriptor of the plugin is left on it, and the thread survives
/// its next context switches. With that off
/// (`USRCU_LOADER_TEST_SKIP_PROOFS=rseq-dlclose`) the child dies of SIGSEGV
/// (seen).
#[test]
fn a_plugin_destructor_with_read_sections_leaves_no_descriptor_on_the_unloading_thread() {
    if !usrcu::rseq_active() {
        eprintln!("SKIPPED: the rseq read path is not in use here; this test checks nothing");
        return;
    }
    if !in_child(CHILD_ENV, None) {
        return Child::new("a_plugin_destructor_with_read_sections_leaves_no_descriptor_on_the_unloading_thread")
            .run()
            .assert_passed(
                "",
                "the unloading thread kept rseq_cs pointing into the plugin its dlclose unmapped",
            );
    }
    let loader = ModuleLoader::new();
    let path = fixture_path("reader-call");
    for _ in 0..5 {
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(&path) }.unwrap();
        // SAFETY: the fixture exports it with this type.
        let arm = unsafe { loader.symbol::<extern "C" fn()>(m, "fx_reader_arm_fini") }.unwrap();
        arm.call(|f| f.call()).unwrap();
        let report = loader.unload(m).unwrap();
        assert!(report.unmapped, "{report}");
        for _ in 0..SLEEPS {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(
        usrcu::rseq_active(),
        "the unloading thread got its rseq registration back"
    );
}

/// A host thread calls a plugin's hook through a `HookSlot` (the hook
/// enters the plugin's read sections), then sleeps: `HookSlot::call`
/// clears the thread's rseq descriptor after the hook, so the unload
/// unmaps the plugin instead of keeping it a zombie for that thread (seen:
/// with the clear removed from `HookSlot::call`, the unload is a zombie
/// naming the thread).
#[test]
fn a_thread_asleep_after_calling_a_plugin_hook_does_not_keep_the_plugin() {
    use usrcu::tasks::HookSlot;
    static SLOT: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
    if !usrcu::rseq_active() {
        eprintln!("SKIPPED: the rseq read path is not in use here; this test checks nothing");
        return;
    }
    let loader = ModuleLoader::new();
    let path = fixture_path("reader-call");
    for round in 0..5 {
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(&path) }.unwrap();
        // SAFETY: `fx_reader_hook` is an `extern "C" fn(u64) -> u64` that
        // never blocks; the loader empties the slot before the unmap.
        unsafe { loader.install_hook(m, &SLOT, "fx_reader_hook") }.unwrap();
        let (called_tx, called) = std::sync::mpsc::channel::<u64>();
        let (wake_tx, wake) = std::sync::mpsc::channel::<()>();
        let caller = std::thread::spawn(move || {
            let n = SLOT.call(CALLS).expect("the hook is installed");
            called_tx.send(n).unwrap();
            wake.recv().unwrap();
            for _ in 0..SLEEPS {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        assert_eq!(called.recv().unwrap(), CALLS);
        let report = loader.unload(m).unwrap();
        wake_tx.send(()).unwrap();
        caller.join().unwrap();
        assert!(
            report.unmapped && report.zombie_cause.is_none(),
            "round {round}: a thread that called the plugin's hook kept it: {report}"
        );
        assert!(!SLOT.is_set(), "the unload emptied the slot");
    }
}
