//! Question: what does a per-CPU scan cost — a reader check, a grace period, a `barrier` and a `cleanup` as possible CPUs go 1 to 4096 with readers on two CPUs — and what does the `call_srcu_used` gate save the unload-time SRCU notifier of a module with 1 to 1000 domains?
//!
//! Possible CPUs are simulated per domain (`SrcuConfig::possible_cpus`).
//! Every domain has had readers on two CPUs (one pinned thread each, see
//! `usrcu_benches::read_on_two_cpus`), so it holds per-CPU slots for the
//! chunks of those two CPUs only (`srcu/src/percpu.rs`, "Chunks"); no reader
//! is inside while timing, so every number is pure scan and fence cost:
//!
//! * `reader_check`: one check of one rank (sum the unlock counters of the
//!   fallback slot and every allocated chunk, heavy fence, sum the lock
//!   counters), timed by the library itself (`stats().scan_nanos`) during
//!   expedited grace periods, each of which makes exactly two checks on an
//!   idle domain;
//! * `grace_period`: `synchronize_expedited`;
//! * `barrier`: `barrier` on a domain whose `call_srcu_used` is set and whose
//!   queues are empty (it visits every CPU's callback queue);
//! * `cleanup`: `cleanup` of an attached domain (checks the allocated slots,
//!   frees the state); re-attaching and the two CPUs' readers between
//!   iterations are not timed.
//!
//! The notifier (`usrcu_benches::unload_notifier`): for each domain,
//! `barrier` — gated: only if `call_srcu_used`; ungated: always — then
//! `cleanup`. The gated module's domains never queued a callback; the
//! ungated module's domains each queued and drained one in setup, so that
//! their `barrier` does what an ungated notifier's would: visit every queue.
//! (`Srcu::barrier` itself skips domains whose flag is clear, so setting the
//! flag is the only way to make it visit them.) Measured twice: the barrier
//! phase alone, and the whole notifier with `cleanup`. The modules' domains
//! are dynamic `Srcu`s with the per-CPU state a loader attaches to a
//! plugin's static domains; re-attaching them and running the two CPUs'
//! readers between iterations is not timed.

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use usrcu::percpu::CPUS_PER_CHUNK;
use usrcu::{Srcu, SrcuConfig};
use usrcu_benches::{mark_call_srcu_used, notifier_barrier_phase, read_on_two_cpus, unload_notifier};

const CPUS: &[u32] = &[1, 2, 16, 64, 256, 1024, 4096];
const DOMAINS: &[usize] = &[1, 10, 100, 1000];
/// Domains of the module in the notifier-against-CPUs benches.
const MODULE_DOMAINS: usize = 100;
/// Possible CPUs in the notifier-against-domains benches.
const MODULE_CPUS: u32 = 4096;

/// An attached domain of `cpus` possible CPUs, with readers run on two.
fn domain(name: &str, cpus: u32) -> Srcu {
    let d = Srcu::with_config(name, SrcuConfig::new().possible_cpus(cpus));
    reattach(std::slice::from_ref(&d));
    d
}

/// Attach `domains` again (after a cleanup) and run readers on two CPUs, as
/// a module's domains have before unload. Not timed.
fn reattach(domains: &[Srcu]) {
    for d in domains {
        d.attach();
    }
    read_on_two_cpus(domains);
}

/// A module of `n` attached domains with `cpus` possible CPUs; `used`:
/// each has queued (and drained) one callback.
fn module(n: usize, cpus: u32, used: bool) -> Vec<Srcu> {
    let v: Vec<Srcu> = (0..n)
        .map(|i| Srcu::with_config(&format!("bench-module-{i}"), SrcuConfig::new().possible_cpus(cpus)))
        .collect();
    reattach(&v);
    if used {
        for d in &v {
            mark_call_srcu_used(d);
        }
    }
    v
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    // Each iteration may take milliseconds (4096 CPUs x 1000 domains):
    // few, flat samples keep the whole bench within a few minutes.
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(200));
    g.measurement_time(Duration::from_secs(1));
    g.sampling_mode(criterion::SamplingMode::Flat);
    g
}

fn per_cpu_scans(c: &mut Criterion) {
    let mut g = group(c, "scan_cost/reader_check");
    for &cpus in CPUS {
        let d = domain("bench-scan-check", cpus);
        g.bench_with_input(BenchmarkId::from_parameter(cpus), &cpus, |b, _| {
            b.iter_custom(|iters| {
                let before = d.stats();
                for _ in 0..iters {
                    d.synchronize_expedited();
                }
                let after = d.stats();
                // Every check of an idle domain reads the same slots: the
                // fallback slot and the readers' chunks, twice.
                let per_check = 2 * (1 + after.percpu_chunks * (cpus as u64).min(CPUS_PER_CHUNK as u64));
                let checks = (after.slots_scanned - before.slots_scanned) / per_check;
                assert_eq!(checks, 2 * iters, "an idle grace period makes two checks");
                // Time of `iters` checks: half the scan time of 2 x iters.
                Duration::from_nanos((after.scan_nanos - before.scan_nanos) / 2)
            })
        });
    }
    g.finish();

    let mut g = group(c, "scan_cost/grace_period");
    for &cpus in CPUS {
        let d = domain("bench-scan-gp", cpus);
        g.bench_with_input(BenchmarkId::from_parameter(cpus), &cpus, |b, _| {
            b.iter(|| d.synchronize_expedited())
        });
    }
    g.finish();

    let mut g = group(c, "scan_cost/barrier");
    for &cpus in CPUS {
        let d = domain("bench-scan-barrier", cpus);
        mark_call_srcu_used(&d);
        g.bench_with_input(BenchmarkId::from_parameter(cpus), &cpus, |b, _| b.iter(|| d.barrier()));
    }
    g.finish();

    let mut g = group(c, "scan_cost/cleanup");
    for &cpus in CPUS {
        let d = domain("bench-scan-cleanup", cpus);
        g.bench_with_input(BenchmarkId::from_parameter(cpus), &cpus, |b, _| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    reattach(std::slice::from_ref(&d));
                    let t0 = Instant::now();
                    // SAFETY: no thread enters this domain's read sections.
                    let r = unsafe { d.cleanup() };
                    t += t0.elapsed();
                    assert!(r.is_ok());
                }
                t
            })
        });
    }
    g.finish();
}

/// Time `iters` runs of the whole notifier over `m`, re-attaching and
/// running readers on two CPUs (untimed) before each.
fn time_notifier(m: &[Srcu], gated: bool, iters: u64) -> Duration {
    let mut t = Duration::ZERO;
    for _ in 0..iters {
        reattach(m);
        let t0 = Instant::now();
        // SAFETY: no thread enters these domains' read sections.
        unsafe { unload_notifier(m, gated) };
        t += t0.elapsed();
    }
    t
}

fn notifier(c: &mut Criterion) {
    // Barrier phase against possible CPUs, 100 domains.
    for gated in [true, false] {
        let name = if gated { "gated" } else { "ungated" };
        let mut g = group(
            c,
            &format!("scan_cost/notifier_barrier_phase_{MODULE_DOMAINS}_domains/{name}"),
        );
        for &cpus in CPUS {
            let m = module(MODULE_DOMAINS, cpus, !gated);
            g.bench_with_input(BenchmarkId::from_parameter(cpus), &cpus, |b, _| {
                b.iter(|| notifier_barrier_phase(&m, gated))
            });
        }
        g.finish();
    }
    // Whole notifier (barrier phase + cleanup) against possible CPUs, 100 domains.
    for gated in [true, false] {
        let name = if gated { "gated" } else { "ungated" };
        let mut g = group(c, &format!("scan_cost/notifier_{MODULE_DOMAINS}_domains/{name}"));
        for &cpus in CPUS {
            let m = module(MODULE_DOMAINS, cpus, !gated);
            if gated {
                let s = m[0].stats();
                eprintln!(
                    "scan_cost: one domain at {cpus} possible CPUs, readers on two CPUs: {} bytes of per-CPU reader state ({} chunk(s))",
                    s.percpu_bytes, s.percpu_chunks
                );
            }
            g.bench_with_input(BenchmarkId::from_parameter(cpus), &cpus, |b, _| {
                b.iter_custom(|iters| time_notifier(&m, gated, iters))
            });
        }
        g.finish();
    }
    // Barrier phase and whole notifier against domains, 4096 CPUs.
    for gated in [true, false] {
        let name = if gated { "gated" } else { "ungated" };
        let mut phase = group(
            c,
            &format!("scan_cost/notifier_barrier_phase_{MODULE_CPUS}_cpus/{name}"),
        );
        for &n in DOMAINS {
            let m = module(n, MODULE_CPUS, !gated);
            phase.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| notifier_barrier_phase(&m, gated))
            });
        }
        phase.finish();
        let mut whole = group(c, &format!("scan_cost/notifier_{MODULE_CPUS}_cpus/{name}"));
        for &n in DOMAINS {
            let m = module(n, MODULE_CPUS, !gated);
            whole.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter_custom(|iters| time_notifier(&m, gated, iters))
            });
        }
        whole.finish();
    }
}

criterion_group! {
    name = benches;
    config = usrcu_benches::criterion();
    targets = per_cpu_scans, notifier
}
criterion_main!(benches);
