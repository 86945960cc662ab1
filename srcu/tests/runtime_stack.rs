//! The runtime's threads get a stack size of their own (2 MiB, std's
//! default), whatever `RUST_MIN_STACK` says (`runtime/spawn.rs`): a
//! callback that needs 1 MiB of stack runs on the SRCU invoker, the Tasks
//! Trace thread and the Tasks thread of a process started with
//! `RUST_MIN_STACK=131072`. With the runtime's threads sized by the
//! environment instead, the first callback overflows its stack and the
//! child dies (seen failing: `spawn.rs` without `.stack_size(STACK)`).

use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "common/child.rs"]
mod child;

const CHILD: &str = "USRCU_TEST_RUNTIME_STACK_CHILD";

static D: usrcu::Srcu = usrcu::Srcu::new_static("runtime-stack");
static RAN: AtomicUsize = AtomicUsize::new(0);

/// Touch 1 MiB of this thread's stack (each page, through the stack
/// probe), as a callback with a large local buffer would.
#[inline(never)]
fn deep() {
    let mut buf = [0u8; 1024 * 1024];
    std::hint::black_box(&mut buf);
    // Relaxed: a count, read after the barriers.
    RAN.fetch_add(buf[12345] as usize + 1, Ordering::Relaxed);
}

#[test]
fn runtime_threads_do_not_take_their_stack_size_from_rust_min_stack() {
    child::Child::new("child_runs_deep_callbacks")
        .env(CHILD, "1")
        .env("RUST_MIN_STACK", "131072")
        .must_pass("deep callbacks ran: 3");
}

#[test]
#[ignore = "run by runtime_threads_do_not_take_their_stack_size_from_rust_min_stack in a child"]
fn child_runs_deep_callbacks() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    // SAFETY: alarm has no preconditions; a hang dies by SIGALRM.
    unsafe { libc::alarm(60) };
    assert_eq!(std::env::var("RUST_MIN_STACK").as_deref(), Ok("131072"));
    D.call_srcu(deep);
    D.barrier();
    usrcu::trace::call(deep);
    usrcu::trace::barrier();
    usrcu::tasks::call(deep);
    usrcu::tasks::barrier();
    println!("deep callbacks ran: {}", RAN.load(Ordering::Relaxed));
}
