//! Signal handlers in the object: a handler whose address lies in the
//! object (installed by the plugin's `init` or an ELF constructor, or by
//! host code with a function of the plugin, and not removed in `exit`)
//! is called by the kernel on the next delivery of its signal, to any
//! thread, long after the plugin's calls have returned. Neither glibc nor
//! the kernel removes it at `dlclose`, so after the unmap that delivery
//! jumps into unmapped memory and the host dies of `SIGSEGV` (seen:
//! `without_the_signal_proof_a_plugin_handler_kills_the_host_on_the_next_signal`
//! in `tests/tests/loader_signal_handler.rs`).
//!
//! Known from the kernel: `sigaction(sig, NULL, &old)` for every signal
//! from 1 to `SIGRTMAX` (one system call each, about 64 per unload; a
//! signal the call refuses, such as the two real-time signals glibc keeps
//! for itself, is skipped). A handler (`sa_handler` or, with `SA_SIGINFO`,
//! `sa_sigaction`: one field in the kernel's and libc's `sigaction`) other
//! than `SIG_DFL` and `SIG_IGN` whose address lies in the object keeps it
//! mapped as a Zombie naming the first such signal (the lowest number) and
//! its handler. The handler is left in place: resetting it would change
//! what the host's signals do behind its back, and the Zombie keeps the
//! handler's code mapped, so the signal still works. Unloading the zombie
//! again, once the handler is gone, unmaps it.
//!
//! Then the calling thread's alternate signal stack (`sigaltstack(NULL,
//! &old)`): a plugin's `init` may point the loading thread's alternate
//! stack at a static buffer of its own, and the next `SA_ONSTACK` signal
//! on that thread (Rust's own `SIGSEGV` handler is one) would have its
//! frame written into unmapped memory. Only the calling thread's stack can
//! be asked for (no system call reads another thread's): an alternate
//! stack the plugin set on any other thread is not seen.
//!
//! Cost: 11.9 µs median per unload, of an unload of 53.5 µs (best batch;
//! 48.5 µs with this proof switched off), on the 2-vCPU development VM,
//! 2026-12-02: `cargo run --release -p usrcu-benches --example
//! unload_phases`, step "unload: proof: signals" (about 190 ns per system
//! call there).
//!
//! The check is a snapshot taken after `exit`, while the module is `Going`:
//! no call into it runs, so none of its code installs a handler after the
//! snapshot. Host code that installs a plugin function as a handler after
//! the unload has been decided breaks the author's contract (it holds a
//! function pointer into the plugin past its unload).

use super::{Proof, UnloadCx};
use crate::report::ZombieCause;

/// See the module documentation.
pub(crate) struct Signals;

impl Proof for Signals {
    fn prove(&self, cx: &mut UnloadCx<'_>) -> Result<(), ZombieCause> {
        if let Some((signal, handler)) = handler_in(|a| cx.contains(a)) {
            return Err(ZombieCause::SignalHandlerInObject { signal, handler });
        }
        if let Some((base, size)) = alt_stack_in(|a| cx.contains(a)) {
            return Err(ZombieCause::SignalStackInObject { base, size });
        }
        Ok(())
    }
}

/// The first signal (lowest number) whose handler lies where `inside` says,
/// with that handler's address.
fn handler_in(inside: impl Fn(usize) -> bool) -> Option<(i32, usize)> {
    (1..=libc::SIGRTMAX()).find_map(|sig| {
        let handler = handler_of(sig)?;
        inside(handler).then_some((sig, handler))
    })
}

/// The handler installed for `sig`, if it is a function (not `SIG_DFL` or
/// `SIG_IGN`) and the kernel answers for `sig`.
fn handler_of(sig: i32) -> Option<usize> {
    // `sa_handler` and `sa_sigaction` share this field (a union in C).
    action_of(sig).map(|a| a.sa_sigaction)
}

/// The action installed for `sig` if it is a handler function (not
/// `SIG_DFL` or `SIG_IGN`) and the kernel answers for `sig` (it refuses
/// glibc's reserved 32 and 33).
pub(super) fn action_of(sig: i32) -> Option<libc::sigaction> {
    let old = raw_action_of(sig)?;
    (old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN).then_some(old)
}

/// The action the kernel holds for `sig`, whatever its disposition (`None`:
/// the kernel refuses `sig`, as glibc's reserved 32 and 33).
pub(super) fn raw_action_of(sig: i32) -> Option<libc::sigaction> {
    // SAFETY: an all-zero `sigaction` is a valid value of the plain C struct
    // (no handler, empty mask, no flags); it is only written to.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `old` is a valid, writable
    // `sigaction` for the duration of the call.
    if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
        return None;
    }
    Some(old)
}

/// The calling thread's alternate signal stack (base and size), if it is
/// enabled and lies, by either end, where `inside` says.
fn alt_stack_in(inside: impl Fn(usize) -> bool) -> Option<(usize, usize)> {
    // SAFETY: an all-zero `stack_t` is a valid value (null base, no flags,
    // size 0); it is only written to.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new stack only queries; `old` is valid and writable
    // for the duration of the call.
    if unsafe { libc::sigaltstack(std::ptr::null(), &mut old) } != 0 {
        return None;
    }
    if old.ss_flags & libc::SS_DISABLE != 0 || old.ss_size == 0 {
        return None;
    }
    let base = old.ss_sp as usize;
    let last = base.saturating_add(old.ss_size - 1);
    (inside(base) || inside(last)).then_some((base, old.ss_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn on_signal(_: libc::c_int) {}

    /// The query finds a handler installed in this process at its address,
    /// and only where the predicate says; it skips the signals glibc keeps
    /// (the call refuses them) without failing.
    #[test]
    fn a_handler_is_found_at_its_address_and_only_there() {
        let sig = libc::SIGWINCH;
        let addr = on_signal as extern "C" fn(libc::c_int) as usize;
        // SAFETY: an all-zero `sigaction` is valid; fields set below.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = addr;
        // SAFETY: as above; only written to.
        let mut prev: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: `act` is a valid action with a handler that does nothing
        // (async-signal-safe); `prev` receives the old one, restored below.
        assert_eq!(unsafe { libc::sigaction(sig, &act, &mut prev) }, 0);
        let found = handler_in(|a| a == addr);
        let elsewhere = handler_in(|a| a == addr + 1);
        // SAFETY: restores the action saved above.
        assert_eq!(unsafe { libc::sigaction(sig, &prev, std::ptr::null_mut()) }, 0);
        assert_eq!(found, Some((sig, addr)));
        assert_eq!(elsewhere, None);
        assert_eq!(handler_of(32), None, "glibc's reserved signal 32 is skipped");
    }
}
