//! Where a load or an unload spends its time, step by step, for
//! `benches/examples/unload_phases`. Off unless [`enable`]d: then each step
//! boundary costs one relaxed load and a branch.
//!
//! Laps are taken on the calling thread: `mark` starts a lap at the top of
//! `load` and `unload`, and each `lap` records the time since the previous
//! mark or lap under a step's name. Work on other threads (the runtime's, a
//! barrier helper's) shows up as the waiting step that covers it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ON: AtomicBool = AtomicBool::new(false);
static LOG: Mutex<Vec<(&'static str, Duration)>> = Mutex::new(Vec::new());

thread_local! {
    // A `Cell` of a `Copy` value: no destructor is registered.
    static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Record laps from now on (`true`) or stop (`false`).
pub fn enable(on: bool) {
    // Relaxed: a switch; nothing is published through it (laps go through
    // the `LOG` mutex).
    ON.store(on, Ordering::Relaxed);
}

/// The laps recorded since the last call, in order: (step, time).
pub fn take() -> Vec<(&'static str, Duration)> {
    std::mem::take(&mut *crate::lock(&LOG))
}

fn on() -> bool {
    // Relaxed: see `enable`.
    ON.load(Ordering::Relaxed)
}

/// Start a lap on this thread.
pub(crate) fn mark() {
    if on() {
        LAST.with(|l| l.set(Some(Instant::now())));
    }
}

/// End the lap begun by the last [`mark`] or [`lap`] on this thread, as
/// `step`, and begin the next.
pub(crate) fn lap(step: &'static str) {
    if !on() {
        return;
    }
    let now = Instant::now();
    if let Some(t) = LAST.with(|l| l.replace(Some(now))) {
        crate::lock(&LOG).push((step, now - t));
    }
}
