//! Question: what does a call through a `HookSlot` cost against a plain
//! indirect call through an `AtomicPtr` load (target: at most 1.2x) and
//! against `Symbol::call` of the same plugin function; and how long does a
//! Tasks grace period take with 2, 64 and 512 idle threads?
//!
//! Cases of `hook_slot/call` (one call of `x + 1`, one thread):
//!
//! * `atomicptr_indirect_call`: an Acquire load of an `AtomicPtr` and an
//!   indirect call of a host function: the floor;
//! * `hook_slot_call`: `HookSlot::call` of the same host function;
//! * `hook_slot_call_plugin`: `HookSlot::call` of the `hook` fixture's
//!   `fx_hook_add`, installed with `ModuleLoader::install_hook`;
//! * `symbol_call_plugin`: `Symbol::call` of the same plugin function (a
//!   read section of the module's liveness domain and a state check).
//!
//! `hook_slot/tasks_grace_period/<n>_idle_threads`: `tasks::synchronize()`
//! with `n` extra threads blocked on a channel (each read once per grace
//! period from `/proc/self/task/<tid>/status`).

use std::hint::black_box;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use usrcu::tasks::{self, HookSlot};
use usrcu_module_loader::ModuleLoader;

#[inline(never)]
extern "C" fn add_one(x: u64) -> u64 {
    x.wrapping_add(1)
}

static PLAIN: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());
static HOST_SLOT: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
static PLUGIN_SLOT: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

#[inline(always)]
fn plain_call(x: u64) -> Option<u64> {
    // Acquire: the same ordering HookSlot::call uses.
    let p = PLAIN.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: `PLAIN` only ever holds `add_one`.
    let f: extern "C" fn(u64) -> u64 = unsafe { std::mem::transmute::<*mut (), extern "C" fn(u64) -> u64>(p) };
    Some(f(x))
}

fn call(c: &mut Criterion) {
    PLAIN.store(add_one as *mut (), Ordering::Release);
    // SAFETY: `add_one` never blocks, is in this binary's text, and is
    // stored nowhere else but `PLAIN` (which is never cleared).
    unsafe { HOST_SLOT.set_sync(Some(add_one)) };
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(usrcu_tests::fixture_path("hook")) }.expect("load the hook fixture");
    // SAFETY: the fixture exports `fx_hook_add` with this type; it never
    // blocks and stores no pointer.
    unsafe { loader.install_hook(h, &PLUGIN_SLOT, "fx_hook_add") }.expect("install");
    // SAFETY: as above.
    let sym = unsafe { loader.symbol::<extern "C" fn(u64) -> u64>(h, "fx_hook_add") }.expect("symbol");

    let mut g = c.benchmark_group("hook_slot/call");
    g.bench_function("atomicptr_indirect_call", |b| {
        let mut x = 0u64;
        b.iter(|| {
            x = plain_call(black_box(x)).unwrap();
        })
    });
    g.bench_function("hook_slot_call", |b| {
        let mut x = 0u64;
        b.iter(|| {
            x = HOST_SLOT.call(black_box(x)).unwrap();
        })
    });
    g.bench_function("hook_slot_call_plugin", |b| {
        let mut x = 0u64;
        b.iter(|| {
            x = PLUGIN_SLOT.call(black_box(x)).unwrap();
        })
    });
    g.bench_function("symbol_call_plugin", |b| {
        let mut x = 0u64;
        b.iter(|| {
            x = sym.call(|f| f.call(black_box(x))).unwrap();
        })
    });
    g.finish();
    drop(sym);
    let r = loader.unload(h).expect("unload");
    assert!(r.unmapped && r.hook_slots.cleared == 1, "{r:?}");
}

fn grace_period(c: &mut Criterion) {
    let mut g = c.benchmark_group("hook_slot/tasks_grace_period");
    g.sample_size(10);
    for n in [2usize, 64, 512] {
        let (tx, rx) = mpsc::channel::<()>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let idle: Vec<_> = (0..n)
            .map(|_| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        // Blocks (state S) until the sender is dropped.
                        let _ = rx.lock().map(|r| r.recv());
                    })
                    .expect("spawn")
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        tasks::synchronize();
        g.bench_with_input(BenchmarkId::new("idle_threads", n), &n, |b, _| {
            b.iter(tasks::synchronize)
        });
        drop(tx);
        for t in idle {
            let _ = t.join();
        }
    }
    g.finish();
}

criterion_group!(benches, call, grace_period);
criterion_main!(benches);
