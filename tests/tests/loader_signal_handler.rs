//! Signal handlers a plugin installed and did not remove in `exit`: the
//! object stays mapped as a `Zombie` naming the signal and the handler, and
//! the signal keeps working (its handler runs, mapped); once the handler is
//! gone, unloading the zombie again unmaps it. With the signal proof
//! switched off, the next delivery of the signal after the unmap kills the
//! host (seen in a child process).
//!
//! Signal actions are process-wide: the tests of this file take one lock,
//! so that no test's plugin replaces or restores another's action midway.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use usrcu_module_loader::{ModuleHandle, ModuleLoader, ModuleState, ZombieCause};
use usrcu_tests::{fixture_path, in_child, leak, object_is_mapped, Child, CHILD_ENV};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The host's view of the plugin's handlers: deliveries and last signal.
struct Probe {
    count: &'static AtomicUsize,
    signo: &'static AtomicI32,
}

/// Load the fixture (its `init` installs its `SIGUSR1` handler), tell it
/// whether `exit` restores the old action, and point its handlers at a
/// fresh probe.
fn load(loader: &ModuleLoader, restore_in_exit: bool) -> (ModuleHandle, Probe) {
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md) except
    // for the handler it may leave installed, which the loader checks.
    let m = unsafe { loader.load(fixture_path("signal-handler")) }.unwrap();
    let probe = Probe {
        count: leak(AtomicUsize::new(0)),
        signo: leak(AtomicI32::new(0)),
    };
    // SAFETY: the fixture exports them with these signatures.
    let restore = unsafe { loader.symbol::<extern "C" fn(u32)>(m, "fx_signal_restore_in_exit") }.unwrap();
    restore.call(|f| f.call(u32::from(restore_in_exit))).unwrap();
    // SAFETY: as above.
    let set =
        unsafe { loader.symbol::<unsafe extern "C" fn(*const AtomicUsize, *const AtomicI32)>(m, "fx_signal_probe") }
            .unwrap();
    // SAFETY: both atomics are leaked: they live for the process.
    set.call(|f| unsafe { f.call(probe.count, probe.signo) }).unwrap();
    (m, probe)
}

/// The handler address installed for `sig` now (0 for `SIG_DFL`).
fn handler_now(sig: i32) -> usize {
    action_now(sig).sa_sigaction
}

fn action_now(sig: i32) -> libc::sigaction {
    // SAFETY: an all-zero `sigaction` is valid; only written to.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a query (null new action) into a writable struct.
    assert_eq!(unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) }, 0);
    old
}

fn set_action(sig: i32, act: &libc::sigaction) {
    // SAFETY: `act` is an action the kernel gave for `sig` earlier (a
    // handler of the host or `SIG_DFL`).
    assert_eq!(unsafe { libc::sigaction(sig, act, std::ptr::null_mut()) }, 0);
}

fn raise(sig: i32) {
    // SAFETY: the signal is not blocked on this thread, so its handler runs
    // before `raise` returns.
    assert_eq!(unsafe { libc::raise(sig) }, 0);
}

#[test]
fn a_handler_left_installed_keeps_the_module_a_zombie_naming_the_signal_and_the_signal_still_works() {
    let _serial = serial();
    let before = action_now(libc::SIGUSR1);
    let loader = ModuleLoader::new();
    let (m, probe) = load(&loader, false);
    let path = loader.info(m).unwrap().loaded_path;
    let installed = handler_now(libc::SIGUSR1);
    assert_ne!(installed, before.sa_sigaction, "init installed its handler");

    let report = loader.unload(m).unwrap();

    assert_eq!(report.state, ModuleState::Zombie, "{report}");
    assert!(!report.dlclosed && !report.unmapped, "{report}");
    assert_eq!(
        report.zombie_cause,
        Some(ZombieCause::SignalHandlerInObject {
            signal: libc::SIGUSR1,
            handler: installed,
        }),
        "{report}"
    );
    let text = report.to_string();
    assert!(
        text.contains("SIGUSR1") && text.contains(&format!("{installed:#x}")),
        "{text}"
    );
    assert!(object_is_mapped(&path));
    // The loader left the handler alone, and it still runs, mapped.
    assert_eq!(handler_now(libc::SIGUSR1), installed);
    raise(libc::SIGUSR1);
    assert_eq!(probe.count.load(Ordering::SeqCst), 1);
    assert_eq!(probe.signo.load(Ordering::SeqCst), libc::SIGUSR1);

    // Once the host removes the handler, unloading the zombie unmaps it.
    set_action(libc::SIGUSR1, &before);
    let report = loader.unload(m).unwrap();
    assert!(report.unmapped, "{report}");
    assert!(!object_is_mapped(&path));
}

#[test]
fn a_handler_removed_in_exit_lets_the_module_unmap() {
    let _serial = serial();
    let before = handler_now(libc::SIGUSR1);
    let loader = ModuleLoader::new();
    let (m, _probe) = load(&loader, true);
    let path = loader.info(m).unwrap().loaded_path;
    assert_ne!(handler_now(libc::SIGUSR1), before, "init installed its handler");

    let report = loader.unload(m).unwrap();

    assert_eq!(report.state, ModuleState::Unloaded, "{report}");
    assert_eq!(report.zombie_cause, None, "{report}");
    assert!(report.unmapped, "{report}");
    assert!(!object_is_mapped(&path));
    assert_eq!(handler_now(libc::SIGUSR1), before, "exit restored the old action");
}

#[test]
fn an_sa_siginfo_handler_left_installed_keeps_the_module_a_zombie_naming_it() {
    let _serial = serial();
    let before = action_now(libc::SIGUSR2);
    let loader = ModuleLoader::new();
    // `exit` removes the SIGUSR1 handler: only the SA_SIGINFO one is left.
    let (m, probe) = load(&loader, true);
    let path = loader.info(m).unwrap().loaded_path;
    // SAFETY: the fixture exports it with this signature.
    let install = unsafe { loader.symbol::<extern "C" fn(i32) -> usize>(m, "fx_signal_install_siginfo") }.unwrap();
    let handler = install.call(|f| f.call(libc::SIGUSR2)).unwrap();
    assert_ne!(action_now(libc::SIGUSR2).sa_flags & libc::SA_SIGINFO, 0);

    let report = loader.unload(m).unwrap();

    assert_eq!(report.state, ModuleState::Zombie, "{report}");
    assert_eq!(
        report.zombie_cause,
        Some(ZombieCause::SignalHandlerInObject {
            signal: libc::SIGUSR2,
            handler,
        }),
        "{report}"
    );
    assert!(report.to_string().contains("SIGUSR2"), "{report}");
    raise(libc::SIGUSR2);
    assert_eq!(probe.count.load(Ordering::SeqCst), 1);
    // The handler read the signal number from its siginfo_t.
    assert_eq!(probe.signo.load(Ordering::SeqCst), libc::SIGUSR2);

    set_action(libc::SIGUSR2, &before);
    let report = loader.unload(m).unwrap();
    assert!(report.unmapped, "{report}");
    assert!(!object_is_mapped(&path));
}

#[test]
fn an_alternate_signal_stack_in_the_object_on_the_unloading_thread_keeps_the_module_a_zombie() {
    let _serial = serial();
    // SAFETY: an all-zero `stack_t` is valid; only written to.
    let mut before: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: a query (null new stack) into a writable struct.
    assert_eq!(unsafe { libc::sigaltstack(std::ptr::null(), &mut before) }, 0);
    let loader = ModuleLoader::new();
    let (m, _probe) = load(&loader, true);
    let path = loader.info(m).unwrap().loaded_path;
    // SAFETY: the fixture exports it with this signature.
    let set = unsafe { loader.symbol::<extern "C" fn() -> usize>(m, "fx_signal_set_alt_stack") }.unwrap();
    // On this thread, the one that unloads.
    let base = set.call(|f| f.call()).unwrap();

    let report = loader.unload(m).unwrap();

    assert_eq!(report.state, ModuleState::Zombie, "{report}");
    assert!(
        matches!(report.zombie_cause, Some(ZombieCause::SignalStackInObject { base: b, .. }) if b == base),
        "{report}"
    );
    // Put this thread's own alternate stack back; then the zombie unmaps.
    before.ss_flags &= !libc::SS_ONSTACK;
    // SAFETY: `before` is the stack (or the disabled state) this thread had.
    assert_eq!(unsafe { libc::sigaltstack(&before, std::ptr::null_mut()) }, 0);
    let report = loader.unload(m).unwrap();
    assert!(report.unmapped, "{report}");
    assert!(!object_is_mapped(&path));
}

/// The same plugin with the signal proof off: the object is unmapped under
/// its handler, and the next `SIGUSR1` jumps into unmapped memory.
#[test]
fn without_the_signal_proof_a_plugin_handler_kills_the_host_on_the_next_signal() {
    const NAME: &str = "without_the_signal_proof_a_plugin_handler_kills_the_host_on_the_next_signal";
    if in_child(CHILD_ENV, None) {
        let loader = ModuleLoader::new();
        let (m, _probe) = load(&loader, false);
        let report = loader.unload(m).unwrap();
        let zombie = matches!(report.zombie_cause, Some(ZombieCause::SignalHandlerInObject { .. }));
        assert!(zombie || report.unmapped, "{report}");
        raise(libc::SIGUSR1);
        // Alive: 3 if the proof kept the handler mapped, 0 if it was unmapped
        // (then the defense was not needed after all).
        std::process::exit(if zombie { 3 } else { 0 });
    }
    Child::new(NAME)
        .env("USRCU_LOADER_TEST_SKIP_PROOFS", "signals")
        .run()
        .assert_died_of(
            &[libc::SIGSEGV],
            "the child should have died jumping into the unmapped handler",
        );
    // And with the proof on, the same steps leave a Zombie and a host alive.
    let ran = Child::new(NAME).run();
    assert!(
        ran.ran() && ran.status.code() == Some(3),
        "with the proof on: {}",
        ran.describe()
    );
}
