//! The objects readers look at, their ages, and the checks that turn a
//! too-short grace period into a counted error.
//!
//! # Ages (the "pipe")
//!
//! One object is *current*. The writer publishes a new one and *retires*
//! the old one: its age becomes 1. Every grace period that completes after
//! the retirement adds one (through the writer's list for `synchronize` and
//! polled grace periods, through a chain of `call_srcu` callbacks for
//! `call_srcu`). At [`PIPE_LEN`] the object is *freed*: poisoned and put
//! back on the free list, from which a later publication reuses it with a
//! new generation number.
//!
//! A reader that found an object through `current` began its section before
//! that object was retired, so every grace period that ages it must wait for
//! the reader. Inside a section, an age of 2 or more, a poisoned object, or a
//! generation that changed since the reader's first look is therefore a grace
//! period that ended too soon.
//!
//! Objects are never deallocated, only poisoned: a buggy grace period shows
//! up as a counted error, never as undefined behaviour in the checker. Every
//! field is atomic for the same reason.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Grace periods after retirement until an object is freed (rcutorture's
/// `RCU_TORTURE_PIPE_LEN`).
pub const PIPE_LEN: u64 = 10;

const ALIVE: u64 = 0xA11C_E0B1_EC70_0001;
/// The kernel's `POISON_FREE` byte, repeated.
const POISON: u64 = 0x6B6B_6B6B_6B6B_6B6B;

#[repr(align(64))]
#[derive(Debug)]
struct Obj {
    magic: AtomicU64,
    age: AtomicU64,
    gen: AtomicU64,
}

/// The pool: every object that exists, the free list, and `current`.
#[derive(Debug)]
pub struct Pool {
    objs: Box<[Obj]>,
    free: Mutex<Vec<usize>>,
    current: AtomicUsize,
    next_gen: AtomicU64,
}

/// What a reader saw at its first look at an object.
#[derive(Clone, Copy, Debug)]
pub struct Look {
    pub idx: usize,
    pub gen: u64,
    pub age: u64,
}

impl Pool {
    /// `n` objects; object 0 is published as the first current one.
    pub fn new(n: usize) -> Pool {
        let objs: Box<[Obj]> = (0..n)
            .map(|_| Obj {
                magic: AtomicU64::new(POISON),
                age: AtomicU64::new(PIPE_LEN),
                gen: AtomicU64::new(0),
            })
            .collect();
        let p = Pool {
            objs,
            free: Mutex::new((1..n).rev().collect()),
            current: AtomicUsize::new(0),
            next_gen: AtomicU64::new(1),
        };
        p.reset(0);
        p
    }

    pub fn len(&self) -> usize {
        self.objs.len()
    }

    pub fn free_count(&self) -> usize {
        self.free.lock().unwrap().len()
    }

    /// A free object, if any.
    pub fn alloc(&self) -> Option<usize> {
        self.free.lock().unwrap().pop()
    }

    fn reset(&self, i: usize) {
        let o = &self.objs[i];
        // Relaxed: these stores are published by the Release swap of
        // `current` in `publish` (and the pool's construction before any
        // thread starts).
        let g = self.next_gen.fetch_add(1, Ordering::Relaxed);
        o.gen.store(g, Ordering::Relaxed);
        o.age.store(0, Ordering::Relaxed);
        o.magic.store(ALIVE, Ordering::Relaxed);
    }

    /// The current object (readers call this inside their section).
    pub fn current(&self) -> usize {
        // Acquire: pairs with the Release half of the swap in `publish`, so a
        // reader sees the object's reset fields.
        self.current.load(Ordering::Acquire)
    }

    /// Make `new` (fresh from [`Pool::alloc`]) current; retire and return the
    /// previous one, whose age is now 1.
    pub fn publish(&self, new: usize) -> usize {
        self.reset(new);
        // AcqRel: Release publishes the reset above to readers' Acquire
        // loads in `current`; Acquire orders our use of `old` after its own
        // publication.
        let old = self.current.swap(new, Ordering::AcqRel);
        // Relaxed: the retirement mark; a reader that loaded `old` may see 0
        // or 1, both legal. Ordered before the grace period that ages it by
        // that grace period's own start (a SeqCst fence in the core).
        self.objs[old].age.store(1, Ordering::Relaxed);
        old
    }

    /// One grace period has completed since `i` was retired (or last aged).
    /// Returns true if this freed it.
    pub fn age(&self, i: usize) -> bool {
        let o = &self.objs[i];
        // Relaxed: ordered after the grace period by the caller (it runs
        // after `synchronize` returned, a cookie polled complete, or inside
        // the callback); the checks test exactly that ordering.
        let a = o.age.fetch_add(1, Ordering::Relaxed) + 1;
        if a >= PIPE_LEN {
            // Relaxed: as above; the free-list mutex publishes it to the
            // next `alloc`.
            o.magic.store(POISON, Ordering::Relaxed);
            self.free.lock().unwrap().push(i);
            true
        } else {
            false
        }
    }

    /// First look at object `i`, found through `current` inside a section.
    pub fn first_look(&self, i: usize, errs: &Errors, who: &str) -> Look {
        let l = self.look(i);
        self.judge(l, None, errs, who);
        l
    }

    /// Later look at the same object, still inside the section that found
    /// it. Returns the age to record in the reader pipe.
    pub fn last_look(&self, first: Look, errs: &Errors, who: &str) -> u64 {
        let l = self.look(first.idx);
        self.judge(l, Some(first), errs, who);
        l.age.max(first.age)
    }

    fn look(&self, i: usize) -> Look {
        let o = &self.objs[i];
        // Relaxed: inside a read section; whether these can see a later
        // grace period's writes is what the torture tests.
        let magic = o.magic.load(Ordering::Relaxed);
        let gen = o.gen.load(Ordering::Relaxed);
        let age = o.age.load(Ordering::Relaxed);
        Look {
            idx: i,
            gen: if magic == ALIVE { gen } else { u64::MAX },
            age,
        }
    }

    fn judge(&self, l: Look, first: Option<Look>, errs: &Errors, who: &str) {
        if l.gen == u64::MAX {
            errs.report(ErrorKind::Freed, || {
                format!(
                    "{who}: object {} is poisoned (freed) inside the section that found it",
                    l.idx
                )
            });
        } else if let Some(f) = first.filter(|f| f.gen != l.gen) {
            errs.report(ErrorKind::Recycled, || {
                format!(
                    "{who}: object {} was freed and republished inside the section (generation {} -> {})",
                    l.idx, f.gen, l.gen
                )
            });
        }
        if l.age >= 2 {
            errs.report(ErrorKind::TooOld, || {
                format!(
                    "{who}: object {} has age {} inside the section that found it current (max legal: 1)",
                    l.idx, l.age
                )
            });
        }
    }
}

/// What a check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A reader saw an age of 2 or more: a grace period ended while it was inside.
    TooOld,
    /// A reader saw a poisoned object.
    Freed,
    /// A reader's object was freed and republished under it.
    Recycled,
    /// A cookie taken inside a section was complete before the section ended.
    CookieEarly,
    /// A cookie was not complete after a `synchronize` that followed it.
    CookieLate,
    /// `barrier` returned before a callback queued before it had run.
    BarrierMissed,
    /// Objects or callbacks unaccounted for at the end, or cleanup refused.
    Accounting,
    /// A polled grace period never completed, or threads did not finish.
    Liveness,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::TooOld,
        ErrorKind::Freed,
        ErrorKind::Recycled,
        ErrorKind::CookieEarly,
        ErrorKind::CookieLate,
        ErrorKind::BarrierMissed,
        ErrorKind::Accounting,
        ErrorKind::Liveness,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::TooOld => "too_old",
            ErrorKind::Freed => "freed",
            ErrorKind::Recycled => "recycled",
            ErrorKind::CookieEarly => "cookie_early",
            ErrorKind::CookieLate => "cookie_late",
            ErrorKind::BarrierMissed => "barrier_missed",
            ErrorKind::Accounting => "accounting",
            ErrorKind::Liveness => "liveness",
        }
    }
}

/// Error counters, shared by every thread. The first few errors are also
/// printed with their details.
#[derive(Debug, Default)]
pub struct Errors {
    counts: [AtomicU64; 8],
    printed: AtomicU64,
}

const PRINT_MAX: u64 = 20;

impl Errors {
    pub fn report(&self, kind: ErrorKind, detail: impl FnOnce() -> String) {
        // Relaxed: counters, read by the stats thread and after joins.
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
        if self.printed.fetch_add(1, Ordering::Relaxed) < PRINT_MAX {
            println!("usrcu-torture: !!! {}: {}", kind.name(), detail());
        }
    }

    pub fn count(&self, kind: ErrorKind) -> u64 {
        // Relaxed: a counter.
        self.counts[kind as usize].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        ErrorKind::ALL.iter().map(|&k| self.count(k)).sum()
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = ErrorKind::ALL
            .iter()
            .map(|&k| format!("{}={}", k.name(), self.count(k)))
            .collect();
        f.write_str(&parts.join(" "))
    }
}
