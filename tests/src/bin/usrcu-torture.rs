//! `usrcu-torture`: an rcutorture for usrcu.
//!
//! Tries hard to make a grace period end too soon, and counts every time one
//! does. One writer publishes objects from a pool and ages each retired object
//! by one per completed grace period, through `synchronize`,
//! `synchronize_expedited`, `call_srcu` chains, polled grace periods
//! (`start_poll`, `get_state`) and `barrier`, chosen at random. Fake writers
//! request grace periods concurrently. Readers nest, sleep inside their
//! sections, hand raw sections to another thread to end, and check that what
//! they found stays young (age 0 or 1), unpoisoned and unrecycled while they
//! are inside, and that a cookie taken inside is not complete before the
//! section ends. See `pool.rs` for the argument, and `docs/reliability.md`.
//!
//! `--broken <fault>` injects a bug into the core (`usrcu::fault`); the run
//! must then end with FAILURE, which proves the checks can fail.

#[path = "usrcu-torture/args.rs"]
mod args;
#[path = "usrcu-torture/flavor.rs"]
mod flavor;
#[path = "usrcu-torture/pool.rs"]
mod pool;
#[path = "usrcu-torture/reader.rs"]
mod reader;
#[path = "usrcu-torture/rng.rs"]
mod rng;
#[path = "usrcu-torture/tasks.rs"]
mod tasks;
#[path = "usrcu-torture/writer.rs"]
mod writer;

use args::{Args, DomainArg, FenceArg, FlavorArg};
use pool::{ErrorKind, Pool, PIPE_LEN};
use reader::ReaderStats;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use usrcu::fence::FenceMode;
use usrcu::{Srcu, SrcuConfig};
use writer::{Op, WriterStats};

/// Everything the threads share. Leaked: callbacks need `'static`.
#[derive(Debug)]
pub struct Torture {
    pub args: Args,
    pub srcu: &'static Srcu,
    /// The flavor under torture (`srcu`, or Tasks Trace with `--flavor trace`).
    pub rcu: flavor::Rcu,
    pub pool: Pool,
    pub errs: pool::Errors,
    /// One per reader, then one for the hand-off thread.
    pub readers: Vec<ReaderStats>,
    pub w: WriterStats,
    stop: AtomicBool,
    running: AtomicUsize,
}

impl Torture {
    pub fn stopping(&self) -> bool {
        // Relaxed: a flag polled in loops; nothing is published through it.
        self.stop.load(Ordering::Relaxed)
    }
}

const fn static_config(cpus: u32, seqcst: bool) -> SrcuConfig {
    let c = SrcuConfig::new().force_seqcst_fence(seqcst);
    if cpus == 0 {
        c
    } else {
        c.possible_cpus(cpus)
    }
}

/// Static domains, one per (possible CPUs, fence) pair a run can ask for: a
/// static domain's configuration is fixed at compile time. 0 CPUs: the OS's.
static STATIC_DOMAINS: [(u32, bool, Srcu); 8] = [
    (
        0,
        false,
        Srcu::new_static_with("torture-static", static_config(0, false)),
    ),
    (
        0,
        true,
        Srcu::new_static_with("torture-static-seqcst", static_config(0, true)),
    ),
    (
        1,
        false,
        Srcu::new_static_with("torture-static-1", static_config(1, false)),
    ),
    (
        1,
        true,
        Srcu::new_static_with("torture-static-1-seqcst", static_config(1, true)),
    ),
    (
        1024,
        false,
        Srcu::new_static_with("torture-static-1024", static_config(1024, false)),
    ),
    (
        1024,
        true,
        Srcu::new_static_with("torture-static-1024-seqcst", static_config(1024, true)),
    ),
    (
        4096,
        false,
        Srcu::new_static_with("torture-static-4096", static_config(4096, false)),
    ),
    (
        4096,
        true,
        Srcu::new_static_with("torture-static-4096-seqcst", static_config(4096, true)),
    ),
];

fn domain(a: &Args) -> Result<&'static Srcu, String> {
    let seqcst = a.fence == FenceArg::SeqCst;
    match a.domain {
        DomainArg::Static => {
            let cpus = a.cpus.unwrap_or(0);
            STATIC_DOMAINS
                .iter()
                .find(|(c, s, _)| *c == cpus && *s == seqcst)
                .map(|(_, _, d)| d)
                .ok_or_else(|| {
                    format!(
                        "--cpus {cpus}: a static domain takes real, 1, 1024 or 4096 \
                         (or USRCU_POSSIBLE_CPUS=<n> with --cpus real)"
                    )
                })
        }
        DomainArg::Dynamic => {
            let mut cfg = SrcuConfig::new().force_seqcst_fence(seqcst);
            if let Some(n) = a.cpus {
                cfg = cfg.possible_cpus(n);
            }
            Ok(Box::leak(Box::new(Srcu::with_config("torture-dynamic", cfg))))
        }
    }
}

/// Decrements `running` when a thread ends, even by a panic.
struct Running(&'static Torture);

impl Drop for Running {
    fn drop(&mut self) {
        // Release: pairs with the Acquire load in `wait_running`; whatever the
        // thread did is visible once the count reaches zero.
        self.0.running.fetch_sub(1, Ordering::Release);
    }
}

fn spawn(t: &'static Torture, name: String, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    // Relaxed: read after joins or with Acquire in `wait_running` (pairs with
    // the Release decrement).
    t.running.fetch_add(1, Ordering::Relaxed);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let _r = Running(t);
            f()
        })
        .expect("cannot spawn a torture thread")
}

fn wait_running(t: &Torture, limit: Duration) -> bool {
    let t0 = Instant::now();
    // Acquire: pairs with the Release decrement in `Running::drop`.
    while t.running.load(Ordering::Acquire) != 0 {
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn stats_lines(t: &Torture, elapsed: Duration) -> String {
    let sum = |f: &dyn Fn(&ReaderStats) -> u64| t.readers.iter().map(f).sum::<u64>();
    // Relaxed: statistics.
    let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let s = t.rcu.counts();
    let pipe: Vec<String> = (0..=PIPE_LEN as usize)
        .map(|i| sum(&|r| l(&r.pipe[i])).to_string())
        .collect();
    let ops: Vec<String> = Op::ALL
        .iter()
        .map(|&o| format!("{}={}", o.name(), l(&t.w.ops[o as usize])))
        .collect();
    format!(
        "usrcu-torture: t={:.0}s gps={} exp_gps={} reads={} nested={} raw={} sleeps={} cookies={} \
         writes={} ({}) alloc_fail={} fake_ops={} cbs={}/{} barriers={}/{} barrier_checks={} errors={}\n\
         usrcu-torture: Reader Pipe: {}",
        elapsed.as_secs_f64(),
        s.grace_periods,
        s.expedited_grace_periods,
        sum(&|r| l(&r.reads)),
        sum(&|r| l(&r.nested)),
        sum(&|r| l(&r.raw)),
        sum(&|r| l(&r.sleeps)),
        sum(&|r| l(&r.cookies)),
        l(&t.w.writes),
        ops.join(" "),
        l(&t.w.alloc_fail),
        l(&t.w.fake_ops),
        s.callbacks_queued,
        s.callbacks_invoked,
        s.barriers_issued,
        s.barriers_skipped,
        l(&t.w.barrier_checks),
        t.errs.total(),
        pipe.join(" "),
    )
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() == 3 && argv[1] == "--stopper" {
        tasks::stopper(argv[2].parse().expect("--stopper <pid>"));
    }
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{}", args::USAGE);
            return;
        }
        Err(e) => {
            eprintln!("usrcu-torture: {e}\n\n{}", args::USAGE);
            std::process::exit(2);
        }
    };
    if args.flavor == FlavorArg::Tasks {
        tasks::main(&args);
        return;
    }
    let trace = args.flavor == FlavorArg::Trace;
    if trace && args.fence == FenceArg::SeqCst && std::env::var_os("USRCU_FENCE").is_none() {
        // The Tasks Trace fence pair is process-wide, chosen at first use.
        std::env::set_var("USRCU_FENCE", "seqcst");
    }
    let srcu = match domain(&args) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("usrcu-torture: {e}");
            std::process::exit(2);
        }
    };
    let want = match args.fence {
        FenceArg::Membarrier => FenceMode::Membarrier,
        FenceArg::SeqCst => FenceMode::SeqCst,
    };
    let mode = if trace {
        usrcu::trace::fence_mode()
    } else {
        srcu.fence_mode()
    };
    if mode != want {
        eprintln!(
            "usrcu-torture: asked for the {want:?} fence path but the flavor uses {mode:?} \
             (membarrier unavailable, or USRCU_FENCE=seqcst set)"
        );
        std::process::exit(2);
    }
    if let Some(f) = args.broken {
        // SAFETY: the torture frees nothing on the strength of a grace
        // period: its pool poisons retired objects and never deallocates
        // them (pool.rs), and it loads no module. `args` accepts only the
        // grace-period and fence faults, never RelaxedPublish.
        unsafe { usrcu::fault::set(f, true) };
    }
    let rcu = if trace {
        flavor::Rcu::Trace
    } else {
        flavor::Rcu::Srcu(srcu)
    };
    println!(
        "usrcu-torture: start: flavor={} domain={} ({}) fence={:?} possible_cpus={}{} readers={} fake_writers={} pool={} \
         rseq={} broken={} duration={:?} seed={}",
        if trace { "trace" } else { "srcu" },
        rcu.name(),
        if srcu.is_dynamic() { "dynamic" } else { "static" },
        mode,
        srcu.possible_cpus(),
        if args.cpus.is_none() { " (real)" } else { " (simulated)" },
        args.readers,
        args.fake_writers,
        args.pool,
        usrcu::rseq_active(),
        args::fault_name(args.broken),
        args.duration,
        args.seed,
    );

    let t: &'static Torture = Box::leak(Box::new(Torture {
        srcu,
        rcu,
        pool: Pool::new(args.pool),
        errs: pool::Errors::default(),
        readers: (0..=args.readers).map(|_| ReaderStats::default()).collect(),
        w: WriterStats::default(),
        stop: AtomicBool::new(false),
        running: AtomicUsize::new(0),
        args,
    }));

    let t0 = Instant::now();
    let mut threads = Vec::new();
    let (tx, rx) = mpsc::sync_channel(64);
    threads.push(spawn(t, "handoff".into(), move || reader::run_handoff(t, rx)));
    for id in 0..t.args.readers {
        let tx = tx.clone();
        threads.push(spawn(t, format!("reader-{id}"), move || reader::run(t, id, tx)));
    }
    drop(tx);
    threads.push(spawn(t, "writer".into(), move || writer::run(t)));
    for id in 0..t.args.fake_writers {
        threads.push(spawn(t, format!("fakewriter-{id}"), move || writer::run_fake(t, id)));
    }

    let mut next_stats = t.args.stat_interval;
    loop {
        let e = t0.elapsed();
        if e >= t.args.duration || (t.args.stop_on_failure && t.errs.total() > 0) {
            break;
        }
        if e >= next_stats {
            println!("{}", stats_lines(t, e));
            next_stats += t.args.stat_interval;
        }
        std::thread::sleep(Duration::from_millis(20).min(t.args.duration - e));
    }
    // Relaxed: see `stopping`.
    t.stop.store(true, Ordering::Relaxed);

    let mut failures: Vec<String> = Vec::new();
    if !wait_running(t, Duration::from_secs(120)) {
        t.errs.report(ErrorKind::Liveness, || {
            "threads still running 120 s after the stop (a grace period or barrier that never ends?)".into()
        });
        println!("{}", stats_lines(t, t0.elapsed()));
        println!("usrcu-torture: Errors: {}", t.errs);
        println!("usrcu-torture: FAILURE (hang)");
        std::process::exit(1);
    }
    for h in threads {
        if h.join().is_err() {
            failures.push("a torture thread panicked".into());
        }
    }

    // Drain the callback chains: each barrier lets every chain age by one.
    let drain0 = Instant::now();
    // Relaxed: the chain count is ordered by the barrier before the load.
    while t.w.chains.load(Ordering::Relaxed) != 0 {
        if drain0.elapsed() > Duration::from_secs(60) {
            t.errs
                .report(ErrorKind::Liveness, || "callback chains not drained after 60 s".into());
            break;
        }
        t.rcu.barrier();
    }
    t.rcu.synchronize();
    let elapsed = t0.elapsed();
    let final_stats = stats_lines(t, elapsed);

    // Accounting: every object back in the pool but the current one, every
    // callback we queued run, and the domain cleans up.
    let free = t.pool.free_count();
    if free != t.pool.len() - 1 {
        let n = t.pool.len();
        t.errs.report(ErrorKind::Accounting, || {
            format!("{free} of {n} objects free at the end (expected {})", n - 1)
        });
    }
    // Relaxed: after joins and barriers.
    let (q, i) = (
        t.w.cb_queued.load(Ordering::Relaxed),
        t.w.cb_invoked.load(Ordering::Relaxed),
    );
    if q != i {
        t.errs
            .report(ErrorKind::Accounting, || format!("{q} callbacks queued, {i} invoked"));
    }
    // SAFETY: every thread that could enter a section of this domain has
    // been joined; no reader enters concurrently.
    if let Err(e) = unsafe { t.srcu.cleanup() } {
        t.errs
            .report(ErrorKind::Accounting, || format!("cleanup after the run refused: {e}"));
    }

    println!("{final_stats}");
    // Whether the heavy fences of a membarrier-mode run fell back to
    // MEMBARRIER_CMD_GLOBAL (USRCU_FAULT_MEMBARRIER_FAILS=1 forces it).
    println!(
        "usrcu-torture: membarrier_failed_at_run_time={}",
        usrcu::fence::membarrier_failed_at_run_time()
    );
    println!("usrcu-torture: Errors: {}", t.errs);
    if t.errs.total() > 0 {
        let kinds: Vec<&str> = ErrorKind::ALL
            .iter()
            .filter(|&&k| t.errs.count(k) > 0)
            .map(|k| k.name())
            .collect();
        failures.push(format!("{} error(s): {}", t.errs.total(), kinds.join(", ")));
    }
    if failures.is_empty() {
        println!("usrcu-torture: SUCCESS ({:.1} s)", elapsed.as_secs_f64());
    } else {
        println!(
            "usrcu-torture: FAILURE ({}; broken={})",
            failures.join("; "),
            args::fault_name(t.args.broken)
        );
        std::process::exit(1);
    }
}
