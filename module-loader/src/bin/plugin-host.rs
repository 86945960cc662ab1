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
//! continuously (and replace its configuration now and then, which queues
//! `call_srcu` callbacks) while the main thread reloads it `N` times.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use std::{env, process, thread};

use usrcu_module_loader::plugin_build::{workspace_target_dir, PluginBuild};
use usrcu_module_loader::{ModuleHandle, ModuleLoader, Symbol, UnloadReport};

type Compute = extern "C" fn(u64) -> u64;
type Update = extern "C" fn(u64);

const MODULE: &str = "demo";

#[path = "../../demo-plugin/src/api.rs"]
mod api;
#[path = "plugin-host/watch.rs"]
mod watch;

struct Args {
    cycles: usize,
    threads: usize,
    plugin: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: plugin-host [demo] [--cycles N] [--threads T] [--plugin PATH]\n       \
         plugin-host watch <plugin crate dir> [--threads T] [--target-dir DIR] [--profile P]"
    );
    process::exit(2)
}

fn parse_args(args: Vec<String>) -> Args {
    let mut a = Args {
        cycles: 100,
        threads: 2,
        plugin: None,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--cycles" => a.cycles = value().parse().unwrap_or_else(|_| usage()),
            "--threads" => a.threads = value().parse().unwrap_or_else(|_| usage()),
            "--plugin" => a.plugin = Some(PathBuf::from(value())),
            _ => usage(),
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

fn reader(loader: &ModuleLoader, stop: &AtomicBool, served: &AtomicU64, refused: &AtomicU64, seed: u64) {
    let mut calls = resolve(loader);
    let mut i = seed;
    // Relaxed: `stop` only ends the loop; the join in `main` orders the rest.
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = &calls else {
            thread::yield_now();
            calls = resolve(loader);
            continue;
        };
        i = i.wrapping_add(1);
        let r = c.compute.call(|f| f.call(i)).and_then(|_| {
            if i % 64 == 0 {
                c.update.call(|f| f.call(i % 7 + 1))
            } else {
                Ok(())
            }
        });
        match r {
            // Relaxed: statistics.
            Ok(()) => served.fetch_add(1, Ordering::Relaxed),
            Err(_) => {
                calls = resolve(loader);
                refused.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
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

fn main() {
    let mut args: Vec<String> = env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("watch") => return watch::main(&args[1..]),
        Some("demo") => drop(args.remove(0)),
        _ => {}
    }
    let args = parse_args(args);
    let plugin = args.plugin.clone().unwrap_or_else(build_demo_plugin);
    let loader = Arc::new(ModuleLoader::new());
    // SAFETY: the plugin upholds the contract of ModuleLoader::load (docs/abi.md).
    match unsafe { loader.load(&plugin) } {
        Ok(h) => push_config(&loader, h),
        Err(e) => {
            eprintln!("plugin-host: {e}");
            process::exit(1);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..args.threads)
        .map(|t| {
            let (loader, stop, served, refused) = (loader.clone(), stop.clone(), served.clone(), refused.clone());
            thread::Builder::new()
                .name(format!("reader-{t}"))
                .spawn(move || reader(&loader, &stop, &served, &refused, t as u64 * 1_000_003))
                .expect("spawn a reader thread")
        })
        .collect();

    let t0 = Instant::now();
    let mut reports: Vec<UnloadReport> = Vec::with_capacity(args.cycles + 1);
    let mut failures = 0usize;
    for cycle in 1..=args.cycles {
        // Let the readers work on this copy for a moment, and at least
        // until one call into it was served.
        // Relaxed: a statistic; only progress matters here.
        let before = served.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(2));
        while args.threads > 0 && served.load(Ordering::Relaxed) == before {
            thread::sleep(Duration::from_micros(100));
        }
        // SAFETY: the plugin upholds the contract of ModuleLoader::load (docs/abi.md).
        match unsafe { loader.reload(MODULE, &plugin) } {
            Ok((h, r)) => {
                push_config(&loader, h);
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
            served.load(Ordering::Relaxed),
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
    // Relaxed loads below: the readers were joined, which orders their counts.
    let rows: Vec<(&str, String)> = vec![
        ("reload cycles", args.cycles.to_string()),
        ("reader threads", args.threads.to_string()),
        ("calls served", served.load(Ordering::Relaxed).to_string()),
        ("calls refused while going", refused.load(Ordering::Relaxed).to_string()),
        ("unloads", reports.len().to_string()),
        ("unload latency median", ms(percentile(&lat, 0.5))),
        ("unload latency p99", ms(percentile(&lat, 0.99))),
        ("barriers issued", issued.to_string()),
        ("barriers skipped", skipped.to_string()),
        ("slots scanned by barriers", slots.to_string()),
        ("callbacks invoked", callbacks.to_string()),
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
    if failures > 0 || unmapped != reports.len() {
        process::exit(1);
    }
}
