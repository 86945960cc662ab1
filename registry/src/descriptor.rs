//! The `#[repr(C)]` module descriptor: what a plugin tells its host before
//! anything else of it runs. Field by field in `docs/abi.md`.

use std::fmt;
use usrcu::percpu::{PerCpu, Slot};
use usrcu::runtime::{RuntimeVTable, RUNTIME_ABI_VERSION};
use usrcu::{CallbackHead, Srcu, SrcuConfig, SrcuStats, SRCU_LAYOUT_VERSION};

/// First field of every descriptor: `"USRCUMOD"` as a little-endian `u64`.
pub const MODULE_MAGIC: u64 = u64::from_le_bytes(*b"USRCUMOD");

/// Version of [`ModuleDescriptor`] and of the hook calling conventions.
/// Bumped on any change of layout or meaning; a host accepts only its own.
///
/// 2: appended `reader_protocol_version`, `panic_abort` and
/// `field_fingerprints`.
/// 3: a `Tracepoint` (which a host hands to its plugins) carries its
/// defining object's `replace` function; a plugin built before it would
/// read the host's tracepoints with the old layout.
pub const MODULE_ABI_VERSION: u32 = 3;

/// The C symbol [`export_module!`](crate::export_module) defines: an
/// `extern "C" fn() -> *const ModuleDescriptor`.
pub const DESCRIPTOR_SYMBOL: &str = "usrcu_module_descriptor";

/// A UTF-8 string owned by the object that built the descriptor. Valid while
/// that object is mapped; a host copies it at once.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StrRef {
    /// First byte.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl StrRef {
    /// Borrow a `'static` string.
    pub const fn new(s: &'static str) -> StrRef {
        StrRef {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// Copy the string out (lossily, if a broken plugin wrote invalid UTF-8).
    ///
    /// # Safety
    /// `ptr..ptr + len` must be readable (the object that owns it is mapped).
    pub unsafe fn to_string_lossy(&self) -> String {
        if self.ptr.is_null() || self.len == 0 {
            return String::new();
        }
        // SAFETY: the caller guarantees the bytes are readable.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// Size and alignment of one shared struct, as the building compiler laid it out.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeLayout {
    /// `size_of`.
    pub size: u32,
    /// `align_of`.
    pub align: u32,
}

impl TypeLayout {
    /// The layout of `T` in this build.
    pub const fn of<T>() -> TypeLayout {
        TypeLayout {
            size: std::mem::size_of::<T>() as u32,
            align: std::mem::align_of::<T>() as u32,
        }
    }
}

impl fmt::Display for TypeLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "size {} align {}", self.size, self.align)
    }
}

/// Layouts of every struct that a plugin's copy of `usrcu` and the host's
/// both touch. A host compares each with its own before it trusts any.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedLayouts {
    /// [`Srcu`]: the domain, whose header both sides read and write.
    pub srcu: TypeLayout,
    /// [`SrcuConfig`], embedded in `Srcu`.
    pub srcu_config: TypeLayout,
    /// [`PerCpu`]: the active index, the chunk table of slots, the fallback slot.
    pub percpu: TypeLayout,
    /// [`Slot`]: one possible CPU's counters.
    pub slot: TypeLayout,
    /// [`CallbackHead`]: the intrusive `call_srcu` head.
    pub callback_head: TypeLayout,
    /// [`SrcuStats`], filled across the runtime vtable.
    pub stats: TypeLayout,
    /// [`RuntimeVTable`]: the host runtime handed to the plugin.
    pub runtime_vtable: TypeLayout,
}

impl SharedLayouts {
    /// The layouts of this build.
    pub const fn of_this_build() -> SharedLayouts {
        SharedLayouts {
            srcu: TypeLayout::of::<Srcu>(),
            srcu_config: TypeLayout::of::<SrcuConfig>(),
            percpu: TypeLayout::of::<PerCpu>(),
            slot: TypeLayout::of::<Slot>(),
            callback_head: TypeLayout::of::<CallbackHead>(),
            stats: TypeLayout::of::<SrcuStats>(),
            runtime_vtable: TypeLayout::of::<RuntimeVTable>(),
        }
    }

    /// Each struct's name with its layout, in field order (the order of
    /// `usrcu::abi::SHARED_STRUCTS` and of the descriptor's
    /// `field_fingerprints`).
    pub fn named(&self) -> [(&'static str, TypeLayout); 7] {
        [
            ("Srcu", self.srcu),
            ("SrcuConfig", self.srcu_config),
            ("PerCpu", self.percpu),
            ("Slot", self.slot),
            ("CallbackHead", self.callback_head),
            ("SrcuStats", self.stats),
            ("RuntimeVTable", self.runtime_vtable),
        ]
    }
}

/// A buffer the host lends to a hook for its error message. The hook writes
/// at most `cap` bytes of UTF-8 at `buf` and sets `len`.
#[repr(C)]
#[derive(Debug)]
pub struct HookMessage {
    /// Host-owned bytes.
    pub buf: *mut u8,
    /// Their number.
    pub cap: usize,
    /// Bytes written by the hook.
    pub len: usize,
}

impl HookMessage {
    /// Copy `msg` in, truncated on a character boundary.
    ///
    /// # Safety
    /// `this` is null or points at a `HookMessage` whose `buf` has `cap`
    /// writable bytes.
    pub unsafe fn write(this: *mut HookMessage, msg: &str) {
        if this.is_null() {
            return;
        }
        // SAFETY: non-null, and the caller guarantees it is valid.
        let m = unsafe { &mut *this };
        let mut n = msg.len().min(m.cap);
        while !msg.is_char_boundary(n) {
            n -= 1;
        }
        if !m.buf.is_null() {
            // SAFETY: `n <= cap` bytes fit in the host's buffer; the source
            // is a distinct Rust string.
            unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), m.buf, n) };
            m.len = n;
        }
    }
}

/// What a hook returned, as a `u32` across the C boundary.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookStatus {
    /// It succeeded.
    Ok = 0,
    /// It returned an error (the message says which).
    Failed = 1,
    /// It panicked; the wrapper caught the panic (the message has the payload).
    Panicked = 2,
}

impl HookStatus {
    /// Decode a status; unknown values read as `Failed`.
    pub fn from_u32(v: u32) -> HookStatus {
        match v {
            0 => HookStatus::Ok,
            2 => HookStatus::Panicked,
            _ => HookStatus::Failed,
        }
    }
}

/// Hook that receives the host's runtime: it calls
/// [`usrcu::runtime::install`] in the plugin's copy of `usrcu` and points every
/// static domain of the object at the host's runtime.
pub type InstallHook = unsafe extern "C" fn(*const RuntimeVTable, *mut HookMessage) -> u32;

/// `init` or `exit`, wrapped so that a panic never crosses the boundary.
pub type LifecycleHook = unsafe extern "C" fn(*mut HookMessage) -> u32;

/// What [`export_module!`](crate::export_module) exports. `#[repr(C)]`;
/// the first three fields never move, so that a host can reject any other
/// version before it reads further.
#[repr(C)]
#[derive(Debug)]
pub struct ModuleDescriptor {
    /// [`MODULE_MAGIC`].
    pub magic: u64,
    /// [`MODULE_ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<ModuleDescriptor>()` in the plugin's build.
    pub descriptor_size: u32,
    /// `usrcu::SRCU_LAYOUT_VERSION` of the plugin's copy of `usrcu`.
    pub srcu_layout_version: u32,
    /// `usrcu::runtime::RUNTIME_ABI_VERSION` of the plugin's copy.
    pub runtime_abi_version: u32,
    /// Layouts of the shared structs in the plugin's build.
    pub layouts: SharedLayouts,
    /// Version of `usrcu` the plugin was built against.
    pub usrcu_version: StrRef,
    /// `rustc --version` of the plugin's compiler.
    pub rustc_version: StrRef,
    /// The module's name.
    pub name: StrRef,
    /// The object's static domains: `nr_domains` pointers.
    pub domains: *const *const Srcu,
    /// How many.
    pub nr_domains: usize,
    /// Receives the host's runtime; called before `init`.
    pub install_runtime: InstallHook,
    /// The module's `init`, panic-catching.
    pub init: LifecycleHook,
    /// The module's `exit`, panic-catching.
    pub exit: LifecycleHook,
    // --- appended in ABI version 2 ---
    /// `usrcu::abi::READER_PROTOCOL_VERSION` of the plugin's copy.
    pub reader_protocol_version: u32,
    /// 1 if the plugin was built with `panic = "abort"` (a panic in its
    /// code then ends the process, wherever it is caught), else 0.
    pub panic_abort: u32,
    /// `usrcu::abi::field_fingerprints()` of the plugin's copy: a hash of
    /// every field offset of each shared struct, in the order of
    /// [`SharedLayouts::named`].
    pub field_fingerprints: [u64; 7],
}

// SAFETY: the descriptor is immutable once built; its pointers refer to
// `'static` data of the object that built it.
unsafe impl Sync for ModuleDescriptor {}
// SAFETY: as above.
unsafe impl Send for ModuleDescriptor {}

impl ModuleDescriptor {
    /// The descriptor of the object this copy of the registry is linked
    /// into: its static domains, this build's versions and layouts.
    pub fn for_this_object(
        name: &'static str,
        install_runtime: InstallHook,
        init: LifecycleHook,
        exit: LifecycleHook,
    ) -> ModuleDescriptor {
        let domains: &'static [&'static Srcu] = &crate::SRCU_DOMAINS;
        ModuleDescriptor {
            magic: MODULE_MAGIC,
            abi_version: MODULE_ABI_VERSION,
            descriptor_size: std::mem::size_of::<ModuleDescriptor>() as u32,
            srcu_layout_version: SRCU_LAYOUT_VERSION,
            runtime_abi_version: RUNTIME_ABI_VERSION,
            layouts: SharedLayouts::of_this_build(),
            usrcu_version: StrRef::new(crate::USRCU_VERSION),
            rustc_version: StrRef::new(crate::RUSTC_VERSION),
            name: StrRef::new(name),
            // `&'static Srcu` is a thin pointer: the slice is an array of
            // `*const Srcu`.
            domains: domains.as_ptr() as *const *const Srcu,
            nr_domains: domains.len(),
            install_runtime,
            init,
            exit,
            reader_protocol_version: usrcu::abi::READER_PROTOCOL_VERSION,
            panic_abort: cfg!(panic = "abort") as u32,
            field_fingerprints: usrcu::abi::field_fingerprints(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" fn ok(_: *mut HookMessage) -> u32 {
        0
    }

    #[test]
    fn descriptor_starts_with_magic_version_and_size() {
        let d = ModuleDescriptor::for_this_object("t", crate::__private::install_runtime, ok, ok);
        let p = &d as *const ModuleDescriptor as *const u8;
        // SAFETY: reading the first 16 bytes of a live descriptor.
        let (magic, abi, size) = unsafe {
            (
                std::ptr::read(p as *const u64),
                std::ptr::read(p.add(8) as *const u32),
                std::ptr::read(p.add(12) as *const u32),
            )
        };
        assert_eq!(magic, MODULE_MAGIC);
        assert_eq!(abi, MODULE_ABI_VERSION);
        assert_eq!(size as usize, std::mem::size_of::<ModuleDescriptor>());
        assert_eq!(d.layouts, SharedLayouts::of_this_build());
        assert_eq!(d.field_fingerprints, usrcu::abi::field_fingerprints());
        assert_eq!(d.panic_abort, cfg!(panic = "abort") as u32);
        // This unit-test binary declares no static domain.
        assert_eq!(d.nr_domains, 0);
    }

    /// The offsets docs/abi.md lists (64-bit targets).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn descriptor_layout_matches_the_documented_offsets() {
        use std::mem::offset_of;
        assert_eq!(offset_of!(ModuleDescriptor, magic), 0);
        assert_eq!(offset_of!(ModuleDescriptor, abi_version), 8);
        assert_eq!(offset_of!(ModuleDescriptor, descriptor_size), 12);
        assert_eq!(offset_of!(ModuleDescriptor, srcu_layout_version), 16);
        assert_eq!(offset_of!(ModuleDescriptor, runtime_abi_version), 20);
        assert_eq!(offset_of!(ModuleDescriptor, layouts), 24);
        assert_eq!(offset_of!(ModuleDescriptor, usrcu_version), 80);
        assert_eq!(offset_of!(ModuleDescriptor, rustc_version), 96);
        assert_eq!(offset_of!(ModuleDescriptor, name), 112);
        assert_eq!(offset_of!(ModuleDescriptor, domains), 128);
        assert_eq!(offset_of!(ModuleDescriptor, nr_domains), 136);
        assert_eq!(offset_of!(ModuleDescriptor, install_runtime), 144);
        assert_eq!(offset_of!(ModuleDescriptor, init), 152);
        assert_eq!(offset_of!(ModuleDescriptor, exit), 160);
        assert_eq!(offset_of!(ModuleDescriptor, reader_protocol_version), 168);
        assert_eq!(offset_of!(ModuleDescriptor, panic_abort), 172);
        assert_eq!(offset_of!(ModuleDescriptor, field_fingerprints), 176);
        assert_eq!(std::mem::size_of::<ModuleDescriptor>(), 232);
    }

    #[test]
    fn layout_names_follow_the_order_of_the_field_fingerprints() {
        let names: Vec<&str> = SharedLayouts::of_this_build().named().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, usrcu::abi::SHARED_STRUCTS);
    }

    #[test]
    fn hook_message_truncates_on_a_character_boundary() {
        let mut buf = [0u8; 5];
        let mut m = HookMessage {
            buf: buf.as_mut_ptr(),
            cap: buf.len(),
            len: 0,
        };
        // "aaaa" then a two-byte character that does not fit whole.
        // SAFETY: `m` lends 5 writable bytes.
        unsafe { HookMessage::write(&mut m, "aaaaé") };
        assert_eq!(m.len, 4);
        assert_eq!(&buf[..4], b"aaaa");
    }

    #[test]
    fn run_hook_reports_errors_and_catches_panics() {
        let mut buf = [0u8; 64];
        let mut m = HookMessage {
            buf: buf.as_mut_ptr(),
            cap: buf.len(),
            len: 0,
        };
        // SAFETY: `m` lends 64 writable bytes.
        let st = unsafe { crate::__private::run_hook(&mut m, || Err("no".to_owned())) };
        assert_eq!((HookStatus::from_u32(st), m.len), (HookStatus::Failed, 2));
        m.len = 0;
        // SAFETY: as above.
        let st = unsafe { crate::__private::run_hook(&mut m, || panic!("boom")) };
        assert_eq!(HookStatus::from_u32(st), HookStatus::Panicked);
        assert_eq!(&buf[..m.len], b"boom");
    }
}
