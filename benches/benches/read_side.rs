//! Question: what does one read-side critical section (lock + unlock) cost on one thread — usrcu against liburcu memb, crossbeam-epoch `pin`, parking_lot and std `RwLock::read` — plain, nested, and in usrcu's raw form?
//!
//! liburcu's loop runs inside C (`csrc/urcu_shim.c`), so its number is
//! nanoseconds per lock + unlock with the FFI call amortised. Every other
//! peer runs in criterion's own loop, whose overhead is one compare and
//! branch per iteration, the same as the C loop's.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use usrcu::{Srcu, SrcuConfig};
use usrcu_benches::urcu;

static DOMAIN: Srcu = Srcu::new_static("bench-read-side");
static SEQCST: Srcu = Srcu::new_static_with("bench-read-side-seqcst", SrcuConfig::new().force_seqcst_fence(true));
static PL_LOCK: parking_lot::RwLock<u64> = parking_lot::const_rwlock(0);
static STD_LOCK: std::sync::RwLock<u64> = std::sync::RwLock::new(0);

fn lock_unlock(c: &mut Criterion) {
    let reg = urcu::Registered::new();
    DOMAIN.attach();
    SEQCST.attach();
    eprintln!(
        "read_side: usrcu rseq path active: {}, fence mode: {:?} (seqcst domain: {:?})",
        usrcu::rseq_active(),
        DOMAIN.fence_mode(),
        SEQCST.fence_mode()
    );

    let mut g = c.benchmark_group("read_side/lock_unlock");
    g.bench_function("usrcu", |b| b.iter(|| drop(DOMAIN.read_lock())));
    g.bench_function("usrcu_raw", |b| {
        b.iter(|| {
            let idx = DOMAIN.read_lock_raw();
            // SAFETY: `idx` came from this domain's read_lock_raw, ended once.
            unsafe { DOMAIN.read_unlock_raw(idx) };
        })
    });
    g.bench_function("usrcu_seqcst_fence", |b| b.iter(|| drop(SEQCST.read_lock())));
    if urcu::available("read_side/lock_unlock/liburcu_memb") {
        g.bench_function("liburcu_memb", |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                reg.read_loop(iters);
                t0.elapsed()
            })
        });
    }
    g.bench_function("crossbeam_epoch_pin", |b| b.iter(|| drop(crossbeam_epoch::pin())));
    g.bench_function("parking_lot_rwlock_read", |b| b.iter(|| drop(PL_LOCK.read())));
    g.bench_function("std_rwlock_read", |b| b.iter(|| drop(STD_LOCK.read())));
    g.finish();

    let mut g = c.benchmark_group("read_side/nested");
    g.bench_function("usrcu", |b| {
        b.iter(|| {
            let outer = DOMAIN.read_lock();
            drop(DOMAIN.read_lock());
            drop(outer);
        })
    });
    if urcu::available("read_side/nested/liburcu_memb") {
        g.bench_function("liburcu_memb", |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                reg.read_nested_loop(iters);
                t0.elapsed()
            })
        });
    }
    g.bench_function("crossbeam_epoch_pin", |b| {
        b.iter(|| {
            let outer = crossbeam_epoch::pin();
            drop(crossbeam_epoch::pin());
            drop(outer);
        })
    });
    g.bench_function("parking_lot_rwlock_read_recursive", |b| {
        b.iter(|| {
            let outer = PL_LOCK.read_recursive();
            drop(PL_LOCK.read_recursive());
            drop(outer);
        })
    });
    g.finish();
    drop(reg);
}

criterion_group! {
    name = benches;
    config = usrcu_benches::criterion();
    targets = lock_unlock
}
criterion_main!(benches);
