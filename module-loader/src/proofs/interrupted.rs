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
//! A running thread that blocks a handled signal may be inside that
//! signal's handler, whose stack no scan can read while it runs: the scan
//! watches it, about every 20 µs for up to 50 ms ([`watch`]), and sees it
//! by its first sighting blocked (its stack then read as above), or running
//! without such a signal, or gone; if none comes, it holds the proof
//! ([`in_a_handler`]) until a later scan sees it so. Without this, under
//! load (a thread waiting for a CPU after each nap reads as running), every
//! scan could see the napping handler running: the same case crashed 1 run
//! in 24 under two CPU hogs. Nothing learned of the thread before counts: a
//! rule that cleared a running thread whose mask equalled its mask "at
//! rest" (learned when seen blocked outside every handler) was unsound, as
//! the thread may let the signal in for a moment and run its handler with
//! that very mask (red team 14, `redteam14_interrupted.rs`, SIGSEGV 5 of
//! 5). A busy worker that blocks a handled signal for good holds no unload
//! as long as it blocks now and then (review 12's: 100 µs every 20 ms;
//! `rv12_unload_checks.rs`); one that never blocks holds the proof to a
//! Zombie at its timeout (it holds Tasks grace periods too, unless it
//! switches voluntarily without ever being seen blocked). What is left: a
//! handler installed with `SA_NODEFER` (its signal is not blocked while it
//! runs) seen only while it runs, by every scan; or a signal delivered
//! after the clean scan that precedes the grace period, to a thread still
//! running the hook: its handler's sleep ends that grace period, and if the
//! handler has returned by the last scan the thread is back in the hook
//! (running, or blocked without a signal frame) when the object is
//! unmapped. The `usrcu::tasks` caveats say so.
//!
//! The proof runs only when code of the object (or of a library it is the
//! last user of) may have run as a Tasks reader, by the records the host's
//! runtime keeps, not by what the plugin declared: a hook slot ever held
//! one of its functions, or a slot lying in it was ever set
//! (`usrcu::tasks::hooks_ever_into`, noted at every store into a slot,
//! whichever copy of the crate made it); or a probe whose trampoline,
//! function or data lies in it was ever attached to a normal tracepoint of
//! any object (noted in the same record, `usrcu::tasks::note_reader_code`,
//! by the code that publishes the probe array, whichever copy it is). Otherwise no code of
//! the object ran as a Tasks reader, and every other way into the object
//! (the liveness gate's SRCU read sections, Tasks Trace probes, callbacks,
//! which a barrier waits for) has a marker that a sleeping handler does not
//! clear; a thread that computes without ever blocking, which holds every
//! Tasks grace period, then does not keep the object mapped. (Normal
//! tracepoint probes of the object are retired with a Tasks grace period,
//! by the probe notifier or by the plugin's own unregister, before this
//! proof runs.) The records of an object are dropped just before it is
//! closed, once every proof has passed (`loader.rs`, `teardown`).
//!
//! Not in the records, so not covered: a *host* hook (a host function in a
//! slot) that calls the object's code through a table of the host's own.
//! Such a host must remove the object's entries and call
//! `usrcu::tasks::synchronize()` in its `Going` notifier, which runs before
//! this proof and before `dlclose`; that grace period is all it gets (a
//! thread asleep in a signal handler over that code is not looked for).
//! Before the records, the proof ran whenever any slot had ever been set or
//! any Tasks grace period started in the process (test switch
//! `__set_tasks_wait_always`), which made every unload wait for a Tasks
//! grace period that one computing host thread holds: every unload a
//! `Zombie` (`newbie_cpu_bound_host_thread.rs`).
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
        // Unless a hook slot or a normal tracepoint's probe ever reached
        // the object, no code of it ran as a marker-less reader (see the
        // module docs).
        if !ran_as_tasks_reader(cx) {
            return Ok(());
        }
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
            let now = scan(cx);
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
                // Not if a hook or probe of the object was recorded since:
                // a thread may have entered it after that grace period
                // began (red team 16).
                let last = cx
                    .objects
                    .iter()
                    .map(|o| usrcu::tasks::hooks_last_into(&o.segments))
                    .max()
                    .unwrap_or(0);
                let cookie = crate::hook_slots::kept_or_fresh(&cx.module.interrupted_cookie, last, false);
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
            std::thread::sleep(nap.min(cx.time_left()));
            nap = (nap * 2).min(Duration::from_millis(5));
        }
    }
}

/// May code of the objects (the module and the libraries it is the last
/// user of) have run as a Tasks reader? The runtime's record says whether
/// a hook slot ever held one of their functions or a slot in them was ever
/// set, or a probe with code or data in them was ever attached to a normal
/// tracepoint ([`usrcu::tasks::hooks_ever_into`], which records both).
/// Under the test switch `__set_tasks_wait_always`: whether the process
/// ever used Tasks RCU (the rule before the record).
fn ran_as_tasks_reader(cx: &UnloadCx<'_>) -> bool {
    if crate::hook_slots::tasks_wait_always() {
        return usrcu::tasks::hooks_ever_set() || usrcu::tasks::get_state().0 > 1;
    }
    cx.objects.iter().any(|o| usrcu::tasks::hooks_ever_into(&o.segments))
}

/// What one scan saw of a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Running: its registers and stack cannot be read.
    Running,
    /// Running (or runnable) with a handled signal blocked, and not seen
    /// blocked during the scan's watch: maybe inside that signal's handler,
    /// which may sleep over the object's code between runs (see
    /// [`in_a_handler`]).
    InHandler,
    /// Blocked, and not interrupted in the object.
    Clear,
    /// Blocked inside a signal handler that interrupted the object's code,
    /// or blocked in that code.
    Interrupted,
}

/// Every other thread of the process, as seen now (see the module docs);
/// threads that have gone are absent. A thread first seen running with a
/// handled signal blocked is watched for a while ([`watch`]) and seen by
/// its first sighting blocked, or out of the handler; `InHandler` if none
/// comes.
fn scan(cx: &UnloadCx<'_>) -> BTreeMap<i32, Seen> {
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
            None if !task_exists(tid) => continue,
            None if in_a_handler(tid, handled) => Seen::InHandler,
            None => Seen::Running,
            Some((sp, pc)) => {
                let maps = maps.get_or_insert_with(readable_mappings);
                seen_blocked(cx, maps, &restorers, sp, pc, &mut buf)
            }
        };
        seen.insert(tid, s);
    }
    let held: Vec<i32> = seen
        .iter()
        .filter(|(_, s)| **s == Seen::InHandler)
        .map(|(t, _)| *t)
        .collect();
    if held.is_empty() || super::test_switch::skipped("watch") {
        return seen;
    }
    // Mappings read again: a stack may be younger than the list above.
    let maps = readable_mappings();
    for (tid, sighting) in watch(&held, handled, WATCH_LIMIT.min(cx.time_left())) {
        match sighting {
            Sighting::Gone => {
                seen.remove(&tid);
            }
            Sighting::OutOfHandler => {
                seen.insert(tid, Seen::Running);
            }
            Sighting::Blocked(sp, pc) => {
                seen.insert(tid, seen_blocked(cx, &maps, &restorers, sp, pc, &mut buf));
            }
        }
    }
    seen
}

/// A thread seen blocked at `sp` and `pc`: interrupted in the object, or
/// clear.
fn seen_blocked(
    cx: &UnloadCx<'_>,
    maps: &[(usize, usize)],
    restorers: &[usize],
    sp: usize,
    pc: usize,
    buf: &mut Vec<u8>,
) -> Seen {
    if cx.contains(pc) || frames_into_object(cx, maps, restorers, sp, buf) {
        Seen::Interrupted
    } else {
        Seen::Clear
    }
}

fn task_exists(tid: i32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
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
/// `/proc/self/task/<tid>/status`)? A handler runs with its own signal
/// blocked (unless `SA_NODEFER`), so a running thread that blocks one may
/// be inside a handler, and no scan can read its stack: a handler that naps
/// over the object's code is seen running between its naps, and under load
/// a thread waiting for a CPU after each nap reads as running too
/// (`loader_interrupted`'s host-code case crashed 1 run in 12 to 24 under
/// two CPU hogs when such a thread counted as plain running).
///
/// Nothing about the thread's past clears it: a signal it blocked whenever
/// it was seen may have been let in for a moment since (red team 14,
/// `redteam14_interrupted.rs`: a worker that blocks SIGUSR1 "at rest",
/// seen parked with it blocked, unblocks it under a hook with one pending;
/// its handler runs with exactly the mask it had at rest, and a rule that
/// cleared a running thread by its mask at rest let the plugin be unmapped
/// under it, SIGSEGV 5 of 5). Such a thread is watched instead
/// ([`watch`]) until it is seen blocked, whose stack can be read.
fn in_a_handler(tid: i32, handled: u64) -> bool {
    // The test switch `in-handler` (tests only) shows the check is needed.
    if handled == 0 || super::test_switch::skipped("in-handler") {
        return false;
    }
    blocked_signals(tid).is_some_and(|b| b & handled != 0)
}

/// `SigBlk` of `/proc/self/task/<tid>/status`: the signals thread `tid`
/// blocks, bit `sig - 1`.
fn blocked_signals(tid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let v = text.lines().find_map(|l| l.strip_prefix("SigBlk:"))?;
    u64::from_str_radix(v.trim(), 16).ok()
}

/// How long one scan watches the threads it saw running with a handled
/// signal blocked, for a moment where each is blocked: longer than the
/// busy stretch of review 12's worker (20 ms of compute, then a 100 µs
/// nap), with room for a late look or two.
const WATCH_LIMIT: Duration = Duration::from_millis(50);

/// How long the watch sleeps between two looks at its threads.
const WATCH_NAP: Duration = Duration::from_micros(20);

/// What the watch saw of a thread first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sighting {
    /// Blocked, at this stack pointer and program counter.
    Blocked(usize, usize),
    /// Running with no signal of `handled` blocked: out of every handler of
    /// those signals (but one installed with `SA_NODEFER`).
    OutOfHandler,
    /// Gone.
    Gone,
}

/// For at most `for_`, look at each thread of `tids` every [`WATCH_NAP`]
/// or so until it is seen blocked, seen running without a signal of
/// `handled` blocked, or gone; returns what was seen of each, in no
/// order. A thread that stays running with such a signal blocked (a
/// handler that mostly runs, or a worker that never blocks) is absent.
fn watch(tids: &[i32], handled: u64, for_: Duration) -> Vec<(i32, Sighting)> {
    let until = Instant::now() + for_;
    let mut left = tids.to_vec();
    let mut got = Vec::new();
    loop {
        left.retain(|&tid| {
            let s = match blocked_at(tid) {
                Some((sp, pc)) => Sighting::Blocked(sp, pc),
                None if !task_exists(tid) => Sighting::Gone,
                None if !in_a_handler(tid, handled) => Sighting::OutOfHandler,
                None => return true,
            };
            got.push((tid, s));
            false
        });
        let now = Instant::now();
        if left.is_empty() || now >= until {
            return got;
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
        // Bounded by time, not by a count of yields: a loaded machine may
        // take long to run the thread into `recv`.
        let mut at = None;
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < give_up {
            at = blocked_at(tid);
            if at.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
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

    /// A worker that blocks a handled signal for good and computes 20 ms
    /// between 100 µs naps (review 12's) counts as maybe inside a handler
    /// whenever it runs, and the watch sees it blocked within its limit; a
    /// thread asleep inside the handler is seen blocked with the handler's
    /// signal frame on its stack; one that only computes is not seen.
    #[test]
    fn the_watch_sees_a_busy_worker_blocked_and_a_handler_by_its_frame() {
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
        let spinner = |nap_us: u64, stop: std::sync::Arc<std::sync::atomic::AtomicBool>| {
            let (ttx, trx) = std::sync::mpsc::channel();
            let t = std::thread::spawn(move || {
                // SAFETY: a zeroed set, emptied, given `sig`; this thread only.
                unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, sig);
                    assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()), 0);
                    ttx.send(libc::gettid()).unwrap();
                }
                while !stop.load(SeqCst) {
                    let t0 = Instant::now();
                    while t0.elapsed() < Duration::from_millis(20) {
                        std::hint::spin_loop();
                    }
                    if nap_us > 0 {
                        std::thread::sleep(Duration::from_micros(nap_us));
                    }
                }
            });
            (t, trx.recv().unwrap())
        };

        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (worker, tid) = spinner(100, stop.clone());
        assert!(in_a_handler(tid, bit) || blocked_at(tid).is_some());
        let seen = (0..20).find_map(|_| match watch(&[tid], bit, WATCH_LIMIT).as_slice() {
            [(t, Sighting::Blocked(..))] if *t == tid => Some(()),
            _ => None,
        });
        assert!(seen.is_some(), "the napping worker is seen blocked");
        stop.store(true, SeqCst);
        worker.join().unwrap();

        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (busy, tid) = spinner(0, stop.clone());
        let got = watch(&[tid], bit, Duration::from_millis(10));
        assert!(got.is_empty(), "a thread that never blocks is not seen: {got:?}");
        stop.store(true, SeqCst);
        busy.join().unwrap();

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
        let got = watch(&[tid], bit, WATCH_LIMIT);
        let [(_, Sighting::Blocked(sp, _))] = got.as_slice() else {
            panic!("the napping handler is seen blocked: {got:?}");
        };
        let restorers = restorers();
        let mut buf = Vec::new();
        let words = read_stack(&readable_mappings(), *sp, &mut buf);
        assert!(
            words.iter().any(|w| restorers.contains(w)),
            "its signal frame is on its stack"
        );
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
