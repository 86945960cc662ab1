//! Quick read-side cost probe (the criterion benches are in benches/).
use std::time::Instant;
static D: usrcu::Srcu = usrcu::Srcu::new_static("probe");
#[inline(never)]
fn one() {
    let g = D.read_lock();
    std::hint::black_box(&g);
}
fn main() {
    let n = 100_000_000u64;
    one();
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..n {
            one();
        }
        println!(
            "{:.2} ns per lock+unlock (rseq {})",
            t.elapsed().as_nanos() as f64 / n as f64,
            usrcu::rseq_active()
        );
    }
}
