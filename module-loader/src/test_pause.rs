//! Test-only pause points in the load and unload paths, for integration
//! tests that must hold one at a step while another thread races it (a
//! load that would share a library an unload is closing, or two unloads of
//! modules sharing a library). The unload's points are reached only by an
//! unload of a module that uses shared libraries (the last two only by one
//! that closes one), the load's only by a load that `dlopen`ed its object;
//! with no pause armed, a
//! point costs one uncontended lock, beside a `dlopen` or a `dlclose`. Not
//! for hosts: a pause armed and never resumed blocks the load or unload
//! that reached it until its [`Pause`] is dropped.
//!
//! Exposed as `usrcu_module_loader::__testing` (hidden from the docs).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Where a load or an unload can be held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PausePoint {
    /// The unload of a module that uses shared libraries decided, for each,
    /// whether it is the last user (`proofs::needed::partition` marked them
    /// in flight), and has not proven the module idle yet (other unloads of
    /// modules sharing one of them wait to decide meanwhile).
    UnloadAfterDecision,
    /// The unload decided it is the last user of a shared library
    /// (`proofs::needed::partition` marked it closing) and proved the
    /// module idle (its keys are deleted), and has not `dlclose`d yet.
    UnloadBeforeDlclose,
    /// The unload `dlclose`d and released its closing marks (loads may go
    /// ahead), and has not written its report yet.
    UnloadAfterRelease,
    /// A load passed the shared-library gate and `dlopen`ed its object,
    /// and has not counted the libraries it uses yet (unloads do not decide
    /// meanwhile).
    LoadBeforeCount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Armed: the next load or unload that reaches the point stops there.
    Armed,
    /// A load or unload is stopped at the point.
    Paused,
    /// Resumed (its [`Pause`] dropped): the stopped one goes on and removes
    /// the slot.
    Resumed,
}

struct Slot {
    id: u64,
    point: PausePoint,
    stage: Stage,
}

struct Slots {
    next_id: u64,
    slots: Vec<Slot>,
}

static SLOTS: Mutex<Slots> = Mutex::new(Slots {
    next_id: 0,
    slots: Vec::new(),
});

/// Woken on every change of a slot's stage.
static CHANGED: Condvar = Condvar::new();

/// Live [`Pause`] values: while none is, [`reached`] is one load (the
/// loader's hot paths call it on every load).
static ARMED: AtomicUsize = AtomicUsize::new(0);

/// An armed pause point: the next load or unload that reaches it stops there
/// until [`Pause::resume`] (or the drop of this value, so that a failing
/// test does not leave an unload stopped forever).
#[derive(Debug)]
pub struct Pause {
    id: u64,
}

/// Arm `point`: the next load or unload (of any loader in the process)
/// that reaches it stops there.
pub fn pause_at(point: PausePoint) -> Pause {
    // Relaxed: a load that must see the pause is started by the test after
    // this call (a spawn, a channel), which orders the two.
    ARMED.fetch_add(1, Ordering::Relaxed);
    let mut s = crate::lock(&SLOTS);
    let id = s.next_id;
    s.next_id += 1;
    s.slots.push(Slot {
        id,
        point,
        stage: Stage::Armed,
    });
    Pause { id }
}

impl Pause {
    /// Wait until a load or unload is stopped at the point, `timeout` at
    /// most; returns whether one is.
    pub fn wait_until_paused(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = crate::lock(&SLOTS);
        loop {
            let paused = s.slots.iter().any(|x| x.id == self.id && x.stage == Stage::Paused);
            let left = deadline.saturating_duration_since(Instant::now());
            if paused || left.is_zero() {
                return paused;
            }
            s = CHANGED.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Let the stopped load or unload go on (or disarm the point if none
    /// reached it).
    pub fn resume(self) {}
}

impl Drop for Pause {
    fn drop(&mut self) {
        // Relaxed: as in `pause_at`; a stopped load or unload waits on the
        // slot, under the lock, not on this count.
        ARMED.fetch_sub(1, Ordering::Relaxed);
        let mut s = crate::lock(&SLOTS);
        match s.slots.iter().position(|x| x.id == self.id) {
            // No unload took it: disarmed.
            Some(i) if s.slots[i].stage == Stage::Armed => {
                s.slots.remove(i);
            }
            // The stopped one goes on, and removes the slot (`reached`).
            Some(i) => s.slots[i].stage = Stage::Resumed,
            None => {}
        }
        drop(s);
        CHANGED.notify_all();
    }
}

/// Called by a load or unload at `point`: stops there while a [`Pause`]
/// armed for it is alive.
pub(crate) fn reached(point: PausePoint) {
    // Relaxed: see `pause_at`.
    if ARMED.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut s = crate::lock(&SLOTS);
    let Some(id) = s
        .slots
        .iter()
        .find(|x| x.point == point && x.stage == Stage::Armed)
        .map(|x| x.id)
    else {
        return;
    };
    let stage_of = |s: &Slots| s.slots.iter().find(|x| x.id == id).map(|x| x.stage);
    if let Some(x) = s.slots.iter_mut().find(|x| x.id == id) {
        x.stage = Stage::Paused;
    }
    CHANGED.notify_all();
    while stage_of(&s) == Some(Stage::Paused) {
        s = CHANGED.wait(s).unwrap_or_else(|e| e.into_inner());
    }
    s.slots.retain(|x| x.id != id);
}

/// How many unloads wait to decide about their shared libraries now (a
/// load is between its gate and its count, or another unload is in flight
/// on one of their libraries): see `proofs/needed.rs`.
pub fn unloads_waiting_to_decide() -> usize {
    crate::proofs::needed::unloads_waiting()
}

/// Wait until at least `n` unloads wait to decide about their shared
/// libraries, `timeout` at most; returns whether they do.
pub fn wait_for_unloads_waiting_to_decide(n: usize, timeout: Duration) -> bool {
    crate::proofs::needed::wait_for_unloads_waiting(n, timeout)
}

/// How many loads are waiting at the shared-library gate now (an unload
/// is closing a library they might share): see `proofs/needed.rs`.
pub fn loads_waiting_at_gate() -> usize {
    crate::proofs::needed::loads_waiting()
}

/// Wait until at least `n` loads wait at the shared-library gate, `timeout`
/// at most; returns whether they do.
pub fn wait_for_loads_at_gate(n: usize, timeout: Duration) -> bool {
    crate::proofs::needed::wait_for_loads_waiting(n, timeout)
}
