//! Question: what does one grace period cost on an idle domain, for
//! `perf record` to see where it goes?
//!
//! One thread, registered with liburcu as in `synchronize_latency`, calls
//! `synchronize_expedited`, `synchronize` and liburcu's `synchronize_rcu`
//! back to back, `N` times each per round; the best of 8 rounds is printed
//! for each, with the ratios to liburcu.
//!
//! ```sh
//! cargo run --release -p usrcu-benches --example idle_gp_loop -- [N]
//! perf record ./target/release/examples/idle_gp_loop 200000 && perf report
//! ```

use usrcu::Srcu;

static IDLE: Srcu = Srcu::new_static("example-idle-gp");

/// Nanoseconds per call of `f`, over `n` calls.
fn time(n: u64, f: impl Fn()) -> f64 {
    let t = std::time::Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let n: u64 = match std::env::args().nth(1) {
        None => 500_000,
        Some(s) => s.parse().unwrap_or_else(|_| {
            eprintln!("usage: idle_gp_loop [CALLS_PER_ROUND]");
            std::process::exit(2)
        }),
    };
    if !usrcu_benches::urcu::available("idle_gp_loop") {
        std::process::exit(1);
    }
    let _reg = usrcu_benches::urcu::Registered::new();
    IDLE.synchronize_expedited();
    let (mut exp, mut normal, mut urcu) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..8 {
        exp = exp.min(time(n, || IDLE.synchronize_expedited()));
        normal = normal.min(time(n, || IDLE.synchronize()));
        urcu = urcu.min(time(n, usrcu_benches::urcu::synchronize));
    }
    println!(
        "best of 8 rounds of {n}: synchronize_expedited {exp:.1} ns, synchronize {normal:.1} ns, \
         liburcu synchronize_rcu {urcu:.1} ns; ratios {:.3} and {:.3}",
        exp / urcu,
        normal / urcu
    );
}
