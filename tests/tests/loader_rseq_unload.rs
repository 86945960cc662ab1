//! A host thread that ran a plugin's read side outlives the plugin's unload
//! and is then switched out and back in: it survives.
//!
//! The plugin's lock and unlock are inlined into its own code, so each
//! commits in a restartable sequence whose `struct rseq_cs` descriptor lies
//! in the plugin's object. The sequence stores that descriptor's address in
//! the thread's `rseq->rseq_cs`; the defense under test is the store of 0
//! right after the commit (srcu/src/reader/rseq.rs). Without it the last
//! sequence a thread ran in the plugin leaves `rseq_cs` pointing into the
//! object, and once the object is unmapped the kernel, on the thread's next
//! return to user space after a context switch, fails to read the
//! descriptor and kills the process with SIGSEGV. The scenario runs in a
//! child process, so that this shows as a failed assertion naming the signal.
//!
//! Two things would hide the stale pointer, and the scenario avoids both:
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
//!   not.
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::{fixture_path, in_child, killed_by, rerun_in_child};

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
    if in_child() {
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
    let status = rerun_in_child(
        "host_thread_that_ran_a_plugin_reader_survives_context_switches_after_the_unload",
        &[],
    );
    let signal = killed_by(status).map(|s| match s {
        libc::SIGSEGV => "SIGSEGV".to_owned(),
        libc::SIGBUS => "SIGBUS".to_owned(),
        s => format!("signal {s}"),
    });
    assert!(
        status.success(),
        "the child {}",
        match signal {
            Some(sig) => format!(
                "died of {sig}: the kernel found rseq_cs pointing into the unloaded plugin \
                 (the clear after the commit in srcu/src/reader/rseq.rs is missing?)"
            ),
            None => format!("failed: {status} (its stderr is above)"),
        }
    );
}
