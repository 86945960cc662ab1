//! Red team, round 6: Tasks Trace and Tasks grace periods and callbacks
//! while host threads keep entering Tasks Trace sections that queue Tasks
//! Trace callbacks hopping to Tasks (what a faultable tracepoint's probe
//! that defers work does under fire), and pass Tasks quiescent points
//! between sections (as a loop that fires normal tracepoints must).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

static HOPS: AtomicU64 = AtomicU64::new(0);

fn run(sleep_every: u64, call_every: u64) -> (bool, bool, bool) {
    let stop = Arc::new(AtomicBool::new(false));
    let fired = Arc::new(AtomicU64::new(0));
    let firers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, fired) = (stop.clone(), fired.clone());
            thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    {
                        let _g = usrcu::trace::read_lock();
                        if i % call_every == 0 {
                            usrcu::trace::call(|| {
                                HOPS.fetch_add(1, Ordering::Relaxed);
                                usrcu::tasks::call(|| {
                                    HOPS.fetch_add(1, Ordering::Relaxed);
                                });
                            });
                        }
                        if i % sleep_every == 0 {
                            thread::sleep(Duration::from_micros(100));
                        }
                    }
                    usrcu::tasks::quiescent();
                    i += 1;
                    fired.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while fired.load(Ordering::Relaxed) < 1000 {
        thread::yield_now();
    }
    let trace_gp = {
        let c = usrcu::trace::start_poll();
        let t0 = std::time::Instant::now();
        loop {
            if usrcu::trace::poll_state(c) {
                break true;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                break false;
            }
            thread::sleep(Duration::from_millis(1));
        }
    };
    let tasks_gp = usrcu::tasks::start_poll().wait_timeout(Duration::from_secs(30));
    let trace_barrier = usrcu::trace::barrier_timeout(Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    for f in firers {
        f.join().unwrap();
    }
    (trace_gp, tasks_gp, trace_barrier)
}

#[test]
fn grace_periods_and_barriers_complete_while_sections_queue_hopping_callbacks() {
    let r = run(64, 4);
    assert_eq!(
        r,
        (true, true, true),
        "(trace gp, tasks gp, trace barrier) within 5 s each"
    );
}
