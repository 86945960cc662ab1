//! Question: how long does a grace period take — usrcu `synchronize` and `synchronize_expedited` against liburcu's `synchronize_rcu`, on an idle domain and with readers present — and how many grace periods do 8 concurrent callers need?
//!
//! "Readers present": one background thread runs back-to-back short read
//! sections for the whole measurement. "Batching": 8 threads (unpinned) are
//! released together and each calls `synchronize` once; the time is per
//! round (8 concurrent calls, from the release until the last returns), and
//! the grace periods the round needed are read from
//! `Srcu::stats().grace_periods` and printed (`calls per grace period`).
//! One call per thread per round: a thread looping on `synchronize` would run
//! its whole loop within one time slice where threads outnumber cores, and
//! the callers would not be concurrent at all.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use usrcu::Srcu;
use usrcu_benches::{urcu, Background, Pool};

static IDLE: Srcu = Srcu::new_static("bench-sync-idle");
static BUSY: Srcu = Srcu::new_static("bench-sync-readers");
static BATCH: Srcu = Srcu::new_static("bench-sync-batching");
static BATCH_EXP: Srcu = Srcu::new_static("bench-sync-batching-expedited");

const CALLERS: usize = 8;

fn idle(c: &mut Criterion) {
    let _reg = urcu::Registered::new();
    let mut g = c.benchmark_group("synchronize_latency/idle");
    g.bench_function("usrcu_synchronize", |b| b.iter(|| IDLE.synchronize()));
    g.bench_function("usrcu_synchronize_expedited", |b| {
        b.iter(|| IDLE.synchronize_expedited())
    });
    if urcu::available("synchronize_latency/idle/liburcu_synchronize_rcu") {
        g.bench_function("liburcu_synchronize_rcu", |b| b.iter(urcu::synchronize));
    }
    g.finish();
}

fn with_readers(c: &mut Criterion) {
    let _reg = urcu::Registered::new();
    let mut g = c.benchmark_group("synchronize_latency/readers");

    let readers = Background::start(|stop: &AtomicBool| {
        let mut n = 0u64;
        // Relaxed: a stop flag.
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..1024 {
                drop(BUSY.read_lock());
            }
            n += 1024;
        }
        n
    });
    g.bench_function("usrcu_synchronize", |b| b.iter(|| BUSY.synchronize()));
    g.bench_function("usrcu_synchronize_expedited", |b| {
        b.iter(|| BUSY.synchronize_expedited())
    });
    let sections = readers.finish();
    eprintln!("synchronize_latency/readers: usrcu background reader ran {sections} sections");

    if urcu::available("synchronize_latency/readers/liburcu_synchronize_rcu") {
        let stop = Arc::new(AtomicI32::new(0));
        let s = Arc::clone(&stop);
        let readers = Background::start(move |_: &AtomicBool| {
            let reg = urcu::Registered::new();
            reg.read_until(&s)
        });
        g.bench_function("liburcu_synchronize_rcu", |b| b.iter(urcu::synchronize));
        // Relaxed: a stop flag polled by the C loop.
        stop.store(1, Ordering::Relaxed);
        let sections = readers.finish();
        eprintln!("synchronize_latency/readers: liburcu background reader ran {sections} sections");
    }
    g.finish();
}

fn batching(c: &mut Criterion) {
    let mut g = c.benchmark_group("synchronize_latency/batching_8_callers");
    g.throughput(Throughput::Elements(CALLERS as u64));

    for (name, domain, expedited) in [
        ("usrcu_synchronize", &BATCH, false),
        ("usrcu_synchronize_expedited", &BATCH_EXP, true),
    ] {
        domain.attach();
        let pool = Pool::new(CALLERS, move |_| {
            move |_: u64| {
                if expedited {
                    domain.synchronize_expedited();
                } else {
                    domain.synchronize();
                }
            }
        });
        let before = domain.stats().grace_periods;
        let mut calls = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                calls += iters * CALLERS as u64;
                (0..iters).map(|_| pool.run(1)).sum()
            })
        });
        drop(pool);
        let gps = domain.stats().grace_periods - before;
        println!(
            "synchronize_latency/batching_8_callers/{name}: {calls} calls from {CALLERS} threads needed {gps} grace periods ({:.2} calls per grace period)",
            calls as f64 / gps.max(1) as f64
        );
    }

    // synchronize_rcu needs no registration (only readers do).
    if urcu::available("synchronize_latency/batching_8_callers/liburcu_synchronize_rcu") {
        let pool = Pool::new(CALLERS, |_| |_: u64| urcu::synchronize());
        g.bench_function("liburcu_synchronize_rcu", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| pool.run(1)).sum())
        });
        drop(pool);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = usrcu_benches::criterion();
    targets = idle, with_readers, batching
}
criterion_main!(benches);
