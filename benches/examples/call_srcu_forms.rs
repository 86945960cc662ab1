//! Question: where does the time of `call_srcu` go, by the form of the callback?
//!
//! One thread queues 100,000 callbacks on a static domain, then waits for
//! them with `barrier`; the best of `ROUNDS` rounds is printed, the queueing
//! alone and queueing + barrier, and the CPU time the runtime's callback
//! threads spent per callback over all rounds (from
//! `/proc/self/task/*/schedstat`). The forms:
//!
//! - `closure-box`: a closure that owns a `Box<u64>` (the form of
//!   `benches/call_srcu_throughput.rs`): a closure slot *and* the user's
//!   heap node, both handed from this thread to a runtime thread;
//! - `closure`: a closure that owns a `u64`: a closure slot only;
//! - `raw`: `call_srcu_raw` with the head inside one heap node (the form of
//!   liburcu's `call_rcu` peer);
//! - `raw-two`: `call_srcu_raw` with the head in one heap node that owns a
//!   second one (`Box<u64>`): two heap objects per callback.
//!
//! ```sh
//! cargo run --release -p usrcu-benches --example call_srcu_forms -- [ROUNDS]
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use usrcu::{CallbackHead, Srcu};

static CLOSURES: Srcu = Srcu::new_static("forms-closures");
static RAW: Srcu = Srcu::new_static("forms-raw");

/// Callbacks invoked (a count; read after `barrier`).
static INVOKED: AtomicU64 = AtomicU64::new(0);

const BATCH: u64 = 100_000;

#[repr(C)]
struct Node {
    head: CallbackHead,
    payload: u64,
}

#[repr(C)]
struct NodeWithBox {
    head: CallbackHead,
    payload: Box<u64>,
}

unsafe extern "C" fn free_node(h: *mut CallbackHead) {
    // SAFETY: `h` is the first field of a `Box<Node>` leaked by `queue`
    // (repr(C)), handed back exactly once.
    let n = unsafe { Box::from_raw(h as *mut Node) };
    std::hint::black_box(n.payload);
    // Relaxed: a count, read after `barrier`.
    INVOKED.fetch_add(1, Ordering::Relaxed);
}

unsafe extern "C" fn free_node_with_box(h: *mut CallbackHead) {
    // SAFETY: as `free_node`, for a `Box<NodeWithBox>`.
    let n = unsafe { Box::from_raw(h as *mut NodeWithBox) };
    std::hint::black_box(&n.payload);
    // Relaxed: as above.
    INVOKED.fetch_add(1, Ordering::Relaxed);
}

fn queue(form: &str, i: u64) {
    match form {
        "closure-box" => {
            let node = Box::new(i);
            CLOSURES.call_srcu(move || {
                std::hint::black_box(node);
                // Relaxed: as above.
                INVOKED.fetch_add(1, Ordering::Relaxed);
            });
        }
        "closure" => CLOSURES.call_srcu(move || {
            std::hint::black_box(i);
            // Relaxed: as above.
            INVOKED.fetch_add(1, Ordering::Relaxed);
        }),
        "raw" => {
            let n = Box::into_raw(Box::new(Node {
                head: CallbackHead::new(),
                payload: i,
            }));
            // SAFETY: a fresh node that `free_node` takes back; its head is
            // its first field.
            unsafe { RAW.call_srcu_raw(n as *mut CallbackHead, free_node) };
        }
        "raw-two" => {
            let n = Box::into_raw(Box::new(NodeWithBox {
                head: CallbackHead::new(),
                payload: Box::new(i),
            }));
            // SAFETY: as above, for `free_node_with_box`.
            unsafe { RAW.call_srcu_raw(n as *mut CallbackHead, free_node_with_box) };
        }
        _ => unreachable!(),
    }
}

/// Nanoseconds the runtime's callback invokers (`usrcu-cb-*`) have run, all
/// together, from each thread's `schedstat` (0 where it cannot be read).
fn invoker_cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("usrcu-cb-")))
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn main() {
    let rounds: usize = match std::env::args().nth(1) {
        None => 20,
        Some(s) => s.parse().unwrap_or_else(|_| {
            eprintln!("usage: call_srcu_forms [ROUNDS]  (ROUNDS: a positive integer, default 20)");
            std::process::exit(2)
        }),
    };
    println!("{BATCH} callbacks per round, best of {rounds} rounds, one thread, unpinned");
    for form in ["closure-box", "closure", "raw", "raw-two"] {
        let domain = if form.starts_with("raw") { &RAW } else { &CLOSURES };
        let (mut best_queue, mut best_total) = (f64::MAX, f64::MAX);
        let cpu0 = invoker_cpu_ns();
        for _ in 0..rounds {
            let before = INVOKED.load(Ordering::Relaxed);
            let t0 = Instant::now();
            for i in 0..BATCH {
                queue(form, i);
            }
            let queued = t0.elapsed();
            domain.barrier();
            let total = t0.elapsed();
            // Relaxed: `barrier` returned, so every callback ran.
            assert_eq!(INVOKED.load(Ordering::Relaxed) - before, BATCH);
            best_queue = best_queue.min(queued.as_secs_f64() * 1e3);
            best_total = best_total.min(total.as_secs_f64() * 1e3);
        }
        let per_cb = (invoker_cpu_ns() - cpu0) as f64 / (rounds as u64 * BATCH) as f64;
        println!("{form:12} queue {best_queue:6.2} ms   queue + barrier {best_total:6.2} ms   invokers {per_cb:5.1} ns CPU a callback");
    }
}
