//! Diagnostic: rounds of the boxed `call_srcu` bench (100,000 boxed
//! callbacks from one thread, then `barrier`), printing each round's time
//! and the grace periods it took. `cargo run --release -p usrcu-benches --example boxed_rounds [rounds]`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use usrcu::Srcu;

static D: Srcu = Srcu::new_static("boxed-rounds");
static INVOKED: AtomicU64 = AtomicU64::new(0);

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let mut best = f64::MAX;
    for r in 0..rounds {
        let s0 = D.stats();
        let t0 = Instant::now();
        for i in 0..100_000u64 {
            let node = Box::new(i);
            D.call_srcu(move || {
                std::hint::black_box(node);
                INVOKED.fetch_add(1, Ordering::Relaxed);
            });
        }
        let t1 = t0.elapsed();
        D.barrier();
        let t = t0.elapsed();
        let s1 = D.stats();
        best = best.min(t.as_secs_f64() * 1e3);
        println!(
            "round {r:2}: {:6.2} ms (queueing {:6.2} ms), {} grace periods, {} invoked",
            t.as_secs_f64() * 1e3,
            t1.as_secs_f64() * 1e3,
            s1.grace_periods - s0.grace_periods,
            s1.callbacks_invoked - s0.callbacks_invoked
        );
    }
    println!("best {best:.2} ms");
}
