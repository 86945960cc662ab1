//! The writer (publishes, retires and ages objects through every update
//! primitive in turn) and the fake writers (request grace periods
//! concurrently, and check cookies and barriers).

use crate::flavor::Cookie;
use crate::pool::ErrorKind;
use crate::rng::Rng;
use crate::Torture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the writer waits for the grace period that ages what it retired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Sync,
    SyncExpedited,
    CallSrcu,
    PollStart,
    PollGetState,
    Barrier,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Sync,
        Op::SyncExpedited,
        Op::CallSrcu,
        Op::PollStart,
        Op::PollGetState,
        Op::Barrier,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Sync => "sync",
            Op::SyncExpedited => "exp",
            Op::CallSrcu => "call",
            Op::PollStart => "poll",
            Op::PollGetState => "getstate",
            Op::Barrier => "barrier",
        }
    }
}

/// Writer-side counters. Relaxed everywhere: statistics, and the callback
/// counts are only compared after every thread is joined and `barrier` has
/// returned.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub writes: AtomicU64,
    pub ops: [AtomicU64; 6],
    pub alloc_fail: AtomicU64,
    pub fake_ops: AtomicU64,
    pub barrier_checks: AtomicU64,
    /// Callbacks this program queued and saw run.
    pub cb_queued: AtomicU64,
    pub cb_invoked: AtomicU64,
    /// Objects aging through a `call_srcu` chain.
    pub chains: AtomicU64,
}

pub fn bump(c: &AtomicU64) {
    // Relaxed: a statistic.
    c.fetch_add(1, Ordering::Relaxed);
}

/// Longest wait for a polled grace period before it counts as a liveness error.
const POLL_LIMIT: Duration = Duration::from_secs(60);

/// Wait until `c` is complete by polling only.
fn wait_poll(t: &Torture, c: Cookie, who: &str) {
    let t0 = Instant::now();
    let mut sleep_us = 10;
    while !t.rcu.poll_state(c) {
        if t0.elapsed() > POLL_LIMIT {
            t.errs.report(ErrorKind::Liveness, || {
                format!(
                    "{who}: start_poll cookie {} not complete after {POLL_LIMIT:?}",
                    c.as_u64()
                )
            });
            return;
        }
        std::thread::sleep(Duration::from_micros(sleep_us));
        sleep_us = (sleep_us * 2).min(1000);
    }
}

/// `synchronize` (or its expedited twin) completes a cookie taken before it.
fn sync_completes_cookie(t: &Torture, c: Cookie, expedited: bool, who: &str) {
    if expedited {
        t.rcu.synchronize_expedited();
    } else {
        t.rcu.synchronize();
    }
    if !t.rcu.poll_state(c) {
        t.errs.report(ErrorKind::CookieLate, || {
            format!("{who}: cookie {} not complete after synchronize", c.as_u64())
        });
    }
}

/// Age object `i` by one grace period per callback: each callback ages it and
/// queues the next, until it is freed.
fn chain(t: &'static Torture, i: usize) {
    bump(&t.w.chains);
    queue_chain_step(t, i);
}

fn queue_chain_step(t: &'static Torture, i: usize) {
    bump(&t.w.cb_queued);
    t.rcu.call(move || {
        bump(&t.w.cb_invoked);
        if t.pool.age(i) {
            // Relaxed: the count is read after `barrier`s, which order it.
            t.w.chains.fetch_sub(1, Ordering::Relaxed);
        } else {
            queue_chain_step(t, i);
        }
    });
}

/// Queue `k` callbacks, `barrier`, and require that all of them ran.
fn barrier_check(t: &'static Torture, k: u64, who: &str) {
    let ran = Arc::new(AtomicU64::new(0));
    for _ in 0..k {
        let ran = ran.clone();
        bump(&t.w.cb_queued);
        t.rcu.call(move || {
            bump(&t.w.cb_invoked);
            // Relaxed: `barrier` orders the callback before our load.
            ran.fetch_add(1, Ordering::Relaxed);
        });
    }
    t.rcu.barrier();
    bump(&t.w.barrier_checks);
    // Relaxed: ordered after every callback by `barrier`.
    let n = ran.load(Ordering::Relaxed);
    if n != k {
        t.errs.report(ErrorKind::BarrierMissed, || {
            format!("{who}: barrier() returned with {n} of {k} callbacks queued before it run")
        });
    }
}

/// One grace period has completed since everything on `retired` was retired.
fn age_all(t: &Torture, retired: &mut Vec<usize>) {
    retired.retain(|&i| !t.pool.age(i));
}

/// The writer: publish a new object, retire the old one, and age it through
/// one primitive, chosen at random each time.
pub fn run(t: &'static Torture) {
    let mut rng = Rng::new(t.args.seed, 1);
    let who = "writer";
    let mut retired: Vec<usize> = Vec::new();
    while !t.stopping() {
        let Some(new) = t.pool.alloc() else {
            // Every object is retired or aging in a chain: a grace period
            // frees some.
            bump(&t.w.alloc_fail);
            t.rcu.synchronize();
            age_all(t, &mut retired);
            std::thread::sleep(Duration::from_micros(100));
            continue;
        };
        let old = t.pool.publish(new);
        bump(&t.w.writes);
        let op = Op::ALL[rng.below(Op::ALL.len() as u64) as usize];
        bump(&t.w.ops[op as usize]);
        match op {
            Op::Sync | Op::SyncExpedited => {
                retired.push(old);
                if op == Op::Sync {
                    t.rcu.synchronize();
                } else {
                    t.rcu.synchronize_expedited();
                }
                age_all(t, &mut retired);
            }
            Op::CallSrcu => chain(t, old),
            Op::PollStart => {
                retired.push(old);
                let c = t.rcu.start_poll();
                wait_poll(t, c, who);
                age_all(t, &mut retired);
            }
            Op::PollGetState => {
                // get_state starts nothing: poll a while (fake writers and
                // the runtime may complete it), then synchronize, after
                // which it must be complete.
                retired.push(old);
                let c = t.rcu.get_state();
                for _ in 0..8 {
                    if t.rcu.poll_state(c) {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
                if !t.rcu.poll_state(c) {
                    sync_completes_cookie(t, c, false, who);
                }
                age_all(t, &mut retired);
            }
            Op::Barrier => {
                chain(t, old);
                barrier_check(t, 1 + rng.below(4), who);
            }
        }
        if rng.one_in(8) {
            std::thread::sleep(Duration::from_micros(rng.below(100)));
        }
    }
    // Age what is left until it is freed.
    while !retired.is_empty() {
        t.rcu.synchronize();
        age_all(t, &mut retired);
    }
}

/// A fake writer: requests grace periods of every kind, concurrently with
/// the writer, with short random pauses.
pub fn run_fake(t: &'static Torture, id: usize) {
    let mut rng = Rng::new(t.args.seed, 200 + id as u64);
    let who = format!("fake writer {id}");
    while !t.stopping() {
        match rng.below(7) {
            0 => t.rcu.synchronize(),
            1 => t.rcu.synchronize_expedited(),
            2 => sync_completes_cookie(t, t.rcu.get_state(), false, &who),
            3 => sync_completes_cookie(t, t.rcu.get_state(), true, &who),
            4 => wait_poll(t, t.rcu.start_poll(), &who),
            5 => t.rcu.barrier(),
            _ => barrier_check(t, 2, &who),
        }
        bump(&t.w.fake_ops);
        std::thread::sleep(Duration::from_micros(rng.below(1000)));
    }
}
