//! Red team 3: `fork` while another thread loads and unloads plugins. The
//! documented rule for `fork` (`usrcu::runtime::idle`, `usrcu::trace::idle`,
//! `usrcu::tasks::idle`) is: fork while all three flavors are idle, and the
//! child starts its own engines on first use. The loader documents no rule
//! of its own, so a host that follows that rule expects its child to be able
//! to load, call and unload a plugin with a fresh `ModuleLoader`. Each fork
//! here happens while the three flavors report idle; each child has 20 s
//! (`alarm`) to load, call and unload, so a child stuck on a lock the other
//! thread held at the fork dies of SIGALRM instead of hanging the test. The
//! whole scenario runs in a child of the test too.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::{fixture_path, in_child, Child, CHILD_ENV};

const NAME: &str =
    "a_child_forked_while_the_flavors_are_idle_and_another_thread_loads_and_unloads_can_use_a_fresh_loader";

/// In the forked child: a fresh loader loads, calls and unloads the fixture.
/// Returns the exit code: 0 ok, 2 load failed, 3 call wrong, 4 unload failed.
fn child_uses_a_fresh_loader(path: &std::path::Path) -> i32 {
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(5),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = match unsafe { loader.load(path) } {
        Ok(m) => m,
        Err(e) => {
            eprintln!("child: load failed: {e}");
            return 2;
        }
    };
    // SAFETY: the fixture exports `fx_double` with this type.
    let Ok(d) = (unsafe { loader.symbol::<extern "C" fn(u64) -> u64>(m, "fx_double") }) else {
        return 3;
    };
    if d.call(|f| f.call(21)) != Ok(42) {
        return 3;
    }
    match loader.unload(m) {
        Ok(r) if r.unmapped => 0,
        _ => 4,
    }
}

/// Seen failing: 13 of 40 children in one run, 20 of 20 in another, cannot
/// load at all: `LoadError::SharedLibraryLoading` ("another load was still
/// counting the libraries it brought in") after the unload timeout, on
/// every attempt, for the rest of the child's life: the fork copied the
/// load gate of `proofs/needed.rs` (`LOADING`, module-loader/src/proofs/
/// needed.rs:128, its `counting` flag set by `load_gate` at :210 and
/// cleared when the parent thread's `LoadGate` drops) in its "counting"
/// state, and the thread that would clear it does not exist in the child.
/// In the first run 2 of 40 children hung (SIGALRM) on a futex in a shared
/// library's data (not the test binary's statics): most likely glibc's
/// `dl_load_lock`, held by the other thread's `dlopen`/`dlclose` at the
/// fork. The loader has no `pthread_atfork` handler and documents no fork
/// rule of its own.
#[test]
#[ignore = "known limitation (docs/abi.md, \"`fork` and the loader\"): a child forked while another thread loads inherits the load gate marked counting and glibc's dynamic-linker lock may be held; it can never load, some children hang"]
fn a_child_forked_while_the_flavors_are_idle_and_another_thread_loads_and_unloads_can_use_a_fresh_loader() {
    if !in_child(CHILD_ENV, None) {
        // `--include-ignored`: the test is marked ignored while the defect stands.
        Child::new(NAME).run().assert_passed("", "the child failed");
        return;
    }
    let path = fixture_path("redteam3-calc");
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let churn = {
        let (path, stop, cycles) = (path.clone(), stop.clone(), cycles.clone());
        std::thread::spawn(move || {
            let loader = ModuleLoader::new();
            // Acquire: pairs with the Release store below (only ends the loop).
            while !stop.load(Ordering::Acquire) {
                // SAFETY: as above.
                let m = unsafe { loader.load(&path) }.expect("load");
                assert!(loader.unload(m).expect("unload").unmapped);
                cycles.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        let seen = cycles.load(Ordering::Relaxed);
        while cycles.load(Ordering::Relaxed) == seen {
            std::thread::yield_now();
        }
        while !(usrcu::runtime::idle() && usrcu::trace::idle() && usrcu::tasks::idle()) {
            std::thread::yield_now();
        }
        // SAFETY: the child runs only `child_uses_a_fresh_loader` and then
        // `_exit`s; glibc's fork leaves malloc usable in the child.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: plain system calls in the child.
            unsafe {
                libc::alarm(20);
                libc::_exit(child_uses_a_fresh_loader(&path));
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        outcomes.push(if libc::WIFSIGNALED(status) {
            format!("signal {}", libc::WTERMSIG(status))
        } else {
            format!("exit {}", libc::WEXITSTATUS(status))
        });
    }
    // Release: pairs with the churn thread's Acquire load.
    stop.store(true, Ordering::Release);
    churn.join().expect("the churn thread panicked");
    let bad: Vec<_> = outcomes.iter().enumerate().filter(|(_, o)| *o != "exit 0").collect();
    eprintln!("forks: {} ({} bad): {bad:?}", outcomes.len(), bad.len());
    assert!(bad.is_empty(), "children that could not use a fresh loader: {bad:?}");
}
