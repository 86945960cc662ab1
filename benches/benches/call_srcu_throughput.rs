//! Question: how many callbacks per second can be queued and invoked from 1 and 2 threads — usrcu `call_srcu` (closure and intrusive forms) against liburcu's `call_rcu`?
//!
//! One iteration: each of T threads (unpinned, as users run them) queues a batch of 100,000
//! callbacks, then the main thread waits for all of them with `barrier`
//! (`rcu_barrier` for liburcu). The time covers queueing, the grace periods
//! and the invocations; throughput is callbacks per second over all threads
//! (criterion's `elem/s`). In `usrcu_call_srcu`, `usrcu_call_srcu_raw` and
//! liburcu's peer every callback frees one heap node (a Box for usrcu, a
//! malloc'ed node for liburcu), so allocation is on both sides; the closure
//! form then hands two objects to the runtime per callback (its slot and
//! the Box). `usrcu_call_srcu_by_value` is the closure form with its payload
//! inside the closure: one object per callback (the slot, the runtime's),
//! as liburcu's peer has one (its node, malloc's).
//!
//! The batch is large on purpose: liburcu's call_rcu thread sleeps 10 ms
//! (`poll(NULL, 0, 10)`) after each wake-up to gather callbacks, so small
//! rounds would measure that sleep, not throughput. This is sustained
//! throughput; latency of one callback is not measured here.

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use usrcu::{CallbackHead, Srcu};
use usrcu_benches::{urcu, Pool};

static CLOSURES: Srcu = Srcu::new_static("bench-call-srcu-closure");
static INTRUSIVE: Srcu = Srcu::new_static("bench-call-srcu-intrusive");
static CLOSURES_BY_VALUE: Srcu = Srcu::new_static("bench-call-srcu-closure-by-value");

/// Callbacks invoked (checked after each round).
static INVOKED: AtomicU64 = AtomicU64::new(0);

/// Callbacks each thread queues per iteration.
const BATCH: u64 = 100_000;

#[repr(C)]
struct Node {
    head: CallbackHead,
    payload: u64,
}

unsafe extern "C" fn free_node(h: *mut CallbackHead) {
    // SAFETY: `h` is the first field of a `Box<Node>` leaked in `queue_intrusive`
    // (repr(C)), handed back exactly once.
    let node = unsafe { Box::from_raw(h as *mut Node) };
    std::hint::black_box(node.payload);
    // Relaxed: a count, read after `barrier`, which orders the callbacks' effects.
    INVOKED.fetch_add(1, Ordering::Relaxed);
}

fn queue_closures(n: u64) {
    for i in 0..n {
        let node = Box::new(i);
        CLOSURES.call_srcu(move || {
            std::hint::black_box(node);
            // Relaxed: see `INVOKED`.
            INVOKED.fetch_add(1, Ordering::Relaxed);
        });
    }
}

/// The closure form with the payload inside the closure (no heap node of
/// its own): one object per callback, the closure slot, as liburcu's peer
/// has one, its malloc'ed node.
fn queue_closures_by_value(n: u64) {
    for i in 0..n {
        CLOSURES_BY_VALUE.call_srcu(move || {
            std::hint::black_box(i);
            // Relaxed: see `INVOKED`.
            INVOKED.fetch_add(1, Ordering::Relaxed);
        });
    }
}

fn queue_intrusive(n: u64) {
    for i in 0..n {
        let node = Box::into_raw(Box::new(Node {
            head: CallbackHead::new(),
            payload: i,
        }));
        // SAFETY: `node` is a fresh allocation that `free_node` takes back;
        // its head is its first field.
        unsafe { INTRUSIVE.call_srcu_raw(node as *mut CallbackHead, free_node) };
    }
}

/// Few, flat samples: one iteration is 100,000 callbacks per thread.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_millis(300));
    g.measurement_time(std::time::Duration::from_secs(3));
    g.sampling_mode(criterion::SamplingMode::Flat);
    g
}

fn call_srcu_throughput(c: &mut Criterion) {
    let _reg = urcu::Registered::new();
    CLOSURES.attach();
    INTRUSIVE.attach();
    CLOSURES_BY_VALUE.attach();
    let threads = [1usize, 2];

    for (name, domain, queue) in [
        ("usrcu_call_srcu", &CLOSURES, queue_closures as fn(u64)),
        ("usrcu_call_srcu_raw", &INTRUSIVE, queue_intrusive as fn(u64)),
        (
            "usrcu_call_srcu_by_value",
            &CLOSURES_BY_VALUE,
            queue_closures_by_value as fn(u64),
        ),
    ] {
        let mut g = group(c, &format!("call_srcu_throughput/{name}"));
        for &t in &threads {
            let pool = Pool::new(t, move |_| move |n: u64| queue(n * BATCH));
            g.throughput(Throughput::Elements(t as u64 * BATCH));
            g.bench_with_input(BenchmarkId::from_parameter(t), &t, |b, _| {
                b.iter_custom(|iters| {
                    let before = INVOKED.load(Ordering::Relaxed);
                    let t0 = std::time::Instant::now();
                    pool.run(iters);
                    domain.barrier();
                    let el = t0.elapsed();
                    // Relaxed: `barrier` returned, so every callback ran.
                    assert_eq!(INVOKED.load(Ordering::Relaxed) - before, iters * t as u64 * BATCH);
                    el
                })
            });
        }
        g.finish();
    }

    if !urcu::available("call_srcu_throughput/liburcu_call_rcu") {
        return;
    }
    let mut g = group(c, "call_srcu_throughput/liburcu_call_rcu");
    for &t in &threads {
        let pool = Pool::new(t, |_| {
            let reg = urcu::Registered::new();
            move |n: u64| reg.call_rcu_n(n * BATCH)
        });
        g.throughput(Throughput::Elements(t as u64 * BATCH));
        g.bench_with_input(BenchmarkId::from_parameter(t), &t, |b, _| {
            b.iter_custom(|iters| {
                let before = urcu::invoked();
                let t0 = std::time::Instant::now();
                pool.run(iters);
                urcu::barrier();
                let el = t0.elapsed();
                assert_eq!(urcu::invoked() - before, iters * t as u64 * BATCH);
                el
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = usrcu_benches::criterion();
    targets = call_srcu_throughput
}
criterion_main!(benches);
