//! Threads asleep in a signal handler that interrupted the object's code.
//!
//! Tasks RCU (hook slots, normal tracepoint probes) has no read-side
//! marker: a thread counts as having left every hook once it is seen
//! blocked or its voluntary-switch count moves. A signal handler breaks
//! that rule: the handler is host code, it may sleep (`nanosleep`, a
//! `write` to a full pipe, `sigsuspend`: all async-signal-safe), and while
//! it sleeps the thread reads as blocked with the interrupted hook's frame
//! still on its stack. The hook step's grace period then ends, and when the
//! handler returns the thread resumes in the unmapped hook: the host dies
//! of SIGSEGV (red team 7, `tests/tests/redteam7_hook_signal.rs`).
//!
//! # How it is known
//!
//! For every other thread of the process, `/proc/self/task/<tid>/syscall`
//! gives, while the thread is blocked, its user stack pointer and program
//! counter ("running" otherwise). The stack from that pointer up to the
//! end of its mapping (at most [`SCAN_LIMIT`]) is read with
//! `process_vm_readv`, which fails instead of faulting on memory unmapped
//! meanwhile, and searched for signal frames: on x86_64 the kernel builds
//! each `struct rt_sigframe` with the handler's return address first, the
//! handler's `sa_restorer` (glibc's `__restore_rt`, known from `sigaction`
//! queries of every signal, whatever the disposition, see [`restorers`];
//! every restorer ever seen is remembered, for a handler replaced while a
//! thread still sleeps in it), followed by the
//! `ucontext` whose saved registers say where the thread was interrupted.
//! A thread is *interrupted in the object* when
//!
//! * its program counter lies in the object (it is blocked in the
//!   object's own code: a raw system call, a page fault), or
//! * a signal frame's saved `rip` lies in the object, or
//! * a word of the interrupted stack (from the frame's saved `rsp`, at most
//!   [`SCAN_LIMIT`]) does: a return address into the object above host code
//!   the object called, such as `memcpy`. Conservative: a stale word left in
//!   a live frame counts too, but only for a thread that is inside a signal
//!   handler at that moment, which is rare and short.
//!
//! A host logger that blocks under a plugin's hook or probe is not this
//! proof's business: the logger runs inside a *callout*
//! (`usrcu::runtime::callouts`), which Tasks grace periods count as part of
//! the hook that called it (red team 9, `redteam9_blocking_logger.rs`;
//! red team 10, `redteam10_logging_hook.rs`).
//!
//! # The order of scans and grace periods
//!
//! A scan cannot look at a *running* thread (no system call reads its
//! registers), and a thread inside a handler runs between its sleeps. So a
//! thread seen interrupted in the object stays a *suspect* until a scan
//! sees it blocked without such a frame, or gone; while any suspect is
//! left, the proof waits (within the unload's budget, then a Zombie naming
//! them, `InterruptedInObject`). Once none is left, it waits for a Tasks
//! grace period that starts after that scan (a thread back inside a hook,
//! running, holds it until it leaves), then scans again; a scan that finds
//! a suspect starts the sequence over. Seen failing without the suspects
//! (a handler asleep in 1 ms naps, seen running by one scan, let the
//! unload through: 1 crash in 9 runs of `loader_interrupted`'s host-code
//! case).
//!
//! A running thread that blocks a handled signal is probably inside that
//! signal's handler, whose stack no scan can read while it runs: it holds
//! the proof too, until seen running without it, blocked without such a
//! frame, or gone ([`in_a_handler`]). Without this, under load (a thread
//! waiting for a CPU after each nap reads as running), every scan could
//! see the napping handler running: the same case crashed 1 run in 24
//! under two CPU hogs. A signal the thread blocks *at rest* does not count:
//! its mask at rest is learned, afresh by each proof, when it is seen blocked with no signal frame
//! anywhere on its stack ([`learn_rest_mask`]; while such threads hold the
//! proof, it watches them every 20 µs or so between scans for that moment),
//! so a busy worker that blocks a handled signal for good holds no unload
//! once it has been seen blocked once. What is left: a handler installed
//! with `SA_NODEFER` (its signal is not blocked while it runs) seen only
//! while it runs, by every scan; a thread that unblocks a signal it blocked
//! at rest, enters its handler before any scan reads its mask again, and
//! is then only seen running; or a *second* signal, delivered while the
//! same hook runs during that grace period, whose handler sleeps past the
//! last scan and returns after the unmap. The `usrcu::tasks` caveats say
//! so.
//!
//! The proof is skipped when the process has never used Tasks RCU (no
//! hook slot ever set, no Tasks grace period ever started): then no code
//! of the object ran as a Tasks reader, and every other way into the
//! object (the liveness gate's SRCU read sections, Tasks Trace probes,
//! callbacks, which a barrier waits for) has a marker that a sleeping
//! handler does not clear. (Normal tracepoint probes of the object are
//! retired with a Tasks grace period, by the probe notifier or by the
//! plugin's own unregister, before this proof runs.)
//!
//! Cost: nothing without Tasks RCU (0.2 µs, step "unload: proof:
//! interrupted" of `cargo run --release -p usrcu-benches --example
//! unload_phases`, 2-vCPU development VM, 2026-12-02; 44 µs there for a
//! first version of the scan that ran ungated); with it, a `/proc` read
//! per thread, the stacks of the blocked ones, and one Tasks grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{Proof, UnloadCx};
use crate::report::ZombieCause;

/// See the module documentation.
pub(crate) struct Interrupted;

/// Most bytes of one stack read from a stack pointer up: 16 MiB, twice a
/// main thread's default stack (red team 10: a handler under a 2 MiB local
/// buffer put its frame past the first limit, 1 MiB). Stacks end sooner,
/// at the end of their mapping; the limit bounds an alternate stack inside
/// a large heap mapping.
const SCAN_LIMIT: usize = 16 << 20;

/// On x86_64, the offsets in `struct rt_sigframe` (the restorer at 0, the
/// `ucontext` at 8, its `uc_mcontext` 40 bytes further) of the saved `rsp`
/// (`gregs[15]`) and `rip` (`gregs[16]`).
const FRAME_RSP: usize = 8 + 40 + 15 * 8;
const FRAME_RIP: usize = 8 + 40 + 16 * 8;

impl Proof for Interrupted {
    fn prove(&self, cx: &mut UnloadCx<'_>) -> Result<(), ZombieCause> {
        if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            return Ok(());
        }
        // Without Tasks RCU no code of the object ran as a marker-less
        // reader (see the module docs).
        if !(usrcu::tasks::hooks_ever_set() || usrcu::tasks::get_state().0 > 1) {
            return Ok(());
        }
        // Masks at rest are learned afresh by each proof: one learned at an
        // earlier unload says nothing of the time since, when no scan read
        // the thread's mask (it may have unblocked the signal and be inside
        // its handler now). Another unload's proof running meanwhile only
        // learns them again.
        crate::lock(&REST_MASKS).clear();
        let mut nap = Duration::from_micros(50);
        // Threads seen interrupted in the object and not seen since blocked
        // outside it (a running thread may be between two sleeps of the
        // handler, or back in the hook).
        let mut suspects = BTreeSet::new();
        // Threads seen running inside a signal handler (`Seen::InHandler`)
        // and not seen since out of it: their stacks could not be read.
        let mut in_handler = BTreeSet::new();
        // A scan without suspects was followed by a Tasks grace period.
        let mut waited = false;
        loop {
            let now = scan(cx, &in_handler);
            suspects.retain(|t| matches!(now.get(t), Some(Seen::Running | Seen::InHandler | Seen::Interrupted)));
            suspects.extend(now.iter().filter(|(_, s)| **s == Seen::Interrupted).map(|(t, _)| *t));
            in_handler.retain(|t| matches!(now.get(t), Some(Seen::InHandler | Seen::Interrupted)));
            in_handler.extend(now.iter().filter(|(_, s)| **s == Seen::InHandler).map(|(t, _)| *t));
            if suspects.is_empty() && in_handler.is_empty() {
                if waited {
                    return Ok(());
                }
                // The grace period after this clean scan; an earlier
                // attempt's, asked for after its own clean scan, serves as
                // well if no scan since found a suspect (with a short
                // `unload_timeout` a fresh one each retry never completes).
                let cookie = *crate::lock(&cx.module.interrupted_cookie).get_or_insert_with(usrcu::tasks::start_poll);
                if !cookie.wait_timeout(cx.time_left()) {
                    return Err(ZombieCause::HooksBusy);
                }
                waited = true;
                continue;
            }
            *crate::lock(&cx.module.interrupted_cookie) = None;
            waited = false;
            if Instant::now() >= cx.deadline {
                return Err(ZombieCause::InterruptedInObject {
                    threads: suspects.union(&in_handler).copied().collect(),
                });
            }
            // Meanwhile, watch the threads held as inside a handler for a
            // moment where their mask at rest can be learned: a busy worker
            // that blocks a handled signal for good, seen blocked a few
            // hundred microseconds in each 20 ms, would rarely be caught by
            // the scans alone.
            watch(&in_handler, nap.min(cx.time_left()));
            nap = (nap * 2).min(Duration::from_millis(5));
        }
    }
}

/// What one scan saw of a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Running: its registers and stack cannot be read.
    Running,
    /// Running (or runnable) with a handled signal blocked that it does not
    /// block at rest: probably inside that signal's handler, which may
    /// sleep over the object's code between runs (see [`in_a_handler`]).
    InHandler,
    /// Blocked, and not interrupted in the object.
    Clear,
    /// Blocked inside a signal handler that interrupted the object's code,
    /// or blocked in that code.
    Interrupted,
}

/// Every other thread of the process, as seen now (see the module docs);
/// threads that have gone are absent. For the threads of `in_handler` seen
/// blocked and clean, their mask at rest is learned ([`learn_rest_mask`]).
fn scan(cx: &UnloadCx<'_>, in_handler: &BTreeSet<i32>) -> BTreeMap<i32, Seen> {
    let restorers = restorers();
    let handled = handled_signals();
    let mut seen = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return seen;
    };
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    let mut maps: Option<Vec<(usize, usize)>> = None;
    let mut buf = Vec::new();
    for tid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        if tid == me {
            continue;
        }
        let s = match blocked_at(tid) {
            None if !std::path::Path::new(&format!("/proc/self/task/{tid}")).exists() => continue,
            None if in_a_handler(tid, handled) => Seen::InHandler,
            None => Seen::Running,
            Some((_, pc)) if cx.contains(pc) => Seen::Interrupted,
            Some((sp, _)) => {
                let maps = maps.get_or_insert_with(readable_mappings);
                if frames_into_object(cx, maps, &restorers, sp, &mut buf) {
                    Seen::Interrupted
                } else {
                    if in_handler.contains(&tid) {
                        learn_rest_mask(tid, &restorers, &mut buf);
                    }
                    Seen::Clear
                }
            }
        };
        seen.insert(tid, s);
    }
    // Masks at rest of threads that have gone.
    crate::lock(&REST_MASKS).retain(|tid, _| seen.contains_key(tid));
    seen
}

/// The signals (bit `sig - 1`) whose action is a handler, or `SIG_DFL`
/// with `SA_RESETHAND`: a one-shot handler, reset as it was delivered (the
/// kernel sets only the handler to `SIG_DFL` and keeps the flags).
///
/// A restorer alone does not make a handler: glibc's `sigaction` and
/// `signal` add `SA_RESTORER` to every action, `SIG_DFL` included, and
/// counting those made a busy worker that blocks a signal reset to its
/// default action hold every unload to a Zombie (review 12,
/// `rv12_unload_checks.rs`).
fn handled_signals() -> u64 {
    (1..=libc::SIGRTMAX().min(64))
        .filter(|&sig| super::signals::raw_action_of(sig).is_some_and(|a| is_handled(&a)))
        .fold(0, |m, sig| m | 1 << (sig - 1))
}

/// Does `a` run a handler on delivery, or is it a one-shot handler's
/// action reset as it was delivered (see [`handled_signals`])?
fn is_handled(a: &libc::sigaction) -> bool {
    match a.sa_sigaction {
        libc::SIG_IGN => false,
        libc::SIG_DFL => a.sa_flags & libc::SA_RESETHAND != 0,
        _ => true,
    }
}

/// Does thread `tid` block a signal of `handled` (`SigBlk` of
/// `/proc/self/task/<tid>/status`) that it does not block at rest (see
/// [`learn_rest_mask`])? A handler runs with its own signal blocked (unless
/// `SA_NODEFER`), so a running thread that blocks one is probably inside a
/// handler, and a scan cannot read its stack: a handler that naps over the
/// object's code is seen running between its naps, and under load a thread
/// waiting for a CPU after each nap reads as running too
/// (`loader_interrupted`'s host-code case crashed 1 run in 12 to 24 under
/// two CPU hogs when such a thread counted as plain running).
///
/// A signal the thread blocks at rest, as learned when it was last seen
/// blocked outside every handler, does not count: its handler cannot have
/// been entered on this thread since, unless the thread unblocked it
/// meanwhile (then a scan that sees it running without the signal drops
/// the signal from its mask at rest; one that sees it only blocked does
/// not read its mask, and a new mask at rest is learned only while the
/// thread holds the proof). Without this, a
/// busy host worker that blocks a handled signal for good (the usual
/// "block in the workers, handle in one thread") held every unload to a
/// Zombie at its timeout (review 12, `rv12_unload_checks.rs`). Until a
/// thread's mask at rest is known, every handled signal it blocks counts.
fn in_a_handler(tid: i32, handled: u64) -> bool {
    // The test switch `in-handler` (tests only) shows the check is needed.
    if handled == 0 || super::test_switch::skipped("in-handler") {
        return false;
    }
    let Some(now) = status_of(tid) else {
        return false;
    };
    // Narrowed by every reading, even one that blocks no handled signal.
    let at_rest = rest_mask(tid, now.blocked);
    now.blocked & handled & !at_rest != 0
}

/// What `/proc/self/task/<tid>/status` says of a thread's signal mask and
/// voluntary switches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Status {
    /// `SigBlk`: the blocked signals, bit `sig - 1`.
    blocked: u64,
    /// `voluntary_ctxt_switches`.
    voluntary: u64,
}

fn status_of(tid: i32) -> Option<Status> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let field = |name: &str, radix: u32| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), radix).ok())
    };
    Some(Status {
        blocked: field("SigBlk:", 16)?,
        voluntary: field("voluntary_ctxt_switches:", 10)?,
    })
}

/// A thread's start time (field 22 of `/proc/self/task/<tid>/stat`, clock
/// ticks since boot): with its tid, it names the thread (a tid is reused
/// once its thread has gone).
fn start_time(tid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The fields after the name (which may hold spaces and parentheses)
    // start at field 3.
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Each thread's signal mask at rest, as learned by [`learn_rest_mask`] and
/// narrowed since: tid, then the thread's start time and the mask.
static REST_MASKS: std::sync::Mutex<BTreeMap<i32, (u64, u64)>> = std::sync::Mutex::new(BTreeMap::new());

/// Thread `tid`'s mask at rest (0 when not known), narrowed first to the
/// signals of `blocked`, its mask now: a signal it does not block now is
/// one it does not block for good.
fn rest_mask(tid: i32, blocked: u64) -> u64 {
    // The test switch `rest-mask` (tests only) shows the rest mask is needed.
    if super::test_switch::skipped("rest-mask") {
        return 0;
    }
    let mut masks = crate::lock(&REST_MASKS);
    let Some(&(start, mask)) = masks.get(&tid) else {
        return 0;
    };
    if start_time(tid) != Some(start) {
        // Another thread with a reused tid.
        masks.remove(&tid);
        return 0;
    }
    let mask = mask & blocked;
    masks.insert(tid, (start, mask));
    mask
}

/// Learn thread `tid`'s signal mask at rest, if it can be known now: the
/// thread is blocked, no word of its whole stack is a signal frame's
/// restorer (it is inside no handler, and was in none while blocked), and
/// its `SigBlk` and voluntary-switch count read the same before and after
/// (the mask read belongs to that same block: it did not wake, run a
/// handler, and block again meanwhile). True if learned.
fn learn_rest_mask(tid: i32, restorers: &[usize], buf: &mut Vec<u8>) -> bool {
    let Some(before) = status_of(tid) else {
        return false;
    };
    let Some((sp, _)) = blocked_at(tid) else {
        return false;
    };
    // Mappings read now: the thread's stack may be younger than any list
    // read before.
    let maps = readable_mappings();
    let Some(words) = read_whole_stack(&maps, sp, buf) else {
        return false;
    };
    if words.iter().any(|w| restorers.contains(w)) {
        return false;
    }
    if status_of(tid) != Some(before) {
        return false;
    }
    let Some(start) = start_time(tid) else {
        return false;
    };
    crate::lock(&REST_MASKS).insert(tid, (start, before.blocked));
    true
}

/// How long the watch sleeps between two looks at its threads.
const WATCH_NAP: Duration = Duration::from_micros(20);

/// For `for_`, look at each thread of `tids` every [`WATCH_NAP`] or so and
/// learn its mask at rest when it is seen blocked and clean; returns early
/// once every one is learned (the next scan then counts them by it).
fn watch(tids: &BTreeSet<i32>, for_: Duration) {
    let until = Instant::now() + for_;
    let mut left: Vec<i32> = tids.iter().copied().collect();
    let restorers = if left.is_empty() { Vec::new() } else { restorers() };
    let mut buf = Vec::new();
    loop {
        left.retain(|&tid| !(blocked_at(tid).is_some() && learn_rest_mask(tid, &restorers, &mut buf)));
        let now = Instant::now();
        if left.is_empty() || now >= until {
            return;
        }
        std::thread::sleep(WATCH_NAP.min(until - now));
    }
}

/// A blocked thread's user stack pointer and program counter, from
/// `/proc/self/task/<tid>/syscall`: "running", or the system call number,
/// its six arguments, then the two; "-1 sp pc" when blocked outside a
/// system call. `None` while it runs, or once it has gone.
fn blocked_at(tid: i32) -> Option<(usize, usize)> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).ok()?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    let (sp, pc) = match fields.as_slice() {
        [nr, sp, pc] if *nr == "-1" => (sp, pc),
        [_, _, _, _, _, _, _, sp, pc] => (sp, pc),
        _ => return None,
    };
    let hex = |s: &str| usize::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    Some((hex(sp)?, hex(pc)?))
}

/// Does the stack above `sp` hold a signal frame whose interrupted context
/// is in the object?
fn frames_into_object(
    cx: &UnloadCx<'_>,
    maps: &[(usize, usize)],
    restorers: &[usize],
    sp: usize,
    buf: &mut Vec<u8>,
) -> bool {
    if restorers.is_empty() {
        return false;
    }
    let words = read_stack(maps, sp, buf);
    let word = |i: usize| words.get(i).copied();
    for (i, w) in words.iter().enumerate() {
        if !restorers.contains(w) {
            continue;
        }
        let (Some(rsp), Some(rip)) = (word(i + FRAME_RSP / 8), word(i + FRAME_RIP / 8)) else {
            continue;
        };
        if cx.contains(rip) {
            return true;
        }
        // The interrupted stack, which may be another mapping (the handler
        // ran on an alternate stack).
        let mut inner = Vec::new();
        if read_stack(maps, rsp, &mut inner).iter().any(|&w| cx.contains(w)) {
            return true;
        }
    }
    false
}

/// The words from `sp` to the end of its mapping (at most [`SCAN_LIMIT`]
/// bytes), as far as they could be read.
fn read_stack(maps: &[(usize, usize)], sp: usize, buf: &mut Vec<u8>) -> Vec<usize> {
    let sp = sp & !7;
    let Some(&(_, end)) = maps.iter().find(|(s, e)| (*s..*e).contains(&sp)) else {
        return Vec::new();
    };
    let len = (end - sp).min(SCAN_LIMIT);
    buf.clear();
    buf.resize(len, 0);
    let got = crate::thread_list::read_bytes(sp, buf);
    buf[..got - got % 8]
        .chunks_exact(8)
        .map(|c| usize::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// The words from `sp` to the end of its mapping, if they could all be read
/// and the mapping ends within [`SCAN_LIMIT`] bytes.
fn read_whole_stack(maps: &[(usize, usize)], sp: usize, buf: &mut Vec<u8>) -> Option<Vec<usize>> {
    let sp = sp & !7;
    let &(_, end) = maps.iter().find(|(s, e)| (*s..*e).contains(&sp))?;
    if end - sp > SCAN_LIMIT {
        return None;
    }
    let words = read_stack(maps, sp, buf);
    (words.len() * 8 == end - sp).then_some(words)
}

/// Every readable mapping of the process, from `/proc/self/maps`.
fn readable_mappings() -> Vec<(usize, usize)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    crate::address_space::maps_lines(&text)
        .filter(|(_, _, perms)| perms.starts_with('r'))
        .map(|(a, b, _)| (a, b))
        .collect()
}

/// `SA_RESTORER` (x86 `asm/signal.h`; not in the `libc` crate): the
/// action carries a return trampoline, which x86_64 requires of every
/// handler the kernel delivers to.
const SA_RESTORER: libc::c_int = 0x0400_0000;

/// The `sa_restorer` of every signal action the kernel holds now with one,
/// plus every one seen before (a handler may be replaced while a thread
/// still sleeps in it).
///
/// Every disposition counts, not only handlers: a one-shot (`SA_RESETHAND`)
/// handler is reset to `SIG_DFL` as it is delivered, while it runs, and
/// the kernel keeps its restorer and flags in the reset action; so does an
/// action that glibc's `sigaction` or `signal` set to `SIG_DFL` or
/// `SIG_IGN`. Counting only installed handlers missed a one-shot handler
/// asleep over a hook in a process with no other handler: the plugin was
/// unmapped under it (red team 10, `redteam10_oneshot_handler.rs`).
fn restorers() -> Vec<usize> {
    static SEEN: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
    let mut seen = crate::lock(&SEEN);
    for sig in 1..=libc::SIGRTMAX() {
        let Some(a) = super::signals::raw_action_of(sig) else {
            continue;
        };
        if a.sa_flags & SA_RESTORER == 0 {
            continue;
        }
        let Some(r) = a.sa_restorer else {
            continue;
        };
        let r = r as usize;
        if !seen.contains(&r) {
            seen.push(r);
        }
    }
    seen.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_thread_has_a_stack_pointer_and_a_running_one_does_not() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ttx, trx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            ttx.send(unsafe { libc::gettid() }).unwrap();
            rx.recv().unwrap();
        });
        let tid = trx.recv().unwrap();
        let mut at = None;
        for _ in 0..10_000 {
            at = blocked_at(tid);
            if at.is_some() {
                break;
            }
            std::thread::yield_now();
        }
        let (sp, _pc) = at.expect("the thread blocks in recv");
        let maps = readable_mappings();
        assert!(
            maps.iter().any(|(s, e)| (*s..*e).contains(&sp)),
            "its stack pointer lies in a readable mapping"
        );
        tx.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(blocked_at(tid), None, "a thread that has gone has no stack pointer");
    }

    static ONE_SHOT_RAN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    extern "C" fn one_shot(_: libc::c_int) {
        ONE_SHOT_RAN.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// What the proof relies on for one-shot handlers: once delivered, the
    /// action reads `SIG_DFL` and still carries its restorer, which the
    /// proof then counts.
    #[test]
    fn a_one_shot_handlers_reset_action_keeps_its_restorer() {
        // SAFETY: plain sigaction calls on SIGURG, which nothing else in this
        // test binary uses; the handler only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = one_shot as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_RESETHAND;
            assert_eq!(libc::sigaction(libc::SIGURG, &sa, std::ptr::null_mut()), 0);
            assert_eq!(libc::raise(libc::SIGURG), 0);
        }
        assert!(ONE_SHOT_RAN.load(std::sync::atomic::Ordering::SeqCst));
        let a = super::super::signals::raw_action_of(libc::SIGURG).unwrap();
        assert_eq!(a.sa_sigaction, libc::SIG_DFL, "the kernel reset the one-shot action");
        assert_ne!(a.sa_flags & SA_RESTORER, 0);
        let r = a.sa_restorer.expect("the reset action keeps its restorer") as usize;
        assert!(restorers().contains(&r));
        assert_ne!(
            a.sa_flags & libc::SA_RESETHAND,
            0,
            "the kernel keeps the reset action's flags"
        );
        assert!(
            is_handled(&a),
            "a one-shot handler's reset action still counts as handled"
        );
        assert_ne!(handled_signals() & 1 << (libc::SIGURG - 1), 0);
    }

    /// glibc gives an action set to `SIG_DFL` a restorer too: that alone
    /// is no handler.
    #[test]
    fn a_signal_reset_to_its_default_through_libc_is_not_handled() {
        // SAFETY: SIG_DFL is a valid disposition for SIGXFSZ, which nothing
        // in this test binary handles.
        assert_ne!(unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_DFL) }, libc::SIG_ERR);
        let a = super::super::signals::raw_action_of(libc::SIGXFSZ).unwrap();
        assert_eq!(a.sa_sigaction, libc::SIG_DFL);
        assert!(!is_handled(&a), "flags {:#x}", a.sa_flags);
        assert_eq!(handled_signals() & 1 << (libc::SIGXFSZ - 1), 0);
    }

    static NAPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static WAKE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    extern "C" fn napper(_: libc::c_int) {
        use std::sync::atomic::Ordering::SeqCst;
        NAPPING.store(true, SeqCst);
        let nap = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        while !WAKE.load(SeqCst) {
            // SAFETY: nanosleep with a valid timespec; async-signal-safe.
            unsafe { libc::nanosleep(&nap, std::ptr::null_mut()) };
        }
    }

    /// A thread parked outside every handler has its mask at rest learned,
    /// with the signal it blocks for good; one asleep inside a handler
    /// (its signal blocked by the kernel) does not, and counts as inside a
    /// handler by its mask.
    #[test]
    fn a_rest_mask_is_learned_outside_handlers_only() {
        use std::sync::atomic::Ordering::SeqCst;
        let sig = libc::SIGTTIN;
        let bit = 1u64 << (sig - 1);
        // SAFETY: a plain handler (atomics and nanosleep only) for SIGTTIN,
        // which nothing else in this test binary uses.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = napper as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ttx, trx) = std::sync::mpsc::channel();
        let blocker = std::thread::spawn(move || {
            // SAFETY: a zeroed set, emptied, given `sig`; this thread only.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()), 0);
                ttx.send(libc::gettid()).unwrap();
            }
            rx.recv().unwrap();
        });
        let tid = trx.recv().unwrap();
        let restorers = restorers();
        let mut buf = Vec::new();
        let learned = (0..10_000).any(|_| {
            std::thread::yield_now();
            learn_rest_mask(tid, &restorers, &mut buf)
        });
        assert!(learned, "the parked thread's mask at rest is learned");
        assert_ne!(rest_mask(tid, !0) & bit, 0);
        assert!(!in_a_handler(tid, bit), "blocking its signal for good is no handler");
        tx.send(()).unwrap();
        blocker.join().unwrap();

        let (ttx, trx) = std::sync::mpsc::channel();
        let (gtx, grx) = std::sync::mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            ttx.send(unsafe { libc::gettid() }).unwrap();
            grx.recv().unwrap();
        });
        let tid = trx.recv().unwrap();
        use std::os::unix::thread::JoinHandleExt;
        // SAFETY: the thread is alive (it waits on `grx`).
        let killed = unsafe { libc::pthread_kill(sleeper.as_pthread_t() as libc::pthread_t, sig) };
        assert_eq!(killed, 0);
        while !NAPPING.load(SeqCst) {
            std::thread::yield_now();
        }
        let mut seen_blocked = false;
        for _ in 0..2_000 {
            seen_blocked |= blocked_at(tid).is_some();
            assert!(
                !learn_rest_mask(tid, &restorers, &mut buf),
                "no mask at rest learned inside a handler"
            );
        }
        assert!(seen_blocked, "the handler naps");
        assert_eq!(rest_mask(tid, !0), 0);
        assert!(in_a_handler(tid, bit), "its signal, blocked by the kernel, counts");
        WAKE.store(true, SeqCst);
        gtx.send(()).unwrap();
        sleeper.join().unwrap();
    }

    #[test]
    fn glibc_restorer_is_found_for_an_installed_handler() {
        // Rust's runtime installs SIGSEGV and SIGBUS handlers in test binaries.
        assert!(!restorers().is_empty());
    }
}
