//! The lazy attach of a domain's per-CPU state, safe against racing first
//! users (the kernel's `DEFINE_STATIC_SRCU` + `srcu_module_coming`).
//!
//! # State word
//!
//! | value       | meaning                               | who moves it out          |
//! |-------------|---------------------------------------|---------------------------|
//! | `DETACHED`  | no per-CPU state                      | the CAS winner -> `ATTACHING` |
//! | `ATTACHING` | the winner is building it             | the winner -> `ATTACHED`  |
//! | `ATTACHED`  | the pointer is published              | a successful cleanup -> `DETACHED` |
//!
//! Losers of the CAS wait for `ATTACHED` and use the winner's pointer, so
//! exactly one block is ever built per attach.

use crate::sync::{fence, AtomicPtr, AtomicU32, Ordering};

pub(crate) const DETACHED: u32 = 0;
pub(crate) const ATTACHING: u32 = 1;
pub(crate) const ATTACHED: u32 = 2;

/// Return the published pointer, building it with `build` if this caller
/// wins the race to attach. `publish` stores the pointer(s) (Release).
pub(crate) fn attach_once<T>(state: &AtomicU32, ptr: &AtomicPtr<T>, build: impl FnOnce() -> *mut T) -> *mut T {
    loop {
        // Acquire: pairs with the Release publication below, so a non-null
        // pointer points at a fully built block.
        let p = ptr.load(publish_order(Ordering::Acquire));
        if !p.is_null() {
            return p;
        }
        // Acquire on success: nothing to acquire from DETACHED except a
        // previous cleanup's frees, which its Release store orders.
        match state.compare_exchange(DETACHED, ATTACHING, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                let p = build();
                // Release: publishes the block to readers' Acquire loads.
                ptr.store(p, publish_order(Ordering::Release));
                state.store(ATTACHED, Ordering::Release);
                // SeqCst fence: a reader that attached then reads data is
                // ordered after a concurrent updater's SeqCst fence in `snap`
                // or after its observation of the pointer (see
                // docs/memory-model.md, "attach").
                fence(Ordering::SeqCst);
                return p;
            }
            Err(_) => crate::sync::yield_now(),
        }
    }
}

/// The publication ordering, unless the loom negative check weakens it.
#[inline(always)]
fn publish_order(o: Ordering) -> Ordering {
    if crate::fault::publish_relaxed() {
        Ordering::Relaxed
    } else {
        o
    }
}

/// Undo an attach after a successful cleanup; returns the old pointer.
pub(crate) fn detach<T>(state: &AtomicU32, ptr: &AtomicPtr<T>) -> *mut T {
    // Release/AcqRel: the caller's last reads of the block happen before a
    // later attach builds a new one.
    let p = ptr.swap(std::ptr::null_mut(), Ordering::AcqRel);
    state.store(DETACHED, Ordering::Release);
    p
}
