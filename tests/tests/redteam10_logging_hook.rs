//! Red team (round 10): a plugin hook that logs more than once, through a
//! host logger that blocks a little on each record (a slow sink: it
//! sleeps 1 ms; or simply a `Mutex` around the sink that the host's own
//! threads log through too), alternates between *running* plugin code and
//! *blocking* inside the log callout.
//!
//! The interrupted proof (`module-loader/src/proofs/interrupted.rs`) makes
//! a thread a suspect only when a scan sees it inside a callout (running,
//! or blocked with the object's addresses on its stack) or inside a signal
//! handler over the object; a thread seen *running outside* a callout is
//! not one. So: the scan sees the hook's thread running its plugin code
//! (not a suspect), the Tasks grace period that follows ends as soon as the
//! thread blocks in the logger (Tasks RCU counts a blocked thread as having
//! left every hook), the rescan again sees it running plugin code, and the
//! object is unmapped under the running hook: SIGSEGV.
//!
//! The child tries up to `ATTEMPTS` load/hook/unload rounds; a round whose
//! unload keeps the module (the thread was seen in the callout) is retried.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader, UnloadError};
use usrcu_tests::{fixture_path, Child};

const CHILD: &str = "RT10_LOGLOOP_CHILD";
const ATTEMPTS: usize = 20;

static RECORDS: AtomicU64 = AtomicU64::new(0);

/// The host's logger: each record of the plugin takes 1 ms (blocked).
struct Slow;

impl log::Log for Slow {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target() == "rt10.loop" {
            std::thread::sleep(Duration::from_millis(1));
            RECORDS.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn flush(&self) {}
}

static SLOW: Slow = Slow;
static LOOP: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

fn parent(test: &str) {
    let _ = fixture_path("redteam10-logloop");
    {
        Child::new(test).env(CHILD, "1").run().assert_passed(
            "RT10-LOGLOOP-SURVIVED",
            "the host died while unloading a plugin whose hook logged through a blocking logger",
        );
    }
}

#[test]
fn a_hook_that_logs_repeatedly_through_a_slow_logger_is_not_unmapped_under_it() {
    if std::env::var_os(CHILD).is_none() {
        return parent("a_hook_that_logs_repeatedly_through_a_slow_logger_is_not_unmapped_under_it");
    }
    log::set_logger(&SLOW).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    rounds();
}

/// A logger as many hosts have: one lock around the sink (here a byte
/// count), taken by every record; the host's own threads log too.
struct Locked(Mutex<u64>);

impl log::Log for Locked {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}: {}\n", record.level(), record.target(), record.args());
        let mut sink = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // The write: a little work under the lock.
        for b in line.bytes() {
            *sink = std::hint::black_box(sink.wrapping_add(u64::from(b)));
        }
        drop(sink);
        if record.target() == "rt10.loop" {
            RECORDS.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn flush(&self) {}
}

static LOCKED: Locked = Locked(Mutex::new(0));

#[test]
fn a_hook_that_logs_repeatedly_through_a_contended_logger_is_not_unmapped_under_it() {
    if std::env::var_os(CHILD).is_none() {
        return parent("a_hook_that_logs_repeatedly_through_a_contended_logger_is_not_unmapped_under_it");
    }
    log::set_logger(&LOCKED).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    for i in 0..3 {
        std::thread::spawn(move || loop {
            log::info!(target: "host", "host thread {i} at work");
        });
    }
    rounds();
}

fn rounds() {
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(5),
        ..LoaderConfig::default()
    });
    // SAFETY: `alarm` only arms a timer: a hang dies of SIGALRM.
    unsafe { libc::alarm(120) };
    for attempt in 0..ATTEMPTS {
        // SAFETY: the fixture upholds the plugin contract.
        let m = unsafe { loader.load(fixture_path("redteam10-logloop")) }.unwrap();
        // SAFETY: `fx_log_loop_hook: extern "C" fn(u64) -> u64` never blocks
        // by itself (only in the host's logger), stores no pointer.
        unsafe { loader.install_hook(m, &LOOP, "fx_log_loop_hook") }.unwrap();
        let before = RECORDS.load(Ordering::SeqCst);
        let t = std::thread::spawn(|| LOOP.call(300));
        let t0 = Instant::now();
        while RECORDS.load(Ordering::SeqCst) < before + 3 {
            assert!(t0.elapsed() < Duration::from_secs(30), "the hook never logged");
            std::thread::sleep(Duration::from_millis(1));
        }
        let r = loader.unload(m);
        let in_hook = !t.is_finished();
        println!(
            "attempt {attempt}: unmapped {:?} while the hook ran: {in_hook}",
            r.as_ref().map(|r| (r.unmapped, r.zombie_cause.clone()))
        );
        assert_eq!(t.join().unwrap(), Some(300));
        // Kept (the thread was seen in the callout): finish the unload.
        if !matches!(&r, Ok(r) if r.unmapped) {
            loop {
                match loader.unload(m) {
                    Ok(r) if r.unmapped => break,
                    Err(UnloadError::NotLive { .. }) => break,
                    other => println!("retry: {other:?}"),
                }
            }
        }
    }
    println!("RT10-LOGLOOP-SURVIVED");
}
