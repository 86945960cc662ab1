//! A watchdog for the steps of an unload that run code the loader does not
//! control (the module's `exit`, `Going` notifiers): they run on the calling
//! thread, and if one is still running when the unload's deadline passes,
//! the watchdog records an overrun, as a warning and in the report.
//!
//! Why on the calling thread, and not on a helper that the unload could
//! abandon: `exit` is plugin code that may rely on the thread it runs on
//! (thread-locals, a thread it joins, a lock it expects to own), and a
//! notifier is host code written against the loader's lock order. Running
//! them elsewhere changes what they mean; abandoning one leaves code of the
//! object running with nobody to wait for it. The price: an `exit` or a
//! notifier that never returns keeps `unload` from returning too. The
//! overrun warning says which one it is, while it is stuck.
//!
//! One thread serves every unload of the process: it sleeps until the
//! earliest deadline among the steps in progress, so an unload pays a lock
//! and a wake-up per step, not a thread.

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use usrcu::diagnostics::{self, Warning, WarningKind};

struct Watched {
    id: u64,
    deadline: Instant,
    module: String,
    step: String,
    overruns: Arc<Mutex<Vec<String>>>,
}

#[derive(Default)]
struct Watchdog {
    list: Mutex<(u64, Vec<Watched>)>,
    wake: Condvar,
}

fn watchdog() -> &'static Watchdog {
    static W: OnceLock<&'static Watchdog> = OnceLock::new();
    W.get_or_init(|| {
        let w: &'static Watchdog = Box::leak(Box::default());
        // The unload that starts the thread waits until it runs its own
        // code: a thread glibc is still starting blocks every signal, and
        // the interrupted proof, scanning right then, read it as a thread
        // inside a signal handler; an unload whose time a callout's Tasks
        // grace period had spent ended its proof on that one scan and kept
        // an idle plugin as a Zombie (`redteam10_stale_return_address`,
        // 1 to 3 runs in 10).
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("usrcu-unload-watchdog".into())
            .spawn(move || {
                let _ = tx.send(());
                w.run()
            });
        if spawned.is_ok() {
            let _ = rx.recv();
        } else {
            diagnostics::emit(Warning::new(
                WarningKind::Other,
                "usrcu-module-loader".to_owned(),
                "usrcu-module-loader: cannot start the unload watchdog; overruns go unreported".to_owned(),
            ));
        }
        w
    })
}

impl Watchdog {
    fn run(&self) {
        let mut g = crate::lock(&self.list);
        loop {
            let now = Instant::now();
            let mut fired = Vec::new();
            g.1.retain(|w| {
                if w.deadline <= now {
                    fired.push((w.module.clone(), w.step.clone(), w.overruns.clone()));
                    false
                } else {
                    true
                }
            });
            if !fired.is_empty() {
                drop(g);
                for (module, step, overruns) in fired {
                    let msg = format!(
                        "usrcu-module-loader: {step} of module '{module}' is still running past the unload timeout"
                    );
                    crate::lock(&overruns).push(step);
                    diagnostics::emit(Warning::new(WarningKind::Other, module, msg));
                }
                g = crate::lock(&self.list);
                continue;
            }
            g = match g.1.iter().map(|w| w.deadline).min() {
                Some(d) => {
                    self.wake
                        .wait_timeout(g, d.saturating_duration_since(now))
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.wake.wait(g).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

/// Run `f` (the step `step` of `module`'s unload) on this thread; if it is
/// still running `budget` (the unload timeout) after it began, an overrun is
/// recorded in `overruns` (the step's name) and emitted as a warning. Each
/// step is measured against its own start, not the unload's deadline: one
/// that began after earlier steps spent the deadline was named as "still
/// running past the unload timeout" for time spent before it ran (a 20 ms
/// notifier: newcomer review), and one that began with a sliver of the
/// budget left likewise (red team 16), while the step that spent it was
/// not.
pub(crate) fn watch<R>(
    module: &str,
    step: &str,
    budget: std::time::Duration,
    overruns: &Arc<Mutex<Vec<String>>>,
    f: impl FnOnce() -> R,
) -> R {
    let now = Instant::now();
    // No limit for a budget past what an `Instant` holds.
    let Some(deadline) = now.checked_add(budget) else {
        return f();
    };
    let w = watchdog();
    let id = {
        let mut g = crate::lock(&w.list);
        g.0 += 1;
        let id = g.0;
        g.1.push(Watched {
            id,
            deadline,
            module: module.to_owned(),
            step: step.to_owned(),
            overruns: overruns.clone(),
        });
        id
    };
    w.wake.notify_one();
    let r = f();
    crate::lock(&w.list).1.retain(|x| x.id != id);
    r
}
