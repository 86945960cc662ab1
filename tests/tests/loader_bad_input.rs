//! Every bad input gets a clear, typed error naming both sides; nothing of
//! it stays loaded; the host and its other modules keep running.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use usrcu_module_loader::{
    BarrierOutcome, HookFailure, LoadError, LoaderConfig, ModuleHandle, ModuleLoader, ModuleState, UnloadError,
};
use usrcu_registry::{SharedLayouts, MODULE_ABI_VERSION, MODULE_MAGIC};
use usrcu_tests::{fixture_path, leak};

type AddFn = extern "C" fn(u64, u64) -> u64;
type QueueFn = unsafe extern "C" fn(usize, u64, *const AtomicUsize);
type CallHostFn = unsafe extern "C" fn(unsafe extern "C" fn(*mut c_void), *mut c_void);

/// A loader with its own copy directory, and a good module loaded in it
/// that must keep working whatever else is thrown at the loader.
struct Host {
    loader: ModuleLoader,
    good: ModuleHandle,
    copies: PathBuf,
}

impl Host {
    fn new(test: &str) -> Host {
        let copies = std::env::temp_dir().join(format!("usrcu-bad-input-{}-{test}", std::process::id()));
        let loader = ModuleLoader::with_config(LoaderConfig {
            copy_dir: Some(copies.clone()),
            ..Default::default()
        });
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let good = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
        Host { loader, good, copies }
    }

    /// The good module still serves calls, and the only copy left on disk is its own.
    fn still_fine(&self) {
        // SAFETY: the fixture exports it with this signature.
        let add = unsafe { self.loader.symbol::<AddFn>(self.good, "fx_add").unwrap() };
        assert_eq!(add.call(|f| f.call(40, 2)), Ok(42));
        let live: Vec<_> = self.loader.list().into_iter().map(|m| m.handle).collect();
        assert_eq!(live, vec![self.good], "nothing else stays loaded");
        let files = std::fs::read_dir(&self.copies).unwrap().count();
        assert_eq!(files, 1, "failed loads leave no copy behind");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(self.loader.unload(self.good).unwrap().unmapped);
        }
    }
}

fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("usrcu-bad-input-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn missing_file_is_not_found() {
    let h = Host::new("missing");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let err = unsafe { h.loader.load("/nonexistent/libnothing.so") }.unwrap_err();
    assert!(matches!(&err, LoadError::NotFound { path } if path == Path::new("/nonexistent/libnothing.so")));
    assert!(err.to_string().contains("/nonexistent/libnothing.so"));
    h.still_fine();
}

#[test]
fn file_that_is_not_a_shared_object_is_refused() {
    let h = Host::new("not-so");
    let text = write_temp("text.so", b"this is not an ELF file\n");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let err = unsafe { h.loader.load(&text) }.unwrap_err();
    assert!(matches!(err, LoadError::NotSharedObject { .. }), "{err}");
    let empty = write_temp("empty.so", b"");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let err = unsafe { h.loader.load(&empty) }.unwrap_err();
    assert!(matches!(err, LoadError::NotSharedObject { .. }), "{err}");
    // An executable (this test binary) is ELF, but not a library.
    let exe = std::env::current_exe().unwrap();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let err = unsafe { h.loader.load(&exe) }.unwrap_err();
    assert!(
        matches!(&err, LoadError::NotSharedObject { reason, .. } if reason.contains("executable")),
        "{err}"
    );
    h.still_fine();
}

#[test]
fn object_without_descriptor_is_refused() {
    let h = Host::new("no-descriptor");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let err = unsafe { h.loader.load(fixture_path("no-descriptor")) }.unwrap_err();
    assert!(
        matches!(err, LoadError::NoDescriptor { symbol, .. } if symbol == usrcu_registry::DESCRIPTOR_SYMBOL),
        "{err}"
    );
    h.still_fine();
}

#[test]
fn wrong_magic_names_both_values() {
    let h = Host::new("bad-magic");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let err = unsafe { h.loader.load(fixture_path("bad-magic")) }.unwrap_err();
    match &err {
        LoadError::BadMagic { plugin, host, .. } => {
            assert_eq!(*host, MODULE_MAGIC);
            assert_eq!(*plugin, MODULE_MAGIC ^ 0xff);
        }
        e => panic!("expected BadMagic, got {e}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{:#018x}", MODULE_MAGIC)) && msg.contains(&format!("{:#018x}", MODULE_MAGIC ^ 0xff))
    );
    h.still_fine();
}

#[test]
fn wrong_abi_version_names_both_versions() {
    let h = Host::new("bad-abi");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let err = unsafe { h.loader.load(fixture_path("bad-abi-version")) }.unwrap_err();
    match &err {
        LoadError::VersionMismatch { what, plugin, host, .. } => {
            assert_eq!(*what, "module ABI");
            assert_eq!(plugin, &(MODULE_ABI_VERSION + 1).to_string());
            assert_eq!(host, &MODULE_ABI_VERSION.to_string());
        }
        e => panic!("expected VersionMismatch, got {e}"),
    }
    h.still_fine();
}

#[test]
fn wrong_struct_size_names_the_struct_and_both_layouts() {
    let h = Host::new("bad-size");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let err = unsafe { h.loader.load(fixture_path("bad-struct-size")) }.unwrap_err();
    let host_srcu = SharedLayouts::of_this_build().srcu;
    match &err {
        LoadError::LayoutMismatch {
            structure,
            plugin,
            host,
            ..
        } => {
            assert_eq!(*structure, "Srcu");
            assert_eq!(*host, host_srcu);
            assert_eq!(plugin.size, host_srcu.size + 8);
        }
        e => panic!("expected LayoutMismatch, got {e}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&format!("size {}", host_srcu.size)) && msg.contains(&format!("size {}", host_srcu.size + 8)));
    h.still_fine();
}

#[test]
fn panicking_init_fails_the_load_and_rolls_back() {
    let h = Host::new("init-panics");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let err = unsafe { h.loader.load(fixture_path("init-panics")) }.unwrap_err();
    match &err {
        LoadError::InitFailed {
            module,
            message,
            panicked,
            rollback,
        } => {
            assert_eq!(module, "init-panics");
            assert!(*panicked);
            assert!(message.contains("on purpose"), "{message}");
            // The callback init queued before panicking was drained, and the
            // object is gone.
            let d = rollback.domain("init-panics.domain").unwrap();
            assert_eq!(d.barrier, BarrierOutcome::Issued);
            assert_eq!(d.callbacks_queued, 1);
            assert!(rollback.unmapped, "{rollback}");
        }
        e => panic!("expected InitFailed, got {e}"),
    }
    h.still_fine();
}

#[test]
fn failing_init_fails_the_load_with_its_message() {
    let h = Host::new("init-fails");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let err = unsafe { h.loader.load(fixture_path("init-fails")) }.unwrap_err();
    assert!(
        matches!(&err, LoadError::InitFailed { message, panicked: false, rollback, .. }
            if message == "fixture init refuses to start" && rollback.unmapped),
        "{err}"
    );
    h.still_fine();
}

#[test]
fn panicking_exit_is_reported_and_the_unload_completes() {
    let h = Host::new("exit-panics");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { h.loader.load(fixture_path("exit-panics")) }.unwrap();
    let ran = leak(AtomicUsize::new(0));
    // SAFETY: the fixture exports it with this signature; `ran` lives for the process.
    let queue = unsafe { h.loader.symbol::<QueueFn>(m, "fx_queue_callbacks").unwrap() };
    // SAFETY: as above.
    queue.call(|f| unsafe { f.call(3, 20, ran) }).unwrap();
    let err = h.loader.unload(m).unwrap_err();
    match &err {
        UnloadError::HookFailed { failure, report } => {
            assert!(
                matches!(failure, HookFailure::Exit { message, panicked: true } if message.contains("on purpose")),
                "{failure}"
            );
            assert_eq!(
                report.domain("exit-panics.domain").unwrap().barrier,
                BarrierOutcome::Issued
            );
            assert!(report.unmapped);
        }
        e => panic!("expected HookFailed, got {e}"),
    }
    assert_eq!(ran.load(Ordering::SeqCst), 3);
    assert_eq!(h.loader.state(m), Some(ModuleState::Unloaded));
    h.still_fine();
}

#[test]
fn unknown_module_is_refused() {
    let h = Host::new("unknown");
    let other = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let foreign = unsafe { other.load(fixture_path("callbacks")) }.unwrap();
    let err = h.loader.unload(foreign).unwrap_err();
    assert!(
        matches!(err, UnloadError::UnknownModule { handle } if handle == foreign),
        "{err}"
    );
    assert!(other.unload(foreign).unwrap().unmapped);
    h.still_fine();
}

#[test]
fn already_unloaded_module_is_refused() {
    let h = Host::new("twice");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { h.loader.load(fixture_path("callbacks")) }.unwrap();
    assert!(h.loader.unload(m).unwrap().unmapped);
    let err = h.loader.unload(m).unwrap_err();
    assert!(
        matches!(&err, UnloadError::NotLive { name, state: ModuleState::Unloaded, .. } if name == "callbacks"),
        "{err}"
    );
    h.still_fine();
}

struct Reentry<'a> {
    loader: &'a ModuleLoader,
    module: ModuleHandle,
    result: Mutex<Option<Result<(), String>>>,
}

unsafe extern "C" fn unload_from_inside(ctx: *mut c_void) {
    // SAFETY: `ctx` is the `Reentry` of the test below, alive during the call.
    let r = unsafe { &*(ctx as *const Reentry<'_>) };
    let out = match r.loader.unload(r.module) {
        Err(UnloadError::FromInsideCall { .. }) => Ok(()),
        Err(e) => Err(e.to_string()),
        Ok(report) => Err(format!("unloaded from inside a call: {report}")),
    };
    *r.result.lock().unwrap() = Some(out);
}

#[test]
fn unload_from_inside_a_call_into_the_module_is_refused() {
    let h = Host::new("reentry");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { h.loader.load(fixture_path("callbacks")) }.unwrap();
    let r = Reentry {
        loader: &h.loader,
        module: m,
        result: Mutex::new(None),
    };
    // SAFETY: the fixture exports it with this signature.
    let call_host = unsafe { h.loader.symbol::<CallHostFn>(m, "fx_call_host").unwrap() };
    let ctx = &r as *const Reentry<'_> as *mut c_void;
    // SAFETY: `unload_from_inside` expects exactly this context.
    call_host.call(|f| unsafe { f.call(unload_from_inside, ctx) }).unwrap();
    assert_eq!(r.result.lock().unwrap().take(), Some(Ok(())));
    assert_eq!(h.loader.state(m), Some(ModuleState::Live));
    assert!(h.loader.unload(m).unwrap().unmapped);
    h.still_fine();
}
