//! `plugin-host watch <plugin crate dir>`: build a plugin crate, load it,
//! keep reader threads calling it, and rebuild and reload it whenever its
//! sources change.
//!
//! - The plugin implements `usrcu_registry::example::Calc`; readers call
//!   `compute` through a typed handle that always reaches the live copy
//!   (and `DemoAdmin::update` now and then, when the plugin has it, which
//!   queues `call_srcu` callbacks for the unload to drain). As in `demo`,
//!   each served call fires the host's `plugin_host.call` tracepoint (a
//!   plugin may attach probes to it), and readers call the plugin's hot
//!   hook (`demo_hook`, when it has one) through the host's `HookSlot`,
//!   installed after each load.
//! - Sources (`src/**.rs`, `Cargo.toml`, `build.rs`) are watched with
//!   `notify` through `notify-debouncer-mini` (a burst of saves is one
//!   change); each change rebuilds with cargo and reloads.
//! - A failed build or a failed load keeps the old copy live and prints the
//!   compiler's (or the loader's) error.
//! - Each reload prints one line: the new copy's version, and what the old
//!   copy's unload did (barriers issued/skipped, callbacks drained, probes
//!   removed, hook slots cleared, unmapped or Zombie with its cause, time).
//! - The `cdylib`'s file name is read again (`cargo metadata`) after each
//!   build: a `Cargo.toml` that renames the package loads the new file, and
//!   one that is no longer a `cdylib` is a failed build (the old copy stays),
//!   never a reload of the stale file the last build left.
//! - A crate directory (or its `src`) deleted and made again is watched
//!   again once it is back (checked every second).
//! - Ctrl-C (SIGINT, through the `ctrlc` crate) unloads everything and
//!   prints the session's table. Reader threads get [`READERS_STOP`] to
//!   leave the plugin; a call that never returns (a plugin's deadlock)
//!   leaves its copy a Zombie, reported, and the host exits anyway. A
//!   second Ctrl-C exits at once.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{self, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{new_debouncer, DebounceEventResult};
use usrcu_module_loader::plugin_build::PluginBuild;
use usrcu_module_loader::usrcu_registry::example::Calc;
use usrcu_module_loader::usrcu_registry::usrcu::tasks;
use usrcu_module_loader::{ModuleHandle, ModuleLoader, ReloadError, UnloadError, UnloadReport};

/// How long the reader threads get to leave the plugin after Ctrl-C.
const READERS_STOP: Duration = Duration::from_secs(2);

/// Ctrl-C presses so far (the second exits at once).
static PRESSES: AtomicUsize = AtomicUsize::new(0);

/// The report inside an unload error, when the unload went through (an
/// `exit` or notifier that failed or panicked: the module is gone anyway).
fn report_of(e: &UnloadError) -> Option<&UnloadReport> {
    match e {
        UnloadError::HookFailed { report, .. } => Some(report),
        _ => None,
    }
}

/// The inode of `p` (`None` while it does not exist).
fn inode(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.ino())
}

use crate::api::DemoAdmin;

struct Args {
    crate_dir: PathBuf,
    threads: usize,
    target_dir: Option<PathBuf>,
    profile: String,
}

fn parse_args(args: &[String]) -> Args {
    if args.first().is_some_and(|a| crate::is_help(a)) {
        println!("{}", crate::USAGE);
        process::exit(0)
    }
    let mut it = args.iter();
    let crate_dir = PathBuf::from(
        it.next()
            .unwrap_or_else(|| crate::usage_error("watch needs the plugin crate's directory")),
    );
    let mut a = Args {
        crate_dir,
        threads: 2,
        target_dir: None,
        profile: "release".to_owned(),
    };
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .unwrap_or_else(|| crate::usage_error(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--threads" => {
                let v = value();
                a.threads = v.parse().unwrap_or_else(|_| {
                    crate::usage_error(&format!("{flag} {v}: not a count (a non-negative integer)"))
                })
            }
            "--target-dir" => a.target_dir = Some(PathBuf::from(value())),
            "--profile" => a.profile = value(),
            _ => crate::usage_error(&format!("unknown argument `{flag}` for watch")),
        }
    }
    a
}

/// The crate's `cdylib` target name, from `cargo metadata` (cargo's own
/// reading of the manifest, JSON parsed with serde_json).
fn cdylib_name(crate_dir: &Path) -> Result<String, String> {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .output()
        .map_err(|e| format!("running cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("reading cargo metadata: {e}"))?;
    meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .find(|t| {
            t["crate_types"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .and_then(|t| t["name"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("{} has no cdylib target", crate_dir.display()))
}

/// What the event loop waits for.
enum Event {
    Changed(DebounceEventResult),
    Stop,
}

/// Is this path a source of the crate (not its target dir, not the lock
/// file cargo may rewrite)?
fn is_source(path: &Path, crate_dir: &Path, target_dir: &Path) -> bool {
    if path.starts_with(target_dir) || path.starts_with(crate_dir.join("target")) {
        return false;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".rs") || name == "Cargo.toml"
}

/// Every source of the crate (`Cargo.toml`, `build.rs`, `src/**.rs`) with
/// a hash of its contents: notify also reports reads (cargo and rustc open
/// the sources while they build), so a change is acted on only when some
/// file's contents moved.
fn sources(crate_dir: &Path) -> BTreeMap<PathBuf, u64> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = vec![crate_dir.join("Cargo.toml"), crate_dir.join("build.rs")];
    walk(&crate_dir.join("src"), &mut files);
    files
        .into_iter()
        .filter_map(|f| {
            let bytes = std::fs::read(&f).ok()?;
            let mut h = std::hash::DefaultHasher::new();
            bytes.hash(&mut h);
            Some((f, h.finish()))
        })
        .collect()
}

/// The files whose contents differ between two snapshots, relative to `base`.
fn changed(before: &BTreeMap<PathBuf, u64>, after: &BTreeMap<PathBuf, u64>, base: &Path) -> Vec<String> {
    let keys: std::collections::BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| k.strip_prefix(base).unwrap_or(k).display().to_string())
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// One line about the old copy's unload.
fn unload_line(r: &UnloadReport) -> String {
    let callbacks: u64 = r.domains.iter().map(|d| d.callbacks_invoked).sum();
    let fate = if r.unmapped {
        "unmapped".to_owned()
    } else if let Some(z) = &r.zombie_cause {
        format!("ZOMBIE ({z})")
    } else if let Some(c) = &r.resident_cause {
        format!("still mapped ({c})")
    } else {
        "still mapped".to_owned()
    };
    format!(
        "barriers {} issued / {} skipped, {callbacks} callbacks drained, probes removed {}, hook slots cleared {}, {fate}, {}",
        r.barriers_issued(),
        r.barriers_skipped(),
        r.probes_removed.len(),
        r.hook_slots.cleared,
        ms(r.elapsed)
    )
}

#[derive(Default)]
struct Session {
    reloads: usize,
    builds_failed: usize,
    loads_failed: usize,
    reports: Vec<UnloadReport>,
    /// Unloads that went through although the copy's `exit` or a
    /// notifier failed (in `reports` too).
    hook_failures: usize,
    failures: usize,
}

pub fn main(args: &[String]) {
    let args = parse_args(args);
    let crate_dir = args.crate_dir.canonicalize().unwrap_or_else(|e| {
        eprintln!("plugin-host: {}: {e}", args.crate_dir.display());
        process::exit(2)
    });
    if !crate_dir.join("Cargo.toml").is_file() {
        crate::usage_error(&format!(
            "{} is not a cargo crate (no Cargo.toml): give the plugin crate's directory",
            crate_dir.display()
        ));
    }
    let target_dir = args.target_dir.clone().unwrap_or_else(|| crate_dir.join("target"));
    let lib_name = cdylib_name(&crate_dir).unwrap_or_else(|e| {
        eprintln!("plugin-host: {e}");
        process::exit(1)
    });
    let build = PluginBuild::new(&crate_dir)
        .target_dir(&target_dir)
        .profile(&args.profile);
    let mut artifact = build.artifact(&lib_name);

    let mut snapshot = sources(&crate_dir);
    println!("plugin-host: building {}", crate_dir.display());
    if let Err(e) = build.build() {
        println!("plugin-host: build failed, nothing to run:\n{e}");
        process::exit(1);
    }
    let loader = ModuleLoader::new();
    let first = match load(&loader, &artifact) {
        Ok(h) => h,
        Err(e) => {
            println!("plugin-host: load failed: {e}");
            process::exit(1)
        }
    };
    let name = loader.info(first).map(|i| i.name).unwrap_or_default();
    let calc = loader.interface::<dyn Calc>(&name);
    let version = match calc.version() {
        Ok(v) => v,
        Err(e) => {
            println!("plugin-host: {e}");
            let _ = loader.unload(first);
            process::exit(1)
        }
    };
    // From now on, a copy whose `calc` interface differs is refused at load.
    loader.require_interface::<dyn Calc>(&name);
    install_hook_of(&loader, first);

    let (tx, rx) = mpsc::channel::<Event>();
    let stop_tx = tx.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        // Relaxed: a count of presses, read by this handler only.
        if PRESSES.fetch_add(1, Ordering::Relaxed) > 0 {
            eprintln!("\nplugin-host: second Ctrl-C: exiting now, without the unloads");
            process::exit(130);
        }
        let _ = stop_tx.send(Event::Stop);
    }) {
        eprintln!("plugin-host: cannot handle Ctrl-C: {e}");
    }
    let mut debouncer = new_debouncer(Duration::from_millis(200), move |r| {
        let _ = tx.send(Event::Changed(r));
    })
    .unwrap_or_else(|e| {
        eprintln!("plugin-host: cannot watch files: {e}");
        process::exit(1)
    });
    let watched = [
        (crate_dir.join("src"), RecursiveMode::Recursive),
        (crate_dir.clone(), RecursiveMode::NonRecursive),
    ];
    for (p, mode) in &watched {
        if let Err(e) = debouncer.watcher().watch(p, *mode) {
            eprintln!("plugin-host: cannot watch {}: {e}", p.display());
            process::exit(1)
        }
    }
    // What is watched, by inode: a directory deleted and made again is a
    // new inode, which the old watch does not see (red team 13).
    let mut watched_ids: Vec<Option<u64>> = watched.iter().map(|(p, _)| inode(p)).collect();
    // A watched directory was seen missing since it was last watched (its
    // successor may reuse the inode number).
    let mut went_missing = false;

    let stop = AtomicBool::new(false);
    // Reader threads still running (each counts itself out as it leaves).
    let running = AtomicUsize::new(args.threads);
    let served = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let t0 = Instant::now();
    let mut session = Session::default();
    let mut live = first;
    let code = thread::scope(|s| {
        for t in 0..args.threads {
            let (loader, name, stop, served, refused, running) = (&loader, &name, &stop, &served, &refused, &running);
            thread::Builder::new()
                .name(format!("reader-{t}"))
                .spawn_scoped(s, move || {
                    let calc = loader.interface::<dyn Calc>(name);
                    let admin = loader.interface::<dyn DemoAdmin>(name);
                    let mut i = t as u64 * 1_000_003;
                    // Relaxed: `stop` only ends the loop; the scope's join orders the rest.
                    while !stop.load(Ordering::Relaxed) {
                        i = i.wrapping_add(1);
                        let ok = calc.compute(i).is_ok();
                        if ok {
                            crate::CALL_EVENT.fire(&i);
                        }
                        if ok && i % 64 == 0 {
                            // Plugins without this interface just skip it.
                            let _ = admin.update(i % 7 + 1);
                        }
                        // The hot hook, if the plugin has one; then a
                        // quiescent point (Tasks RCU: this loop never
                        // blocks otherwise, and unloads wait for it).
                        std::hint::black_box(crate::HOOK.call(i));
                        tasks::quiescent();
                        // Relaxed: statistics.
                        if ok {
                            served.fetch_add(1, Ordering::Relaxed);
                        } else {
                            refused.fetch_add(1, Ordering::Relaxed);
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                    // SeqCst: read by the stop's bounded wait.
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .unwrap_or_else(|e| crate::cannot_spawn(t, args.threads, &e));
        }
        println!(
            "plugin-host: watching {} (module '{name}' {live}, version {version}, {} reader threads); Ctrl-C to stop",
            crate_dir.display(),
            args.threads
        );

        loop {
            let ev = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(ev) => Some(ev),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            match ev {
                Some(Event::Stop) => break,
                Some(Event::Changed(Err(e))) => {
                    println!("plugin-host: watch error: {e}");
                    continue;
                }
                Some(Event::Changed(Ok(evs))) => {
                    if !evs.iter().any(|e| is_source(&e.path, &crate_dir, &target_dir)) {
                        continue;
                    }
                }
                None => {
                    // A watched directory made again: watch the new one,
                    // then look for changes as after an event.
                    let now: Vec<Option<u64>> = watched.iter().map(|(p, _)| inode(p)).collect();
                    if now.iter().any(Option::is_none) {
                        went_missing = true;
                        continue;
                    }
                    if now == watched_ids && !went_missing {
                        continue;
                    }
                    went_missing = false;
                    for (p, mode) in &watched {
                        let _ = debouncer.watcher().unwatch(p);
                        if let Err(e) = debouncer.watcher().watch(p, *mode) {
                            println!("plugin-host: cannot watch {} again: {e}", p.display());
                        }
                    }
                    println!("plugin-host: {} is back; watching it again", crate_dir.display());
                    watched_ids = now;
                }
            }
            // Read until two reads agree: a file being written (truncated,
            // then filled) is read once it is whole.
            let mut now = sources(&crate_dir);
            loop {
                thread::sleep(Duration::from_millis(100));
                let again = sources(&crate_dir);
                if again == now {
                    break;
                }
                now = again;
            }
            if watched.iter().any(|(p, _)| !p.exists()) {
                went_missing = true;
            }
            let files = changed(&snapshot, &now, &crate_dir);
            if files.is_empty() {
                continue;
            }
            snapshot = now;
            println!("plugin-host: {} changed, rebuilding", files.join(", "));
            let started = Instant::now();
            if let Err(e) = build.build() {
                session.builds_failed += 1;
                println!("plugin-host: build failed; {live} stays live. The compiler said:");
                for line in e.to_string().lines() {
                    println!("    {line}");
                }
                println!("plugin-host: still serving version {}", show(calc.version()));
                continue;
            }
            // The manifest may have renamed the library or dropped `cdylib`:
            // never reload the file an earlier build left (red team 13).
            match cdylib_name(&crate_dir) {
                Ok(lib) => artifact = build.artifact(&lib),
                Err(e) => {
                    session.builds_failed += 1;
                    println!(
                        "plugin-host: build failed; {live} stays live: no plugin to load: {}",
                        e.trim()
                    );
                    println!("plugin-host: still serving version {}", show(calc.version()));
                    continue;
                }
            }
            // SAFETY: the user points `watch` at their own plugin crate, built
            // with `export_module!`; its author upholds the plugin contract
            // (docs/abi.md), as for every load.
            match unsafe { loader.reload(&name, &artifact) } {
                Ok((new, report)) => {
                    session.reloads += 1;
                    install_hook_of(&loader, new);
                    let old = report.handle;
                    println!(
                        "plugin-host: reload {}: {old} -> {new}, now serving version {} | old copy: {} | build+reload {}",
                        session.reloads,
                        show(calc.version()),
                        unload_line(&report),
                        ms(started.elapsed())
                    );
                    session.reports.push(report);
                    live = new;
                }
                Err(ReloadError::Load(e)) => {
                    session.loads_failed += 1;
                    println!("plugin-host: load failed; {live} stays live: {e}");
                }
                Err(ReloadError::Unload { new, error }) => {
                    install_hook_of(&loader, new);
                    live = new;
                    match report_of(&error) {
                        // The old copy's `exit` (or a notifier) failed, and the
                        // unload went through: a reload, with the failure named.
                        Some(report) => {
                            session.reloads += 1;
                            session.hook_failures += 1;
                            println!(
                                "plugin-host: reload {}: {} -> {new}, now serving version {} | old copy: {} | {} | build+reload {}",
                                session.reloads,
                                report.handle,
                                show(calc.version()),
                                unload_line(report),
                                hook_failure(&error),
                                ms(started.elapsed())
                            );
                            session.reports.push(report.clone());
                        }
                        None => {
                            session.failures += 1;
                            println!(
                                "plugin-host: {new} is live, now serving version {}, but the old copy did not unload: {error}",
                                show(calc.version())
                            );
                        }
                    }
                }
                Err(e) => {
                    session.failures += 1;
                    println!("plugin-host: reload failed: {e}");
                }
            }
        }
        // Relaxed: see the readers; the scope joins them once they left.
        stop.store(true, Ordering::Relaxed);
        drop(debouncer);
        println!("plugin-host: stopping; unloading every module");
        // A reader inside a plugin call that never returns would hold the
        // scope's join forever (red team 13: Ctrl-C was ignored): bounded.
        let deadline = Instant::now() + READERS_STOP;
        // SeqCst: pairs with the readers' count-outs.
        while running.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let stuck = running.load(Ordering::SeqCst);
        if stuck > 0 {
            println!(
                "plugin-host: {stuck} reader thread(s) still inside the plugin after {} s (a call that never \
                 returns); unloading anyway: that copy stays mapped",
                READERS_STOP.as_secs()
            );
        }
        let code = finish(&loader, &crate_dir, &mut session, &served, &refused, t0.elapsed());
        if stuck > 0 {
            // The stuck readers never return: exit without joining them.
            process::exit(code.max(1));
        }
        code
    });
    if code != 0 {
        process::exit(code);
    }
}

/// Unload everything, print the session's table; the exit code.
fn finish(
    loader: &ModuleLoader,
    crate_dir: &Path,
    session: &mut Session,
    served: &AtomicU64,
    refused: &AtomicU64,
    wall: Duration,
) -> i32 {
    for (h, r) in loader.unload_all() {
        match r {
            Ok(r) => {
                println!("plugin-host: unload {h}: {}", unload_line(&r));
                session.reports.push(r);
            }
            Err(e) => {
                if let Some(r) = report_of(&e) {
                    session.hook_failures += 1;
                    println!("plugin-host: unload {h}: {} | {}", unload_line(r), hook_failure(&e));
                    session.reports.push(r.clone());
                } else {
                    session.failures += 1;
                    println!("plugin-host: unload {h} failed: {e}");
                }
            }
        }
    }
    let still_loaded = loader.list().len();
    print_table(crate_dir, session, served, refused, still_loaded, wall);
    let unmapped = session.reports.iter().filter(|r| r.unmapped).count();
    if session.failures > 0 || still_loaded > 0 || unmapped != session.reports.len() {
        1
    } else {
        0
    }
}

/// What failed in an unload that went through (`exit` panicked, say).
fn hook_failure(e: &UnloadError) -> String {
    match e {
        UnloadError::HookFailed { failure, .. } => format!("{failure}"),
        e => e.to_string(),
    }
}

/// Install the copy's hot hook into the host's slot, if it has one (a
/// failure is printed; the copy is served without it).
fn install_hook_of(loader: &ModuleLoader, h: ModuleHandle) {
    if let Err(e) = crate::install_hook(loader, h) {
        println!("plugin-host: hook not installed: {e}");
    }
}

fn load(loader: &ModuleLoader, path: &Path) -> Result<ModuleHandle, usrcu_module_loader::LoadError> {
    // SAFETY: the user asked this host to run this plugin; its code runs in
    // the process like any library's.
    unsafe { loader.load(path) }
}

fn show<E: std::fmt::Display>(r: Result<u64, E>) -> String {
    match r {
        Ok(v) => v.to_string(),
        Err(e) => format!("? ({e})"),
    }
}

fn print_table(
    crate_dir: &Path,
    s: &Session,
    served: &AtomicU64,
    refused: &AtomicU64,
    still_loaded: usize,
    wall: Duration,
) {
    let unmapped = s.reports.iter().filter(|r| r.unmapped).count();
    let issued: usize = s.reports.iter().map(|r| r.barriers_issued()).sum();
    let skipped: usize = s.reports.iter().map(|r| r.barriers_skipped()).sum();
    let callbacks: u64 = s
        .reports
        .iter()
        .flat_map(|r| &r.domains)
        .map(|d| d.callbacks_invoked)
        .sum();
    // Relaxed loads: the readers were joined, which orders their counts.
    let rows: Vec<(&str, String)> = vec![
        ("reloads", s.reloads.to_string()),
        ("builds failed (old copy kept)", s.builds_failed.to_string()),
        ("loads failed (old copy kept)", s.loads_failed.to_string()),
        ("calls served", served.load(Ordering::Relaxed).to_string()),
        ("calls refused", refused.load(Ordering::Relaxed).to_string()),
        ("unloads", s.reports.len().to_string()),
        ("  of which exit/notifier failed", s.hook_failures.to_string()),
        ("barriers issued", issued.to_string()),
        ("barriers skipped", skipped.to_string()),
        ("callbacks invoked", callbacks.to_string()),
        (
            "probes removed",
            s.reports
                .iter()
                .map(|r| r.probes_removed.len())
                .sum::<usize>()
                .to_string(),
        ),
        (
            "hook slots cleared",
            s.reports
                .iter()
                .map(|r| r.hook_slots.cleared)
                .sum::<usize>()
                .to_string(),
        ),
        ("objects verified unmapped", format!("{unmapped} / {}", s.reports.len())),
        ("modules still loaded", still_loaded.to_string()),
        ("failures", s.failures.to_string()),
        ("wall time", format!("{:.2} s", wall.as_secs_f64())),
    ];
    println!("\nplugin-host watch: {}", crate_dir.display());
    println!("  {:<30} {:>16}", "metric", "value");
    println!("  {:-<30} {:->16}", "", "");
    for (k, v) in rows {
        println!("  {k:<30} {v:>16}");
    }
}
