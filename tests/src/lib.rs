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

#[path = "../../srcu/tests/common/child.rs"]
mod child;
/// Running one test of this test binary again in a child process: the
/// harness shared with `srcu/tests` (the file `srcu/tests/common/child.rs`).
/// The parent runs `Child::new(name).env(..).must_pass(marker)` (or
/// `must_die_of(&[libc::SIGSEGV])`, or `run()` and reads the [`Ran`]); the
/// test tells its child branch with `in_child(CHILD_ENV, None)` (or its own
/// variable, and an alarm against hangs).
pub use child::{in_child, Child, Ran, CHILD_ENV};

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

/// Unload `m` again while it stays a Zombie whose cause is passing (the
/// callbacks it waits for have run in their bodies, and the runtime is
/// about to count them done), until it is unmapped; fails after 60 s.
/// A test that saw its callbacks run and then unloads once can race that
/// bookkeeping on a loaded machine.
pub fn unload_until_unmapped(
    loader: &usrcu_module_loader::ModuleLoader,
    m: usrcu_module_loader::ModuleHandle,
) -> usrcu_module_loader::UnloadReport {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = loader.unload(m).unwrap();
        if r.state != usrcu_module_loader::ModuleState::Zombie {
            assert!(r.unmapped, "{r}");
            return r;
        }
        assert!(std::time::Instant::now() < end, "still a zombie after 60 s: {r}");
        std::thread::sleep(std::time::Duration::from_millis(5));
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
