//! plugin-host: hot-reload a plugin under reader threads, and show that
//! every unload drained its callbacks and unmapped the object.
//!
//! ```text
//! cargo run --release -p usrcu-module-loader --bin plugin-host -- demo [--cycles N --threads T --plugin PATH]
//! cargo run --release -p usrcu-module-loader --bin plugin-host -- watch <plugin crate dir> [--threads T]
//! ```
//!
//! `demo` (also what no subcommand runs) is the scripted run below. `watch`
//! (`plugin-host/watch.rs`) builds a plugin crate, serves it, and rebuilds
//! and reloads it whenever its sources change.
//!
//! With no `--plugin`, it builds the example plugin (`module-loader/demo-plugin`)
//! with cargo into `target/plugins/` first. Reader threads call the plugin
//! continuously while the main thread reloads it `N` times:
//!
//! - guarded calls (`Symbol::call`, through the module's liveness gate),
//!   which replace its configuration now and then (queueing `call_srcu`
//!   callbacks);
//! - the host's faultable tracepoint `plugin_host.call`, fired once per
//!   guarded call; each copy of the plugin attaches a probe to it in `init`
//!   (it takes a lock, and sleeps now and then) and never detaches it: the
//!   loader's probe notifier removes it at unload;
//! - the plugin's hot hook `demo_hook`, installed into the host's
//!   [`HookSlot`] with `ModuleLoader::install_hook` after each load and
//!   called with no read-side marker; the unload clears the slot and waits
//!   for a Tasks grace period (readers pass `tasks::quiescent()` between
//!   batches).
//!
//! The table gives both call rates, and each unload's row the probes it
//! removed and the hook slots it cleared.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use std::{env, process, thread};

use usrcu_module_loader::plugin_build::{workspace_target_dir, PluginBuild};
use usrcu_module_loader::usrcu_registry::define_tracepoint;
use usrcu_module_loader::usrcu_registry::usrcu::tasks::{self, HookSlot};
use usrcu_module_loader::{HookError, ModuleHandle, ModuleLoader, Symbol, UnloadReport};

type Compute = extern "C" fn(u64) -> u64;
type Update = extern "C" fn(u64);

const MODULE: &str = "demo";

#[path = "../../demo-plugin/src/api.rs"]
mod api;
#[path = "plugin-host/watch.rs"]
mod watch;

// The host's event, fired on every guarded call (`api::CALL_EVENT`).
define_tracepoint!(static CALL_EVENT: Tracepoint<u64> = faultable "plugin_host.call");

/// The host's slot for the plugin's hot hook (`api::HOOK_SYMBOL`).
static HOOK: HookSlot<api::Hook> = HookSlot::new();

/// Install the module's hot hook into [`HOOK`]. A plugin without one (given
/// with `--plugin`) runs without it: `Ok(false)`.
fn install_hook(loader: &ModuleLoader, h: ModuleHandle) -> Result<bool, HookError> {
    // SAFETY: the example plugin exports `demo_hook` as an
    // `extern "C" fn(u64) -> u64` that never blocks, never faults on
    // non-resident memory (it touches no memory) and keeps no pointer.
    match unsafe { loader.install_hook(h, &HOOK, api::HOOK_SYMBOL) } {
        Ok(()) => Ok(true),
        Err(HookError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

struct Args {
    cycles: usize,
    threads: usize,
    plugin: Option<PathBuf>,
}

const USAGE: &str = "usage: plugin-host [demo] [--cycles N] [--threads T] [--plugin PATH]\n       \
     plugin-host watch <plugin crate dir> [--threads T] [--target-dir DIR] [--profile P]\n\n\
     demo (the default): build the example plugin and hot-reload it N times (20) under T reader\n\
     threads (2), then print what each unload drained and removed.\n\
     watch: build a plugin crate (docs/plugins.md), serve it to reader threads, and rebuild and\n\
     reload it each time a source file changes; Ctrl-C stops.";

/// A bad command line: say what was wrong, then the usage, and exit 2.
fn usage_error(msg: &str) -> ! {
    eprintln!("plugin-host: {msg}\n{USAGE}");
    process::exit(2)
}

/// A reader thread that the system refused (too many `--threads` for its
/// limits): say so and exit 1, rather than panic.
fn cannot_spawn(t: usize, threads: usize, e: &std::io::Error) -> ! {
    eprintln!(
        "\nplugin-host: cannot start reader thread {} of {threads}: {e} (try fewer --threads)",
        t + 1
    );
    process::exit(1)
}

/// `--help`, `-h`, `help`: the usage on stdout, exit 0.
fn is_help(arg: &str) -> bool {
    matches!(arg, "--help" | "-h" | "help")
}

fn parse_args(args: Vec<String>) -> Args {
    let mut a = Args {
        cycles: 20,
        threads: 2,
        plugin: None,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage_error(&format!("{flag} needs a value")))
        };
        let mut count = || {
            let v = value();
            v.parse::<usize>()
                .unwrap_or_else(|_| usage_error(&format!("{flag} {v}: not a count (a non-negative integer)")))
        };
        match flag.as_str() {
            "--cycles" => a.cycles = count(),
            "--threads" => a.threads = count(),
            "--plugin" => a.plugin = Some(PathBuf::from(value())),
            f if is_help(f) => {
                println!("{USAGE}");
                process::exit(0)
            }
            _ => usage_error(&format!("unknown argument `{flag}` (subcommands: demo, watch)")),
        }
    }
    a
}

fn build_demo_plugin() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let build = PluginBuild::new(manifest.join("demo-plugin"))
        .target_dir(workspace_target_dir(manifest).join("plugins"))
        .verbose(true);
    eprintln!("plugin-host: building the example plugin (module-loader/demo-plugin)...");
    build.build_artifact("usrcu_demo_plugin").unwrap_or_else(|e| {
        eprintln!("plugin-host: {e}");
        process::exit(1)
    })
}

/// The symbols a reader thread uses, re-resolved after each reload.
struct Calls {
    compute: Symbol<Compute>,
    update: Symbol<Update>,
}

fn resolve(loader: &ModuleLoader) -> Option<Calls> {
    let h = loader.find(MODULE)?;
    // SAFETY: the demo plugin exports both with these signatures, and the
    // pointers are only used inside `Symbol::call`.
    unsafe {
        Some(Calls {
            compute: loader.symbol(h, "demo_compute").ok()?,
            update: loader.symbol(h, "demo_update").ok()?,
        })
    }
}

/// Hand a freshly loaded copy its configuration (which frees the initial
/// one with `call_srcu`, so that every copy has callbacks to drain).
fn push_config(loader: &ModuleLoader, h: ModuleHandle) {
    // SAFETY: the demo plugin exports it with this signature; the pointer is
    // used only inside `call`.
    if let Ok(update) = unsafe { loader.symbol::<Update>(h, "demo_update") } {
        let _ = update.call(|f| f.call(5));
    }
}

/// What the readers count; read after they were joined.
#[derive(Default)]
struct Stats {
    /// Guarded calls served.
    served: AtomicU64,
    /// Guarded calls refused (the copy was going).
    refused: AtomicU64,
    /// Guarded calls in batches that all succeeded, and their time.
    guarded_timed: AtomicU64,
    guarded_ns: AtomicU64,
    /// Hook calls in batches that found the slot set every time, and their
    /// time.
    hook_timed: AtomicU64,
    hook_ns: AtomicU64,
    /// Hook calls that found the slot empty (between an unload's clearing
    /// and the next install).
    hook_empty: AtomicU64,
    /// Events fired.
    fired: AtomicU64,
}

/// Calls per batch; time is read once per batch.
const BATCH: u64 = 64;

fn reader(loader: &ModuleLoader, stop: &AtomicBool, st: &Stats, seed: u64) {
    let mut calls = resolve(loader);
    let mut i = seed;
    let mut sink = 0u64;
    // Relaxed: `stop` only ends the loop; the join in `main` orders the rest.
    while !stop.load(Ordering::Relaxed) {
        // Tasks RCU: a quiescent point between batches of hook calls, so
        // that the grace periods of unloads and installs end (this thread
        // never blocks otherwise, except in the plugin's probe).
        tasks::quiescent();
        let Some(c) = &calls else {
            thread::yield_now();
            calls = resolve(loader);
            continue;
        };
        // Guarded calls, through the module's liveness gate.
        let t = Instant::now();
        let mut ok = 0u64;
        let mut refused = false;
        for _ in 0..BATCH {
            i = i.wrapping_add(1);
            match c.compute.call(|f| f.call(i)) {
                Ok(v) => {
                    sink ^= v;
                    ok += 1;
                }
                Err(_) => {
                    refused = true;
                    break;
                }
            }
        }
        let dt = t.elapsed().as_nanos() as u64;
        // Relaxed (every counter below): statistics, read after the join.
        if !refused {
            st.guarded_timed.fetch_add(ok, Ordering::Relaxed);
            st.guarded_ns.fetch_add(dt, Ordering::Relaxed);
            refused = c.update.call(|f| f.call(i % 7 + 1)).is_err();
        }
        st.served.fetch_add(ok, Ordering::Relaxed);
        // The host's event, once per guarded call served.
        for k in 0..ok {
            CALL_EVENT.fire(&i.wrapping_sub(k));
        }
        st.fired.fetch_add(ok, Ordering::Relaxed);
        // The hot hook: one load and an indirect call each.
        let t = Instant::now();
        let mut empty = 0u64;
        for _ in 0..BATCH {
            i = i.wrapping_add(1);
            match HOOK.call(i) {
                Some(v) => sink ^= v,
                None => empty += 1,
            }
        }
        let dt = t.elapsed().as_nanos() as u64;
        if empty == 0 {
            st.hook_timed.fetch_add(BATCH, Ordering::Relaxed);
            st.hook_ns.fetch_add(dt, Ordering::Relaxed);
        } else {
            st.hook_empty.fetch_add(empty, Ordering::Relaxed);
        }
        if refused {
            st.refused.fetch_add(1, Ordering::Relaxed);
            calls = resolve(loader);
        }
    }
    std::hint::black_box(sink);
}

/// Calls per second of one thread, from calls and the nanoseconds they took.
fn rate(calls: u64, ns: u64) -> String {
    if ns == 0 {
        return "-".to_owned();
    }
    format!("{:.1} M/s", calls as f64 / ns as f64 * 1e3)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// The host's logger: every record on stderr, `plugin-host: [LEVEL target]
/// message`, at the level `RUST_LOG` names (`error` to `trace`; `info`
/// when unset or not a level). A plugin's `log` records reach it (red team
/// 13: a newcomer's `log::info!` printed nothing), and so do usrcu's
/// warnings.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("plugin-host: [{} {}] {}", r.level(), r.target(), r.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

fn install_logger() {
    let level = env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<log::LevelFilter>().ok())
        .unwrap_or(log::LevelFilter::Info);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

fn main() {
    install_logger();
    // Die quietly of SIGPIPE, as other command-line tools do, when stdout is
    // a pipe closed early (`plugin-host demo | head`): Rust starts with it
    // ignored, and `println!` then panics with a backtrace.
    // SAFETY: called first in main, before any other thread exists; SIG_DFL
    // is a valid disposition for SIGPIPE and installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let mut args: Vec<String> = env::args().skip(1).collect();
    if args.first().is_some_and(|a| is_help(a)) {
        println!("{USAGE}");
        return;
    }
    match args.first().map(String::as_str) {
        Some("watch") => return watch::main(&args[1..]),
        Some("demo") => drop(args.remove(0)),
        _ => {}
    }
    let args = parse_args(args);
    let plugin = args.plugin.clone().unwrap_or_else(build_demo_plugin);
    let loader = Arc::new(ModuleLoader::new());
    let mut failures = 0usize;
    let mut hook_installed = false;
    // SAFETY: the plugin upholds the contract of ModuleLoader::load (docs/abi.md).
    match unsafe { loader.load(&plugin) } {
        Ok(h) if resolve(&loader).is_none() => {
            // Another plugin (`--plugin`): its readers could never make a
            // call, and the cycles wait for calls (red team 13: it spun
            // silently forever).
            let name = loader.info(h).map(|i| i.name).unwrap_or_default();
            eprintln!(
                "plugin-host: {} (module '{name}') is not a demo plugin: `demo` runs a module named \
                 '{MODULE}' that exports `demo_compute` and `demo_update` (module-loader/demo-plugin). \
                 To serve and hot-reload a plugin crate of your own: plugin-host watch <crate dir>",
                plugin.display()
            );
            if let Err(e) = loader.unload(h) {
                eprintln!("plugin-host: unload: {e}");
            }
            process::exit(1);
        }
        Ok(h) => {
            push_config(&loader, h);
            match install_hook(&loader, h) {
                Ok(set) => hook_installed = set,
                // A low RLIMIT_MEMLOCK: run without the hot hook.
                Err(e @ HookError::Mlock { .. }) => {
                    eprintln!("plugin-host: {e}; running without the hot hook (raise `ulimit -l`)")
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("plugin-host: {e}");
                }
            }
        }
        Err(e) => {
            eprintln!("plugin-host: {e}");
            process::exit(1);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let readers: Vec<_> = (0..args.threads)
        .map(|t| {
            let (loader, stop, stats) = (loader.clone(), stop.clone(), stats.clone());
            thread::Builder::new()
                .name(format!("reader-{t}"))
                .spawn(move || reader(&loader, &stop, &stats, t as u64 * 1_000_003))
                .unwrap_or_else(|e| cannot_spawn(t, args.threads, &e))
        })
        .collect();

    let t0 = Instant::now();
    let mut reports: Vec<UnloadReport> = Vec::with_capacity(args.cycles + 1);
    for cycle in 1..=args.cycles {
        // Let the readers work on this copy for a moment, and at least
        // until one call into it was served.
        // Relaxed: a statistic; only progress matters here.
        let before = stats.served.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(2));
        while args.threads > 0 && stats.served.load(Ordering::Relaxed) == before {
            thread::sleep(Duration::from_micros(100));
        }
        // SAFETY: the plugin upholds the contract of ModuleLoader::load (docs/abi.md).
        match unsafe { loader.reload(MODULE, &plugin) } {
            Ok((h, r)) => {
                push_config(&loader, h);
                // The old copy's unload cleared the slot; the new copy's
                // hook goes in now.
                if hook_installed {
                    if let Err(e) = install_hook(&loader, h) {
                        failures += 1;
                        eprintln!("\nplugin-host: cycle {cycle}: {e}");
                    }
                }
                reports.push(r);
            }
            Err(e) => {
                failures += 1;
                eprintln!("\nplugin-host: cycle {cycle}: {e}");
            }
        }
        let last = reports.last().map(|r| r.elapsed).unwrap_or_default();
        let unmapped = reports.iter().filter(|r| r.unmapped).count();
        eprint!(
            "\r  cycle {cycle:>5}/{}  calls {:>10}  last unload {:>10}  unmapped {unmapped}/{}   ",
            args.cycles,
            // Relaxed: a statistic for the progress line.
            stats.served.load(Ordering::Relaxed),
            ms(last),
            reports.len()
        );
    }
    eprintln!();
    // Relaxed: see `reader`; the joins below synchronise with the readers.
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader thread");
    }
    if let Some(h) = loader.find(MODULE) {
        match loader.unload(h) {
            Ok(r) => reports.push(r),
            Err(e) => {
                failures += 1;
                eprintln!("plugin-host: final unload: {e}");
            }
        }
    }
    let wall = t0.elapsed();

    let mut lat: Vec<Duration> = reports.iter().map(|r| r.elapsed).collect();
    lat.sort();
    let unmapped = reports.iter().filter(|r| r.unmapped).count();
    let issued: usize = reports.iter().map(|r| r.barriers_issued()).sum();
    let skipped: usize = reports.iter().map(|r| r.barriers_skipped()).sum();
    let slots: u64 = reports.iter().map(|r| r.slots_scanned()).sum();
    let callbacks: u64 = reports
        .iter()
        .flat_map(|r| &r.domains)
        .map(|d| d.callbacks_invoked)
        .sum();
    let probes: usize = reports.iter().map(|r| r.probes_removed.len()).sum();
    let cleared: usize = reports.iter().map(|r| r.hook_slots.cleared).sum();
    // Relaxed loads below: the readers were joined, which orders their counts.
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let rows: Vec<(&str, String)> = vec![
        ("reload cycles", args.cycles.to_string()),
        ("reader threads", args.threads.to_string()),
        ("calls served", load(&stats.served).to_string()),
        ("calls refused while going", load(&stats.refused).to_string()),
        (
            "guarded call rate / thread",
            rate(load(&stats.guarded_timed), load(&stats.guarded_ns)),
        ),
        (
            "hook call rate / thread",
            rate(load(&stats.hook_timed), load(&stats.hook_ns)),
        ),
        ("hook calls on empty slot", load(&stats.hook_empty).to_string()),
        ("events fired", load(&stats.fired).to_string()),
        ("unloads", reports.len().to_string()),
        ("unload latency median", ms(percentile(&lat, 0.5))),
        ("unload latency p99", ms(percentile(&lat, 0.99))),
        ("barriers issued", issued.to_string()),
        ("barriers skipped", skipped.to_string()),
        ("slots scanned by barriers", slots.to_string()),
        ("callbacks invoked", callbacks.to_string()),
        ("probes removed", probes.to_string()),
        ("hook slots cleared", cleared.to_string()),
        ("objects verified unmapped", format!("{unmapped} / {}", reports.len())),
        ("failures", failures.to_string()),
        ("wall time", format!("{:.2} s", wall.as_secs_f64())),
    ];
    println!("\nplugin-host: {} ({})", plugin.display(), MODULE);
    println!("  {:<28} {:>16}", "metric", "value");
    println!("  {:-<28} {:->16}", "", "");
    for (k, v) in rows {
        println!("  {k:<28} {v:>16}");
    }
    print_unloads(&reports);
    if failures > 0 || unmapped != reports.len() {
        process::exit(1);
    }
}

/// One row per unload: what it waited for, drained and removed.
fn print_unloads(reports: &[UnloadReport]) {
    println!(
        "\n  {:>6} {:>8} {:>11} {:>9} {:>9} {:>7} {:>7} {:>9}",
        "unload", "module", "time", "barriers", "callbacks", "probes", "hooks", "unmapped"
    );
    println!(
        "  {:>6} {:>8} {:>11} {:>9} {:>9} {:>7} {:>7} {:>9}",
        "", "", "", "issued", "drained", "removed", "cleared", ""
    );
    for (n, r) in reports.iter().enumerate() {
        let callbacks: u64 = r.domains.iter().map(|d| d.callbacks_invoked).sum();
        println!(
            "  {:>6} {:>8} {:>11} {:>9} {:>9} {:>7} {:>7} {:>9}",
            n + 1,
            r.handle.to_string(),
            ms(r.elapsed),
            r.barriers_issued(),
            callbacks,
            r.probes_removed.len(),
            r.hook_slots.cleared,
            if r.unmapped { "yes" } else { "NO" }
        );
    }
}
