//! Question: does total read throughput grow with the number of reader threads (1, 2, and more where cores exist) — usrcu against liburcu memb, crossbeam-epoch, parking_lot and std `RwLock`?
//!
//! Each worker (unpinned unless USRCU_BENCH_PIN=1) runs back-to-back read sections
//! (lock + unlock) on one shared domain or lock. Throughput is in sections per
//! second over all threads (criterion's `elem/s`). usrcu's readers of
//! different CPUs write only their own CPU's slot (one cache line each, see
//! `srcu/src/percpu.rs`); the bench adds no shared writes of its own: each
//! worker's loop keeps its state in registers.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use usrcu::Srcu;
use usrcu_benches::{thread_counts, urcu, Pool};

static DOMAIN: Srcu = Srcu::new_static("bench-read-scaling");
static PL_LOCK: parking_lot::RwLock<u64> = parking_lot::const_rwlock(0);
static STD_LOCK: std::sync::RwLock<u64> = std::sync::RwLock::new(0);

/// One peer: a name and a per-thread job factory.
type Peer = (&'static str, fn(usize) -> Box<dyn FnMut(u64)>);

fn usrcu_job(_: usize) -> Box<dyn FnMut(u64)> {
    Box::new(|n| {
        for _ in 0..n {
            drop(DOMAIN.read_lock());
        }
    })
}

fn liburcu_job(_: usize) -> Box<dyn FnMut(u64)> {
    // Registered on the worker thread, unregistered when the pool drops.
    let reg = urcu::Registered::new();
    Box::new(move |n| reg.read_loop(n))
}

fn crossbeam_job(_: usize) -> Box<dyn FnMut(u64)> {
    Box::new(|n| {
        for _ in 0..n {
            drop(crossbeam_epoch::pin());
        }
    })
}

fn parking_lot_job(_: usize) -> Box<dyn FnMut(u64)> {
    Box::new(|n| {
        for _ in 0..n {
            drop(PL_LOCK.read());
        }
    })
}

fn std_job(_: usize) -> Box<dyn FnMut(u64)> {
    Box::new(|n| {
        for _ in 0..n {
            drop(STD_LOCK.read());
        }
    })
}

const PEERS: &[Peer] = &[
    ("usrcu", usrcu_job),
    ("liburcu_memb", liburcu_job),
    ("crossbeam_epoch_pin", crossbeam_job),
    ("parking_lot_rwlock_read", parking_lot_job),
    ("std_rwlock_read", std_job),
];

fn read_scaling(c: &mut Criterion) {
    DOMAIN.attach();
    for &(name, job) in PEERS {
        if name == "liburcu_memb" && !urcu::available("read_scaling/liburcu_memb") {
            continue;
        }
        let mut g = c.benchmark_group(format!("read_scaling/{name}"));
        for threads in thread_counts() {
            let pool = Pool::new(threads, job);
            g.throughput(Throughput::Elements(threads as u64));
            g.bench_with_input(BenchmarkId::from_parameter(threads), &threads, |b, _| {
                b.iter_custom(|iters| pool.run(iters))
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = usrcu_benches::criterion();
    targets = read_scaling
}
criterion_main!(benches);
