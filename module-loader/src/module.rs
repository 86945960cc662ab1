//! One loaded object: opening it, checking its descriptor, handing it the
//! host runtime, and the record the loader keeps.

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use usrcu::runtime::{host_vtable, RUNTIME_ABI_VERSION};
use usrcu::{Srcu, SRCU_LAYOUT_VERSION, SRCU_MAGIC};
use usrcu_registry::{
    HookMessage, HookStatus, ModuleDescriptor, SharedLayouts, TypeLayout, DESCRIPTOR_SYMBOL, MODULE_ABI_VERSION,
    MODULE_MAGIC,
};

use crate::address_space::{self, ObjectMapping};
use crate::error::LoadError;
use crate::report::ZombieCause;
use crate::state::{ModuleState, StateWord};

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
    /// The unique copy that was opened.
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
    /// Libraries `dlopen` mapped together with the object (its `DT_NEEDED`
    /// closure not already loaded): (the dynamic linker's name, mapping).
    pub(crate) needed: Vec<(PathBuf, ObjectMapping)>,
    /// Barriers on the object's domains still running on a helper thread
    /// after a bounded drain gave up: the object stays mapped while any is.
    pub(crate) barriers_in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Addresses of the object's data symbols the size of a `Srcu`: its
    /// `static` domains, listed in its slice or not (`crate::elf_facts`).
    pub(crate) srcu_statics: Vec<usize>,
    /// `exit` and the `Going` notifiers have run (a zombie made before them,
    /// by a drain that timed out, runs them when it is unloaded again).
    pub(crate) hooks_done: std::sync::atomic::AtomicBool,
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
        let text = String::from_utf8_lossy(&buf[..msg.len.min(buf.len())]).into_owned();
        match status {
            HookStatus::Ok => Ok(()),
            HookStatus::Failed => Err((text, false)),
            HookStatus::Panicked => Err((text, true)),
        }
    }
}

/// Check that `path` is an ELF shared object before handing it to `dlopen`.
pub(crate) fn check_elf(path: &Path) -> Result<(), LoadError> {
    let mut head = [0u8; 18];
    let mut f = fs::File::open(path).map_err(|e| io_error(path, e))?;
    let n = read_up_to(&mut f, &mut head).map_err(|e| io_error(path, e))?;
    let not = |reason: String| LoadError::NotSharedObject {
        path: path.to_owned(),
        reason,
    };
    if n < 4 || head[..4] != *b"\x7fELF" {
        return Err(not(format!("no ELF magic (first bytes {:02x?})", &head[..n.min(4)])));
    }
    if n < head.len() {
        return Err(not(format!("truncated ELF header ({n} bytes)")));
    }
    // e_type at offset 16, in the file's byte order (EI_DATA at offset 5).
    let e_type = if head[5] == 2 {
        u16::from_be_bytes([head[16], head[17]])
    } else {
        u16::from_le_bytes([head[16], head[17]])
    };
    const ET_DYN: u16 = 3;
    if e_type == ET_DYN && is_pie_executable(path).unwrap_or(false) {
        return Err(not(
            "a position-independent executable (DF_1_PIE), not a library".to_owned()
        ));
    }
    if e_type != ET_DYN {
        let kind = match e_type {
            1 => "a relocatable object (ET_REL)".to_owned(),
            2 => "an executable (ET_EXEC)".to_owned(),
            4 => "a core dump (ET_CORE)".to_owned(),
            t => format!("ELF type {t}"),
        };
        return Err(not(kind));
    }
    Ok(())
}

/// Does this 64-bit little-endian ELF file carry `DF_1_PIE` (an executable
/// that glibc refuses to `dlopen`)? `None` where the file is of another class.
fn is_pie_executable(path: &Path) -> Option<bool> {
    const DT_FLAGS_1: u64 = 0x6fff_fffb;
    const DF_1_PIE: u64 = 0x0800_0000;
    const PT_DYNAMIC: u32 = 2;
    let data = fs::read(path).ok()?;
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?));
    // ELFCLASS64, ELFDATA2LSB.
    if data.get(4..6)? != [2, 1] {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_at(32)? as usize, u16_at(54)? as usize, u16_at(56)? as usize);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph)? != PT_DYNAMIC {
            continue;
        }
        let (off, size) = (u64_at(ph + 8)? as usize, u64_at(ph + 32)? as usize);
        for e in (off..off + size).step_by(16) {
            match u64_at(e)? {
                0 => break,
                DT_FLAGS_1 => return Some(u64_at(e + 8)? & DF_1_PIE != 0),
                _ => {}
            }
        }
    }
    Some(false)
}

fn read_up_to(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
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

/// The unique name of the copy of `src` opened as module `id`.
pub(crate) fn copy_name(src: &Path, id: ModuleHandle) -> PathBuf {
    let stem = src.file_stem().unwrap_or(OsStr::new("module")).to_string_lossy();
    PathBuf::from(format!("{stem}.{}.{}.so", std::process::id(), id.0))
}

/// Open the copy at `loaded`, check the descriptor, hand over the runtime,
/// attach the static domains: a module not yet announced to notifiers nor
/// initialised. On error, the object is closed again.
pub(crate) fn open(
    handle: ModuleHandle,
    source: &Path,
    loaded: &Path,
    require_same_rustc: bool,
) -> Result<Module, LoadError> {
    // SAFETY: loading runs the object's initialisers. A plugin is trusted
    // code of the host; RTLD_NOW resolves everything up front, RTLD_LOCAL
    // keeps its symbols out of the global scope.
    let lib = unsafe { Library::open(Some(loaded), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| LoadError::Dlopen {
        path: source.to_owned(),
        message: e.to_string(),
    })?;
    let mapping = address_space::find(loaded).unwrap_or_default();
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
    // SAFETY: strings of the mapped object, described by the descriptor.
    let (name, usrcu_version, rustc_version) = unsafe {
        (
            d.name.to_string_lossy(),
            d.usrcu_version.to_string_lossy(),
            d.rustc_version.to_string_lossy(),
        )
    };
    if require_same_rustc && rustc_version != usrcu_registry::RUSTC_VERSION {
        return Err(version("rustc", &rustc_version, &usrcu_registry::RUSTC_VERSION));
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
    let mut domain_names = Vec::with_capacity(domains.len());
    for dp in &domains {
        // SAFETY: mapped, checked above.
        let s = unsafe { dp.get() };
        // SAFETY: the host's table is 'static (a no-op when the install hook
        // already set it, which it does).
        unsafe { s.set_runtime(host_vtable()) };
        // The kernel's srcu_module_coming: per-CPU state, in the host runtime.
        s.attach();
        domain_names.push(s.name().to_owned());
    }
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
        lib: Mutex::new(Some(lib)),
        mapping,
        zombie_cause: Mutex::new(None),
        needed: Vec::new(),
        barriers_in_flight: Default::default(),
        srcu_statics: Vec::new(),
        hooks_done: Default::default(),
    })
}
