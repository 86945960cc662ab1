//! Helpers for the integration tests: the fixture plugins, built with cargo
//! by the tests themselves, and an address-space check independent of the
//! loader's own.
//!
//! # Fixture plugins
//!
//! `tests/fixtures/` is a cargo workspace of `cdylib` plugins (one crate per
//! case: `callbacks`, `dynamic-domain`, `tls-destructor`, `thread-current`,
//! `no-descriptor`, `bad-magic`, `bad-abi-version`, `bad-struct-size`,
//! `init-panics`, `init-fails`, `exit-panics`, the ABI mismatches
//! `bad-reader-protocol`, `bad-field-offsets`, `bad-usrcu-version`,
//! `bad-panic-strategy`, `bad-runtime-pointer`, `probes`, and the unload
//! proofs' `plugin-thread`, `key-destructor`, `needed-lib`,
//! `unlisted-domains`, `slow-exit`; `reader-call`, whose read sections
//! run on the calling host thread; `signal-handler`, whose `init` installs
//! a signal handler that `exit` removes only on request; `redteam2-deferred`,
//! whose `exit` leaves work that hops between flavors, chosen by `fx_arm`;
//! `redteam2-probe-panics`, whose tracepoint probe panics on request). [`fixture_path`] builds the
//! whole workspace once per process (release profile, into
//! `target/plugins/` under the main workspace's target directory) and
//! returns the path of one plugin:
//!
//! ```no_run
//! let so = usrcu_tests::fixture_path("callbacks");
//! let loader = usrcu_module_loader::ModuleLoader::new();
//! // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
//! let m = unsafe { loader.load(&so) }.unwrap();
//! # let _ = m;
//! ```
//!
//! Several test binaries may call it at the same time: the build holds an
//! `flock` on the target directory (see
//! `usrcu_module_loader::plugin_build`), and cargo finds the work done for
//! every caller but the first. A fresh clone needs nothing beforehand.
//! [`fixture_path_with_profile`] builds one fixture with another profile of
//! the fixture workspace (`release-lto`: fat LTO, one codegen unit;
//! `release-abort`: `panic = "abort"`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use usrcu_module_loader::plugin_build::{workspace_target_dir, PluginBuild};

/// `tests/fixtures`, the fixture workspace.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Where fixture plugins are built: `<target>/plugins`.
pub fn plugins_target_dir() -> PathBuf {
    workspace_target_dir(Path::new(env!("CARGO_MANIFEST_DIR"))).join("plugins")
}

fn builder(profile: &str) -> PluginBuild {
    PluginBuild::new(fixtures_dir())
        .target_dir(plugins_target_dir())
        .profile(profile)
}

/// The fixture plugin `name` (its folder under `tests/fixtures`, e.g.
/// `"callbacks"`), built in release. Panics with cargo's output if the
/// build fails.
pub fn fixture_path(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| builder("release").build().map_err(|e| e.to_string()));
    if let Err(e) = built {
        panic!("building the fixture plugins failed: {e}");
    }
    artifact(&builder("release"), name)
}

/// The fixture plugin `name` built with `profile` of the fixture workspace
/// (only that package is built).
pub fn fixture_path_with_profile(name: &str, profile: &str) -> PathBuf {
    static BUILDS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let b = builder(profile).package(&format!("fixture-{name}"));
    let mut done = BUILDS.lock().unwrap_or_else(|p| p.into_inner());
    let key = (name.to_owned(), profile.to_owned());
    if !done.contains(&key) {
        if let Err(e) = b.build() {
            panic!("building fixture {name} with profile {profile} failed: {e}");
        }
        done.push(key);
    }
    artifact(&b, name)
}

fn artifact(b: &PluginBuild, name: &str) -> PathBuf {
    let p = b.artifact(&format!("fixture_{}", name.replace('-', "_")));
    assert!(p.exists(), "fixture {name}: no artifact at {}", p.display());
    p
}

/// Is an object opened by `path` in the address space? Checked here
/// independently of the loader: the dynamic linker's list of objects
/// (`dl_iterate_phdr`) and, separately, whether `/proc/self/maps` maps the file.
pub fn object_is_mapped(path: &Path) -> bool {
    listed_by_dynamic_linker(path) || in_proc_maps(path)
}

fn listed_by_dynamic_linker(path: &Path) -> bool {
    use std::ffi::{c_int, c_void, CStr};
    use std::os::unix::ffi::OsStrExt;

    struct Look<'a>(&'a [u8], bool);
    unsafe extern "C" fn cb(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the `Look` below; `info` is valid during the callback.
        let (look, info) = unsafe { (&mut *(data as *mut Look<'_>), &*info) };
        // SAFETY: the dynamic linker's names are NUL-terminated.
        if !info.dlpi_name.is_null() && unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes() == look.0 {
            look.1 = true;
            return 1;
        }
        0
    }
    let mut look = Look(path.as_os_str().as_bytes(), false);
    // SAFETY: `cb` only touches `look`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(cb), &mut look as *mut Look<'_> as *mut c_void) };
    look.1
}

fn in_proc_maps(path: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let p = path.to_string_lossy();
    // A deleted file shows as "<path> (deleted)".
    maps.lines()
        .any(|l| l.ends_with(&*p) || l.ends_with(&format!("{p} (deleted)")))
}

/// A host counter for plugins to write into, alive for the process.
pub fn leak<T>(v: T) -> &'static T {
    Box::leak(Box::new(v))
}

/// Run the test named `test` of the current test binary again, alone, in a
/// child process with `env` set, and return how it ended. A test that must
/// see a signal (which would kill the test harness with it) checks one of
/// `env`'s variables and, when it is set, does the dangerous part only.
pub fn rerun_test_in_child(test: &str, env: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("cannot re-run the test binary")
}

/// The signal that ended a child, if one did.
pub fn killed_by(status: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

/// Run the test `name` of the running test binary again, alone, in a child
/// process with `env` set (and `USRCU_TEST_CHILD=1`, which the test reads
/// to take its child branch); returns how the child ended. Used to watch a
/// defense switched off crash a host without crashing the test.
pub fn rerun_in_child(name: &str, env: &[(&str, &str)]) -> std::process::ExitStatus {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("USRCU_TEST_CHILD", "1")
        .stdout(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.status().expect("run the child")
}

/// Run the test `name` again in a child process ([`rerun_in_child`], no
/// extra environment) and require it to exit cleanly; a child killed by a
/// signal fails naming the signal and `what` (the stale state it means).
pub fn child_must_survive(name: &str, what: &str) {
    let status = rerun_in_child(name, &[]);
    match killed_by(status) {
        None => assert!(status.success(), "the child failed: {status} (its stderr is above)"),
        Some(sig) => panic!("the child died of signal {sig}: {what}"),
    }
}

/// Is this the child branch of a test run by [`rerun_in_child`]?
pub fn in_child() -> bool {
    std::env::var_os("USRCU_TEST_CHILD").is_some()
}

/// Run `f` on its own thread and return its result, or fail naming `what`
/// when it is still running after 60 seconds (a hang, which must fail a
/// test rather than stall CI) or when it panicked (the default hook has
/// printed the panic's message).
pub fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still running after 60 s"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

/// Is the `needed-lib` fixture's C library (`libfxneeded.so`) mapped in
/// this process?
pub fn fxneeded_mapped() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .contains("libfxneeded.so")
}

/// A host thread that has a value under the `needed-lib` fixture's library
/// key (through module `m`'s `fx_needed_hold`) and stays alive until the
/// returned sender sends (its exit then runs the key's destructor).
pub fn fxneeded_holder(
    loader: &usrcu_module_loader::ModuleLoader,
    m: usrcu_module_loader::ModuleHandle,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    type HoldFn = extern "C" fn() -> u32;
    // SAFETY: the fixture exports it with this signature.
    let hold = unsafe { loader.symbol::<HoldFn>(m, "fx_needed_hold").unwrap() };
    let (held_tx, held) = std::sync::mpsc::channel();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        hold.call(|f| f.call()).unwrap();
        drop(hold);
        held_tx.send(()).unwrap();
        let _ = wait.recv();
    });
    held.recv().unwrap();
    (go, t)
}
