//! Red-team of the Tasks and Tasks Trace flavors' public API, as a user
//! would misuse it: callbacks that queue, wait, panic; extreme timeouts;
//! deep nesting; hook slots replaced while other threads call them. The
//! tests run one at a time: these flavors are process-wide.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;
use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::tasks::{self, HookSlot};
use usrcu::{trace, Srcu};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[path = "common/bounded.rs"]
mod bounded;
use bounded::{finishes, HANG};

#[test]
fn tasks_callbacks_queued_from_a_callback_run_and_a_later_barrier_waits_for_them() {
    let _s = serial();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    tasks::call(move || {
        let l2 = l.clone();
        tasks::call(move || l2.lock().unwrap().push(2));
        l.lock().unwrap().push(1);
    });
    finishes("tasks barriers", tasks::barrier);
    finishes("tasks barriers", tasks::barrier);
    assert_eq!(*log.lock().unwrap(), vec![1, 2]);
}

#[test]
fn tasks_barrier_or_synchronize_inside_a_tasks_callback_is_reported_not_a_hang() {
    let _s = serial();
    let cap = Capture::start();
    let after = Arc::new(AtomicUsize::new(0));
    tasks::call(tasks::barrier);
    tasks::call(tasks::synchronize);
    tasks::call(|| {
        let _ = tasks::barrier_timeout(Duration::from_secs(1));
    });
    let a = after.clone();
    tasks::call(move || {
        a.fetch_add(1, SeqCst);
    });
    finishes("tasks barrier after illegal waits", tasks::barrier);
    assert_eq!(after.load(SeqCst), 1);
    assert!(cap.find(tasks::DOMAIN_NAME, WarningKind::CallbackPanicked).len() >= 2);
}

#[test]
fn tasks_extreme_timeouts_neither_panic_nor_block() {
    let _s = serial();
    assert!(finishes("barrier_timeout(MAX)", || tasks::barrier_timeout(
        Duration::MAX
    )));
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    tasks::call(move || {
        while !g.load(SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
    });
    for _ in 0..1000 {
        assert!(!tasks::barrier_timeout(Duration::ZERO));
    }
    gate.store(true, SeqCst);
    assert!(finishes("barrier_timeout(MAX)", || tasks::barrier_timeout(
        Duration::MAX
    )));
    let c = tasks::start_poll();
    assert!(c.wait_timeout(Duration::MAX));
    assert!(!tasks::Cookie(u64::MAX).poll());
    let _ = tasks::Cookie(u64::MAX).wait_timeout(Duration::ZERO);
    tasks::set_stall_timeout(Duration::ZERO);
    tasks::set_stall_timeout(Duration::MAX);
    finishes("synchronize with the longest stall timeout", tasks::synchronize);
    tasks::set_stall_timeout(Duration::from_secs(10));
}

static SLOT: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
extern "C" fn add_one(x: u64) -> u64 {
    x + 1
}
extern "C" fn add_two(x: u64) -> u64 {
    x + 2
}

#[test]
fn hook_slot_replaced_and_cleared_while_eight_threads_call_it_gives_only_valid_results() {
    let _s = serial();
    let stop = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut seen = [0usize; 3];
                while !stop.load(SeqCst) {
                    match SLOT.call(10) {
                        None => seen[0] += 1,
                        Some(11) => seen[1] += 1,
                        Some(12) => seen[2] += 1,
                        Some(x) => panic!("hook returned {x}"),
                    }
                    tasks::quiescent();
                }
                seen
            })
        })
        .collect();
    for i in 0..20 {
        // SAFETY: both functions never block, live in the test binary's
        // text and are stored nowhere else; `SLOT` is a static.
        unsafe {
            match i % 4 {
                0 => SLOT.set_sync(Some(add_one)),
                1 => SLOT.set_sync(Some(add_two)),
                2 => {
                    if let Some(c) = SLOT.set(Some(add_one)) {
                        assert!(c.wait_timeout(HANG));
                    }
                }
                _ => {
                    if let Some(c) = SLOT.clear() {
                        assert!(c.wait_timeout(HANG));
                    }
                }
            }
        }
    }
    SLOT.clear_sync();
    stop.store(true, SeqCst);
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(SLOT.call(1), None);
}

#[test]
fn trace_callbacks_that_queue_synchronize_and_barrier_inside_a_callback_complete() {
    let _s = serial();
    let cap = Capture::start();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    trace::call(move || {
        trace::synchronize();
        trace::barrier(); // refused: would wait for itself
        let l2 = l.clone();
        trace::call(move || l2.lock().unwrap().push(2));
        l.lock().unwrap().push(1);
    });
    finishes("trace barrier", trace::barrier);
    finishes("trace barrier", trace::barrier);
    assert_eq!(*log.lock().unwrap(), vec![1, 2]);
    assert!(!cap.find(trace::DOMAIN_NAME, WarningKind::IllegalSynchronize).is_empty());
    let s = trace::stats();
    assert_eq!(s.callbacks_queued, s.callbacks_invoked, "{s:?}");
}

#[test]
fn trace_sections_nested_a_hundred_thousand_deep_end_at_the_outermost() {
    let _s = serial();
    let mut gs = Vec::new();
    for _ in 0..100_000 {
        gs.push(trace::read_lock());
    }
    let c = trace::start_poll();
    let outer = gs.remove(0);
    drop(gs);
    assert!(trace::in_read_section());
    thread::sleep(Duration::from_millis(5));
    assert!(!trace::poll_state(c), "a grace period ended inside a section");
    drop(outer);
    assert!(!trace::in_read_section());
    finishes("trace synchronize", trace::synchronize);
    assert!(trace::poll_state(c));
}

#[test]
fn callbacks_of_each_flavor_may_wait_for_the_others() {
    let _s = serial();
    let d = Arc::new(Srcu::new("rt-cross-flavor"));
    let n = Arc::new(AtomicUsize::new(0));
    let (d2, n2) = (d.clone(), n.clone());
    d.call_srcu(move || {
        trace::synchronize();
        tasks::synchronize();
        let n3 = n2.clone();
        trace::call(move || {
            n3.fetch_add(1, SeqCst);
        });
        trace::barrier();
        let n4 = n2.clone();
        tasks::call(move || {
            n4.fetch_add(1, SeqCst);
        });
        tasks::barrier();
        n2.fetch_add(1, SeqCst);
    });
    // (Not `d2.barrier()` here: the SRCU callback above waits in
    // `trace::barrier` for this one, so that would be a cycle of waits, a
    // deadlock of the caller's making, as with two locks.)
    let n5 = n.clone();
    trace::call(move || {
        d2.synchronize();
        let n6 = n5.clone();
        d2.call_srcu(move || {
            n6.fetch_add(1, SeqCst);
        });
        n5.fetch_add(1, SeqCst);
    });
    let d3 = d.clone();
    finishes("cross-flavor callbacks", move || {
        trace::barrier();
        d3.barrier();
        d3.barrier();
    });
    assert_eq!(n.load(SeqCst), 5);
}

#[test]
fn a_poll_started_in_a_trace_callback_completes_once_the_callback_returns() {
    let _s = serial();
    let (tx, rx) = mpsc::channel();
    trace::call(move || {
        let c = trace::start_poll();
        tx.send(c).unwrap();
    });
    finishes("trace barrier", trace::barrier);
    let c = rx.recv().unwrap();
    let t0 = std::time::Instant::now();
    while !trace::poll_state(c) {
        assert!(t0.elapsed() < HANG, "a poll started in a callback never completed");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_poll_started_in_a_tasks_callback_completes_once_the_callback_returns() {
    let _s = serial();
    let (tx, rx) = mpsc::channel();
    tasks::call(move || {
        let c = tasks::start_poll();
        tx.send(c).unwrap();
    });
    finishes("tasks barrier", tasks::barrier);
    let c = rx.recv().unwrap();
    assert!(c.wait_timeout(HANG), "a poll started in a callback never completed");
}
