//! Where a load + unload cycle's time goes: the mean of `ModuleLoader::load`
//! and of `ModuleLoader::unload` of the `callbacks` fixture over 300 cycles,
//! printed apart (the `unload_cost` bench times them together).
//!
//! `cargo run --release -p usrcu-benches --example unload_phases`

use std::time::{Duration, Instant};
use usrcu_module_loader::ModuleLoader;

fn main() {
    let so = usrcu_tests::fixture_path("callbacks");
    let loader = ModuleLoader::new();
    let (mut load, mut unload) = (Duration::ZERO, Duration::ZERO);
    let n = 300;
    for _ in 0..n {
        let t0 = Instant::now();
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let h = unsafe { loader.load(&so) }.expect("load the fixture");
        let t1 = Instant::now();
        let r = loader.unload(h).expect("unload the fixture");
        let t2 = Instant::now();
        assert!(r.unmapped, "{r}");
        load += t1 - t0;
        unload += t2 - t1;
    }
    println!("load {:?}, unload {:?} (mean of {n} cycles)", load / n, unload / n);
}
