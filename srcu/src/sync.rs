//! The one place every atomic, lock and thread primitive comes from.
//!
//! With `--cfg usrcu_loom` the algorithm units (`percpu`, `reader`,
//! `grace_period`, `callbacks`, `attach`) are compiled against loom's
//! primitives so that `loom/` can explore their interleavings; otherwise they
//! use `std`. No other file imports `std::sync` or `loom` directly.

#[cfg(not(usrcu_loom))]
mod imp {
    pub(crate) use std::sync::atomic::{
        compiler_fence, fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    };
    pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

    /// Give the CPU away while waiting for another thread.
    #[inline]
    pub(crate) fn yield_now() {
        std::thread::yield_now();
    }

    /// One step of a busy wait.
    #[inline]
    pub(crate) fn spin_hint() {
        std::hint::spin_loop();
    }

    /// Loom's view of accesses to plain memory the models cannot see
    /// (`slab.rs`); nothing outside loom.
    #[derive(Debug, Default)]
    pub(crate) struct RaceCell;

    impl RaceCell {
        #[allow(dead_code)]
        pub(crate) fn new() -> RaceCell {
            RaceCell
        }
        #[inline]
        pub(crate) fn read(&self) {}
        #[inline]
        pub(crate) fn write(&self) {}
    }

    /// `a.fetch_add(v, SeqCst)` followed by `fence(SeqCst)`, as one
    /// operation: in the C++ model it *is* those two (every argument that
    /// uses it names the fence), so loom and other targets run exactly them.
    /// On x86-64 both are implemented by the one `lock xadd`: the x86
    /// mapping of C++ atomics implements a SeqCst fence with a locked
    /// instruction (`rustc` emits `lock or` to the stack for
    /// `fence(SeqCst)`), and the `xadd` is such an instruction, so the
    /// second locked instruction after it adds nothing (the kernel's
    /// `smp_mb__after_atomic` is empty on x86 for the same reason). The asm
    /// has no `nomem`, so the compiler also treats it as reading and writing
    /// any memory: no access moves across it.
    #[inline]
    pub(crate) fn fetch_add_then_fence(a: &AtomicU64, v: u64) -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            let mut r = v;
            // SAFETY: `as_ptr` points to the live atomic, 8-byte aligned;
            // `lock xadd` is an atomic read-modify-write of it, as
            // `fetch_add` is, and touches nothing else (no stack use).
            unsafe {
                std::arch::asm!(
                    "lock xadd qword ptr [{p}], {r}",
                    p = in(reg) a.as_ptr(),
                    r = inout(reg) r,
                    options(nostack),
                );
            }
            r
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let r = a.fetch_add(v, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            r
        }
    }
}

#[cfg(usrcu_loom)]
#[allow(unused_imports)] // the loom build compiles only the algorithm units
mod imp {
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
    pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};

    /// `fetch_add(v, SeqCst)` then `fence(SeqCst)` (see the std version).
    pub(crate) fn fetch_add_then_fence(a: &AtomicU64, v: u64) -> u64 {
        let r = a.fetch_add(v, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        r
    }

    /// Loom has no compiler fence; model it as the strongest fence so that a
    /// model never passes because of it (the light/heavy pairing is modelled
    /// with SeqCst on both sides, see `fence.rs`).
    pub(crate) fn compiler_fence(_: Ordering) {}

    pub(crate) fn yield_now() {
        loom::thread::yield_now();
    }

    pub(crate) fn spin_hint() {
        loom::thread::yield_now();
    }

    /// A plain-memory access the race checker sees: `read`/`write` record
    /// an access to the memory it stands for (`slab.rs`).
    #[derive(Debug)]
    pub(crate) struct RaceCell(loom::cell::UnsafeCell<()>);

    impl RaceCell {
        pub(crate) fn new() -> RaceCell {
            RaceCell(loom::cell::UnsafeCell::new(()))
        }
        pub(crate) fn read(&self) {
            self.0.with(|_| ());
        }
        pub(crate) fn write(&self) {
            self.0.with_mut(|_| ());
        }
    }
}

pub(crate) use imp::*;

/// Lock a mutex, ignoring poisoning: every critical section in this crate
/// leaves its data consistent before it can panic.
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// [`lock`] if the mutex is free right now; `None` if another thread holds
/// it.
#[cfg(not(usrcu_loom))]
#[inline]
pub(crate) fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// `d` in whole milliseconds for a timeout that crosses the runtime's
/// vtable as a `u64` of milliseconds: a sub-millisecond remainder rounds
/// *up*, so that a non-zero timeout never becomes a zero one (which means
/// "do not wait"); past `u64::MAX` ms, `u64::MAX`.
pub(crate) fn timeout_ms_rounded_up(d: std::time::Duration) -> u64 {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if d > std::time::Duration::from_millis(ms) {
        ms.saturating_add(1)
    } else {
        ms
    }
}

#[cfg(all(test, not(usrcu_loom)))]
mod tests {
    use super::timeout_ms_rounded_up as ms;
    use std::time::Duration;

    #[test]
    fn a_sub_millisecond_timeout_rounds_up_and_whole_ones_stay() {
        assert_eq!(ms(Duration::ZERO), 0);
        assert_eq!(ms(Duration::from_nanos(1)), 1);
        assert_eq!(ms(Duration::from_micros(999)), 1);
        assert_eq!(ms(Duration::from_millis(1)), 1);
        assert_eq!(ms(Duration::from_micros(1500)), 2);
        assert_eq!(ms(Duration::from_secs(60)), 60_000);
        assert_eq!(ms(Duration::MAX), u64::MAX);
    }
}
