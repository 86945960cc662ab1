//! Red team (round 7): a plugin's `log` record reaches the host's logger
//! through `host_log`, an `extern "C"` function of the loader that catches
//! a panicking logger (`let _ = catch_unwind(..)`). The payload of that
//! panic is then dropped inside the `extern "C"` function; a payload whose
//! drop panics (user code, which `diagnostics::emit` and the callback
//! runners already guard against by leaking it) unwinds out of an
//! `extern "C"` function: the process aborts.
//!
//! FINDING if it fails: the child dies with SIGABRT.

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::{fixture_path, Child};

struct Bomb;
impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("the logger's panic payload panics on drop");
        }
    }
}

struct PanickyLogger;
impl log::Log for PanickyLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        if r.args().to_string().contains("rt7 plugin record") {
            std::panic::panic_any(Bomb);
        }
    }
    fn flush(&self) {}
}

#[test]
fn a_host_logger_whose_panic_payload_panics_on_drop_does_not_abort_on_a_plugin_record() {
    let _ = fixture_path("redteam7-plain");
    let ran = Child::new("plugin_log_entry").env("RT7_LOG_CHILD", "1").run();
    ran.assert_passed("RT7-LOG-SURVIVED", "the host died when a plugin logged");
}

#[test]
fn plugin_log_entry() {
    if std::env::var_os("RT7_LOG_CHILD").is_none() {
        return;
    }
    log::set_logger(&PanickyLogger).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract.
    let m = unsafe { loader.load(fixture_path("redteam7-plain")) }.unwrap();
    // SAFETY: the fixture's signature.
    let f = unsafe { loader.symbol::<extern "C" fn()>(m, "fx_log") }.unwrap();
    let r = f.call(|f| f.call());
    println!("call returned {r:?}");
    drop(f);
    let _ = loader.unload(m);
    println!("RT7-LOG-SURVIVED");
}
