//! Where a load + unload cycle's time goes: `ModuleLoader::load` and
//! `ModuleLoader::unload` of the `callbacks` fixture, timed apart, next to a
//! bare `dlopen` + `dlclose` of the same file, then step by step
//! (`usrcu_module_loader::phase_timing`, on only for that last pass: the
//! median and the mean of each step).
//!
//! Each figure is the best of 5 batches of `N` cycles (default 300; the
//! first argument overrides), batch means, so that a busy moment of a
//! shared machine shows as a worse batch rather than a worse figure.
//!
//! `cargo run --release -p usrcu-benches --example unload_phases [N] [--fresh-copies]`
//!
//! `--fresh-copies` turns [`LoaderConfig::reuse_copies`] off: every load
//! copies the file into a new sealed memfd and checks it, as a load of a
//! file that just changed does.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use usrcu_module_loader::{phase_timing, LoaderConfig, ModuleLoader};

const BATCHES: usize = 5;

fn main() {
    let n: u32 = std::env::args().find_map(|a| a.parse().ok()).unwrap_or(300);
    let so = usrcu_tests::fixture_path("callbacks");
    let fresh = std::env::args().any(|a| a == "--fresh-copies");
    let loader = ModuleLoader::with_config(LoaderConfig {
        reuse_copies: !fresh,
        ..Default::default()
    });
    usrcu_benches::wait_until_quiet(&so);
    println!(
        "{}",
        if fresh {
            "every load copies and checks the file (reuse_copies: false)"
        } else {
            "idle sealed copies reused (reuse_copies: true, the default; --fresh-copies turns it off)"
        }
    );

    let mut bare = Duration::MAX;
    let (mut load, mut unload) = (Duration::MAX, Duration::MAX);
    for _ in 0..BATCHES {
        let t0 = Instant::now();
        for _ in 0..n {
            // SAFETY: the fixture's initialisers (none but Rust's own) are
            // safe to run, and nothing of it is called or kept.
            let lib = unsafe { libloading::Library::new(&so) }.expect("dlopen the fixture");
            lib.close().expect("dlclose the fixture");
        }
        bare = bare.min(t0.elapsed() / n);

        let (mut l, mut u) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..n {
            let t0 = Instant::now();
            // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
            let h = unsafe { loader.load(&so) }.expect("load the fixture");
            let t1 = Instant::now();
            let r = loader.unload(h).expect("unload the fixture");
            let t2 = Instant::now();
            assert!(r.unmapped, "{r}");
            l += t1 - t0;
            u += t2 - t1;
        }
        load = load.min(l / n);
        unload = unload.min(u / n);
    }
    println!(
        "best batch of {BATCHES} x {n} cycles: bare dlopen+dlclose {bare:?}; load {load:?}, unload {unload:?}, \
         cycle {:?} ({:.1}x)",
        load + unload,
        (load + unload).as_secs_f64() / bare.as_secs_f64()
    );

    // Step by step: mean over one batch, timing on.
    phase_timing::enable(true);
    let _ = phase_timing::take();
    for _ in 0..n {
        // SAFETY: as above.
        let h = unsafe { loader.load(&so) }.expect("load the fixture");
        let r = loader.unload(h).expect("unload the fixture");
        assert!(r.unmapped, "{r}");
    }
    phase_timing::enable(false);
    let mut order = Vec::new();
    let mut laps: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for (step, d) in phase_timing::take() {
        if !laps.contains_key(step) {
            order.push(step);
        }
        laps.entry(step).or_default().push(d);
    }
    // Medians: a preemption of this shared machine lands in one lap and
    // would move a mean by its length / n.
    println!("steps (median and mean of {n} cycles, timing on):");
    let (mut med_sum, mut mean_sum) = (0.0, 0.0);
    for step in order {
        let v = laps.get_mut(step).expect("listed");
        v.sort_unstable();
        let med = v[v.len() / 2].as_secs_f64() * 1e6;
        let mean = v.iter().sum::<Duration>().as_secs_f64() * 1e6 / v.len() as f64;
        med_sum += med;
        mean_sum += mean;
        println!("  {med:>8.1} µs {mean:>8.1} µs  {step}");
    }
    println!("  {med_sum:>8.1} µs {mean_sum:>8.1} µs  (sums)");
}
