//! Question: what do Tasks Trace readers and tracepoints cost on one thread — `trace::read_lock` + drop against liburcu memb's lock + unlock; firing a tracepoint with no probe against a Relaxed load and branch; firing with one probe against a `Mutex<Vec<Box<dyn Fn>>>` and an `arc-swap` dispatcher?
//!
//! liburcu's loop runs inside C (`csrc/urcu_shim.c`), one FFI call for many
//! sections; every other case runs in criterion's loop (one compare and
//! branch per iteration, as the C loop has).

use std::hint::black_box;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use usrcu::trace;
use usrcu_benches::urcu;
use usrcu_registry::define_tracepoint;

define_tracepoint!(static EMPTY: Tracepoint<u64> = normal);
define_tracepoint!(static ONE_NORMAL: Tracepoint<u64> = normal);
define_tracepoint!(static ONE_FAULTABLE: Tracepoint<u64> = faultable);

/// What a hand-written "is anything attached?" check reads.
static FLAG: AtomicPtr<u64> = AtomicPtr::new(std::ptr::null_mut());

static HITS: AtomicU64 = AtomicU64::new(0);

fn probe(hits: &AtomicU64, x: &u64) {
    // Relaxed: a count.
    hits.fetch_add(*x, Ordering::Relaxed);
}

type Handler = Box<dyn Fn(&u64) + Send + Sync>;

fn read_side(c: &mut Criterion) {
    let reg = urcu::Registered::new();
    drop(trace::read_lock()); // register this thread's record
    eprintln!("trace: fence mode {:?}", trace::fence_mode());
    let mut g = c.benchmark_group("trace/read_lock_unlock");
    g.bench_function("usrcu_trace", |b| b.iter(|| drop(trace::read_lock())));
    g.bench_function("liburcu_memb", |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            reg.read_loop(iters);
            t0.elapsed()
        })
    });
    g.finish();
}

fn fire_no_probe(c: &mut Criterion) {
    let mut g = c.benchmark_group("trace/fire_no_probe");
    g.bench_function("tracepoint", |b| b.iter(|| EMPTY.fire(black_box(&1))));
    g.bench_function("relaxed_load_branch", |b| {
        b.iter(|| {
            // The same argument as the tracepoint's, made the same way.
            let x = black_box(&1u64);
            // Relaxed: the hand-written enabled check.
            if !FLAG.load(Ordering::Relaxed).is_null() {
                black_box(x);
            }
        })
    });
    g.finish();
}

fn fire_one_probe(c: &mut Criterion) {
    let hn = ONE_NORMAL.register(probe, &HITS).unwrap();
    let hf = ONE_FAULTABLE.register_may_block(probe, &HITS).unwrap();
    let mutex: Mutex<Vec<Handler>> = Mutex::new(vec![Box::new(|x: &u64| probe(&HITS, x))]);
    let swap: ArcSwap<Vec<Handler>> = ArcSwap::new(Arc::new(vec![Box::new(|x: &u64| probe(&HITS, x))]));

    let mut g = c.benchmark_group("trace/fire_one_probe");
    g.bench_function("tracepoint_normal", |b| b.iter(|| ONE_NORMAL.fire(black_box(&1))));
    g.bench_function("tracepoint_faultable", |b| b.iter(|| ONE_FAULTABLE.fire(black_box(&1))));
    g.bench_function("mutex_vec_box_dyn_fn", |b| {
        b.iter(|| {
            for h in mutex.lock().unwrap().iter() {
                h(black_box(&1));
            }
        })
    });
    g.bench_function("arc_swap", |b| {
        b.iter(|| {
            for h in swap.load().iter() {
                h(black_box(&1));
            }
        })
    });
    g.finish();
    assert!(hn.unregister() && hf.unregister());
}

criterion_group! {
    name = benches;
    config = usrcu_benches::criterion();
    targets = read_side, fire_no_probe, fire_one_probe
}
criterion_main!(benches);
