//! The flavor under torture: an SRCU domain, or the process-wide Tasks
//! Trace flavor (`--flavor trace`). One enum, so that readers and writers
//! run the same checks against either.

use usrcu::{trace, Cookie as SrcuCookie, ReadIndex, Srcu, SrcuReadGuard};

#[derive(Clone, Copy, Debug)]
pub enum Rcu {
    Srcu(&'static Srcu),
    Trace,
}

/// A read section (ends on drop).
#[allow(dead_code)] // the guards are held for their drop
#[derive(Debug)]
pub enum Section {
    Srcu(SrcuReadGuard<'static>),
    Trace(trace::TraceGuard),
}

/// A raw section's token.
#[derive(Debug)]
pub enum Raw {
    Srcu(ReadIndex),
    Trace,
}

/// A polled cookie of either flavor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cookie {
    Srcu(SrcuCookie),
    Trace(trace::Cookie),
}

impl Cookie {
    pub fn as_u64(self) -> u64 {
        match self {
            Cookie::Srcu(c) => c.as_u64(),
            Cookie::Trace(c) => c.as_u64(),
        }
    }
}

/// The counters the stats lines print.
#[derive(Debug, Default)]
pub struct Counts {
    pub grace_periods: u64,
    pub expedited_grace_periods: u64,
    pub callbacks_queued: u64,
    pub callbacks_invoked: u64,
    pub barriers_issued: u64,
    pub barriers_skipped: u64,
}

impl Rcu {
    pub fn name(self) -> &'static str {
        match self {
            Rcu::Srcu(d) => d.name(),
            Rcu::Trace => trace::DOMAIN_NAME,
        }
    }

    pub fn read_lock(self) -> Section {
        match self {
            Rcu::Srcu(d) => Section::Srcu(d.read_lock()),
            Rcu::Trace => Section::Trace(trace::read_lock()),
        }
    }

    pub fn read_lock_raw(self) -> Raw {
        match self {
            Rcu::Srcu(d) => Raw::Srcu(d.read_lock_raw()),
            Rcu::Trace => {
                trace::read_lock_raw();
                Raw::Trace
            }
        }
    }

    /// May a raw section end on another thread? (Tasks Trace nesting is per
    /// thread: no.)
    pub fn raw_crosses_threads(self) -> bool {
        matches!(self, Rcu::Srcu(_))
    }

    /// # Safety
    /// `r` came from `read_lock_raw` of this flavor, is ended once, and (for
    /// Tasks Trace) on the thread that began it.
    pub unsafe fn read_unlock_raw(self, r: Raw) {
        match (self, r) {
            // SAFETY: forwarded.
            (Rcu::Srcu(d), Raw::Srcu(i)) => unsafe { d.read_unlock_raw(i) },
            // SAFETY: forwarded.
            (Rcu::Trace, Raw::Trace) => unsafe { trace::read_unlock_raw() },
            _ => unreachable!("a raw section of another flavor"),
        }
    }

    pub fn synchronize(self) {
        match self {
            Rcu::Srcu(d) => d.synchronize(),
            Rcu::Trace => trace::synchronize(),
        }
    }

    /// Tasks Trace has no expedited form: a plain synchronize.
    pub fn synchronize_expedited(self) {
        match self {
            Rcu::Srcu(d) => d.synchronize_expedited(),
            Rcu::Trace => trace::synchronize(),
        }
    }

    pub fn call(self, f: impl FnOnce() + Send + 'static) {
        match self {
            Rcu::Srcu(d) => d.call_srcu(f),
            Rcu::Trace => trace::call(f),
        }
    }

    pub fn barrier(self) {
        match self {
            Rcu::Srcu(d) => d.barrier(),
            Rcu::Trace => trace::barrier(),
        }
    }

    pub fn get_state(self) -> Cookie {
        match self {
            Rcu::Srcu(d) => Cookie::Srcu(d.get_state()),
            Rcu::Trace => Cookie::Trace(trace::get_state()),
        }
    }

    pub fn start_poll(self) -> Cookie {
        match self {
            Rcu::Srcu(d) => Cookie::Srcu(d.start_poll()),
            Rcu::Trace => Cookie::Trace(trace::start_poll()),
        }
    }

    pub fn poll_state(self, c: Cookie) -> bool {
        match (self, c) {
            (Rcu::Srcu(d), Cookie::Srcu(c)) => d.poll_state(c),
            (Rcu::Trace, Cookie::Trace(c)) => trace::poll_state(c),
            _ => unreachable!("a cookie of another flavor"),
        }
    }

    pub fn counts(self) -> Counts {
        match self {
            Rcu::Srcu(d) => {
                let s = d.stats();
                Counts {
                    grace_periods: s.grace_periods,
                    expedited_grace_periods: s.expedited_grace_periods,
                    callbacks_queued: s.callbacks_queued,
                    callbacks_invoked: s.callbacks_invoked,
                    barriers_issued: s.barriers_issued,
                    barriers_skipped: s.barriers_skipped,
                }
            }
            Rcu::Trace => {
                let s = trace::stats();
                Counts {
                    grace_periods: s.grace_periods,
                    callbacks_queued: s.callbacks_queued,
                    callbacks_invoked: s.callbacks_invoked,
                    ..Counts::default()
                }
            }
        }
    }
}
