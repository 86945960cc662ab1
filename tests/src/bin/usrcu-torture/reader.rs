//! Readers: guard sections that nest and sometimes sleep, raw sections
//! ended on the hand-off thread, and cookie checks from inside a section.

use crate::flavor::{Cookie, Raw};
use crate::pool::{ErrorKind, Look, PIPE_LEN};
use crate::rng::Rng;
use crate::Torture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

/// Counters of one reader thread (or of the hand-off thread), on their own
/// cache lines. Relaxed everywhere: statistics, summed by the stats thread.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct ReaderStats {
    pub reads: AtomicU64,
    pub nested: AtomicU64,
    pub raw: AtomicU64,
    pub sleeps: AtomicU64,
    pub cookies: AtomicU64,
    /// The reader pipe: how many reads saw each age (the last bucket: PIPE_LEN or more).
    pub pipe: [AtomicU64; PIPE_LEN as usize + 1],
}

impl ReaderStats {
    fn bump(c: &AtomicU64) {
        // Relaxed: a statistic.
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, age: u64) {
        Self::bump(&self.pipe[age.min(PIPE_LEN) as usize]);
        Self::bump(&self.reads);
    }
}

/// A raw section begun by a reader and ended by the hand-off thread.
#[derive(Debug)]
pub struct Handoff {
    idx: Raw,
    first: Look,
    cookie: Cookie,
}

/// Sometimes nothing, sometimes a spin, a yield, a short sleep, and rarely a
/// sleep of milliseconds: sleeping readers make grace periods wait, and
/// make a grace period that does not wait show up as an old age.
fn delay(rng: &mut Rng, st: &ReaderStats) {
    match rng.below(1000) {
        0..=1 => {
            ReaderStats::bump(&st.sleeps);
            std::thread::sleep(Duration::from_micros(1000 + rng.below(4000)));
        }
        2..=30 => {
            ReaderStats::bump(&st.sleeps);
            std::thread::sleep(Duration::from_micros(rng.below(200)));
        }
        31..=250 => {
            for _ in 0..rng.below(500) {
                std::hint::spin_loop();
            }
        }
        251..=260 => std::thread::yield_now(),
        _ => {}
    }
}

/// A reader thread: loops until the run stops.
pub fn run(t: &'static Torture, id: usize, handoff: SyncSender<Handoff>) {
    let st = &t.readers[id];
    let mut rng = Rng::new(t.args.seed, 100 + id as u64);
    let who = format!("reader {id}");
    while !t.stopping() {
        if rng.one_in(16) {
            raw_read(t, st, &mut rng, &who, &handoff);
        } else {
            guard_read(t, st, &mut rng, &who);
        }
    }
}

/// A cookie taken inside a section, sometimes (`start_poll` also asks the
/// runtime to drive that grace period, which then has to wait for us).
fn cookie_inside(t: &Torture, st: &ReaderStats, rng: &mut Rng) -> Option<Cookie> {
    match rng.below(64) {
        0 => Some(t.rcu.start_poll()),
        1..=8 => Some(t.rcu.get_state()),
        _ => None,
    }
    .inspect(|_| ReaderStats::bump(&st.cookies))
}

/// The cookie of a grace period that began after this section did cannot be
/// complete while the section lasts.
fn check_cookie_inside(t: &Torture, c: Cookie, who: &str) {
    if t.rcu.poll_state(c) {
        t.errs.report(ErrorKind::CookieEarly, || {
            format!(
                "{who}: cookie {} taken inside the section is complete before the section ended",
                c.as_u64()
            )
        });
    }
}

fn guard_read(t: &Torture, st: &ReaderStats, rng: &mut Rng, who: &str) {
    let outer = t.rcu.read_lock();
    let first = t.pool.first_look(t.pool.current(), &t.errs, who);
    let cookie = cookie_inside(t, st, rng);
    if rng.one_in(4) {
        // Nested: the inner section ends first; the outer one must still
        // protect what it found.
        let inner = t.rcu.read_lock();
        let l = t.pool.first_look(t.pool.current(), &t.errs, who);
        delay(rng, st);
        let age = t.pool.last_look(l, &t.errs, who);
        drop(inner);
        st.record(age);
        ReaderStats::bump(&st.nested);
    }
    delay(rng, st);
    let age = t.pool.last_look(first, &t.errs, who);
    if let Some(c) = cookie {
        check_cookie_inside(t, c, who);
    }
    drop(outer);
    st.record(age);
    if let Some(c) = cookie.filter(|_| rng.one_in(256)) {
        // After the section: a synchronize completes every earlier cookie.
        t.rcu.synchronize();
        if !t.rcu.poll_state(c) {
            t.errs.report(ErrorKind::CookieLate, || {
                format!("{who}: cookie {} not complete after synchronize()", c.as_u64())
            });
        }
    }
}

fn raw_read(t: &Torture, st: &ReaderStats, rng: &mut Rng, who: &str, handoff: &SyncSender<Handoff>) {
    let idx = t.rcu.read_lock_raw();
    let first = t.pool.first_look(t.pool.current(), &t.errs, who);
    let cookie = t.rcu.get_state();
    delay(rng, st);
    ReaderStats::bump(&st.raw);
    let h = Handoff { idx, first, cookie };
    if !t.rcu.raw_crosses_threads() {
        // Tasks Trace sections belong to their thread: end it here.
        end_raw(t, st, h, who);
    } else if let Err(e) = handoff.send(h) {
        // The hand-off thread is gone (the run is ending): end it here.
        end_raw(t, st, e.0, who);
    }
}

fn end_raw(t: &Torture, st: &ReaderStats, h: Handoff, who: &str) {
    let age = t.pool.last_look(h.first, &t.errs, who);
    check_cookie_inside(t, h.cookie, who);
    // SAFETY: `h.idx` came from `read_lock_raw` of this same flavor and is
    // moved in here, so it is ended exactly once; a Tasks Trace one is ended
    // on the thread that began it (`raw_read`).
    unsafe { t.rcu.read_unlock_raw(h.idx) };
    st.record(age);
}

/// The hand-off thread: ends raw sections begun by readers, after checking
/// that what they found is still protected. Stats go to the extra slot after
/// the readers'.
pub fn run_handoff(t: &'static Torture, rx: Receiver<Handoff>) {
    let st = &t.readers[t.args.readers];
    let mut rng = Rng::new(t.args.seed, 99);
    for h in rx {
        if rng.one_in(8) {
            ReaderStats::bump(&st.sleeps);
            std::thread::sleep(Duration::from_micros(rng.below(300)));
        }
        end_raw(t, st, h, "hand-off");
    }
}
