//! Red-team (round 3) of Tasks Trace thread records at thread exit: a
//! library's pthread-key destructor that runs after usrcu's own (keys are
//! destroyed in creation order) and uses `trace::read_lock` must neither
//! leave the thread's record owned by a dead thread (records leak under
//! thread churn) nor leave grace periods waiting for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

static LATE_READS: AtomicUsize = AtomicUsize::new(0);

/// The tests of this binary one at a time: the Tasks Trace flavor is one
/// per process, and the idle test must not take the other's grace periods
/// for its waiter's.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

unsafe extern "C" fn late_destructor(_: *mut libc::c_void) {
    let _g = usrcu::trace::read_lock();
    LATE_READS.fetch_add(1, Ordering::SeqCst);
}

/// A pthread key created after usrcu's trace key (so its destructor runs
/// after usrcu's).
fn late_key() -> libc::pthread_key_t {
    static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();
    *KEY.get_or_init(|| {
        // Make sure usrcu's key exists first.
        drop(usrcu::trace::read_lock());
        let mut k: libc::pthread_key_t = 0;
        // SAFETY: a fresh key with a destructor that does not unwind.
        assert_eq!(unsafe { libc::pthread_key_create(&mut k, Some(late_destructor)) }, 0);
        k
    })
}

#[test]
fn trace_readers_in_a_late_pthread_key_destructor_do_not_leak_records_or_hold_grace_periods() {
    let _one = one_at_a_time();
    const THREADS: usize = 300;
    let key = late_key();
    usrcu::trace::synchronize();
    let before = usrcu::trace::stats();
    for _ in 0..THREADS {
        std::thread::spawn(move || {
            drop(usrcu::trace::read_lock());
            // SAFETY: a valid key; a non-null value makes its destructor run.
            unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<libc::c_void>()) };
        })
        .join()
        .unwrap();
    }
    assert_eq!(LATE_READS.load(Ordering::SeqCst), THREADS);
    // No dead thread holds a grace period.
    usrcu::trace::synchronize();
    let after = usrcu::trace::stats();
    eprintln!("records: before {before:?}, after {after:?}");
    assert!(
        after.records_in_use <= before.records_in_use + 8,
        "records owned by dead threads: {} -> {}",
        before.records_in_use,
        after.records_in_use
    );
    assert!(
        after.records_allocated <= before.records_allocated + 16,
        "records allocated grew with thread churn: {} -> {}",
        before.records_allocated,
        after.records_allocated
    );
}

/// `trace::idle` is documented false while "a grace period [is] in
/// progress" and "while another thread is inside a call of this flavor":
/// a `synchronize` blocked behind a reader is both.
#[test]
fn trace_idle_is_false_while_a_synchronize_waits_for_a_reader() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let _one = one_at_a_time();
    let entered = Arc::new(AtomicBool::new(false));
    let leave = Arc::new(AtomicBool::new(false));
    let (e, l) = (Arc::clone(&entered), Arc::clone(&leave));
    let reader = std::thread::spawn(move || {
        let _g = usrcu::trace::read_lock();
        e.store(true, Ordering::SeqCst);
        while !l.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    while !entered.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let done = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let (d, st) = (Arc::clone(&done), Arc::clone(&started));
    let waiter = std::thread::spawn(move || {
        st.store(true, Ordering::SeqCst);
        usrcu::trace::synchronize();
        d.store(true, Ordering::SeqCst);
    });
    // The waiter thread may not have reached `synchronize` yet (a spawn
    // under load takes milliseconds; `idle` is rightly true until then):
    // wait until it is about to call it, then until it is inside, by
    // `idle` turning false. A flavor whose `idle` never does fails here.
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while usrcu::trace::idle() {
        assert!(
            std::time::Instant::now() < deadline,
            "trace::idle() stayed true while synchronize waited"
        );
        std::thread::yield_now();
    }
    // Until the reader leaves, the waiter cannot return; sample `idle`
    // while it waits.
    let mut saw_idle = 0;
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(1));
        if usrcu::trace::idle() && !done.load(Ordering::SeqCst) {
            saw_idle += 1;
        }
    }
    leave.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    waiter.join().unwrap();
    assert_eq!(saw_idle, 0, "trace::idle() was true while synchronize waited");
}
