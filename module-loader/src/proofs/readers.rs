//! Readers inside a static domain of the object: a reader section of a
//! plugin domain reads plugin memory (the domain itself lies in the object).
//!
//! Known from the domain's counters: a polled grace period that starts now
//! completes only when every reader inside at the start has left. Polled,
//! so that a reader that never leaves costs a bounded wait (the unload's
//! remaining time) and no stuck thread. A domain whose readers stay is
//! recorded; its barrier is not attempted (it would wait for them), and its
//! `cleanup` then names the readers as the Zombie's cause.
//!
//! Only domains that used `call_srcu` are waited for here: their barrier
//! needs the readers gone. For the others `cleanup` reads the counters
//! directly (readers inside make it refuse), which costs no grace period.

use std::time::{Duration, Instant};

use usrcu::Srcu;

use super::{Proof, UnloadCx};
use crate::report::ZombieCause;

/// See the module documentation.
pub(crate) struct Readers;

impl Proof for Readers {
    fn prove(&self, cx: &mut UnloadCx<'_>) -> Result<(), ZombieCause> {
        if !cx.config.auto_barrier {
            return Ok(());
        }
        for (i, dp) in cx.module.domains.iter().enumerate() {
            // SAFETY: the object is mapped for the whole unload.
            let d = unsafe { dp.get() };
            if d.call_srcu_used() && wait_for_grace_period(d, cx.time_left()).is_err() {
                cx.readers_stuck.push(i);
            }
        }
        Ok(())
    }
}

/// Wait, up to `timeout`, for a grace period of `d` that starts now: every
/// reader inside `d` at the call has left. `Err(waited)` on timeout.
pub(crate) fn wait_for_grace_period(d: &Srcu, timeout: Duration) -> Result<Duration, Duration> {
    let t0 = Instant::now();
    // The caller drives the grace period itself (`synchronize_timeout`): on
    // a domain with no reader inside that is one check under one heavy
    // fence, with no hand-off to the runtime's driver thread and back.
    if d.synchronize_timeout(timeout) {
        Ok(t0.elapsed())
    } else {
        Err(t0.elapsed())
    }
}
