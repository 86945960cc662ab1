//! Shared pieces of the usrcu benches: the liburcu shim's bindings, a pool of
//! pinned worker threads for the multi-thread benches, the unload-notifier
//! model, and one criterion configuration for every bench.
//!
//! Every bench file answers one question, stated in its first doc line, and
//! puts usrcu beside its peers in the same run. The results, the machine and
//! the commands are in `docs/benchmarks.md`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::Criterion;

/// liburcu's memb flavor through `csrc/urcu_shim.c` (compiled by `build.rs`).
///
/// The read-side loops run inside C, so one FFI call covers many sections.
pub mod urcu {
    use std::ffi::c_int;

    /// Was liburcu found when the benches were built? (`build.rs` sets the
    /// cfg `usrcu_have_liburcu` when it compiled the shim.)
    pub const AVAILABLE: bool = cfg!(usrcu_have_liburcu);

    /// What to do about a missing liburcu.
    pub const INSTALL_HINT: &str = "apt-get install -y liburcu-dev (Debian/Ubuntu), then rebuild the benches";

    /// Should the liburcu peer `bench` run? When liburcu was not found at
    /// build time, prints a one-line note saying it is skipped, and why.
    pub fn available(bench: &str) -> bool {
        if !AVAILABLE {
            eprintln!("{bench}: skipped, liburcu was not found when the benches were built ({INSTALL_HINT})");
        }
        AVAILABLE
    }

    /// Without liburcu: registration is a no-op (so that a bench may hold a
    /// registration while it runs its other peers), and anything that would
    /// reach liburcu fails with the install hint. Benches check
    /// [`available`] first, so these only fire on a bench that forgot to.
    #[cfg(not(usrcu_have_liburcu))]
    #[allow(clippy::missing_safety_doc)]
    mod ffi {
        use std::ffi::c_int;

        fn missing() -> ! {
            panic!(
                "usrcu-benches: this bench needs liburcu, which was not found at build time: {}",
                super::INSTALL_HINT
            )
        }
        pub unsafe fn ub_urcu_register() {}
        pub unsafe fn ub_urcu_unregister() {}
        pub unsafe fn ub_urcu_read_loop(_: u64) {
            missing()
        }
        pub unsafe fn ub_urcu_read_nested_loop(_: u64) {
            missing()
        }
        pub unsafe fn ub_urcu_read_until(_: *const c_int) -> u64 {
            missing()
        }
        pub unsafe fn ub_urcu_synchronize() {
            missing()
        }
        pub unsafe fn ub_urcu_call_rcu_n(_: u64) {
            missing()
        }
        pub unsafe fn ub_urcu_barrier() {
            missing()
        }
        pub unsafe fn ub_urcu_invoked() -> u64 {
            missing()
        }
    }

    #[cfg(usrcu_have_liburcu)]
    mod ffi {
        use std::ffi::c_int;
        extern "C" {
            pub fn ub_urcu_register();
            pub fn ub_urcu_unregister();
            pub fn ub_urcu_read_loop(n: u64);
            pub fn ub_urcu_read_nested_loop(n: u64);
            pub fn ub_urcu_read_until(stop: *const c_int) -> u64;
            pub fn ub_urcu_synchronize();
            pub fn ub_urcu_call_rcu_n(n: u64);
            pub fn ub_urcu_barrier();
            pub fn ub_urcu_invoked() -> u64;
        }
    }

    /// This thread, registered with liburcu's memb flavor (which tracks
    /// readers per registered thread) until the value drops.
    ///
    /// Not `Send`: registration belongs to the thread that made it.
    #[derive(Debug)]
    pub struct Registered {
        _not_send: std::marker::PhantomData<*const ()>,
    }

    impl Registered {
        /// Register the calling thread.
        pub fn new() -> Registered {
            // SAFETY: registering a thread has no preconditions; the matching
            // unregister runs in `drop`, on the same thread (the type is !Send).
            unsafe { ffi::ub_urcu_register() };
            Registered {
                _not_send: std::marker::PhantomData,
            }
        }

        /// `n` read sections (lock + unlock), looped in C.
        pub fn read_loop(&self, n: u64) {
            // SAFETY: the thread is registered (`self`), and no section is open.
            unsafe { ffi::ub_urcu_read_loop(n) }
        }

        /// `n` outer sections each holding one nested section, looped in C.
        pub fn read_nested_loop(&self, n: u64) {
            // SAFETY: as in `read_loop`.
            unsafe { ffi::ub_urcu_read_nested_loop(n) }
        }

        /// Read sections back to back until `stop` is set; returns how many.
        pub fn read_until(&self, stop: &std::sync::atomic::AtomicI32) -> u64 {
            // SAFETY: the thread is registered; `stop` outlives the call and
            // the C side only loads it atomically (`AtomicI32` has the layout
            // of `c_int`).
            unsafe { ffi::ub_urcu_read_until(stop.as_ptr() as *const c_int) }
        }

        /// Queue `n` callbacks with `call_rcu` (each frees a malloc'ed node).
        pub fn call_rcu_n(&self, n: u64) {
            // SAFETY: call_rcu needs a registered thread, which `self` is.
            unsafe { ffi::ub_urcu_call_rcu_n(n) }
        }
    }

    impl Default for Registered {
        fn default() -> Self {
            Registered::new()
        }
    }

    impl Drop for Registered {
        fn drop(&mut self) {
            // SAFETY: registered in `new` on this same thread.
            unsafe { ffi::ub_urcu_unregister() };
        }
    }

    /// `synchronize_rcu`: wait for every pre-existing reader.
    pub fn synchronize() {
        // SAFETY: no precondition beyond not being inside a read section,
        // which the benches never are when they call this.
        unsafe { ffi::ub_urcu_synchronize() }
    }

    /// `rcu_barrier`: wait for every callback queued before the call.
    pub fn barrier() {
        // SAFETY: as in `synchronize`.
        unsafe { ffi::ub_urcu_barrier() }
    }

    /// Callbacks invoked so far by `call_rcu_n`'s nodes.
    pub fn invoked() -> u64 {
        // SAFETY: an atomic load of a C static.
        unsafe { ffi::ub_urcu_invoked() }
    }

    #[cfg(all(test, usrcu_have_liburcu))]
    mod tests {
        use super::*;

        #[test]
        fn call_rcu_callbacks_all_run_by_barrier() {
            let r = Registered::new();
            let before = invoked();
            r.call_rcu_n(100);
            barrier();
            assert_eq!(invoked() - before, 100);
        }
    }
}

/// Online CPUs of this process (its affinity mask), in id order.
pub fn online_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data, and zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size we pass.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    // SAFETY: `set` was filled in by sched_getaffinity.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pin the calling thread to `cpu`. Failures (a restricted container) are
/// ignored: the bench still runs, only less steadily.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: zeroed is a valid empty cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t and `cpu < CPU_SETSIZE` (it came
    // from `online_cpus`).
    unsafe {
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Thread counts for the scaling benches: 1, 2, then doubling up to the
/// online CPUs (and the CPU count itself if it is not a power of two).
pub fn thread_counts() -> Vec<usize> {
    let n = online_cpus().len().max(1);
    let mut v = vec![1];
    let mut t = 2;
    while t <= n {
        v.push(t);
        t *= 2;
    }
    if *v.last().unwrap() != n {
        v.push(n);
    }
    v
}

struct PoolShared {
    start: Barrier,
    done: Barrier,
    iters: AtomicU64,
    quit: AtomicBool,
}

/// Worker threads that run one job together, round after round, so that
/// thread start-up is never inside a measurement. Workers are unpinned, as
/// users run threads; with `USRCU_BENCH_PIN=1`, worker `i` is pinned to the
/// `i`-th online CPU (modulo their number).
pub struct Pool {
    shared: Arc<PoolShared>,
    handles: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("threads", &self.handles.len()).finish()
    }
}

/// Should pool workers be pinned (`USRCU_BENCH_PIN=1`)?
pub fn pin_workers() -> bool {
    std::env::var_os("USRCU_BENCH_PIN").is_some_and(|v| v == "1")
}

impl Pool {
    /// Start `threads` workers. `make(i)` runs on worker `i` (after pinning)
    /// and returns the job that the worker runs each round with that round's
    /// iteration count; thread-bound state (a liburcu registration) lives in
    /// the job and is dropped on the worker when the pool drops.
    pub fn new<M, F>(threads: usize, make: M) -> Pool
    where
        M: Fn(usize) -> F + Send + Sync + 'static,
        F: FnMut(u64),
    {
        let shared = Arc::new(PoolShared {
            start: Barrier::new(threads + 1),
            done: Barrier::new(threads + 1),
            iters: AtomicU64::new(0),
            quit: AtomicBool::new(false),
        });
        let make = Arc::new(make);
        let cpus = online_cpus();
        let handles = (0..threads)
            .map(|i| {
                let shared = Arc::clone(&shared);
                let make = Arc::clone(&make);
                let cpu = cpus[i % cpus.len()];
                std::thread::Builder::new()
                    .name(format!("bench-worker-{i}"))
                    .spawn(move || {
                        if pin_workers() {
                            pin_to_cpu(cpu);
                        }
                        let mut job = make(i);
                        loop {
                            shared.start.wait();
                            // Relaxed: the start barrier orders these loads
                            // after the main thread's stores.
                            if shared.quit.load(Ordering::Relaxed) {
                                break;
                            }
                            job(shared.iters.load(Ordering::Relaxed));
                            shared.done.wait();
                        }
                    })
                    .expect("spawn bench worker")
            })
            .collect();
        Pool { shared, handles }
    }

    /// Run one round: every worker runs its job with `iters`. Returns the
    /// wall time from the start signal until the last worker finished.
    pub fn run(&self, iters: u64) -> Duration {
        // Relaxed: published to the workers by the start barrier.
        self.shared.iters.store(iters, Ordering::Relaxed);
        let t0 = Instant::now();
        self.shared.start.wait();
        self.shared.done.wait();
        t0.elapsed()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Relaxed: published by the start barrier, as `iters`.
        self.shared.quit.store(true, Ordering::Relaxed);
        self.shared.start.wait();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// A thread that runs `body` until the returned [`Background`] drops (the
/// readers present during a grace-period measurement).
pub struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background").finish_non_exhaustive()
    }
}

impl Background {
    /// Start `body(stop)`; it must return soon after `stop` becomes true,
    /// with how much work it did.
    pub fn start(body: impl FnOnce(&AtomicBool) -> u64 + Send + 'static) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("bench-background".into())
            .spawn(move || body(&s))
            .expect("spawn background thread");
        Background {
            stop,
            handle: Some(handle),
        }
    }

    /// Stop the thread and return how much work it did.
    pub fn finish(mut self) -> u64 {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> u64 {
        // Relaxed: a stop flag; the join orders everything after it.
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().map_or(0, |h| h.join().unwrap_or(0))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The unload-time SRCU notifier over a module's domains (the loader's
/// `Going` step): barrier each domain — only where `call_srcu_used` is set
/// when `gated`, every domain otherwise — then clean each one up.
///
/// # Safety
/// No thread may enter a read section of any of `domains` during the call
/// (the contract of [`usrcu::Srcu::cleanup`]).
pub unsafe fn unload_notifier(domains: &[usrcu::Srcu], gated: bool) {
    notifier_barrier_phase(domains, gated);
    for d in domains {
        // SAFETY: forwarded contract: no reader enters during the call.
        let r = unsafe { d.cleanup() };
        assert!(r.is_ok(), "bench domain '{}' could not be cleaned up: {r:?}", d.name());
    }
}

/// The barrier half of [`unload_notifier`].
pub fn notifier_barrier_phase(domains: &[usrcu::Srcu], gated: bool) {
    for d in domains {
        if !gated || d.call_srcu_used() {
            d.barrier();
        }
    }
}

/// Mark `d` as having used `call_srcu` (one no-op callback), and wait until
/// it ran: afterwards every `barrier` on `d` visits the per-CPU queues, as a
/// notifier without the `call_srcu_used` gate would for every domain.
pub fn mark_call_srcu_used(d: &usrcu::Srcu) {
    d.call_srcu(|| {});
    d.barrier();
    assert!(d.call_srcu_used());
}

/// The criterion settings of every bench: short warm-up and measurement,
/// so that `cargo bench -p usrcu-benches` stays near a quarter of an hour on
/// two cores. `USRCU_BENCH_QUICK=1` shortens them further (a smoke run).
pub fn criterion() -> Criterion {
    let quick = std::env::var_os("USRCU_BENCH_QUICK").is_some_and(|v| v != "0");
    let (warm, meas, samples) = if quick {
        (Duration::from_millis(100), Duration::from_millis(300), 10)
    } else {
        (Duration::from_millis(500), Duration::from_secs(2), 30)
    };
    Criterion::default()
        .warm_up_time(warm)
        .measurement_time(meas)
        .sample_size(samples)
        .configure_from_args()
}

/// Is this a `USRCU_BENCH_QUICK` run?
pub fn quick() -> bool {
    std::env::var_os("USRCU_BENCH_QUICK").is_some_and(|v| v != "0")
}

/// Read sections of each of `domains` on up to two CPUs (one pinned thread
/// per CPU), so that each domain holds per-CPU slots for the chunks of those
/// CPUs only, as a module's domains do after readers ran on two CPUs.
/// Returns the CPUs used.
pub fn read_on_two_cpus(domains: &[usrcu::Srcu]) -> Vec<usize> {
    let cpus: Vec<usize> = online_cpus().into_iter().take(2).collect();
    std::thread::scope(|s| {
        for &cpu in &cpus {
            s.spawn(move || {
                pin_to_cpu(cpu);
                for d in domains {
                    drop(d.read_lock());
                }
            });
        }
    });
    cpus
}

/// Wait until `path`'s change time is older than the quiet period a plugin
/// file needs before the loader pools its sealed copy
/// (`LoaderConfig::reuse_copies`), so that a bench of repeated loads of it
/// measures reused copies from the first iteration (a fixture built just
/// now is not quiet yet).
pub fn wait_until_quiet(path: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    use std::time::{SystemTime, UNIX_EPOCH};
    let Ok(m) = std::fs::metadata(path) else { return };
    let (Ok(s), Ok(ns)) = (u64::try_from(m.ctime()), u32::try_from(m.ctime_nsec())) else {
        return;
    };
    let quiet = UNIX_EPOCH + Duration::new(s, ns) + usrcu_module_loader::__REUSE_QUIET + Duration::from_millis(50);
    if let Ok(left) = quiet.duration_since(SystemTime::now()) {
        std::thread::sleep(left);
    }
}
