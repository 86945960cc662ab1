//! (Fixed: the plugin's filter lets every level through and the bridge filters by the host's level at each record.) Newcomer review: a plugin's `log` records follow the host's maximum
//! level as it was *when the plugin was loaded*. The plugin's bridge sets
//! its own copy of `log`'s static max level once, in the host-context hook
//! (`log::set_max_level(host max level)`), and the `log` macros filter on
//! that static before they ever ask the bridge, which would read the host's
//! live level. A host that raises its verbosity at run time (a config
//! reload, a debug switch) keeps getting none of its plugins' newly enabled
//! records until each plugin is reloaded; lowering works (the bridge
//! filters). Seen from the outside host: after `log::set_max_level(Debug)`
//! the host's own debug line printed, the plugin's `log::debug!` did not.
//! docs/plugins.md: records reach the host's logger "at the level
//! `RUST_LOG` names"; abi.md: the context "carries the host's log sink and
//! maximum level" (a function, `max_level`, read at every record).

use std::sync::Mutex;

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::fixture_path_with_profile;

static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Collect;
impl log::Log for Collect {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        SEEN.lock().unwrap().push(format!("{} {}", r.level(), r.args()));
    }
    fn flush(&self) {}
}

static SERIAL: Mutex<()> = Mutex::new(());

fn install_logger() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| log::set_logger(&Collect).unwrap());
}

/// The control: with the host at Warn when the plugin loads, its warning
/// arrives (the bridge works; only a later change is missed).
#[test]
fn a_plugin_warning_reaches_a_host_that_was_at_warn_when_it_loaded() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    install_logger();
    SEEN.lock().unwrap().clear();
    log::set_max_level(log::LevelFilter::Warn);
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path_with_profile("redteam7-plain", "release")) }.unwrap();
    // SAFETY: the fixture exports `fx_log: extern "C" fn()`.
    let fx_log = unsafe { loader.symbol::<extern "C" fn()>(m, "fx_log") }.unwrap();
    fx_log.call(|f| f.call()).unwrap();
    let seen = SEEN.lock().unwrap().clone();
    assert!(seen.iter().any(|l| l.contains("rt7 plugin record")), "{seen:?}");
    drop(fx_log);
    loader.unload(m).unwrap();
}

#[test]
fn raising_the_host_log_level_after_load_reaches_the_plugin() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    install_logger();
    SEEN.lock().unwrap().clear();
    log::set_max_level(log::LevelFilter::Error);
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path_with_profile("redteam7-plain", "release")) }.unwrap();
    // SAFETY: the fixture exports `fx_log: extern "C" fn()`, which logs one
    // warning ("rt7 plugin record").
    let fx_log = unsafe { loader.symbol::<extern "C" fn()>(m, "fx_log") }.unwrap();

    fx_log.call(|f| f.call()).unwrap();
    assert!(
        !SEEN.lock().unwrap().iter().any(|l| l.contains("rt7 plugin record")),
        "a warning passed an Error-level host"
    );

    // The host now wants warnings.
    log::set_max_level(log::LevelFilter::Warn);
    log::warn!("host warning");
    fx_log.call(|f| f.call()).unwrap();
    let seen = SEEN.lock().unwrap().clone();
    assert!(seen.iter().any(|l| l == "WARN host warning"), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.contains("rt7 plugin record")),
        "the host raised its level to Warn; its own warning arrived, the plugin's did not: {seen:?}"
    );
    drop(fx_log);
    loader.unload(m).unwrap();
}
