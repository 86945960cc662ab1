//! Question: what does a read-side guard cost in a user's own loop, compiled
//! into a function of its own (not criterion's closure), against liburcu
//! memb's `rcu_read_lock` + `rcu_read_unlock` in C?
//!
//! `guard_loop` below is `#[inline(never)]`, so `objdump -d` shows the exact
//! instructions of one lock + unlock; the best of 10 rounds of 20 million is
//! printed for both. Used to try variants of the read side (docs/benchmarks.md,
//! "Session 5").
//!
//! ```sh
//! cargo run --release -p usrcu-benches --example guard_loop
//! objdump -d --no-show-raw-insn -M intel target/release/examples/guard_loop | grep -A60 'guard_loop.*guard_loop.*>:'
//! ```

use usrcu::Srcu;

static D: Srcu = Srcu::new_static("example-guard-loop");

/// `n` read-side sections, as a user's loop writes them.
#[inline(never)]
fn guard_loop(n: u64) {
    for _ in 0..n {
        drop(D.read_lock());
    }
}

/// Nanoseconds per iteration of `f(n)`.
fn time(n: u64, f: impl Fn(u64)) -> f64 {
    let t = std::time::Instant::now();
    f(n);
    t.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    if !usrcu_benches::urcu::available("guard_loop") {
        std::process::exit(1);
    }
    let n: u64 = 20_000_000;
    let reg = usrcu_benches::urcu::Registered::new();
    D.attach();
    eprintln!("guard_loop: rseq path active: {}", usrcu::rseq_active());
    let (mut guard, mut urcu) = (f64::MAX, f64::MAX);
    for _ in 0..10 {
        guard = guard.min(time(n, guard_loop));
        urcu = urcu.min(time(n, |n| reg.read_loop(n)));
    }
    println!(
        "best of 10 rounds of {n}: usrcu guard {guard:.3} ns, liburcu memb {urcu:.3} ns, ratio {:.3}",
        guard / urcu
    );
}
