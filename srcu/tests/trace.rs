//! Tasks Trace RCU (`usrcu::trace`): claims about the process-wide flavor.
//!
//! The flavor is process-wide, so every `synchronize` waits for every reader
//! of the process: the tests run one at a time (`SERIAL`). They run on the
//! fence pair this process chose (membarrier where available);
//! `seqcst_fallback_passes_the_same_claims` runs them all again in a child
//! process with `USRCU_FENCE=seqcst`.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;
use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::trace;

/// A generous bound for "this must happen": reaching it means a hang.
const HANG: Duration = Duration::from_secs(60);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wait until `flag` is set (a hang is a failure).
fn wait_flag(flag: &AtomicBool) {
    let t0 = std::time::Instant::now();
    // Acquire: pairs with the Release store of the flag.
    while !flag.load(Ordering::Acquire) {
        assert!(t0.elapsed() < HANG, "flag never set");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn synchronize_waits_for_a_sleeping_reader_and_not_for_readers_that_began_after_it() {
    let _s = serial();
    trace::set_stall_timeout(Duration::from_millis(20));
    let cap = Capture::start();
    let a_inside = Arc::new(AtomicBool::new(false));
    let a_left = Arc::new(AtomicBool::new(false));
    let c_release = Arc::new(AtomicBool::new(false));
    let c_inside = Arc::new(AtomicBool::new(false));

    let a = {
        let (inside, left) = (a_inside.clone(), a_left.clone());
        thread::Builder::new()
            .name("trace-sleeper".into())
            .spawn(move || {
                let g = trace::read_lock();
                // Release: pairs with the test's Acquire wait.
                inside.store(true, Ordering::Release);
                thread::sleep(Duration::from_millis(200));
                // Release: read by the test after synchronize returns.
                left.store(true, Ordering::Release);
                drop(g);
            })
            .unwrap()
    };
    wait_flag(&a_inside);
    let sync = thread::spawn(trace::synchronize);
    // The stall warning says the grace period's first scan is done and has
    // found the sleeper: a reader that begins now began after it.
    let w = cap
        .wait_for(trace::DOMAIN_NAME, WarningKind::TraceStall, HANG)
        .expect("no stall warning while the sleeper was inside");
    assert!(w.message.contains("trace-sleeper"), "{}", w.message);
    let c = {
        let (release, inside) = (c_release.clone(), c_inside.clone());
        thread::spawn(move || {
            let _g = trace::read_lock();
            // Release: pairs with the test's Acquire wait.
            inside.store(true, Ordering::Release);
            wait_flag(&release);
        })
    };
    wait_flag(&c_inside);
    sync.join().unwrap();
    // Acquire: pairs with the sleeper's Release store before its exit.
    assert!(
        a_left.load(Ordering::Acquire),
        "synchronize returned while the sleeping reader was inside"
    );
    // synchronize returned while the later reader is still inside (it leaves
    // only now): it did not wait for it.
    // Release: pairs with the later reader's wait.
    c_release.store(true, Ordering::Release);
    c.join().unwrap();
    a.join().unwrap();
    trace::set_stall_timeout(Duration::from_secs(10));
}

#[test]
fn synchronize_waits_for_a_reader_that_faults_and_sleeps() {
    let _s = serial();
    let page = 4096;
    // SAFETY: a fresh private anonymous mapping; no pointer into it exists yet.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let addr = p as usize;
    let inside = Arc::new(AtomicBool::new(false));
    let left = Arc::new(AtomicBool::new(false));
    let faults = Arc::new(AtomicI64::new(0));
    let r = {
        let (inside, left, faults) = (inside.clone(), left.clone(), faults.clone());
        thread::spawn(move || {
            let g = trace::read_lock();
            // Release: pairs with the test's Acquire wait.
            inside.store(true, Ordering::Release);
            let before = minor_faults();
            // SAFETY: `addr` is the mapping above, unmapped only after join.
            unsafe { std::ptr::write_volatile(addr as *mut u64, 42) };
            // Relaxed: read after join.
            faults.store(minor_faults() - before, Ordering::Relaxed);
            thread::sleep(Duration::from_millis(50));
            // SAFETY: as above.
            assert_eq!(unsafe { std::ptr::read_volatile(addr as *const u64) }, 42);
            // Release: read by the test after synchronize returns.
            left.store(true, Ordering::Release);
            drop(g);
        })
    };
    wait_flag(&inside);
    trace::synchronize();
    // Acquire: pairs with the reader's Release store before its exit.
    assert!(
        left.load(Ordering::Acquire),
        "synchronize returned while the faulting reader was inside"
    );
    r.join().unwrap();
    // Relaxed: after join.
    assert!(faults.load(Ordering::Relaxed) >= 1, "the touch did not fault");
    // SAFETY: the only user joined.
    unsafe { libc::munmap(p, page) };
}

/// Minor page faults of the calling thread so far.
fn minor_faults() -> i64 {
    let mut u: libc::rusage = unsafe_zeroed();
    // SAFETY: `u` is writable.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    u.ru_minflt
}

fn unsafe_zeroed() -> libc::rusage {
    // SAFETY: rusage is plain integers; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

#[test]
fn nested_sections_end_at_the_outermost_exit() {
    let _s = serial();
    let inner_done = Arc::new(AtomicBool::new(false));
    let sync_done = Arc::new(AtomicBool::new(false));
    let seen_early = Arc::new(AtomicBool::new(true));
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let t = {
        let (inner_done, sync_done, seen_early) = (inner_done.clone(), sync_done.clone(), seen_early.clone());
        thread::spawn(move || {
            let outer = trace::read_lock();
            let inner = trace::read_lock();
            trace::read_lock_raw();
            // SAFETY: ends the raw section begun just above, on this thread.
            unsafe { trace::read_unlock_raw() };
            drop(inner);
            assert!(trace::in_read_section(), "the inner exit ended the outer section");
            // Release: pairs with the test's wait.
            inner_done.store(true, Ordering::Release);
            go_rx.recv().unwrap();
            thread::sleep(Duration::from_millis(100));
            // Acquire: pairs with the synchronizer's Release store.
            seen_early.store(sync_done.load(Ordering::Acquire), Ordering::Relaxed);
            drop(outer);
            assert!(!trace::in_read_section());
        })
    };
    wait_flag(&inner_done);
    let s = {
        let sync_done = sync_done.clone();
        thread::spawn(move || {
            trace::synchronize();
            // Release: pairs with the reader's Acquire load.
            sync_done.store(true, Ordering::Release);
        })
    };
    go_tx.send(()).unwrap();
    t.join().unwrap();
    s.join().unwrap();
    // Relaxed: both joined.
    assert!(
        !seen_early.load(Ordering::Relaxed),
        "synchronize returned while the outer section was still open"
    );
}

#[test]
fn polled_cookie_is_not_complete_while_a_preexisting_reader_is_inside() {
    let _s = serial();
    let g = trace::read_lock();
    let c = trace::start_poll();
    thread::sleep(Duration::from_millis(30));
    assert!(!trace::poll_state(c), "cookie completed with its reader inside");
    drop(g);
    let t0 = std::time::Instant::now();
    while !trace::poll_state(c) {
        assert!(t0.elapsed() < HANG, "polled grace period never completed");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn records_are_reused_across_10000_short_lived_threads() {
    let _s = serial();
    // Warm up: this thread and the helpers' first records.
    drop(trace::read_lock());
    let before = trace::stats();
    let entered = Arc::new(AtomicUsize::new(0));
    for _ in 0..10_000 / 8 {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let entered = entered.clone();
                thread::spawn(move || {
                    let _g = trace::read_lock();
                    // Relaxed: a count read after join.
                    entered.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    let after = trace::stats();
    // Relaxed: after join.
    assert_eq!(entered.load(Ordering::Relaxed), 10_000);
    let grown = after.records_allocated - before.records_allocated;
    assert!(
        grown <= 64,
        "10,000 short-lived threads allocated {grown} new records: records are not reused"
    );
    // And the grace period still completes: no record of a dead thread is
    // left inside a section.
    trace::synchronize();
}

#[test]
fn stall_warning_names_the_holdout_thread() {
    let _s = serial();
    trace::set_stall_timeout(Duration::from_millis(20));
    let cap = Capture::start();
    let release = Arc::new(AtomicBool::new(false));
    let (tid_tx, tid_rx) = mpsc::channel();
    let h = {
        let release = release.clone();
        thread::Builder::new()
            .name("trace-holdout".into())
            .spawn(move || {
                let _g = trace::read_lock();
                tid_tx.send(usrcu::diagnostics::current_tid()).unwrap();
                wait_flag(&release);
            })
            .unwrap()
    };
    let tid = tid_rx.recv().unwrap();
    let s = thread::spawn(trace::synchronize);
    let w = cap
        .wait_for(trace::DOMAIN_NAME, WarningKind::TraceStall, HANG)
        .expect("no stall warning");
    // Release: pairs with the holdout's wait.
    release.store(true, Ordering::Release);
    s.join().unwrap();
    h.join().unwrap();
    trace::set_stall_timeout(Duration::from_secs(10));
    assert!(
        w.message.contains("trace-holdout") && w.message.contains(&tid.to_string()),
        "the warning does not name the holdout: {}",
        w.message
    );
    let r = w.oldest_reader.expect("no holdout in the warning");
    assert_eq!((r.tid, r.thread_name.as_str()), (tid, "trace-holdout"));
}

#[test]
fn call_runs_after_a_grace_period_and_barrier_waits_for_it() {
    let _s = serial();
    let order = Arc::new(Mutex::new(Vec::new()));
    let inside = Arc::new(AtomicBool::new(false));
    let ran_while_inside = Arc::new(AtomicBool::new(true));
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let r = {
        let (order, inside, ran_while_inside) = (order.clone(), inside.clone(), ran_while_inside.clone());
        thread::spawn(move || {
            let _g = trace::read_lock();
            // Release: pairs with the test's wait.
            inside.store(true, Ordering::Release);
            go_rx.recv().unwrap();
            thread::sleep(Duration::from_millis(50));
            let ran = !order.lock().unwrap().is_empty();
            // Relaxed: read after join.
            ran_while_inside.store(ran, Ordering::Relaxed);
        })
    };
    wait_flag(&inside);
    for i in 0..3 {
        let order = order.clone();
        trace::call(move || order.lock().unwrap().push(i));
    }
    go_tx.send(()).unwrap();
    trace::barrier();
    assert_eq!(
        *order.lock().unwrap(),
        vec![0, 1, 2],
        "barrier returned before the callbacks ran"
    );
    r.join().unwrap();
    // Relaxed: joined.
    assert!(
        !ran_while_inside.load(Ordering::Relaxed),
        "a callback ran while a pre-existing reader was inside"
    );
}

#[test]
fn barrier_inside_a_callback_warns_instead_of_waiting_for_itself() {
    let _s = serial();
    let cap = Capture::start();
    let (tx, rx) = mpsc::channel();
    trace::call(move || {
        trace::barrier();
        tx.send(trace::on_callback_thread()).unwrap();
    });
    assert!(
        rx.recv_timeout(HANG).unwrap(),
        "callbacks run on the usrcu-trace thread"
    );
    assert!(cap
        .find(trace::DOMAIN_NAME, WarningKind::IllegalSynchronize)
        .iter()
        .any(|w| w.message.contains("barrier")));
}

#[test]
fn synchronize_inside_a_section_panics_instead_of_waiting_for_itself() {
    let _s = serial();
    let g = trace::read_lock();
    let r = std::panic::catch_unwind(trace::synchronize);
    drop(g);
    let msg = r.expect_err("synchronize inside a section returned");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("illegal synchronize"), "{msg}");
}

#[test]
fn a_thread_that_exits_inside_a_raw_section_does_not_stall_grace_periods() {
    let _s = serial();
    let cap = Capture::start();
    thread::spawn(trace::read_lock_raw).join().unwrap();
    let (done, rx) = mpsc::channel();
    thread::spawn(move || {
        trace::synchronize();
        done.send(()).unwrap();
    });
    rx.recv_timeout(HANG)
        .expect("a thread that died inside a section stalls grace periods");
    assert!(cap
        .for_domain(trace::DOMAIN_NAME)
        .iter()
        .any(|w| w.message.contains("exited inside 1 read section")));
}

#[test]
fn seqcst_fallback_passes_the_same_claims() {
    if std::env::var_os("USRCU_FENCE").is_some() {
        return; // already the child, or the whole run is forced
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("USRCU_FENCE", "seqcst")
        .args(["--test-threads", "1", "--skip", "seqcst_fallback"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "SeqCst fallback run failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("test result: ok"));
}
