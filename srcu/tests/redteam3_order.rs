//! Red-team (round 3): queue order per thread when one thread mixes the
//! three ways to queue a callback — a small closure (runtime slot, no
//! allocation of its own), a large closure (boxed) and an intrusive head
//! (`call_srcu_raw`) — while other threads do the same and the domain goes
//! through cleanup and re-attach between batches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use usrcu::{CallbackHead, Srcu};

static LOG: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
static RAW_RUNS: AtomicU64 = AtomicU64::new(0);

#[repr(C)]
struct Node {
    head: CallbackHead,
    thread: u64,
    seq: u64,
}

unsafe extern "C" fn raw_cb(h: *mut CallbackHead) {
    // SAFETY: `h` is the first field of a leaked `Box<Node>`, handed back
    // once.
    let n = unsafe { Box::from_raw(h as *mut Node) };
    LOG.lock().unwrap_or_else(|p| p.into_inner()).push((n.thread, n.seq));
    RAW_RUNS.fetch_add(1, Ordering::Relaxed);
}

fn queue(d: &Srcu, thread: u64, seq: u64) {
    match seq % 3 {
        0 => d.call_srcu(move || LOG.lock().unwrap().push((thread, seq))),
        1 => {
            let pad = [seq as u8; 512];
            d.call_srcu(move || {
                assert_eq!(pad[511], seq as u8);
                LOG.lock().unwrap().push((thread, seq));
            })
        }
        _ => {
            let n = Box::into_raw(Box::new(Node {
                head: CallbackHead::new(),
                thread,
                seq,
            }));
            // SAFETY: `n` stays valid until `raw_cb` takes it back.
            unsafe { d.call_srcu_raw(n as *mut CallbackHead, raw_cb) };
        }
    }
}

#[test]
fn callbacks_of_all_three_kinds_run_in_each_threads_queue_order_across_reattach() {
    const THREADS: u64 = 6;
    const PER: u64 = 3000;
    let d = Arc::new(Srcu::new("redteam3-order-kinds"));
    for batch in 0..3 {
        LOG.lock().unwrap().clear();
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let d = Arc::clone(&d);
                std::thread::spawn(move || {
                    for s in 0..PER {
                        queue(&d, t, s);
                        if s % 97 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        d.barrier();
        let log = std::mem::take(&mut *LOG.lock().unwrap());
        assert_eq!(
            log.len() as u64,
            THREADS * PER,
            "batch {batch}: every callback ran once"
        );
        let mut next = vec![0u64; THREADS as usize];
        for (t, s) in log {
            assert_eq!(
                s, next[t as usize],
                "batch {batch}: thread {t}'s callbacks out of order"
            );
            next[t as usize] += 1;
        }
        let st = d.stats();
        assert_eq!(st.callbacks_queued, st.callbacks_invoked, "batch {batch}");
        // SAFETY: every worker joined; nothing else uses `d` now.
        unsafe { d.cleanup() }.expect("a drained domain cleans up");
    }
}
