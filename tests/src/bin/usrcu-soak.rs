//! `usrcu-soak`: the reload soak.
//!
//! Loads, calls and unloads three fixture plugins in a loop while reader
//! threads call into them without pause, and checks every cycle:
//!
//! - `callbacks`: static domains; the readers run read sections and a
//!   `synchronize` inside it (`fx_read`) and queue callbacks, some of which
//!   sleep, so that they are still pending when the unload begins;
//! - `dynamic-domain`: a dynamic domain created by `init`, dropped after a
//!   `barrier` by `exit`; its callbacks must run on the host's runtime threads;
//! - `thread-current`: plugin code that calls `std::thread::current()` on the
//!   readers' threads, which creates a pthread key whose destructor is plugin
//!   code (the loader must delete it before `dlclose`, or a reader thread
//!   exiting later would crash in unmapped code).
//!
//! Beside them, once per cycle from the main thread: `plugin-thread`, whose
//! call spawns and joins a std thread that uses `std::thread::current()`,
//! and `unlisted-domains`, which leaves callbacks pending on a plain
//! `static` domain it does not list; both must unload unmapped, the
//! callbacks run first.
//!
//! Per cycle: every unload reports `Unloaded` and unmapped, with no hook
//! failure, and the object is absent from the dynamic linker's list and from
//! `/proc/self/maps` (checked independently of the loader); every callback
//! whose queueing call returned had run by the time its module's unload
//! returned. Reader threads are retired and replaced every few cycles (a
//! thread exit after its plugin is gone is where a leftover key destructor
//! would crash). After a warm-up, the count of `/proc/self/maps` lines,
//! resident memory and pthread keys in use must not grow.
//!
//! Prints a line every `--report-every` cycles and a final `usrcu-soak:
//! SUCCESS` or `usrcu-soak: FAILURE (...)`; exit status 0, 1, or 2 on a usage
//! error.

#[path = "usrcu-torture/rng.rs"]
mod rng;
#[path = "usrcu-soak/smaps.rs"]
mod smaps;

use rng::Rng;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use usrcu_module_loader::pthread_keys::keys_in_use;
use usrcu_module_loader::{CallError, LoaderConfig, ModuleHandle, ModuleLoader, ModuleState, Symbol, UnloadReport};
use usrcu_tests::{fixture_path, object_is_mapped};

const USAGE: &str = "\
usage: usrcu-soak [options]

  --cycles <n>               load/call/unload cycles (default 1000)
  --warmup <n>               cycles before the baseline of maps, RSS and keys is taken
                             (default: cycles/4: the loader's bounded record of gone
                             modules, 1,024 entries, fills at about cycle 205 with five
                             unloads per cycle, and glibc's per-thread caches fill over
                             the first few hundred cycles; see docs/reliability.md)
  --readers <n>              reader threads calling into the plugins (default 3)
  --churn <n>                retire and replace one reader thread every n cycles (default 10; 0: never)
  --max-rss-growth-kib <n>   allowed growth of resident memory after the warm-up (default 1024)
  --max-maps-growth <n>      allowed growth of /proc/self/maps lines after the warm-up (default 8:
                             the runtime's worker pool may start a thread or two late; a leak
                             of one mapping per cycle goes far beyond)
  --report-every <n>         cycles between progress lines (default 100)
  --loader-per-cycle <0|1>   a fresh ModuleLoader every cycle (default 0: one for the run); separates
                             the loader's own per-unload bookkeeping from everything else
  --side-plugins <0|1>       also load plugin-thread and unlisted-domains every cycle (default 1)
  --smaps <0|1>              at the end, print which mappings' resident memory grew since the
                             baseline, the allocator's figures, and RSS after malloc_trim(0) at
                             both points (default 0; the trim changes the run after the baseline)
  --copy-dir <dir>           load through file copies in <dir> (a new private directory) instead of
                             memfds: valgrind and heaptrack read symbols of a file, not of a memfd
  --seed <n>
  --broken <what>            prove the checks can fail (the run must end in FAILURE):
                             no-auto-barrier  the loader skips the barrier at unload
                             leak-memory      leak 256 KiB of touched heap per cycle
                             leak-mapping     leak one file mapping per cycle
  --help";

/// Deliberate faults of `--broken`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Broken {
    NoAutoBarrier,
    LeakMemory,
    LeakMapping,
}

#[derive(Clone, Debug)]
struct Args {
    cycles: usize,
    warmup: usize,
    readers: usize,
    churn: usize,
    max_rss_growth_kib: u64,
    max_maps_growth: usize,
    report_every: usize,
    seed: u64,
    broken: Option<Broken>,
    loader_per_cycle: bool,
    side_plugins: bool,
    copy_dir: Option<PathBuf>,
    smaps: bool,
}

fn parse(argv: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args {
        cycles: 1000,
        warmup: usize::MAX,
        readers: 3,
        churn: 10,
        max_rss_growth_kib: 1024,
        max_maps_growth: 8,
        report_every: 100,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        broken: None,
        loader_per_cycle: false,
        side_plugins: true,
        copy_dir: None,
        smaps: false,
    };
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let v = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{flag}: missing value"))?,
        };
        if flag == "--broken" {
            a.broken = Some(match v.as_str() {
                "no-auto-barrier" => Broken::NoAutoBarrier,
                "leak-memory" => Broken::LeakMemory,
                "leak-mapping" => Broken::LeakMapping,
                _ => {
                    return Err(format!(
                        "--broken: expected no-auto-barrier, leak-memory or leak-mapping, got {v:?}"
                    ))
                }
            });
            continue;
        }
        if flag == "--copy-dir" {
            a.copy_dir = Some(PathBuf::from(v));
            continue;
        }
        let n = v.parse::<u64>().map_err(|_| format!("{flag}: not a number: {v:?}"))?;
        match flag.as_str() {
            "--cycles" => a.cycles = n as usize,
            "--warmup" => a.warmup = n as usize,
            "--readers" => a.readers = n as usize,
            "--churn" => a.churn = n as usize,
            "--max-rss-growth-kib" => a.max_rss_growth_kib = n,
            "--max-maps-growth" => a.max_maps_growth = n as usize,
            "--report-every" => a.report_every = n.max(1) as usize,
            "--seed" => a.seed = n,
            "--loader-per-cycle" => a.loader_per_cycle = n != 0,
            "--side-plugins" => a.side_plugins = n != 0,
            "--smaps" => a.smaps = n != 0,
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    if a.warmup == usize::MAX {
        // Growth while bounded structures fill to their bound is not a
        // leak: take the baseline after them (see USAGE).
        a.warmup = a.cycles / 4;
    }
    if a.cycles == 0 || a.warmup >= a.cycles {
        return Err("--cycles must be positive and larger than --warmup".into());
    }
    if a.readers == 0 {
        return Err("--readers: at least one reader is needed".into());
    }
    Ok(Some(a))
}

/// Callbacks the readers queue into each plugin per cycle, at most (about):
/// enough to keep callbacks pending at every unload, bounded so that a
/// cycle's barrier does not grow with the readers' speed.
const MAX_CALLBACKS_PER_CYCLE: usize = 2000;

type AddFn = extern "C" fn(u64, u64) -> u64;
type ReadFn = extern "C" fn(u64) -> u64;
type QueueFn = unsafe extern "C" fn(usize, u64, *const AtomicUsize);
type DynQueueFn = unsafe extern "C" fn(usize, u64, *const AtomicUsize, *const AtomicUsize);
type NameFn = unsafe extern "C" fn(*mut u8, usize) -> usize;

/// The three plugins, in the order they are loaded and unloaded.
const PLUGINS: [&str; 3] = ["callbacks", "dynamic-domain", "thread-current"];

/// Counters of one cycle. Allocated for every cycle before the run starts,
/// so that they do not show up as growth. Relaxed everywhere: the plugin's
/// callbacks and the readers count, and the main thread compares after
/// unloads (ordered by the unload's barrier and liveness grace period) and
/// after joins.
#[derive(Debug, Default)]
struct CycleCounters {
    /// Successful calls into each plugin of this cycle.
    calls: [AtomicU64; 3],
    /// Callbacks queued into `callbacks` by calls that returned.
    cb_queued: AtomicUsize,
    /// Callbacks of `callbacks` that ran (the plugin adds to it).
    cb_ran: AtomicUsize,
    /// Same for `dynamic-domain`, and those that ran on a runtime thread.
    dyn_queued: AtomicUsize,
    dyn_ran: AtomicUsize,
    dyn_on_runtime: AtomicUsize,
    /// `cb_ran` and `dyn_ran` read right after each unload returned.
    cb_ran_at_unload: AtomicUsize,
    dyn_ran_at_unload: AtomicUsize,
}

/// What the readers call in the cycle's plugins.
struct Live {
    cycle: usize,
    add: Symbol<AddFn>,
    read: Symbol<ReadFn>,
    queue: Symbol<QueueFn>,
    dyn_queue: Symbol<DynQueueFn>,
    name: Symbol<NameFn>,
}

struct Soak {
    args: Args,
    counters: Vec<CycleCounters>,
    live: RwLock<Option<Arc<Live>>>,
    /// Errors found by any thread.
    errors: Mutex<Vec<String>>,
    stop_all: AtomicBool,
}

impl Soak {
    fn fail(&self, msg: String) {
        println!("usrcu-soak: !!! {msg}");
        self.errors.lock().unwrap().push(msg);
    }

    fn failed(&self) -> bool {
        !self.errors.lock().unwrap().is_empty()
    }
}

fn bump(c: &AtomicU64) {
    // Relaxed: see `CycleCounters`.
    c.fetch_add(1, Ordering::Relaxed);
}

/// A reader thread: calls into whatever plugins are live, until told to stop.
fn reader(s: &'static Soak, id: u64, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(s.args.seed, id);
    let mut live: Option<Arc<Live>> = None;
    let mut i = 0u64;
    // Relaxed: stop flags, nothing is published through them.
    while !stop.load(Ordering::Relaxed) && !s.stop_all.load(Ordering::Relaxed) {
        let Some(l) = live.clone() else {
            live = s.live.read().unwrap().clone();
            if live.is_none() {
                std::thread::sleep(Duration::from_micros(20));
            }
            continue;
        };
        let c = &s.counters[l.cycle];
        i += 1;
        let r: Result<(), CallError> = match rng.below(8) {
            0..=2 => l.add.call(|f| f.call(i, 1)).map(|v| {
                if v != i + 1 {
                    s.fail(format!("fx_add({i}, 1) returned {v}"));
                }
                bump(&c.calls[0]);
            }),
            3 => {
                let n = 1 + rng.below(64);
                l.read.call(|f| f.call(n)).map(|v| {
                    if v != n * (n - 1) / 2 {
                        s.fail(format!("fx_read({n}) returned {v}"));
                    }
                    bump(&c.calls[0]);
                })
            }
            // Relaxed: a soft cap, see `MAX_CALLBACKS_PER_CYCLE`.
            4 if c.cb_queued.load(Ordering::Relaxed) < MAX_CALLBACKS_PER_CYCLE => {
                let n = 1 + rng.below(4) as usize;
                let sleep_ms = u64::from(rng.one_in(64));
                // SAFETY: the counter lives for the process (leaked `Soak`).
                l.queue.call(|f| unsafe { f.call(n, sleep_ms, &c.cb_ran) }).map(|()| {
                    c.cb_queued.fetch_add(n, Ordering::Relaxed);
                    bump(&c.calls[0]);
                })
            }
            // Relaxed: as above.
            5 if c.dyn_queued.load(Ordering::Relaxed) < MAX_CALLBACKS_PER_CYCLE => {
                let n = 1 + rng.below(4) as usize;
                let sleep_ms = u64::from(rng.one_in(64));
                // SAFETY: both counters live for the process (leaked `Soak`).
                l.dyn_queue
                    .call(|f| unsafe { f.call(n, sleep_ms, &c.dyn_ran, &c.dyn_on_runtime) })
                    .map(|()| {
                        c.dyn_queued.fetch_add(n, Ordering::Relaxed);
                        bump(&c.calls[1]);
                    })
            }
            6 | 7 => {
                let mut buf = [0u8; 64];
                // SAFETY: `buf` has 64 writable bytes.
                l.name
                    .call(|f| unsafe { f.call(buf.as_mut_ptr(), buf.len()) })
                    .map(|n| {
                        if n == 0 {
                            s.fail("fx_thread_name returned an empty name".into());
                        }
                        bump(&c.calls[2]);
                    })
            }
            // A queueing call over the cap: a plain call instead.
            _ => l.add.call(|f| f.call(i, 1)).map(|_| bump(&c.calls[0])),
        };
        if r.is_err() {
            // The cycle's plugins are going: look for the next cycle's,
            // without taking the CPU from the unload.
            live = None;
            std::thread::sleep(Duration::from_micros(20));
        }
    }
}

fn resolve(loader: &ModuleLoader, cycle: usize, h: [ModuleHandle; 3]) -> Result<Live, String> {
    // SAFETY: the fixtures export these names with these signatures.
    unsafe {
        Ok(Live {
            cycle,
            add: loader.symbol(h[0], "fx_add").map_err(|e| e.to_string())?,
            read: loader.symbol(h[0], "fx_read").map_err(|e| e.to_string())?,
            queue: loader.symbol(h[0], "fx_queue_callbacks").map_err(|e| e.to_string())?,
            dyn_queue: loader.symbol(h[1], "fx_dyn_queue").map_err(|e| e.to_string())?,
            name: loader.symbol(h[2], "fx_thread_name").map_err(|e| e.to_string())?,
        })
    }
}

/// Lines of `/proc/self/maps`.
fn maps_count() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count())
}

/// Resident memory in KiB (`/proc/self/statm`).
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page / 1024
}

/// Resident memory in KiB after `malloc_trim(0)`: glibc hands back the free
/// pages of every arena (not only the tops, which it trims by itself), so
/// what stays resident is what is allocated, plus partly used pages. Free
/// memory that the per-thread arenas keep depends on which thread freed
/// last and on how threads were spread over arenas (up to 8 per CPU), not
/// on what the process holds; a leak stays resident.
fn trimmed_rss_kib() -> u64 {
    // SAFETY: malloc_trim has no preconditions; it only releases free pages.
    unsafe { libc::malloc_trim(0) };
    rss_kib()
}

/// `--broken leak-memory` and `leak-mapping`: what a leaking plugin cycle
/// would look like to the growth checks.
fn leak(broken: Option<Broken>) {
    match broken {
        Some(Broken::LeakMemory) => {
            let v: &'static mut [u8] = Box::leak(vec![0u8; 256 << 10].into_boxed_slice());
            // Touch every page so that it is resident.
            for p in v.chunks_mut(4096) {
                p[0] = 1;
            }
            std::hint::black_box(v);
        }
        Some(Broken::LeakMapping) => {
            // A private mapping of one page of our own executable at offset 0:
            // never merged with its neighbours, one more line in the maps.
            if let Ok(f) = std::fs::File::open("/proc/self/exe") {
                use std::os::fd::AsRawFd;
                // SAFETY: a fresh read-only private mapping of an open file;
                // the result is deliberately never unmapped.
                unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE,
                        f.as_raw_fd(),
                        0,
                    )
                };
            }
        }
        _ => {}
    }
}

/// Bytes of heap in use (glibc's `mallinfo2`: small blocks plus mmapped
/// ones), in KiB: growth here is a leak, where RSS growth may also be
/// fragmentation.
fn heap_kib() -> u64 {
    heap_in_use_bytes() / 1024
}

/// Bytes of heap in use (see `heap_kib`).
fn heap_in_use_bytes() -> u64 {
    // SAFETY: mallinfo2 has no preconditions; it only reads allocator state.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

/// glibc's `mallinfo2`, all arenas: what the allocator holds from the
/// system, what is in use (blocks in the per-thread tcaches count as in
/// use, fastbin blocks as free), what is free inside it, and how many bytes
/// the top chunks could give back.
fn malloc_figures() -> String {
    // SAFETY: mallinfo2 has no preconditions; it only reads allocator state.
    let m = unsafe { libc::mallinfo2() };
    format!(
        "system={} KiB (arenas {} + mmapped {}) in_use={} KiB free={} KiB (fastbins {}) releasable_top={} KiB",
        (m.arena + m.hblkhd) / 1024,
        m.arena / 1024,
        m.hblkhd / 1024,
        (m.uordblks + m.hblkhd) / 1024,
        m.fordblks / 1024,
        m.fsmblks / 1024,
        m.keepcost / 1024,
    )
}

/// The plugins loaded and unloaded beside the three above, once per cycle,
/// from the main thread.
const SIDE_PLUGINS: [&str; 2] = ["plugin-thread", "unlisted-domains"];

/// What the side plugins did over the run.
#[derive(Default, Debug)]
struct SideCounts {
    threads_joined: u64,
    unlisted_callbacks: u64,
    unmapped: u64,
}

type JoinFn = extern "C" fn() -> usize;
type PlainQueueFn = unsafe extern "C" fn(usize, u64, *const AtomicBool, *const AtomicUsize);

/// One cycle of the side plugins (see `SIDE_PLUGINS`).
fn side_plugins(s: &Soak, loader: &ModuleLoader, cycle: usize, paths: &[PathBuf], n: &mut SideCounts) {
    static OPEN: AtomicBool = AtomicBool::new(true);
    static RAN: AtomicUsize = AtomicUsize::new(0);
    for (name, path) in SIDE_PLUGINS.iter().zip(paths) {
        // SAFETY: the fixtures keep the plugin author's contract.
        let h = match unsafe { loader.load(path) } {
            Ok(h) => h,
            Err(e) => return s.fail(format!("cycle {cycle}: load of {name} failed: {e}")),
        };
        let before = RAN.load(Ordering::SeqCst);
        let called = if *name == "plugin-thread" {
            // From a short-lived host thread: the plugin's std leaves a
            // thread-local destructor on the thread that spawns, which would
            // keep the object resident while that thread lives.
            std::thread::scope(|sc| {
                sc.spawn(|| {
                    // SAFETY: the fixture exports it with this signature.
                    unsafe { loader.symbol::<JoinFn>(h, "fx_spawn_join") }
                        .map_err(|e| e.to_string())
                        .and_then(|f| f.call(|f| f.call()).map_err(|e| e.to_string()))
                })
                .join()
                .unwrap_or_else(|_| Err("the calling thread panicked".into()))
            })
            .map(|ok| n.threads_joined += ok as u64)
        } else {
            // SAFETY: the fixture exports it with this signature.
            unsafe { loader.symbol::<PlainQueueFn>(h, "fx_plain_queue") }
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    // SAFETY: both atomics are statics.
                    f.call(|f| unsafe { f.call(3, 1, &OPEN, &RAN) })
                        .map_err(|e| e.to_string())
                })
        };
        if let Err(e) = called {
            s.fail(format!("cycle {cycle}: call into {name} failed: {e}"));
        }
        match loader.unload(h) {
            Ok(r) => {
                check_report(s, cycle, &r, 0);
                n.unmapped += r.unmapped as u64;
                if *name == "unlisted-domains" {
                    let ran = RAN.load(Ordering::SeqCst) - before;
                    n.unlisted_callbacks += ran as u64;
                    if ran != 3 {
                        s.fail(format!(
                            "cycle {cycle}: {ran} of 3 unlisted-domain callbacks ran before the unload returned"
                        ));
                    }
                }
            }
            Err(e) => s.fail(format!("cycle {cycle}: unload of {name} failed: {e}")),
        }
    }
}

/// Check one unload's report.
fn check_report(s: &Soak, cycle: usize, r: &UnloadReport, calls: u64) {
    let mut bad = Vec::new();
    if r.state != ModuleState::Unloaded {
        bad.push(format!("state {}", r.state));
    }
    if !r.dlclosed || !r.unmapped {
        bad.push("not unmapped".into());
    }
    if !r.hook_failures.is_empty() {
        bad.push(format!("{} hook failure(s)", r.hook_failures.len()));
    }
    if object_is_mapped(&r.loaded_path) {
        bad.push("still listed by the dynamic linker or /proc/self/maps".into());
    }
    if r.name == "thread-current" && calls > 0 && r.pthread_keys_deleted == 0 {
        bad.push("no pthread key deleted although plugin code called std::thread::current()".into());
    }
    if !bad.is_empty() {
        s.fail(format!(
            "cycle {cycle}: unload of '{}': {}: {r}",
            r.name,
            bad.join(", ")
        ));
    }
}

fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("usrcu-soak: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let paths: Vec<PathBuf> = PLUGINS.iter().map(|p| fixture_path(p)).collect();
    let side_paths: Vec<PathBuf> = SIDE_PLUGINS.iter().map(|p| fixture_path(p)).collect();
    let mut side = SideCounts::default();
    let s: &'static Soak = Box::leak(Box::new(Soak {
        counters: (0..args.cycles).map(|_| CycleCounters::default()).collect(),
        live: RwLock::new(None),
        errors: Mutex::new(Vec::new()),
        stop_all: AtomicBool::new(false),
        args,
    }));
    println!(
        "usrcu-soak: start: cycles={} warmup={} readers={} churn={} plugins={} seed={} broken={:?} loader_per_cycle={}",
        s.args.cycles,
        s.args.warmup,
        s.args.readers,
        s.args.churn,
        PLUGINS.join(","),
        s.args.seed,
        s.args.broken,
        s.args.loader_per_cycle,
    );
    // Every warning of usrcu (leaked state, missed barrier, stall) from the
    // host or any plugin copy: a clean cycle emits none.
    let warnings = usrcu::diagnostics::Capture::start();
    let mut warnings_seen = 0usize;
    let new_loader = || {
        ModuleLoader::with_config(LoaderConfig {
            auto_barrier: s.args.broken != Some(Broken::NoAutoBarrier),
            copy_dir: s.args.copy_dir.clone(),
            ..LoaderConfig::default()
        })
    };
    let mut loader = new_loader();
    let mut next_reader_id = 1u64;
    let mut spawn_reader = || {
        let stop = Arc::new(AtomicBool::new(false));
        let id = next_reader_id;
        next_reader_id += 1;
        let st = stop.clone();
        let h = std::thread::Builder::new()
            .name(format!("soak-reader-{id}"))
            .spawn(move || reader(s, id, st))
            .expect("cannot spawn a reader");
        (h, stop)
    };
    let mut readers: Vec<(JoinHandle<()>, Arc<AtomicBool>)> = (0..s.args.readers).map(|_| spawn_reader()).collect();

    let t0 = Instant::now();
    let mut base: Option<(usize, u64, Option<usize>)> = None;
    let (mut max_maps, mut max_rss) = (0usize, 0u64);
    let mut last = (0usize, 0u64, None);
    let mut unload_time = Duration::ZERO;
    let mut retired_threads = 0usize;
    let mut cycles_done = 0usize;
    let mut unmapped = 0usize;
    let mut next_report = s.args.report_every;
    let mut smaps_base = (Vec::new(), String::new());
    // RSS after malloc_trim(0) (`--smaps`) and heap in use, at the baseline
    // and after the last cycle.
    let mut trimmed = (0u64, 0u64);
    let mut heap_in_use = (0u64, 0u64);
    for cycle in 0..s.args.cycles {
        let c = &s.counters[cycle];
        if s.args.loader_per_cycle {
            loader = new_loader();
        }
        // Load and publish.
        let mut handles = Vec::with_capacity(3);
        for p in &paths {
            // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
            match unsafe { loader.load(p) } {
                Ok(h) => handles.push(h),
                Err(e) => {
                    s.fail(format!("cycle {cycle}: load of {} failed: {e}", p.display()));
                    break;
                }
            }
        }
        if handles.len() != 3 {
            break;
        }
        let h = [handles[0], handles[1], handles[2]];
        match resolve(&loader, cycle, h) {
            Ok(l) => *s.live.write().unwrap() = Some(Arc::new(l)),
            Err(e) => {
                s.fail(format!("cycle {cycle}: symbol lookup failed: {e}"));
                break;
            }
        }
        // Let every plugin serve calls, and both callback plugins get
        // callbacks queued, before it goes.
        let wait0 = Instant::now();
        // Relaxed: see `CycleCounters`.
        while c.calls.iter().any(|n| n.load(Ordering::Relaxed) < 4)
            || c.cb_queued.load(Ordering::Relaxed) == 0
            || c.dyn_queued.load(Ordering::Relaxed) == 0
        {
            if wait0.elapsed() > Duration::from_secs(30) {
                s.fail(format!("cycle {cycle}: the readers made no calls for 30 s"));
                break;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        // Unload under the readers, which keep calling (and fail NotLive).
        let u0 = Instant::now();
        for (k, &m) in h.iter().enumerate() {
            match loader.unload(m) {
                Ok(r) => {
                    // Relaxed: after the unload's barrier (see `CycleCounters`).
                    if k == 0 {
                        c.cb_ran_at_unload
                            .store(c.cb_ran.load(Ordering::Relaxed), Ordering::Relaxed);
                    } else if k == 1 {
                        c.dyn_ran_at_unload
                            .store(c.dyn_ran.load(Ordering::Relaxed), Ordering::Relaxed);
                    }
                    unmapped += usize::from(r.unmapped);
                    check_report(s, cycle, &r, c.calls[k].load(Ordering::Relaxed));
                }
                Err(e) => s.fail(format!("cycle {cycle}: unload of {} failed: {e}", PLUGINS[k])),
            }
        }
        unload_time += u0.elapsed();
        // Every callback whose queueing call had returned has run. (Calls that
        // returned just before the unload may count themselves after it; the
        // exact check runs at the end.)
        // Relaxed: see `CycleCounters`.
        let (q, r) = (
            c.cb_queued.load(Ordering::Relaxed),
            c.cb_ran_at_unload.load(Ordering::Relaxed),
        );
        let (dq, dr) = (
            c.dyn_queued.load(Ordering::Relaxed),
            c.dyn_ran_at_unload.load(Ordering::Relaxed),
        );
        if r < q || dr < dq {
            s.fail(format!(
                "cycle {cycle}: callbacks ran before unmap: callbacks {r} of {q}, dynamic-domain {dr} of {dq}"
            ));
        }
        let w = warnings.warnings();
        for w in &w[warnings_seen..] {
            s.fail(format!(
                "cycle {cycle}: usrcu warning ({:?}, domain '{}'): {}",
                w.kind, w.domain, w.message
            ));
        }
        warnings_seen = w.len();
        // Threads and unlisted domains: a plugin that spawns and joins a
        // std thread (which calls `std::thread::current()`), and one that
        // leaves callbacks pending on a domain it does not list (a plain
        // `static`); both must unload unmapped, every callback run first.
        if s.args.side_plugins {
            side_plugins(s, &loader, cycle, &side_paths, &mut side);
        }
        // Thread churn: a reader thread exits after its plugins are gone.
        if s.args.churn > 0 && cycle % s.args.churn == s.args.churn - 1 {
            let (h, stop) = readers.remove(0);
            // Relaxed: a stop flag.
            stop.store(true, Ordering::Relaxed);
            if h.join().is_err() {
                s.fail(format!("cycle {cycle}: a reader thread panicked"));
            }
            retired_threads += 1;
            readers.push(spawn_reader());
        }
        leak(s.args.broken);
        let (maps, rss, keys) = (maps_count(), rss_kib(), keys_in_use());
        last = (maps, rss, keys);
        if cycle + 1 == s.args.warmup {
            base = Some((maps, rss, keys));
            heap_in_use.0 = heap_in_use_bytes();
            if s.args.smaps {
                smaps_base = (smaps::snapshot(), malloc_figures());
                trimmed.0 = trimmed_rss_kib();
            }
            println!(
                "usrcu-soak: baseline after {} warm-up cycles: maps={maps} rss={rss} KiB pthread_keys={keys:?}",
                cycle + 1
            );
        }
        if base.is_some() {
            max_maps = max_maps.max(maps);
            max_rss = max_rss.max(rss);
        }
        cycles_done = cycle + 1;
        if cycles_done == next_report {
            next_report += s.args.report_every;
            println!(
                "usrcu-soak: cycle={cycles_done} t={:.1}s maps={maps} rss={rss} KiB heap={} KiB pthread_keys={keys:?} \
                 unload_avg={:.2} ms threads_retired={retired_threads} errors={}",
                t0.elapsed().as_secs_f64(),
                heap_kib(),
                unload_time.as_secs_f64() * 1000.0 / (3 * cycles_done) as f64,
                s.errors.lock().unwrap().len(),
            );
        }
        if s.failed() {
            break;
        }
    }
    if base.is_some() && cycles_done == s.args.cycles {
        // Same point of the cycle as the baseline, readers still running.
        heap_in_use.1 = heap_in_use_bytes();
        if s.args.smaps {
            let now = smaps::snapshot();
            smaps::print_growth(&smaps_base.0, &now);
            println!("usrcu-soak: malloc: baseline {}", smaps_base.1);
            println!("usrcu-soak: malloc: end      {}", malloc_figures());
            trimmed.1 = trimmed_rss_kib();
            println!(
                "usrcu-soak: rss after malloc_trim(0): {} -> {} KiB (growth {} KiB)",
                trimmed.0,
                trimmed.1,
                trimmed.1 as i64 - trimmed.0 as i64
            );
        }
    }

    // Stop and join the readers (each exit is one more chance for a
    // leftover key destructor to run unmapped code).
    // Relaxed: a stop flag; the joins order everything after.
    s.stop_all.store(true, Ordering::Relaxed);
    for (h, _) in readers {
        if h.join().is_err() {
            s.fail("a reader thread panicked".into());
        }
    }
    // Compared with the baseline: the last cycle's figures (same threads
    // alive); after the joins, for the record.
    let (maps, rss, keys) = last;
    let (maps_joined, rss_joined) = (maps_count(), rss_kib());

    // Exact callback accounting, now that no call is in flight.
    let mut totals = [0u64; 3];
    let (mut cbs, mut dyns) = (0usize, 0usize);
    for (k, c) in s.counters.iter().enumerate().take(cycles_done) {
        // Relaxed: after the joins.
        let l = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        for (t, n) in totals.iter_mut().zip(&c.calls) {
            *t += n.load(Ordering::Relaxed);
        }
        cbs += l(&c.cb_queued);
        dyns += l(&c.dyn_queued);
        if l(&c.cb_ran_at_unload) != l(&c.cb_queued) || l(&c.cb_ran) != l(&c.cb_queued) {
            s.fail(format!(
                "cycle {k}: callbacks queued {}, ran before unload returned {}, ran in all {}",
                l(&c.cb_queued),
                l(&c.cb_ran_at_unload),
                l(&c.cb_ran)
            ));
        }
        if l(&c.dyn_ran_at_unload) != l(&c.dyn_queued)
            || l(&c.dyn_ran) != l(&c.dyn_queued)
            || l(&c.dyn_on_runtime) != l(&c.dyn_ran)
        {
            s.fail(format!(
                "cycle {k}: dynamic-domain callbacks queued {}, ran before unload returned {}, ran in all {}, on a runtime thread {}",
                l(&c.dyn_queued),
                l(&c.dyn_ran_at_unload),
                l(&c.dyn_ran),
                l(&c.dyn_on_runtime)
            ));
        }
    }
    if let Some((bmaps, brss, bkeys)) = base {
        let growth = rss.saturating_sub(brss);
        let measured = cycles_done.saturating_sub(s.args.warmup).max(1) as f64;
        let heap_growth = heap_in_use.1 as i64 - heap_in_use.0 as i64;
        println!(
            "usrcu-soak: memory: maps {bmaps} -> {maps} (max {max_maps}), rss {brss} -> {rss} KiB (max {max_rss}, growth {growth} KiB, \
             {:.0} B/cycle), heap in use {} -> {} KiB ({:.0} B/cycle), pthread_keys {bkeys:?} -> {keys:?}; \
             after the readers exited: maps {maps_joined}, rss {rss_joined} KiB",
            growth as f64 * 1024.0 / measured,
            heap_in_use.0 / 1024,
            heap_in_use.1 / 1024,
            heap_growth as f64 / measured,
        );
        if cycles_done == s.args.cycles {
            if maps > bmaps + s.args.max_maps_growth {
                s.fail(format!("/proc/self/maps grew from {bmaps} to {maps} lines"));
            }
            if growth > s.args.max_rss_growth_kib {
                s.fail(format!(
                    "resident memory grew {growth} KiB (limit {} KiB)",
                    s.args.max_rss_growth_kib
                ));
            }
            if keys != bkeys {
                s.fail(format!("pthread keys in use went from {bkeys:?} to {keys:?}"));
            }
        }
    }
    println!(
        "usrcu-soak: cycles={cycles_done} loads={} unloads_unmapped={} calls={} (callbacks={} dynamic-domain={} thread-current={}) \
         callbacks_run={} threads_retired={retired_threads} unload_avg={:.2} ms elapsed={:.1}s",
        3 * cycles_done,
        unmapped,
        totals.iter().sum::<u64>(),
        totals[0],
        totals[1],
        totals[2],
        cbs + dyns,
        unload_time.as_secs_f64() * 1000.0 / (3 * cycles_done.max(1)) as f64,
        t0.elapsed().as_secs_f64(),
    );
    println!(
        "usrcu-soak: side plugins: unloads_unmapped={} of {} (plugin-thread: threads spawned and joined={}; \
         unlisted-domains: callbacks run before unload={})",
        side.unmapped,
        2 * cycles_done,
        side.threads_joined,
        side.unlisted_callbacks,
    );
    let errors = s.errors.lock().unwrap();
    if errors.is_empty() && cycles_done == s.args.cycles {
        println!("usrcu-soak: SUCCESS");
    } else {
        println!(
            "usrcu-soak: FAILURE ({} error(s); {cycles_done} of {} cycles)",
            errors.len(),
            s.args.cycles
        );
        std::process::exit(1);
    }
}
