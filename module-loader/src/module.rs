//! One loaded object: opening it, checking its descriptor, handing it the
//! host runtime, and the record the loader keeps.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use usrcu::abi::{field_fingerprints, READER_PROTOCOL_VERSION, SHARED_STRUCTS};
use usrcu::runtime::{host_vtable, RuntimeVTable, RUNTIME_ABI_VERSION};
use usrcu::{Srcu, SRCU_LAYOUT_VERSION, SRCU_MAGIC};
use usrcu_registry::{
    HookMessage, HookStatus, ModuleDescriptor, SharedLayouts, TypeLayout, DESCRIPTOR_SYMBOL, MODULE_ABI_VERSION,
    MODULE_MAGIC,
};

use crate::address_space::{self, ObjectMapping};
use crate::error::LoadError;
use crate::intake::Intake;
use crate::report::ZombieCause;
use crate::state::{ModuleState, StateWord};
use crate::LoaderConfig;

/// Names a module of one loader. Handles are never reused in a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleHandle(pub(crate) u64);

impl fmt::Display for ModuleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What the loader knows about a module (a snapshot).
#[derive(Clone, Debug)]
pub struct ModuleInfo {
    /// Its handle.
    pub handle: ModuleHandle,
    /// The name from its descriptor.
    pub name: String,
    /// The file it was loaded from.
    pub source_path: PathBuf,
    /// The private copy that was opened: a file in the copy directory, or
    /// `/proc/self/fd/N` for a memfd (which names the copy only while the
    /// object is loaded).
    pub loaded_path: PathBuf,
    /// Its state when the snapshot was taken.
    pub state: ModuleState,
    /// The `usrcu` version it was built against.
    pub usrcu_version: String,
    /// The compiler that built it.
    pub rustc_version: String,
    /// Its static domains' names, in slice order.
    pub domains: Vec<String>,
}

/// A plugin's static domain. The pointer is valid while the object is mapped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DomainPtr(pub(crate) *const Srcu);

// SAFETY: a `Srcu` is Sync; the pointer is only dereferenced while the
// object is mapped (the loader unmaps only after it is done with domains).
unsafe impl Send for DomainPtr {}
// SAFETY: as above.
unsafe impl Sync for DomainPtr {}

impl DomainPtr {
    /// # Safety
    /// The object that holds the domain must still be mapped.
    pub(crate) unsafe fn get(&self) -> &Srcu {
        // SAFETY: the caller guarantees the object is mapped.
        unsafe { &*self.0 }
    }
}

/// A hook of the plugin (`init` or `exit`).
type Hook = unsafe extern "C" fn(*mut HookMessage) -> u32;

/// The loader's record of one module.
pub(crate) struct Module {
    pub(crate) handle: ModuleHandle,
    pub(crate) name: String,
    pub(crate) source_path: PathBuf,
    pub(crate) loaded_path: PathBuf,
    pub(crate) usrcu_version: String,
    pub(crate) rustc_version: String,
    pub(crate) domain_names: Vec<String>,
    pub(crate) domains: Vec<DomainPtr>,
    pub(crate) state: StateWord,
    /// Calls into the module hold a read section of this host-owned domain.
    pub(crate) liveness: Srcu,
    pub(crate) init: Hook,
    pub(crate) exit: Hook,
    /// `None` once closed.
    pub(crate) lib: Mutex<Option<Library>>,
    pub(crate) mapping: ObjectMapping,
    pub(crate) zombie_cause: Mutex<Option<ZombieCause>>,
    /// The private copy `loaded_path` names, kept while the object may be mapped.
    pub(crate) intake: Option<Intake>,
    /// Libraries `dlopen` mapped together with the object (its `DT_NEEDED`
    /// closure not already loaded): (the dynamic linker's name, mapping).
    pub(crate) needed: Vec<(PathBuf, ObjectMapping)>,
    /// Barriers on the object's domains still running on a helper thread
    /// after a bounded drain gave up: the object stays mapped while any is.
    pub(crate) barriers_in_flight: std::sync::Arc<crate::proofs::callbacks::InFlight>,
    /// Addresses of the object's data symbols the size of a `Srcu`: its
    /// `static` domains, listed in its slice or not (`crate::elf_facts`).
    pub(crate) srcu_statics: Vec<usize>,
    /// `exit` and the `Going` notifiers have run (a zombie made before them,
    /// by a drain that timed out, runs them when it is unloaded again).
    pub(crate) hooks_done: std::sync::atomic::AtomicBool,
    /// The Tasks grace period an earlier unload attempt's hook step asked
    /// for (after its clearing): a retry that clears nothing new waits for
    /// it instead of a fresh one (`hook_slots::going`).
    /// With `usrcu::tasks::hooks_last_into` of the object when it was
    /// asked: reused only while that is unchanged.
    pub(crate) hooks_cookie: std::sync::Mutex<Option<(usrcu::tasks::Cookie, u64)>>,
    /// The Tasks grace period an earlier unload attempt's "interrupted"
    /// proof asked for after a scan that found no thread interrupted in the
    /// object (`proofs/interrupted.rs`): a retry whose scans find none
    /// either waits for it instead of a fresh one.
    /// With `usrcu::tasks::hooks_last_into` of the objects, as above.
    pub(crate) interrupted_cookie: std::sync::Mutex<Option<(usrcu::tasks::Cookie, u64)>>,
    /// Per domain (by address), its `slots_scanned` before the barrier that
    /// precedes `exit`, so that the report counts both barriers' scans.
    pub(crate) scan_base: Mutex<Vec<(usize, u64)>>,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("handle", &self.handle)
            .field("name", &self.name)
            .field("state", &self.state.get())
            .finish_non_exhaustive()
    }
}

impl Module {
    pub(crate) fn info(&self) -> ModuleInfo {
        ModuleInfo {
            handle: self.handle,
            name: self.name.clone(),
            source_path: self.source_path.clone(),
            loaded_path: self.loaded_path.clone(),
            state: self.state.get(),
            usrcu_version: self.usrcu_version.clone(),
            rustc_version: self.rustc_version.clone(),
            domains: self.domain_names.clone(),
        }
    }

    /// Run `init` or `exit`: `Err((message, panicked))` on failure.
    pub(crate) fn run_hook(&self, hook: Hook) -> Result<(), (String, bool)> {
        let mut buf = vec![0u8; 4096];
        let mut msg = HookMessage {
            buf: buf.as_mut_ptr(),
            cap: buf.len(),
            len: 0,
        };
        // SAFETY: the hook is the plugin's panic-catching wrapper, the object
        // is mapped (we hold its library), and `msg` lends `buf`.
        let status = HookStatus::from_u32(unsafe { hook(&mut msg) });
        // Leave no rseq descriptor of the plugin's read sections behind on
        // this thread (`usrcu::clear_rseq_descriptor`).
        usrcu::clear_rseq_descriptor();
        let text = String::from_utf8_lossy(&buf[..msg.len.min(buf.len())]).into_owned();
        match status {
            HookStatus::Ok => Ok(()),
            HookStatus::Failed => Err((text, false)),
            HookStatus::Panicked => Err((text, true)),
        }
    }
}

pub(crate) fn io_error(path: &Path, e: io::Error) -> LoadError {
    if e.kind() == io::ErrorKind::NotFound {
        LoadError::NotFound { path: path.to_owned() }
    } else {
        LoadError::Io {
            path: path.to_owned(),
            source: e,
        }
    }
}

/// At most this many bytes of the source's file stem go into a copy's name:
/// the name must fit a memfd's (249 bytes, with the loader's 13-byte prefix)
/// and a directory entry's (255 bytes) with the pid, the handle and `.so`
/// (at most 32 bytes), whatever the source is called (a 255-byte name, or
/// one of bytes that are not UTF-8, each read as a 3-byte U+FFFD).
const COPY_STEM_MAX: usize = 64;

/// The unique name of the copy of `src` opened as module `id`.
pub(crate) fn copy_name(src: &Path, id: ModuleHandle) -> String {
    let stem = src.file_stem().unwrap_or(OsStr::new("module")).to_string_lossy();
    let mut end = stem.len().min(COPY_STEM_MAX);
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}.{}.{}.so", &stem[..end], std::process::id(), id.0)
}

/// Open the validated copy, check the descriptor, hand over the runtime,
/// attach the static domains: a module not yet announced to notifiers nor
/// initialised. On error, the object is closed again and the copy released.
///
/// # Safety
/// Loading runs the object's initialisers: the caller upholds the contract
/// of [`ModuleLoader::load`](crate::ModuleLoader::load).
pub(crate) unsafe fn open(
    handle: ModuleHandle,
    source: &Path,
    intake: Intake,
    config: &LoaderConfig,
) -> Result<Module, LoadError> {
    let loaded = intake.path.clone();
    // SAFETY: forwarded from the caller. RTLD_NOW resolves everything up
    // front, RTLD_LOCAL keeps its symbols out of the global scope.
    let lib = match unsafe { Library::open(Some(&loaded), RTLD_NOW | RTLD_LOCAL) } {
        Ok(lib) => lib,
        Err(e) => {
            intake.release(!address_space::is_mapped(&loaded));
            return Err(LoadError::Dlopen {
                path: source.to_owned(),
                message: e.to_string(),
            });
        }
    };
    crate::phase_timing::lap("load: dlopen");
    match check_and_attach(handle, source, &loaded, &lib, config) {
        Ok(mut m) => {
            m.lib = Mutex::new(Some(lib));
            m.intake = Some(intake);
            Ok(m)
        }
        Err(e) => {
            // The object's ELF constructors ran on this thread in `dlopen`
            // (before any check: a refused plugin's too), and its destructors
            // run in this `dlclose`, right before the unmap: plugin code whose
            // read sections may leave this thread's `rseq_cs` pointing at a
            // descriptor in the object, and the kernel would kill the process
            // at the thread's next context switch. Close it as `unload` does:
            // cleared, and without the thread's rseq registration
            // (`proofs/rseq.rs`; tests/tests/redteam4_rseq.rs, the refused
            // load whose constructor ran read sections).
            crate::proofs::rseq::without_rseq(|| drop(lib));
            intake.release(!address_space::is_mapped(&loaded));
            Err(e)
        }
    }
}

/// The descriptor checks, the runtime hand-over and the domains' attach,
/// over an open library: the module's record, without the library and the
/// copy (which the caller adds).
fn check_and_attach(
    handle: ModuleHandle,
    source: &Path,
    loaded: &Path,
    lib: &Library,
    config: &LoaderConfig,
) -> Result<Module, LoadError> {
    let mapping = address_space::find(loaded).unwrap_or_default();
    crate::phase_timing::lap("load: address_space::find");
    // SAFETY: the descriptor symbol is an `extern "C" fn() -> *const
    // ModuleDescriptor` by the registry's ABI; its type is checked below
    // only through what it returns, field by field.
    let get: libloading::os::unix::Symbol<extern "C" fn() -> *const ModuleDescriptor> =
        unsafe { lib.get(DESCRIPTOR_SYMBOL.as_bytes()) }.map_err(|_| LoadError::NoDescriptor {
            path: source.to_owned(),
            symbol: DESCRIPTOR_SYMBOL,
        })?;
    let desc = get();
    if desc.is_null() {
        return Err(LoadError::NullDescriptor {
            path: source.to_owned(),
        });
    }
    // SAFETY: non-null, and every version of the descriptor starts with
    // these three fields; nothing else is read before they check out.
    let (magic, abi, size) = unsafe {
        let p = desc as *const u8;
        (
            std::ptr::read_unaligned(p as *const u64),
            std::ptr::read_unaligned(p.add(8) as *const u32),
            std::ptr::read_unaligned(p.add(12) as *const u32),
        )
    };
    let path = || source.to_owned();
    if magic != MODULE_MAGIC {
        return Err(LoadError::BadMagic {
            path: path(),
            plugin: magic,
            host: MODULE_MAGIC,
        });
    }
    let version = |what, plugin: &dyn fmt::Display, host: &dyn fmt::Display| LoadError::VersionMismatch {
        path: path(),
        what,
        plugin: plugin.to_string(),
        host: host.to_string(),
    };
    if abi != MODULE_ABI_VERSION {
        return Err(version("module ABI", &abi, &MODULE_ABI_VERSION));
    }
    let host_size = TypeLayout::of::<ModuleDescriptor>();
    if size != host_size.size {
        return Err(LoadError::LayoutMismatch {
            path: path(),
            structure: "ModuleDescriptor",
            plugin: TypeLayout {
                size,
                align: host_size.align,
            },
            host: host_size,
        });
    }
    // SAFETY: magic, version and size match ours: it is our struct.
    let d: &ModuleDescriptor = unsafe { &*desc };
    if d.srcu_layout_version != SRCU_LAYOUT_VERSION {
        return Err(version("SRCU layout", &d.srcu_layout_version, &SRCU_LAYOUT_VERSION));
    }
    if d.runtime_abi_version != RUNTIME_ABI_VERSION {
        return Err(version("runtime ABI", &d.runtime_abi_version, &RUNTIME_ABI_VERSION));
    }
    if d.reader_protocol_version != READER_PROTOCOL_VERSION {
        return Err(version(
            "reader protocol",
            &d.reader_protocol_version,
            &READER_PROTOCOL_VERSION,
        ));
    }
    let host_layouts = SharedLayouts::of_this_build();
    for ((structure, plugin), (_, host)) in d.layouts.named().into_iter().zip(host_layouts.named()) {
        if plugin != host {
            return Err(LoadError::LayoutMismatch {
                path: path(),
                structure,
                plugin,
                host,
            });
        }
    }
    let host_fingerprints = field_fingerprints();
    for (i, (&plugin, host)) in d.field_fingerprints.iter().zip(host_fingerprints).enumerate() {
        if plugin != host {
            return Err(LoadError::FieldOffsetsMismatch {
                path: path(),
                structure: SHARED_STRUCTS[i],
                plugin,
                host,
            });
        }
    }
    // SAFETY: strings of the mapped object, described by the descriptor.
    let (name, usrcu_version, rustc_version) = unsafe {
        (
            d.name.to_string_lossy(),
            d.usrcu_version.to_string_lossy(),
            d.rustc_version.to_string_lossy(),
        )
    };
    if let Err(reason) = check_name(&name) {
        let mut shown: String = name.chars().take(64).collect();
        if shown.len() < name.len() {
            shown.push('…');
        }
        return Err(LoadError::BadModuleName {
            path: path(),
            name: shown,
            reason,
        });
    }
    if !same_release_line(&usrcu_version, usrcu::VERSION) {
        return Err(version("usrcu", &usrcu_version, &usrcu::VERSION));
    }
    if config.require_same_rustc && rustc_version != usrcu_registry::RUSTC_VERSION {
        return Err(version("rustc", &rustc_version, &usrcu_registry::RUSTC_VERSION));
    }
    // A panic in a `panic = "abort"` plugin ends the process wherever the
    // host meant to catch it (init, exit, callbacks, calls): refused in an
    // unwinding host unless the host opts in.
    let host_aborts = cfg!(panic = "abort");
    if d.panic_abort != 0 && !host_aborts && !config.allow_panic_abort {
        return Err(LoadError::PanicStrategyMismatch {
            path: path(),
            plugin: "abort",
            host: "unwind",
        });
    }
    let domains: Vec<DomainPtr> = (0..d.nr_domains)
        // SAFETY: the descriptor lists `nr_domains` pointers.
        .map(|i| DomainPtr(unsafe { *d.domains.add(i) }))
        .collect();
    for (index, dp) in domains.iter().enumerate() {
        // SAFETY: the object is mapped; the layout of `Srcu` matched.
        let header = unsafe { dp.get() }.header();
        if header != (SRCU_MAGIC, SRCU_LAYOUT_VERSION) {
            return Err(LoadError::BadDomainHeader {
                module: name,
                index,
                plugin: header,
                host: (SRCU_MAGIC, SRCU_LAYOUT_VERSION),
            });
        }
    }
    let mut buf = vec![0u8; 1024];
    let mut msg = HookMessage {
        buf: buf.as_mut_ptr(),
        cap: buf.len(),
        len: 0,
    };
    // SAFETY: the install hook of a checked descriptor; the host table is
    // 'static.
    let status = unsafe { (d.install_runtime)(host_vtable(), &mut msg) };
    if HookStatus::from_u32(status) != HookStatus::Ok {
        return Err(LoadError::RuntimeRejected {
            module: name,
            message: String::from_utf8_lossy(&buf[..msg.len.min(buf.len())]).into_owned(),
        });
    }
    let host = host_vtable() as *const RuntimeVTable;
    for dp in &domains {
        // SAFETY: mapped, checked above.
        let s = unsafe { dp.get() };
        // SAFETY: the host's table is 'static (a no-op when the install hook
        // already set it, which it does).
        unsafe { s.set_runtime(host_vtable()) };
        // Every static domain must dispatch to the host's runtime: one that
        // kept the plugin's own would run the plugin's runtime threads.
        if s.runtime_ptr() != host {
            return Err(LoadError::RuntimeMismatch {
                module: name,
                domain: s.name().to_owned(),
                plugin: s.runtime_ptr() as usize,
                host: host as usize,
            });
        }
    }
    let mut domain_names = Vec::with_capacity(domains.len());
    for dp in &domains {
        // SAFETY: mapped, checked above.
        let s = unsafe { dp.get() };
        // The kernel's srcu_module_coming: per-CPU state, in the host runtime.
        s.attach();
        domain_names.push(s.name().to_owned());
    }
    crate::phase_timing::lap("load: descriptor checks, install, attach");
    Ok(Module {
        handle,
        liveness: Srcu::new(&format!("usrcu-loader:{name}{handle}")),
        name,
        source_path: source.to_owned(),
        loaded_path: loaded.to_owned(),
        usrcu_version,
        rustc_version,
        domain_names,
        domains,
        state: StateWord::new(ModuleState::Coming),
        init: d.init,
        exit: d.exit,
        lib: Mutex::new(None),
        mapping,
        zombie_cause: Mutex::new(None),
        intake: None,
        needed: Vec::new(),
        barriers_in_flight: Default::default(),
        srcu_statics: Vec::new(),
        hooks_done: Default::default(),
        hooks_cookie: Default::default(),
        interrupted_cookie: Default::default(),
        scan_base: Mutex::new(Vec::new()),
    })
}

/// Do two `usrcu` versions promise the same ABI? Semver: the same major
/// version, and for `0.x` the same minor one; pre-release tags must match.
pub(crate) fn same_release_line(plugin: &str, host: &str) -> bool {
    fn parse(v: &str) -> Option<(u64, u64, &str)> {
        let (core, pre) = v.split_once('-').unwrap_or((v, ""));
        let mut it = core.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?, pre))
    }
    match (parse(plugin), parse(host)) {
        (Some((pm, pn, pp)), Some((hm, hn, hp))) => pm == hm && (hm > 0 || pn == hn) && pp == hp,
        _ => false,
    }
}

/// Longest module name accepted, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 255;

/// A module name a host can find, print and log: not empty, at most
/// [`MAX_NAME_LEN`] bytes, no control characters, line separators or
/// bidirectional controls (a NUL ends it for C, a
/// newline forges a log line) (red team 9: `""`, `"a\nb"`, `"a\0b"` and
/// 64 KiB names loaded without a word).
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("empty")
    } else if name.len() > MAX_NAME_LEN {
        Err("longer than 255 bytes")
    } else if name.chars().any(char::is_control) {
        Err("contains a control character (a NUL, a newline...)")
    } else if name.chars().any(|c| {
        matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }) {
        // A line or paragraph separator forges a log line too; a
        // direction mark or override makes the printed name lie (red team
        // 10).
        Err("contains a line separator or a bidirectional control (U+2028, U+2029, U+200E/F, U+202A-E, U+2066-9)")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::same_release_line;

    #[test]
    fn usrcu_versions_match_by_semver_release_line() {
        assert!(same_release_line("0.1.0", "0.1.7"));
        assert!(!same_release_line("0.2.0", "0.1.0"));
        assert!(same_release_line("1.2.0", "1.9.3"));
        assert!(!same_release_line("2.0.0", "1.0.0"));
        assert!(!same_release_line("0.1.0-alpha", "0.1.0"));
        assert!(!same_release_line("garbage", "0.1.0"));
    }
}
