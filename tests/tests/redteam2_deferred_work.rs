//! Red team 2: work a plugin's `exit` leaves on the host's runtime, queued
//! the way a plugin author writes it, must be drained (or the object kept
//! mapped) before the loader unmaps the object.
//!
//! The unload runs, in this order: the liveness grace period, a bounded
//! SRCU barrier, the hook-slot step (clear + Tasks grace period), `exit`,
//! the `Going` notifiers, the probe notifier (a Tasks Trace and a Tasks
//! `barrier`), then the proofs (readers, an SRCU barrier *after* `exit`,
//! threads, keys) and `dlclose`. Plugin code that runs after a step can
//! re-create what that step drained. Each scenario uses the `redteam2-deferred`
//! fixture, whose `exit` is told (mode) what to leave behind, and a host
//! thread that holds the flavor's grace period (a Tasks Trace read section,
//! or a Tasks spin without a quiescent point) across the unload, so that
//! what was left behind is certainly still queued when the unload decides.
//! A loader that keeps its promise either drains it or keeps the object
//! mapped as a Zombie; one that unmaps it kills the host when the callback
//! runs. Each scenario runs in a child process so that a crash is a failed
//! assertion naming the signal.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader, ModuleState, UnloadReport};
use usrcu_tests::{fixture_path, Child};

/// The fixture's board: `RAN`, `FIRST`, `GO` (see the fixture).
static BOARD: [AtomicU32; 3] = [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)];
const RAN: usize = 0;
const FIRST: usize = 1;
const GO: usize = 2;

/// A host hook slot the fixture's `exit` installs into (mode 4).
static SLOT: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

type Arm = unsafe extern "C" fn(u32, *const AtomicU32, *const ());

const CHILD: &str = "USRCU_REDTEAM2_DEFERRED_CHILD";

/// Load the fixture with `config` and tell its `exit` to do `mode`.
fn load_armed(config: LoaderConfig, mode: u32) -> (ModuleLoader, usrcu_module_loader::ModuleHandle) {
    let slot = &SLOT as *const HookSlot<extern "C" fn(u64) -> u64> as *const ();
    load_armed_with(config, mode, slot)
}

/// As [`load_armed`], with `slot` (the host slot, or in mode 10 a host function).
fn load_armed_with(
    config: LoaderConfig,
    mode: u32,
    slot: *const (),
) -> (ModuleLoader, usrcu_module_loader::ModuleHandle) {
    let loader = ModuleLoader::with_config(config);
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("redteam2-deferred")) }.expect("load");
    // SAFETY: the fixture exports `fx_arm` with this signature.
    let arm = unsafe { loader.symbol::<Arm>(m, "fx_arm") }.expect("fx_arm");
    // SAFETY: the board and the slot are host statics (fx_arm's contract).
    arm.call(|f| unsafe { f.call(mode, BOARD.as_ptr(), slot) })
        .expect("fx_arm");
    (loader, m)
}

fn short_timeout() -> LoaderConfig {
    LoaderConfig {
        unload_timeout: Duration::from_millis(1500),
        ..LoaderConfig::default()
    }
}

/// A host thread inside a Tasks Trace read section (entered once `enter`
/// says so) until `release` is sent: every Tasks Trace callback queued
/// after it entered waits for it.
fn trace_reader(enter: impl FnOnce() + Send + 'static) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (inside_tx, inside) = mpsc::channel();
    let (release, wait) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        enter();
        let g = usrcu::trace::read_lock();
        inside_tx.send(()).unwrap();
        let _ = wait.recv();
        drop(g);
    });
    inside.recv().unwrap();
    (release, t)
}

/// Wait (at most 5 s) until the plugin's last callback has bumped `RAN`.
fn ran_eventually() -> u32 {
    let t0 = Instant::now();
    while BOARD[RAN].load(Ordering::SeqCst) == 0 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    BOARD[RAN].load(Ordering::SeqCst)
}

/// The claim every scenario checks: the loader did not unmap the object
/// while a callback of it was still queued.
fn kept_or_drained(report: &UnloadReport, ran_at_unload: u32) -> Result<(), String> {
    // Printed before the callback may run (and kill the child).
    println!(
        "child: unload returned: unmapped={} state={:?} zombie_cause={:?} callback ran={ran_at_unload}",
        report.unmapped, report.state, report.zombie_cause
    );
    if report.unmapped && ran_at_unload == 0 {
        Err(format!(
            "the object was unmapped (state {:?}) with its callback still queued: {report}",
            report.state
        ))
    } else {
        Ok(())
    }
}

/// Finish a child: let the callback run (a crash here is the defect's
/// symptom), then retry a Zombie so that the child leaves nothing mapped,
/// and fail with what the unload decided.
fn finish(loader: ModuleLoader, report: UnloadReport, verdict: Result<(), String>) {
    let ran = ran_eventually();
    println!("child: unmapped={} state={:?} ran={ran}", report.unmapped, report.state);
    if report.state == ModuleState::Zombie {
        let again = loader.unload(report.handle).expect("retry the zombie");
        println!("child: retry unmapped={} state={:?}", again.unmapped, again.state);
    }
    if let Err(e) = verdict {
        panic!("{e}");
    }
}

/// Run the test `name` again in a child with the child switch set; fail
/// naming a signal or the child's panic.
fn in_child(name: &str) {
    // The scenarios that show a defect are ignored: the child runs them
    // all the same (`Child` passes `--include-ignored`).
    // A hang must fail the test, not stall it: the child is killed after
    // 120 s (it needs well under a second when nothing hangs).
    let ran = Child::new(name).env(CHILD, "1").timeout(Duration::from_secs(120)).run();
    if let Some(sig) = ran.signal() {
        panic!(
            "the host died of signal {sig} after the unload (a plugin callback ran unmapped code)\n{}",
            ran.describe()
        );
    }
    ran.assert_passed("child: ", "the child failed or ran no scenario");
}

fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

#[test]
fn a_trace_callback_queued_by_an_srcu_callback_of_exit_is_drained_or_kept_mapped() {
    if !is_child() {
        return in_child("a_trace_callback_queued_by_an_srcu_callback_of_exit_is_drained_or_kept_mapped");
    }
    let (loader, m) = load_armed(short_timeout(), 1);
    // Holds every Tasks Trace callback queued from here on.
    let (release, reader) = trace_reader(|| {});
    let report = loader.unload(m).expect("unload");
    let ran_at_unload = BOARD[RAN].load(Ordering::SeqCst);
    let verdict = kept_or_drained(&report, ran_at_unload);
    release.send(()).unwrap();
    reader.join().unwrap();
    finish(loader, report, verdict);
}

#[test]
fn a_chained_trace_callback_of_exit_is_drained_or_kept_mapped() {
    if !is_child() {
        return in_child("a_chained_trace_callback_of_exit_is_drained_or_kept_mapped");
    }
    let (loader, m) = load_armed(short_timeout(), 3);
    let unload = std::thread::spawn(move || {
        let report = loader.unload(m).expect("unload");
        (loader, report)
    });
    // Enter the read section once the first callback of the chain runs
    // (its own grace period is over), then let it queue the second.
    let (release, reader) = trace_reader(|| {
        while BOARD[FIRST].load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    BOARD[GO].store(1, Ordering::SeqCst);
    let (loader, report) = unload.join().unwrap();
    let ran_at_unload = BOARD[RAN].load(Ordering::SeqCst);
    let verdict = kept_or_drained(&report, ran_at_unload);
    release.send(()).unwrap();
    reader.join().unwrap();
    finish(loader, report, verdict);
}

#[test]
fn a_tasks_callback_queued_by_an_srcu_callback_of_exit_is_drained_or_kept_mapped() {
    if !is_child() {
        return in_child("a_tasks_callback_queued_by_an_srcu_callback_of_exit_is_drained_or_kept_mapped");
    }
    let (loader, m) = load_armed(short_timeout(), 2);
    // A host thread that spins without a quiescent point holds every
    // Tasks grace period (the hook contract's "a thread that spins").
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let spinning = std::sync::Arc::new(AtomicBool::new(false));
    let spinner = {
        let (stop, spinning) = (stop.clone(), spinning.clone());
        std::thread::spawn(move || {
            spinning.store(true, Ordering::SeqCst);
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    };
    while !spinning.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let report = loader.unload(m).expect("unload");
    let ran_at_unload = BOARD[RAN].load(Ordering::SeqCst);
    let verdict = kept_or_drained(&report, ran_at_unload);
    stop.store(true, Ordering::Relaxed);
    spinner.join().unwrap();
    finish(loader, report, verdict);
}

#[test]
fn a_hook_slot_that_exit_fills_is_cleared_or_the_object_kept_mapped() {
    if !is_child() {
        return in_child("a_hook_slot_that_exit_fills_is_cleared_or_the_object_kept_mapped");
    }
    let (loader, m) = load_armed(short_timeout(), 4);
    let report = loader.unload(m).expect("unload");
    let set_after = SLOT.is_set();
    println!("child: unmapped={} slot set={set_after}", report.unmapped);
    // The host calls its hook, as it does all the time.
    let r = SLOT.call(41);
    println!("child: hook returned {r:?}");
    assert!(
        !(report.unmapped && set_after),
        "the object was unmapped with a host hook slot still pointing into it: {report}"
    );
}

/// The hook slot is filled by plugin code that the deferred-work proof's
/// own drains run (an SRCU callback of `exit` queues a Tasks Trace
/// callback that fills it): the proof must look at hook slots after those
/// drains, not only before (review of session 6).
#[test]
fn a_hook_slot_filled_by_a_callback_of_exit_is_cleared_or_the_object_kept_mapped() {
    if !is_child() {
        return in_child("a_hook_slot_filled_by_a_callback_of_exit_is_cleared_or_the_object_kept_mapped");
    }
    let (loader, m) = load_armed(short_timeout(), 11);
    let report = loader.unload(m).expect("unload");
    let set_after = SLOT.is_set();
    println!(
        "child: unmapped={} slot set={set_after} ran={}",
        report.unmapped,
        BOARD[RAN].load(Ordering::SeqCst)
    );
    let r = SLOT.call(41);
    println!("child: hook returned {r:?}");
    assert!(
        !(report.unmapped && set_after),
        "the object was unmapped with a host hook slot still pointing into it: {report}"
    );
}

#[test]
fn a_trace_callback_of_exit_is_drained_or_kept_mapped_with_probe_removal_off() {
    if !is_child() {
        return in_child("a_trace_callback_of_exit_is_drained_or_kept_mapped_with_probe_removal_off");
    }
    let config = LoaderConfig {
        remove_probes: false,
        ..short_timeout()
    };
    let (loader, m) = load_armed(config, 5);
    let (release, reader) = trace_reader(|| {});
    let report = loader.unload(m).expect("unload");
    let ran_at_unload = BOARD[RAN].load(Ordering::SeqCst);
    let verdict = kept_or_drained(&report, ran_at_unload);
    release.send(()).unwrap();
    reader.join().unwrap();
    finish(loader, report, verdict);
}

#[test]
fn an_unload_returns_within_its_timeout_while_a_host_trace_reader_holds_a_callback_of_exit() {
    // No crash to contain here: the scenario runs in the test process.
    let (loader, m) = load_armed(short_timeout(), 5);
    let (release, reader) = trace_reader(|| {});
    let (done_tx, done) = mpsc::channel();
    let unload = std::thread::spawn(move || {
        let report = loader.unload(m).expect("unload");
        done_tx.send(()).unwrap();
        (loader, report)
    });
    // The claim is an order: the unload returns while the reader is still
    // inside. The wait below only keeps a broken loader from hanging the
    // test forever (20 times the unload timeout).
    let returned_first = done.recv_timeout(Duration::from_secs(30)).is_ok();
    release.send(()).unwrap();
    reader.join().unwrap();
    let (loader, report) = unload.join().unwrap();
    println!(
        "unmapped={} state={:?} cause={:?}",
        report.unmapped, report.state, report.zombie_cause
    );
    assert!(
        returned_first,
        "unload did not return while a host Tasks Trace reader stayed inside (unload_timeout {:?}): {report}",
        loader.config().unload_timeout
    );
    // Kept mapped while the callback was held; a retry now drains it.
    assert_eq!(report.state, ModuleState::Zombie, "{report}");
    let again = loader.unload(report.handle).expect("retry");
    assert!(again.unmapped, "{again}");
}

#[test]
fn a_trace_callback_from_a_plugin_thread_leaving_after_exit_is_drained_or_kept_mapped() {
    if !is_child() {
        return in_child("a_trace_callback_from_a_plugin_thread_leaving_after_exit_is_drained_or_kept_mapped");
    }
    let (loader, m) = load_armed(short_timeout(), 6);
    let (release, reader) = trace_reader(|| {});
    let report = loader.unload(m).expect("unload");
    let ran_at_unload = BOARD[RAN].load(Ordering::SeqCst);
    let verdict = kept_or_drained(&report, ran_at_unload);
    release.send(()).unwrap();
    reader.join().unwrap();
    finish(loader, report, verdict);
}

#[test]
fn an_srcu_callback_from_a_plugin_thread_leaving_after_exit_is_drained_or_kept_mapped() {
    if !is_child() {
        return in_child("an_srcu_callback_from_a_plugin_thread_leaving_after_exit_is_drained_or_kept_mapped");
    }
    let (loader, m) = load_armed(short_timeout(), 7);
    let report = loader.unload(m).expect("unload");
    let ran_at_unload = BOARD[RAN].load(Ordering::SeqCst);
    let verdict = kept_or_drained(&report, ran_at_unload);
    // The callback (queued, or running and waiting for this) may finish.
    BOARD[GO].store(1, Ordering::SeqCst);
    finish(loader, report, verdict);
}

#[test]
fn a_resident_plugins_thread_local_destructor_never_leaves_work_that_outlives_the_object() {
    if !is_child() {
        return in_child("a_resident_plugins_thread_local_destructor_never_leaves_work_that_outlives_the_object");
    }
    let (loader, m) = load_armed(short_timeout(), 8);
    // A host thread calls the plugin, which fills a thread-local cache of
    // its own there; the thread lives on past the unload.
    // SAFETY: the fixture exports `fx_touch_tls` with this signature.
    let touch = unsafe { loader.symbol::<extern "C" fn()>(m, "fx_touch_tls") }.unwrap();
    let (exit_tx, exit_rx) = mpsc::channel::<()>();
    let (touched_tx, touched) = mpsc::channel();
    let host_thread = std::thread::spawn(move || {
        touch.call(|f| f.call()).unwrap();
        drop(touch);
        touched_tx.send(()).unwrap();
        let _ = exit_rx.recv();
    });
    touched.recv().unwrap();
    let report = loader.unload(m).expect("unload");
    println!(
        "child: first unload: unmapped={} resident={:?}",
        report.unmapped, report.resident_cause
    );
    // The host thread exits: the plugin's destructor runs and queues.
    exit_tx.send(()).unwrap();
    host_thread.join().unwrap();
    // The host goes on with its life: another module comes and goes.
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let other = unsafe { loader.load(fixture_path("callbacks")) }.expect("load another");
    loader.unload(other).expect("unload another");
    let still_mapped = usrcu_tests::object_is_mapped(&report.loaded_path);
    let queued = BOARD[RAN].load(Ordering::SeqCst) == 0;
    println!("child: after another module's unload: object mapped={still_mapped}, callback queued={queued}");
    BOARD[GO].store(1, Ordering::SeqCst);
    let ran = ran_eventually();
    println!("child: callback ran={ran}");
    assert!(
        still_mapped || !queued,
        "the resident plugin was unmapped with a callback of it still queued"
    );
}

/// A host hook function (never blocks).
extern "C" fn host_double(x: u64) -> u64 {
    x.wrapping_mul(2)
}

#[test]
fn a_hook_slot_inside_the_plugin_that_exit_fills_never_outlives_the_object() {
    if !is_child() {
        return in_child("a_hook_slot_inside_the_plugin_that_exit_fills_never_outlives_the_object");
    }
    // Something else may be mapped where the slot was by the time the host
    // looks (then the scenario cannot show anything): try a few times.
    let loader = ModuleLoader::with_config(short_timeout());
    for attempt in 0..10 {
        if stale_slot_round(&loader, attempt) {
            return;
        }
    }
    panic!("the page where the slot was was always taken again before the host could map it");
}

/// One round of the scenario above; false if the host could not map its
/// page where the slot was.
fn stale_slot_round(loader: &ModuleLoader, attempt: usize) -> bool {
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("redteam2-deferred")) }.expect("load");
    // SAFETY: the fixture exports `fx_arm` with this signature.
    let arm = unsafe { loader.symbol::<Arm>(m, "fx_arm") }.expect("fx_arm");
    // SAFETY: the board is a host static and `host_double` a host function
    // that never blocks (fx_arm's contract for mode 10).
    arm.call(|f| unsafe { f.call(10, BOARD.as_ptr(), host_double as *const ()) })
        .expect("fx_arm");
    drop(arm);
    // SAFETY: the fixture exports `fx_own_slot` with this signature.
    let own = unsafe { loader.symbol::<extern "C" fn() -> *const ()>(m, "fx_own_slot") }.unwrap();
    let slot_addr = own.call(|f| f.call()).unwrap() as usize;
    drop(own);
    // Another module, loaded first so that it is not mapped where this one was.
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let other = unsafe { loader.load(fixture_path("callbacks")) }.expect("load another");
    // An address inside the other module's object: its static domain.
    // SAFETY: the `callbacks` fixture exports `fx_queue_domain` with this signature.
    let q = unsafe { loader.symbol::<extern "C" fn() -> *const usrcu::Srcu>(other, "fx_queue_domain") }.unwrap();
    let inside_other = q.call(|f| f.call()).unwrap() as usize;
    drop(q);
    let report = loader.unload(m).expect("unload");
    println!(
        "child: attempt {attempt}: unload: unmapped={} state={:?}",
        report.unmapped, report.state
    );
    assert!(report.unmapped, "{report}");
    // The host maps a page of its own where the slot was, holding an
    // address inside the other module (what a stale slot would hold if
    // that memory were reused).
    let page = slot_addr & !4095;
    // SAFETY: a fresh private anonymous mapping at an address nothing maps
    // (NOREPLACE refuses an address in use).
    let p = unsafe {
        libc::mmap(
            page as *mut libc::c_void,
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p as usize != page {
        println!(
            "child: attempt {attempt}: the page is taken again: {}",
            std::io::Error::last_os_error()
        );
        loader.unload(other).expect("unload another");
        return false;
    }
    let host_word = slot_addr as *mut usize;
    // SAFETY: inside the page just mapped (a slot is one aligned word).
    unsafe { host_word.write_volatile(inside_other) };
    // The other module goes; its unload walks the registered hook slots.
    let again = loader.unload(other).expect("unload another");
    // SAFETY: as above.
    let after = unsafe { host_word.read_volatile() };
    println!(
        "child: another module's unload: hook slots cleared={}, host word {inside_other:#x} -> {after:#x}",
        again.hook_slots.cleared
    );
    assert_eq!(
        after, inside_other,
        "the loader wrote into host memory where the unloaded plugin's slot was"
    );
    true
}

/// The defense of the test above switched off (`USRCU_LOADER_TEST_NO_PIN=1`:
/// the object a thread-local destructor keeps resident is not pinned): the
/// child dies when the destructor's callback runs in the unmapped object,
/// or its check fails.
#[test]
fn without_the_pin_a_resident_plugins_thread_local_destructor_kills_the_host() {
    let name = "a_resident_plugins_thread_local_destructor_never_leaves_work_that_outlives_the_object";
    let ran = Child::new(name)
        .env(CHILD, "1")
        .env("USRCU_LOADER_TEST_NO_PIN", "1")
        .run();
    assert!(ran.ran(), "the child did not run the test\n{}", ran.describe());
    assert!(
        !ran.status.success(),
        "the child lived without the pin:\n{}",
        ran.describe()
    );
    println!("without the pin: {:?} (signal {:?})", ran.status, ran.signal());
}
