//! Question: what does a full load + unload cycle of a real plugin cost through `ModuleLoader`, against bare libloading open + close of the same object?
//!
//! The plugin is the `callbacks` fixture (`tests/fixtures/callbacks`: three
//! static domains of 8, 16 and 32 possible CPUs), built in release by
//! `usrcu_tests::fixture_path` on first use (a cargo build, outside the
//! measurement). Cases:
//!
//! * `libloading_open_close`: `dlopen` + `dlclose` of the built object, the
//!   floor: no copy, no descriptor, no init/exit, no check that it left;
//! * `module_loader`: `ModuleLoader::load` (copy to a unique path, `dlopen`,
//!   descriptor checks, runtime hand-over, attach of the static domains,
//!   notifiers, `init`) + `unload` (liveness grace period, `exit`, the SRCU
//!   notifier — all three barriers skipped by the `call_srcu_used` gate —
//!   cleanup, pthread-key check, `dlclose`, address-space check);
//! * `module_loader_with_callbacks`: the same, with 4 callbacks queued on
//!   one domain before unload, so the notifier issues one real barrier.
//!
//! Every cycle asserts that the object really left the address space.

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use usrcu_module_loader::{BarrierOutcome, ModuleLoader, ModuleState};

type QueueFn = unsafe extern "C" fn(usize, u64, *const AtomicUsize);

fn unload_cost(c: &mut Criterion) {
    let so = usrcu_tests::fixture_path("callbacks");
    let loader = ModuleLoader::new();
    let ran: &'static AtomicUsize = usrcu_tests::leak(AtomicUsize::new(0));

    let mut g = c.benchmark_group("unload_cost/load_unload_cycle");
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(3));

    g.bench_function("libloading_open_close", |b| {
        b.iter(|| {
            // SAFETY: the fixture's initialisers (none but Rust's own) are
            // safe to run, and nothing of it is called or kept.
            let lib = unsafe { libloading::Library::new(&so) }.expect("dlopen the fixture");
            lib.close().expect("dlclose the fixture");
        })
    });

    g.bench_function("module_loader", |b| {
        b.iter(|| {
            // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
            let h = unsafe { loader.load(&so) }.expect("load the fixture");
            let r = loader.unload(h).expect("unload the fixture");
            assert!(r.unmapped && r.state == ModuleState::Unloaded, "{r}");
            assert_eq!(r.barriers_skipped(), 3, "{r}");
        })
    });

    g.bench_function("module_loader_with_callbacks", |b| {
        b.iter(|| {
            // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
            let h = unsafe { loader.load(&so) }.expect("load the fixture");
            // SAFETY: the fixture exports `fx_queue_callbacks` with this type.
            let queue = unsafe { loader.symbol::<QueueFn>(h, "fx_queue_callbacks") }.expect("symbol");
            // SAFETY: `ran` lives for the process.
            queue
                .call(|f| unsafe { f.call(4, 0, ran) })
                .expect("call into the fixture");
            drop(queue);
            let r = loader.unload(h).expect("unload the fixture");
            assert!(r.unmapped && r.state == ModuleState::Unloaded, "{r}");
            assert_eq!(
                r.domain("callbacks.queue").map(|d| d.barrier),
                Some(BarrierOutcome::Issued),
                "{r}"
            );
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = usrcu_benches::criterion();
    targets = unload_cost
}
criterion_main!(benches);
