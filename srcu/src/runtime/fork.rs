//! `fork`: the handler that keeps the runtime's locks consistent across it,
//! and the test-only pause that holds its window open.
//!
//! # The window
//!
//! A runtime thread that has just made the runtime idle takes its lock once
//! more on its way back to sleep: an invoker the pool's `q` (`invoke.rs`),
//! the driver its `heap` (`driver.rs`). So do the other flavors' threads:
//! `usrcu-trace` the Tasks Trace engine's `queue` (`trace/engine.rs`),
//! `usrcu-tasks` the Tasks engine's `m` (`tasks/engine.rs`). A `fork` at
//! that instant copies the lock held, with no thread in the child to
//! release it, and the child's first call that needs it (`call_srcu`,
//! `barrier`, `trace::call`, `tasks::synchronize`, ...) waits forever.
//!
//! # The handler
//!
//! At the first attach of a domain (`state.rs`, before the registry is
//! first taken), the first Tasks Trace or Tasks record of a thread, or the
//! first thread start, whichever comes first
//! (`spawn.rs`, under the lock the new thread takes first; the starts of
//! `usrcu-trace` and `usrcu-tasks` go through it too), the crate
//! registers, once, `pthread_atfork(prepare, parent, child)`: `prepare`
//! takes, in this order,
//!
//! 1. `heap` (the SRCU driver),
//! 2. `q` (the SRCU invoker pool),
//! 3. `queue` (the Tasks Trace engine; skipped while that engine does not
//!    exist, since creating it reads the environment),
//! 4. `m` (the Tasks engine; likewise),
//! 5. `TABLE`, the Tasks Trace thread records (`trace/threads.rs`), which
//!    every thread that used Tasks Trace takes once more as it exits, in
//!    its record's destructor (also under a scan, and at a thread's first
//!    section),
//! 6. `REGISTRY`, the attached domains (`state.rs`), which every attach
//!    and every successful cleanup takes,
//! 7. `RECORDS`, the debug builds' reader table (`readers.rs`), which
//!    every debug-build `read_lock` and guard drop takes,
//! 8. the Tasks quiescent-record table (`tasks/record.rs`), which a
//!    thread's first Tasks record and every Tasks grace period's snapshot
//!    take,
//! 9. `SLOTS`, the non-empty hook slots (`tasks/hook_slot.rs`), which every
//!    `HookSlot::set` and `clear` takes (a child forked while another
//!    thread installed a hook hung in its first `set`: red team 7),
//! 10. `SINKS`, the open warning captures (`diagnostics.rs`), under which
//!     every warning is copied to the captures and every capture is read
//!     (a child forked while another thread emitted a warning hung in its
//!     first capture: red team 7),
//!
//! and keeps the guards in [`HELD`]; `parent` and `child` drop them. The
//! fork then happens while no thread of the crate holds any of them, and
//! the child finds them free (each flavor's thread holds its lock only
//! between its condvar waits, never while asleep; an exiting thread holds
//! `TABLE` only to put its record on the free list).
//!
//! The order: `SLOTS` and `SINKS` are leaves (nothing is taken under
//! either), so they come last. No path of the crate holds one of the first
//! eight while taking another, except the loader's snapshot (`inventory::deferred`), which
//! takes `queue`, then `m`, then `REGISTRY`, in `prepare`'s order (the driver drops `heap` before it dispatches to the pool, an
//! invoker drops `q` before `after_pass` schedules; under `queue` the trace
//! engine only snapshots its sequence word and starts its thread; under `m`
//! the Tasks engine only updates its counters and starts its thread, and it
//! runs grace periods and callbacks with `m` dropped; under `TABLE` the
//! trace records are only pushed, cloned, and their tids probed; warnings,
//! which could reach any of them through a logger, are emitted with all
//! eight dropped; the test pause below only `try_lock`s the others), so any
//! order is free of cycles with the crate's threads; two forking threads
//! take them in the same order.
//!
//! `prepare` cannot deadlock: a thread holds one of the eight only for
//! bounded work that waits for nothing the forking thread can hold. Under
//! them it runs no user code (callbacks run with none held; warnings,
//! whose logger is user code, are emitted after they are dropped); it nests
//! only a domain's `sched` lock (under `heap`), which no thread holds while
//! waiting; and it calls into libc (`malloc`, `pthread_create`, `getpid`,
//! `clock_gettime`, `tgkill`), whose locks glibc's `fork` takes only after
//! the prepare handlers return (`__libc_fork` runs
//! `__run_prefork_handlers` first, and that drops its own `atfork_lock`
//! around each handler), and into std's `spawn`, which, given a stack size
//! (`spawn.rs`: it then does not read `RUST_MIN_STACK` under std's
//! environment lock), takes no lock a forking thread may hold. The forking thread itself holds none of them:
//! no user code runs under them. (A fork from a signal handler that
//! interrupted a thread inside the crate would wait for itself; glibc's
//! `fork` is not async-signal-safe once handlers are registered, and
//! without the handler that child would inherit the lock held anyway.)
//!
//! What the handler does not take, on purpose: the grace-period locks of
//! the other flavors (trace's `gp`, Tasks' `DRIVER`). They are held for a
//! whole grace period, which waits for readers, possibly for the forking
//! thread's own Tasks Trace section: `prepare` could wait forever. Hence
//! the rule, for every flavor, to fork while it is idle (`runtime::idle()`,
//! and the "`fork`" sections of `trace/engine.rs` and `tasks/engine.rs`):
//! the handler closes only each thread's way back to sleep (and a trace
//! reader thread's way out).
//!
//! # Which copy registers, and `dlclose`
//!
//! Only the copy of this crate whose runtime starts threads registers: a
//! plugin's copy uses the host's runtime through the vtable and starts none.
//! Should that copy live in a shared object that is later `dlclose`d (which
//! is already unsound while its threads run its code), glibc drops the
//! handler with it: `pthread_atfork` is linked from `libc_nonshared.a` into
//! each object and passes that object's `__dso_handle` to
//! `__register_atfork`, and `__cxa_finalize(d)`, which the object's
//! destructors call at `dlclose`, ends with `__unregister_atfork(d)`
//! (glibc `nptl/pthread_atfork.c`, `stdlib/cxa_finalize.c`). So a later
//! `fork` never calls into an unmapped handler.

use super::{driver, invoke};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{MutexGuard, Once};
use std::time::{Duration, Instant};

/// What `prepare` holds across the fork, in the order it took them
/// (`release` drops them in the reverse order).
struct Guards {
    heap: MutexGuard<'static, driver::Heap>,
    q: MutexGuard<'static, invoke::Queue>,
    trace: Option<MutexGuard<'static, crate::trace::engine::Queue>>,
    tasks: Option<MutexGuard<'static, crate::tasks::engine::State>>,
    records: MutexGuard<'static, crate::trace::threads::Table>,
    registry: MutexGuard<'static, Vec<std::sync::Weak<super::state::DomainState>>>,
    readers: super::readers::ForkGuard,
    tasks_records: crate::tasks::record::ForkGuard,
    hook_slots: MutexGuard<'static, crate::tasks::hook_slot::registry::Slots>,
    sinks: crate::diagnostics::SinksForkGuard,
}

/// The guards `prepare` took, until `parent` or `child` drops them.
struct Held(UnsafeCell<Option<Guards>>);

// SAFETY: the cell is touched only by a thread that holds `heap`: `prepare`
// writes it after taking `heap` (and `q`), `parent` and `child` empty it
// before the guards they take out of it unlock `heap`. `prepare` and
// `parent` run on the forking thread, `child` on its copy, the only thread
// of the child. Two threads forking at once are serialised by `heap`. The
// guards are never used on another thread than the one that locked them.
unsafe impl Sync for Held {}

static HELD: Held = Held(UnsafeCell::new(None));

static REGISTER: Once = Once::new();

/// Test-only: leave the handler unregistered (see `__testing`).
static SKIP_HANDLER: AtomicBool = AtomicBool::new(false);

/// Register the fork handler, once per process (a child of `fork` inherits
/// the registration). Called after each successful runtime thread start,
/// before the new thread can take a lock (`spawn.rs`), and after each
/// start of `usrcu-trace` or `usrcu-tasks`, under the lock it takes first.
pub(super) fn register_handler_once() {
    REGISTER.call_once(|| {
        // Relaxed: a test switch set before the runtime's first use.
        if SKIP_HANDLER.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: the three are `extern "C"` functions of no arguments that
        // live as long as this copy of the crate (see the module docs for
        // `dlclose`). A failure (ENOMEM) leaves the window open, as it was
        // before the handler existed; nothing else depends on it.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    });
}

extern "C" fn prepare() {
    // SeqCst: a test-only flag the pause below polls; nothing is ordered by it.
    FORK_PREPARING.store(true, Ordering::SeqCst);
    // The order of the module docs.
    let heap = driver::lock_heap();
    let q = invoke::lock_queue();
    let trace = crate::trace::engine::lock_queue_for_fork();
    let tasks = crate::tasks::engine::lock_for_fork();
    let records = crate::trace::threads::lock_table_for_fork();
    let registry = super::state::lock_registry_for_fork();
    let readers = super::readers::lock_for_fork();
    let tasks_records = crate::tasks::record::lock_for_fork();
    let hook_slots = crate::tasks::hook_slot::registry::lock_for_fork();
    let sinks = crate::diagnostics::lock_sinks_for_fork();
    // SAFETY: this thread holds `heap` (see `Held`).
    unsafe {
        *HELD.0.get() = Some(Guards {
            heap,
            q,
            trace,
            tasks,
            records,
            registry,
            readers,
            tasks_records,
            hook_slots,
            sinks,
        })
    };
}

/// Drop what `prepare` took (`parent` and `child` alike).
fn release() {
    // SAFETY: this thread holds `heap` through the guards being taken out
    // (see `Held`); the cell is no longer touched once they drop below.
    let guards = unsafe { (*HELD.0.get()).take() };
    if let Some(g) = guards {
        // The reverse of `prepare`'s order, `heap` last (it guards `HELD`).
        drop(g.sinks);
        drop(g.hook_slots);
        drop(g.tasks_records);
        drop(g.readers);
        drop(g.registry);
        drop(g.records);
        drop(g.tasks);
        drop(g.trace);
        drop(g.q);
        drop(g.heap);
    }
    FORK_PREPARING.store(false, Ordering::SeqCst);
}

extern "C" fn parent() {
    release();
}

extern "C" fn child() {
    // The parent's runtime threads do not exist here. Each start check
    // compares the pid it started its thread in with `getpid`, which is not
    // enough: a process that is pid 1 of its pid namespace and forks a child
    // into a new one gives the child pid 1 too. So forget them here, under
    // the locks `prepare` took, before this child's first use.
    // SAFETY: this thread holds `heap` (see `Held`); in the child it is the
    // only thread.
    if let Some(g) = unsafe { (*HELD.0.get()).as_mut() } {
        driver::forget_threads(&mut g.heap);
        invoke::forget_threads(&mut g.q);
        if let Some(t) = g.trace.as_mut() {
            crate::trace::engine::forget_thread(t);
        }
        if let Some(t) = g.tasks.as_mut() {
            crate::tasks::engine::forget_thread(t);
        }
    }
    crate::tasks::grace_period::forget_canary();
    super::inventory::forget_holds();
    release();
}

// ---------------------------------------------------------------------------
// Test-only: hold the window open (`__testing::arm_sleep_pause`).
// ---------------------------------------------------------------------------

/// A runtime thread that can pause on its way to sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Sleeper {
    /// An invoker, holding the pool's `q`.
    Invoker = 1,
    /// The driver, holding its `heap`.
    Driver = 2,
    /// `usrcu-trace`, holding the Tasks Trace engine's `queue`.
    Trace = 3,
    /// `usrcu-tasks-cb` (the Tasks callback thread), holding the Tasks
    /// engine's `m`.
    Tasks = 4,
    /// A thread that used Tasks Trace, exiting (its record's destructor),
    /// holding the record table's lock.
    TraceExit = 5,
}

/// The armed `Sleeper` (0: none). One pause per arming.
static PAUSE_ARMED: AtomicU32 = AtomicU32::new(0);
static PAUSE_INSIDE: AtomicBool = AtomicBool::new(false);
static PAUSE_RELEASE: AtomicBool = AtomicBool::new(false);
/// A fork's `prepare` is running: a paused thread lets go of its lock.
static FORK_PREPARING: AtomicBool = AtomicBool::new(false);

/// How long a pause waits for the rest of the runtime to go idle.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// The longest a pause holds its lock (a safety bound for a test that
/// forgets to release it; a test never relies on it).
const PAUSE_LIMIT: Duration = Duration::from_secs(10);

pub(crate) fn arm_pause(who: Sleeper) {
    // SeqCst: test switches, polled; nothing is ordered by them.
    PAUSE_RELEASE.store(false, Ordering::SeqCst);
    PAUSE_ARMED.store(who as u32, Ordering::SeqCst);
}

pub(crate) fn pause_inside() -> bool {
    PAUSE_INSIDE.load(Ordering::SeqCst)
}

pub(crate) fn release_pause() {
    PAUSE_ARMED.store(0, Ordering::SeqCst);
    PAUSE_RELEASE.store(true, Ordering::SeqCst);
}

pub(crate) fn skip_handler() {
    SKIP_HANDLER.store(true, Ordering::Relaxed);
}

/// Called by `who` on its way to sleep, holding its lock. Off (one relaxed
/// load) unless a test armed it for `who`: then wait, holding the lock,
/// until the rest of the runtime is idle (the window: the runtime idle but
/// for this lock), say so (`pause_inside`), and hold on until a fork's
/// `prepare` starts or the test releases the pause.
pub(crate) fn pause_on_way_to_sleep(who: Sleeper) {
    // Relaxed: a test switch; a late read only delays the pause to the
    // thread's next way to sleep.
    if PAUSE_ARMED.load(Ordering::Relaxed) != who as u32 {
        return;
    }
    let start = Instant::now();
    while !rest_idle(who) {
        if start.elapsed() > IDLE_WAIT {
            // Work is pending that may need this lock: stay armed, let go.
            return;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    if PAUSE_ARMED
        .compare_exchange(who as u32, 0, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    PAUSE_INSIDE.store(true, Ordering::SeqCst);
    let start = Instant::now();
    while !FORK_PREPARING.load(Ordering::SeqCst)
        && !PAUSE_RELEASE.load(Ordering::SeqCst)
        && start.elapsed() < PAUSE_LIMIT
    {
        std::thread::sleep(Duration::from_micros(200));
    }
    PAUSE_INSIDE.store(false, Ordering::SeqCst);
}

/// `who`'s flavor idle but for the lock `who` holds (other locks are only
/// tried: a pause must not wait for a lock, see the module docs). For the
/// SRCU runtime, `runtime::idle()`; for `usrcu-trace` and `usrcu-tasks`,
/// which checked their own state under the lock they hold, no grace period
/// running on another thread.
fn rest_idle(who: Sleeper) -> bool {
    match who {
        Sleeper::Invoker => runtime_rest_idle(driver::try_heap_empty()),
        Sleeper::Driver => runtime_rest_idle(invoke::try_queue_empty()),
        Sleeper::Trace => crate::trace::engine::gp_free(),
        Sleeper::Tasks => {
            crate::tasks::grace_period::DRIVER.try_lock().is_ok() && crate::tasks::engine::gp_thread_asleep()
        }
        // Not a flavor's thread: an exiting thread, whatever the flavor does.
        Sleeper::TraceExit => true,
    }
}

fn runtime_rest_idle(other_empty: Option<bool>) -> bool {
    other_empty == Some(true) && super::domains_idle()
}
