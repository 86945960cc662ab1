//! `usrcu-torture --flavor tasks`: tries to make a Tasks grace period end
//! while a thread is still inside a hook.
//!
//! Readers call a [`HookSlot`] in a loop. The hook loads the published
//! object, spins inside (0 to 2 ms, never blocking), and reads the object's
//! age again before it returns; outside the hook a reader passes an explicit
//! quiescent point, sleeps (blocks), or spins on without either. The writer
//! publishes a new object, retires the old one (age 1), waits for a Tasks
//! grace period (`synchronize`, a `call` chain, or a polled cookie) and then
//! frees it (age 2: the object is leaked, never unmapped, so a late reader
//! only reads the poison). A reader inside the hook that sees age 2 proves a
//! grace period too short. The writer also swaps the slot between two hook
//! functions with `set_sync` and checks that nobody is still inside the old
//! one when it returns.
//!
//! A stopper process (this binary, `--stopper <pid>`) sends the whole
//! process SIGSTOP and SIGCONT every few tens of milliseconds, so that
//! readers are stopped inside hooks: the trap of the switch count.

use crate::args::Args;
use crate::rng::Rng;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};
use usrcu::tasks::{self, HookSlot};

struct Obj {
    /// 0 published, 1 retired, 2 freed.
    age: AtomicU32,
}

static PUBLISHED: AtomicPtr<Obj> = AtomicPtr::new(std::ptr::null_mut());
/// Threads inside hook A / hook B.
static INSIDE: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
/// Ages seen by readers at the end of a hook call (0, 1, 2+).
static PIPE: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
static TOO_SHORT: AtomicU64 = AtomicU64::new(0);
static STILL_INSIDE_OLD: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);

static SLOT: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

/// The body of both hooks: spin `spins` iterations on the published object.
#[inline(always)]
fn hook_body(which: usize, spins: u64) -> u64 {
    INSIDE[which].fetch_add(1, SeqCst);
    let p = PUBLISHED.load(SeqCst);
    // SAFETY: objects are leaked, never freed; "freed" is age 2.
    let o = unsafe { &*p };
    let first = o.age.load(SeqCst);
    let mut x = 0u64;
    for i in 0..spins {
        x = x.wrapping_add(i);
        std::hint::spin_loop();
    }
    let last = o.age.load(SeqCst);
    let age = first.max(last).min(2) as usize;
    PIPE[age].fetch_add(1, SeqCst);
    if age >= 2 {
        TOO_SHORT.fetch_add(1, SeqCst);
    }
    INSIDE[which].fetch_sub(1, SeqCst);
    x
}

extern "C" fn hook_a(spins: u64) -> u64 {
    hook_body(0, spins)
}

extern "C" fn hook_b(spins: u64) -> u64 {
    hook_body(1, spins)
}

static STOP: AtomicBool = AtomicBool::new(false);

fn reader(seed: u64, id: u64) {
    let mut rng = Rng::new(seed, 1000 + id);
    while !STOP.load(SeqCst) {
        // ~0 to 2 ms of spinning inside the hook.
        let spins = rng.below(200_000);
        SLOT.call(spins);
        CALLS.fetch_add(1, SeqCst);
        match rng.below(10) {
            0..=4 => tasks::quiescent(),
            5..=7 => std::thread::sleep(Duration::from_micros(rng.below(500))),
            _ => {} // straight into the next call: no quiescent point at all
        }
    }
}

fn new_obj() -> *mut Obj {
    Box::into_raw(Box::new(Obj { age: AtomicU32::new(0) }))
}

/// Retire `old` and free it after a grace period, by one of three paths.
fn retire(rng: &mut Rng, old: *mut Obj, gps: &AtomicU64) {
    // SAFETY: leaked objects.
    let o = unsafe { &*old };
    o.age.store(1, SeqCst);
    match rng.below(3) {
        0 => {
            tasks::synchronize();
            o.age.store(2, SeqCst);
        }
        1 => {
            let p = old as usize;
            tasks::call(move || {
                // SAFETY: leaked objects.
                unsafe { &*(p as *const Obj) }.age.store(2, SeqCst);
            });
            if rng.below(4) == 0 {
                tasks::barrier();
            }
        }
        _ => {
            let c = tasks::start_poll();
            while !c.poll() {
                std::thread::sleep(Duration::from_micros(200));
            }
            o.age.store(2, SeqCst);
        }
    }
    gps.fetch_add(1, SeqCst);
}

/// `--stopper <pid>`: stop and continue `pid` until it is gone.
pub fn stopper(pid: i32) -> ! {
    let mut rng = Rng::new(pid as u64, 7);
    loop {
        std::thread::sleep(Duration::from_millis(10 + rng.below(40)));
        // SAFETY: signalling a process; failure (it is gone) ends the loop.
        if unsafe { libc::kill(pid, libc::SIGSTOP) } != 0 {
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(1 + rng.below(5)));
        // SAFETY: as above.
        if unsafe { libc::kill(pid, libc::SIGCONT) } != 0 {
            std::process::exit(0);
        }
    }
}

pub fn main(args: &Args) {
    if let Some(f) = args.broken {
        // SAFETY: set before any thread of the run starts; the torture
        // exists to show the checker sees the broken grace period, and its
        // hooks and pool never free memory a too-short grace period could
        // expose to a crash.
        unsafe { usrcu::fault::set(f, true) };
    }
    println!(
        "usrcu-torture: start: flavor=tasks readers={} broken={} duration={:?} seed={} stops=on",
        args.readers,
        crate::args::fault_name(args.broken),
        args.duration,
        args.seed
    );
    PUBLISHED.store(new_obj(), SeqCst);
    // SAFETY: the hooks never block, live in this binary's text, touch only
    // leaked objects and statics; the pointers are stored nowhere else.
    unsafe { SLOT.set_sync(Some(hook_a)) };
    let mut stopper = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .arg("--stopper")
        .arg(std::process::id().to_string())
        .spawn()
        .expect("cannot start the stopper");
    let readers: Vec<_> = (0..args.readers as u64)
        .map(|id| {
            let seed = args.seed;
            std::thread::Builder::new()
                .name(format!("tasks-reader-{id}"))
                .spawn(move || reader(seed, id))
                .expect("spawn")
        })
        .collect();
    let gps = AtomicU64::new(0);
    let mut swaps = 0u64;
    let mut rng = Rng::new(args.seed, 1);
    let t0 = Instant::now();
    let mut next_stats = args.stat_interval;
    let mut current_hook = 0usize;
    let stop_early = |_: ()| args.stop_on_failure && TOO_SHORT.load(SeqCst) + STILL_INSIDE_OLD.load(SeqCst) > 0;
    while t0.elapsed() < args.duration && !stop_early(()) {
        if rng.below(8) == 0 {
            let old = current_hook;
            current_hook ^= 1;
            let f: extern "C" fn(u64) -> u64 = if current_hook == 0 { hook_a } else { hook_b };
            // SAFETY: as above.
            unsafe { SLOT.set_sync(Some(f)) };
            if INSIDE[old].load(SeqCst) != 0 {
                STILL_INSIDE_OLD.fetch_add(1, SeqCst);
            }
            swaps += 1;
        } else {
            let old = PUBLISHED.swap(new_obj(), SeqCst);
            retire(&mut rng, old, &gps);
        }
        if t0.elapsed() >= next_stats {
            println!("{}", stats(t0.elapsed(), gps.load(SeqCst), swaps));
            next_stats += args.stat_interval;
        }
    }
    STOP.store(true, SeqCst);
    for r in readers {
        let _ = r.join();
    }
    let _ = stopper.kill();
    let _ = stopper.wait();
    // SAFETY: make sure the process is running even if the stopper died
    // between its stop and its continue.
    unsafe { libc::kill(libc::getpid(), libc::SIGCONT) };
    tasks::barrier();
    let last = stats(t0.elapsed(), gps.load(SeqCst), swaps);
    println!("{last}");
    let short = TOO_SHORT.load(SeqCst);
    let inside = STILL_INSIDE_OLD.load(SeqCst);
    println!("usrcu-torture: Errors: too_short={short} still_inside_old_hook={inside}");
    if short + inside == 0 {
        println!("usrcu-torture: SUCCESS ({:.1} s)", t0.elapsed().as_secs_f64());
    } else {
        println!(
            "usrcu-torture: FAILURE ({} too-short grace period(s), {} set_sync returned while the old hook ran; broken={})",
            short,
            inside,
            crate::args::fault_name(args.broken)
        );
        std::process::exit(1);
    }
}

fn stats(e: Duration, gps: u64, swaps: u64) -> String {
    let r = tasks::last_grace_period();
    format!(
        "usrcu-torture: t={:.0}s flavor=tasks gps={} swaps={} calls={} last_gp_threads={} last_gp_restarts={} \
         too_short={} still_inside_old_hook={}\nusrcu-torture: Reader Pipe: {} {} {}",
        e.as_secs_f64(),
        gps,
        swaps,
        CALLS.load(SeqCst),
        r.threads,
        r.restarts,
        TOO_SHORT.load(SeqCst),
        STILL_INSIDE_OLD.load(SeqCst),
        PIPE[0].load(SeqCst),
        PIPE[1].load(SeqCst),
        PIPE[2].load(SeqCst),
    )
}
