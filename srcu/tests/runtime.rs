//! The runtime engine's claims: one domain's sleeping readers or blocking
//! callbacks never hold up another domain; callbacks of each thread run in
//! the order it queued them while other threads complete grace periods;
//! bounded waits return and leave nothing blocked; the inventory finds
//! callbacks by address. Ordering (flags, channels), never timing, decides
//! every assertion.
#![allow(clippy::single_range_in_vec_init)] // one range is the common query

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;
use usrcu::runtime::inventory;
use usrcu::Srcu;

#[path = "common/child.rs"]
mod child;

/// A generous bound for "this must happen": reaching it means a hang.
const HANG: Duration = Duration::from_secs(60);

/// A reader of `d` that stays inside until released (or `HANG`), then sets
/// `woke`. Returns once it is inside.
fn sleeping_reader(d: Arc<Srcu>, woke: Arc<AtomicBool>) -> (mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (inside_tx, inside_rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let _g = d.read_lock();
        inside_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(HANG);
        woke.store(true, Ordering::SeqCst);
    });
    inside_rx.recv().unwrap();
    (release_tx, h)
}

#[test]
fn eight_domains_with_sleeping_readers_do_not_hold_up_an_unrelated_domain() {
    let mut readers = Vec::new();
    let mut stuck = Vec::new();
    let stuck_ran = Arc::new(AtomicUsize::new(0));
    for i in 0..8 {
        let d = Arc::new(Srcu::new(&format!("starve-stuck-{i}")));
        let woke = Arc::new(AtomicBool::new(false));
        readers.push((sleeping_reader(d.clone(), woke.clone()), woke));
        // A callback whose grace period waits for the sleeping reader.
        let r = stuck_ran.clone();
        d.call_srcu(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        // And a polled grace period, which the runtime drives too.
        let _ = d.start_poll();
        stuck.push(d);
    }

    let free = Srcu::new("starve-free");
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = ran.clone();
        free.call_srcu(move || ran.store(true, Ordering::SeqCst));
    }
    free.barrier();
    assert!(ran.load(Ordering::SeqCst));
    // The unrelated domain's polled grace period completes too.
    let c = free.start_poll();
    while !free.poll_state(c) {
        thread::yield_now();
    }

    // Ordering, not timing: every reader is still inside, so no callback of
    // theirs ran.
    for (_, woke) in &readers {
        assert!(
            !woke.load(Ordering::SeqCst),
            "a reader woke before the unrelated barrier returned"
        );
    }
    assert_eq!(stuck_ran.load(Ordering::SeqCst), 0);

    for ((tx, h), _) in readers {
        tx.send(()).unwrap();
        h.join().unwrap();
    }
    for d in &stuck {
        d.barrier();
    }
    assert_eq!(stuck_ran.load(Ordering::SeqCst), 8);
}

#[test]
fn a_domain_whose_callbacks_block_holds_only_its_own_invoker() {
    let blocked: Vec<_> = (0..4).map(|i| Srcu::new(&format!("blocked-cb-{i}"))).collect();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let started = Arc::new(AtomicUsize::new(0));
    for d in &blocked {
        let (rx, started) = (release_rx.clone(), started.clone());
        d.call_srcu(move || {
            started.fetch_add(1, Ordering::SeqCst);
            let _ = rx.lock().unwrap().recv_timeout(HANG);
        });
    }
    // Each blocked callback really is running (so it holds an invoker).
    while started.load(Ordering::SeqCst) < 1 {
        thread::yield_now();
    }
    let free = Srcu::new("blocked-cb-free");
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = ran.clone();
        free.call_srcu(move || ran.store(true, Ordering::SeqCst));
    }
    free.barrier();
    assert!(ran.load(Ordering::SeqCst));
    // The blocked domains' barriers cannot complete while their callbacks
    // block, and time out without leaving anything blocked.
    for d in &blocked {
        assert!(!d.barrier_timeout(Duration::from_millis(1)));
    }
    for _ in 0..blocked.len() {
        release_tx.send(()).unwrap();
    }
    for d in &blocked {
        d.barrier();
    }
    assert_eq!(started.load(Ordering::SeqCst), 4);
}

#[test]
fn callbacks_of_each_thread_run_in_queue_order_while_others_complete_grace_periods() {
    const THREADS: usize = 4;
    const PER_THREAD: u64 = 3_000;
    let d = Arc::new(Srcu::new("fifo-stress"));
    let last: Arc<Vec<AtomicU64>> = Arc::new((0..THREADS).map(|_| AtomicU64::new(0)).collect());
    let out_of_order = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let gps: Vec<_> = (0..2)
        .map(|_| {
            let (d, stop) = (d.clone(), stop.clone());
            thread::spawn(move || {
                // At least one grace period, even when the producers finish
                // before this thread is first scheduled.
                let mut n = 0u64;
                loop {
                    d.synchronize_expedited();
                    n += 1;
                    if stop.load(Ordering::Relaxed) {
                        break n;
                    }
                }
            })
        })
        .collect();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (d, last, ooo) = (d.clone(), last.clone(), out_of_order.clone());
            thread::spawn(move || {
                for seq in 1..=PER_THREAD {
                    let (last, ooo) = (last.clone(), ooo.clone());
                    d.call_srcu(move || {
                        if last[t].swap(seq, Ordering::Relaxed) != seq - 1 {
                            ooo.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                    if seq % 64 == 0 {
                        // Migrate: pin to the next CPU, then let the
                        // scheduler move us back.
                        migrate_to((t + seq as usize / 64) % cpus);
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let gp_count: u64 = gps.into_iter().map(|h| h.join().unwrap()).sum();
    d.barrier();
    assert!(gp_count > 0);
    assert_eq!(
        out_of_order.load(Ordering::Relaxed),
        0,
        "some thread's callbacks ran out of order"
    );
    for l in last.iter() {
        assert_eq!(l.load(Ordering::Relaxed), PER_THREAD);
    }
}

fn migrate_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        let mut all: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(c, &mut all);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &all);
    }
}

#[test]
fn synchronize_timeout_gives_up_on_a_reader_and_succeeds_once_it_left() {
    let d = Arc::new(Srcu::new("sync-timeout"));
    let woke = Arc::new(AtomicBool::new(false));
    let (tx, h) = sleeping_reader(d.clone(), woke.clone());
    assert!(!d.synchronize_timeout(Duration::from_millis(20)));
    assert!(!woke.load(Ordering::SeqCst));
    tx.send(()).unwrap();
    h.join().unwrap();
    assert!(d.synchronize_timeout(HANG));
    // Nothing was left half-done: the domain cleans up.
    let d = Arc::try_unwrap(d).unwrap();
    // SAFETY: no other thread uses `d`.
    unsafe { d.cleanup() }.unwrap();
}

#[test]
fn barrier_timeout_leaves_nothing_blocking_and_its_marker_is_reclaimed() {
    let d = Srcu::new("barrier-timeout");
    let (tx, rx) = mpsc::channel::<()>();
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = ran.clone();
        d.call_srcu(move || {
            let _ = rx.recv_timeout(HANG);
            ran.store(true, Ordering::SeqCst);
        });
    }
    assert!(!d.barrier_timeout(Duration::from_millis(20)));
    assert!(!ran.load(Ordering::SeqCst));
    tx.send(()).unwrap();
    assert!(d.barrier_timeout(HANG));
    assert!(ran.load(Ordering::SeqCst));
    // The timed-out barrier's marker ran too: nothing is pending.
    // SAFETY: no other thread uses `d`.
    unsafe { d.cleanup() }.unwrap();
}

#[test]
fn barrier_inside_own_callback_is_refused_with_a_warning() {
    let cap = usrcu::diagnostics::Capture::start();
    let d = Arc::new(Srcu::new("barrier-in-callback"));
    let result = Arc::new(Mutex::new(None));
    {
        let (d2, result) = (d.clone(), result.clone());
        d.call_srcu(move || {
            *result.lock().unwrap() = Some(d2.barrier_timeout(HANG));
        });
    }
    d.barrier();
    assert_eq!(*result.lock().unwrap(), Some(false));
    assert!(!cap
        .find(
            "barrier-in-callback",
            usrcu::diagnostics::WarningKind::IllegalSynchronize
        )
        .is_empty());
}

#[repr(C)]
struct Node {
    head: usrcu::CallbackHead,
    gate: *const AtomicBool,
}

unsafe extern "C" fn wait_gate(h: *mut usrcu::CallbackHead) {
    // SAFETY: `h` is the head of a leaked Box<Node>; the gate is 'static.
    let n = unsafe { Box::from_raw(h as *mut Node) };
    // SAFETY: as above.
    let gate = unsafe { &*n.gate };
    while !gate.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn inventory_counts_callbacks_by_function_address_on_any_domain_and_drains_them() {
    static GATE: AtomicBool = AtomicBool::new(false);
    // A domain unrelated to the range: only the function lies in it.
    let d = Srcu::new("inventory-by-function");
    for _ in 0..3 {
        let n = Box::into_raw(Box::new(Node {
            head: usrcu::CallbackHead::new(),
            gate: &GATE,
        }));
        // SAFETY: `n` stays valid until `wait_gate` takes it back.
        unsafe { d.call_srcu_raw(n as *mut usrcu::CallbackHead, wait_gate) };
    }
    let f = wait_gate as *const () as usize;
    let range = [f..f + 1];
    assert_eq!(inventory::query(&range).callbacks, 3);
    // Not in an unrelated range.
    let other = inventory_counts_callbacks_by_function_address_on_any_domain_and_drains_them as *const () as usize;
    assert_eq!(inventory::query(&[other..other + 1]).callbacks, 0);
    // A bounded drain times out while the gate is closed, naming what is left.
    let left = inventory::drain(&range, Duration::from_millis(20)).unwrap_err();
    assert_eq!(left.callbacks, 3);
    GATE.store(true, Ordering::SeqCst);
    inventory::drain(&range, HANG).unwrap();
    assert_eq!(inventory::query(&range).callbacks, 0);
    d.barrier();
}

#[test]
fn inventory_lists_a_domain_by_its_address_with_its_readers() {
    static D: Srcu = Srcu::new_static("inventory-static");
    let idx = D.read_lock_raw();
    let a = &D as *const Srcu as usize;
    let inv = inventory::query(&[a..a + std::mem::size_of::<Srcu>()]);
    assert_eq!(inv.domains.len(), 1);
    assert_eq!(inv.domains[0].name, "inventory-static");
    assert_eq!(inv.domains[0].readers, 1);
    assert!(!inv.is_idle());
    // SAFETY: `idx` came from `D.read_lock_raw()` and is ended once.
    unsafe { D.read_unlock_raw(idx) };
    assert!(inventory::query(&[a..a + 1]).is_idle());
}

const FORK_CHILD_ENV: &str = "USRCU_TEST_FORK_CHILD";

/// A child of `fork` (forked while the parent's runtime threads exist, once
/// `runtime::idle()` says they are idle) runs its callbacks on runtime
/// threads of its own: its `barrier` returns. Driven in a re-executed test process, so that no other test's
/// thread holds a lock at the fork.
#[test]
fn a_forked_child_starts_its_own_runtime() {
    child::Child::new("fork_child_entry")
        .env(FORK_CHILD_ENV, "1")
        .must_pass("fork child: barrier returned");
}

#[test]
fn fork_child_entry() {
    if std::env::var_os(FORK_CHILD_ENV).is_none() {
        return;
    }
    static D: Srcu = Srcu::new_static("fork-parent");
    let ran = Arc::new(AtomicUsize::new(0));
    {
        let ran = ran.clone();
        D.call_srcu(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        });
    }
    D.barrier();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    // Fork only once the runtime's threads are idle (they hold no lock then).
    while !usrcu::runtime::idle() {
        thread::yield_now();
    }
    // SAFETY: this process runs only this test (--test-threads=1) and its
    // runtime threads are idle; the child only uses usrcu and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // The child: a hang here is caught by the alarm.
        // SAFETY: alarm has no preconditions.
        unsafe { libc::alarm(60) };
        let r2 = ran.clone();
        D.call_srcu(move || {
            r2.fetch_add(1, Ordering::SeqCst);
        });
        D.barrier();
        let ok = ran.load(Ordering::SeqCst) == 2;
        // SAFETY: leaving the forked child without running the parent's
        // atexit handlers or the test harness.
        unsafe { libc::_exit(if ok { 0 } else { 3 }) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is writable.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
    println!("fork child: barrier returned");
}

/// Right after `barrier` returns, the statistics count every callback queued
/// before it as invoked, and count nothing else (a barrier's marker is not a
/// callback). Both failed before: the invoker added a pass's count after the
/// marker had woken the waiter (a read right after `barrier` could see 0),
/// and the markers themselves were counted (invoked could exceed queued).
#[test]
fn after_barrier_the_stats_count_exactly_the_callbacks_queued_before_it() {
    let d = Srcu::new("stats-after-barrier");
    let ran = Arc::new(AtomicUsize::new(0));
    for round in 1..=300u64 {
        for _ in 0..3 {
            let ran = ran.clone();
            d.call_srcu(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
        d.barrier();
        let s = d.stats();
        assert_eq!(ran.load(Ordering::SeqCst) as u64, 3 * round);
        assert_eq!(s.callbacks_queued, 3 * round, "round {round}: {s:?}");
        assert_eq!(s.callbacks_invoked, 3 * round, "round {round}: {s:?}");
    }
}
