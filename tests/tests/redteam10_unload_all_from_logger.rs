//! Red team (round 10): `unload_all` and `reload` called from the host's
//! logger while it serves plugin A's hook (A's frames are under the
//! logger on this thread). Expected: A is refused
//! (`UnloadError::FromInsideModuleCode`, inside `ReloadError::Unload` for
//! the reload), nothing hangs and the host survives; once the hook
//! returned, everything unloads. Since session 11 the idle plugin B is
//! refused too (`FromInsideCallout`): the logger is a callout, which a
//! Tasks grace period counts as part of A's hook, so B's unload would wait
//! for this thread (it waited its whole timeout and left B a Zombie before
//! the refusal).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{ModuleHandle, ModuleLoader, ReloadError, UnloadError, UnloadReport};
use usrcu_tests::{fixture_path, Child};

const CHILD: &str = "RT10_UNLOAD_ALL_LOGGER_CHILD";

static LOADER: OnceLock<ModuleLoader> = OnceLock::new();
static ONCE: AtomicBool = AtomicBool::new(false);
type Outcomes = Vec<(ModuleHandle, Result<UnloadReport, UnloadError>)>;
static SEEN: Mutex<Option<(Outcomes, Result<ModuleHandle, String>)>> = Mutex::new(None);

struct Reloading;

impl log::Log for Reloading {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target() != "rt9.reenter" || ONCE.swap(true, Ordering::SeqCst) {
            return;
        }
        let loader = LOADER.get().unwrap();
        let all = loader.unload_all();
        // SAFETY: the fixture upholds the plugin contract.
        let re = match unsafe { loader.reload("redteam9-reenter", fixture_path("redteam9-reenter")) } {
            Ok((new, r)) => Err(format!("reloaded from under the old copy's hook: {new:?} {r}")),
            Err(ReloadError::Unload {
                new,
                error: UnloadError::FromInsideModuleCode { .. },
            }) => Ok(new),
            Err(e) => Err(format!("{e}")),
        };
        *SEEN.lock().unwrap() = Some((all, re));
    }
    fn flush(&self) {}
}

static RELOADING: Reloading = Reloading;
static LOG_HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

#[test]
fn unload_all_and_reload_from_the_logger_under_a_hook_refuse_only_that_plugin() {
    if std::env::var_os(CHILD).is_none() {
        let _ = fixture_path("hook");
        let test = "unload_all_and_reload_from_the_logger_under_a_hook_refuse_only_that_plugin";
        Child::new(test)
            .env(CHILD, "1")
            .run()
            .assert_passed("RT10-UNLOAD-ALL-DONE", "unload_all and reload from the logger");
        return;
    }
    // SAFETY: `alarm` only arms a timer: a hang dies of SIGALRM.
    unsafe { libc::alarm(60) };
    log::set_logger(&RELOADING).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let loader = LOADER.get_or_init(ModuleLoader::new);
    // SAFETY: the fixtures uphold the plugin contract.
    let b = unsafe { loader.load(fixture_path("hook")) }.unwrap();
    // SAFETY: as above.
    let a = unsafe { loader.load(fixture_path("redteam9-reenter")) }.unwrap();
    // SAFETY: `fx_log_hook` has the slot's type in the fixture.
    unsafe { loader.install_hook(a, &LOG_HOOK, "fx_log_hook") }.unwrap();
    assert_eq!(LOG_HOOK.call(1), Some(2), "the hook returned into its plugin");
    let (all, re) = SEEN.lock().unwrap().take().expect("the logger ran");
    println!("unload_all: {all:?}\nreload: {re:?}");
    let of = |h| all.iter().find(|(x, _)| *x == h).map(|(_, r)| r);
    assert!(
        matches!(of(a), Some(Err(UnloadError::FromInsideModuleCode { .. }))),
        "A: {:?}",
        of(a)
    );
    assert!(
        matches!(of(b), Some(Err(UnloadError::FromInsideCallout { .. }))),
        "B: {:?}",
        of(b)
    );
    let new = re.expect("the reload");
    for (h, r) in loader.unload_all() {
        let r = r.unwrap_or_else(|e| panic!("{h:?}: {e}"));
        assert!(r.unmapped, "{r}");
    }
    assert!(loader.state(new).is_some());
    println!("RT10-UNLOAD-ALL-DONE");
}
