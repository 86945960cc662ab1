//! Typed plugin interfaces: a `#[repr(C)]` table of `extern "C"` functions,
//! declared once in a crate that host and plugin share, exported by the
//! plugin and checked by the host at load.
//!
//! # Declaring
//!
//! ```
//! usrcu_registry::plugin_interface! {
//!     /// What a calculator plugin serves.
//!     pub trait Calc ["calc", version 1] {
//!         /// `x` transformed.
//!         fn compute(x: u64) -> u64;
//!         /// A number that says which build is live.
//!         fn build_id() -> u32;
//!     }
//! }
//! ```
//!
//! The macro expands to:
//! - the trait `Calc`, whose functions a plugin implements on a type of its
//!   own (`impl Calc for MyPlugin`), as plain Rust;
//! - `impl Interface for dyn Calc`: the interface's name and version, its
//!   functions with their signatures and fingerprints, its `#[repr(C)]`
//!   table of `extern "C"` shims, and the host's client (`dyn Calc` is the
//!   type by which a host names the interface:
//!   `loader.interface::<dyn Calc>("my-plugin")`).
//!
//! # Exporting
//!
//! ```no_run
//! # usrcu_registry::plugin_interface! { pub trait Calc ["calc", version 1] { fn compute(x: u64) -> u64; } }
//! struct Doubler;
//! impl Calc for Doubler {
//!     fn compute(x: u64) -> u64 { x * 2 }
//! }
//! usrcu_registry::export_interface!(Calc for Doubler);
//! ```
//!
//! `export_interface!` exports one C symbol, [`INTERFACES_SYMBOL`], that
//! returns the object's [`InterfaceList`] (so the module descriptor does not
//! change). Each function of the table is a shim that runs the plugin's
//! function inside `catch_unwind`: a panic becomes a status and a message,
//! never an unwind across the C boundary.
//!
//! # What is checked
//!
//! Every function carries a fingerprint: a hash of its name, the names of
//! its parameter and return types (the types themselves, not the aliases
//! they may be spelled with), and their sizes and alignments in the
//! building compiler. The host compares the interface's name, its version,
//! the table's layout, and function by function (position, name,
//! fingerprint), and names the first function that differs.
//!
//! # What may cross
//!
//! Parameters and results are [`PlainData`]: integers, floats, `bool`,
//! `()`; anything else does not compile. Nothing that borrows from or is
//! owned by the plugin can reach the host through a typed call, so nothing
//! of the plugin outlives its unload, and the plugin's allocator never
//! touches host memory.

use std::ffi::c_void;
use std::fmt;
use std::mem::MaybeUninit;

use crate::descriptor::{HookMessage, HookStatus, StrRef, TypeLayout};

/// The C symbol through which an object exports its interfaces
/// (`extern "C" fn() -> *const InterfaceList`).
pub const INTERFACES_SYMBOL: &str = "usrcu_interfaces";

/// First field of an [`InterfaceList`].
pub const INTERFACE_MAGIC: u64 = u64::from_le_bytes(*b"USRCUIFC");

/// Version of the layout of [`InterfaceList`], [`InterfaceEntry`],
/// [`FunctionEntry`] and of the shims' calling convention.
pub const INTERFACE_ABI_VERSION: u32 = 1;

mod sealed {
    pub trait Sealed {}
}

/// A type that may cross a typed interface by value: plain data, no
/// pointers, valid for every bit pattern a shim can write.
///
/// Sealed: implemented for the integers, the floats, `bool` and `()`.
///
/// Parameters must be plain data too: a reference, a `String` or a
/// `Mutex` parameter would let the plugin leave a value of its own in host
/// memory, or grow a host allocation with its own allocator (red team 9).
///
/// ```
/// // Plain data: compiles.
/// usrcu_registry::plugin_interface! {
///     pub trait Named ["named", version 1] { fn name_len(max: u64) -> u64; }
/// }
/// ```
///
/// ```compile_fail
/// // A slot the plugin could fill with a `&'static str` of its rodata.
/// usrcu_registry::plugin_interface! {
///     pub trait Named ["named", version 1] { fn name_into(slot: &std::sync::Mutex<Option<&'static str>>) -> u64; }
/// }
/// ```
///
/// ```compile_fail
/// // A slot the plugin could fill with a closure of its code.
/// usrcu_registry::plugin_interface! {
///     pub trait Named ["named", version 1] { fn callback_into(slot: &std::sync::Mutex<Option<Box<dyn Fn() -> u64 + Send>>>) -> u64; }
/// }
/// ```
///
/// ```compile_fail
/// // A host `String` the plugin would grow with its own allocator.
/// usrcu_registry::plugin_interface! {
///     pub trait Named ["named", version 1] { fn append(buf: &std::sync::Mutex<String>) -> u64; }
/// }
/// ```
pub trait PlainData: Copy + Send + Sync + 'static + sealed::Sealed {
    /// The type's name, whatever alias the interface spells it with: what
    /// the fingerprint hashes, so that `type Flag = u8;` changed to
    /// `bool` changes it.
    const NAME: &'static str;
}

macro_rules! plain_data {
    ($($t:ty),*) => { $( impl sealed::Sealed for $t {} impl PlainData for $t { const NAME: &'static str = stringify!($t); } )* };
}
plain_data!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize, f32, f64, bool, ());

/// One function of an interface, as the building compiler saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionSpec {
    /// Its name.
    pub name: &'static str,
    /// Its signature, as declared (`compute(u64) -> u64`).
    pub signature: &'static str,
    /// Hash of the signature and of the sizes and alignments of its types.
    pub fingerprint: u64,
}

/// A typed interface: implemented by `plugin_interface!` for `dyn Trait`.
///
/// # Safety
/// `Table` must be the `#[repr(C)]` table of `extern "C"` shims that
/// `FUNCTIONS` describes, in order, and `Client` must call them only through
/// [`call`] with a [`Gate`]. Only `plugin_interface!` implements it.
pub unsafe trait Interface: 'static {
    /// The interface's name (what an object exports it under).
    const NAME: &'static str;
    /// Its version; a host refuses any other.
    const VERSION: u32;
    /// Its functions, in table order.
    const FUNCTIONS: &'static [FunctionSpec];
    /// The `#[repr(C)]` table of `extern "C"` shims.
    type Table: 'static;
    /// What a host calls through: one method per function, each returning
    /// `Result<R, G::Error>`.
    type Client<G: Gate>;
    /// The client over `gate`.
    fn client<G: Gate>(gate: G) -> Self::Client<G>;
}

/// How a host reaches the table of the plugin copy that is live now.
///
/// # Safety
/// [`Gate::enter`] may hand `f` only a pointer to the `Interface::Table` of
/// the interface this gate was made for, checked against the host's
/// declaration, and the object that holds it must stay mapped (its code
/// callable) until `f` returns.
pub unsafe trait Gate {
    /// What a refused or failed call returns.
    type Error;
    /// Run `f` with the live copy's table (as an untyped pointer) while that
    /// copy cannot be unloaded; `f` returns a [`HookStatus`] as `u32`.
    fn enter(&self, f: &mut dyn FnMut(*const c_void) -> u32) -> Result<u32, Self::Error>;
    /// The error for a call whose plugin function panicked.
    fn panicked(&self, function: &'static str, message: String) -> Self::Error;
}

/// Call one function of the table through `gate`: the shim writes the result
/// into host memory and a panic message into a host buffer.
///
/// # Safety
/// `shim` must call only the table function named `function`, whose result
/// type is `R`, with the output and message pointers it is given.
#[doc(hidden)]
pub unsafe fn call<G: Gate, T, R: PlainData>(
    gate: &G,
    function: &'static str,
    shim: impl Fn(&T, *mut R, *mut HookMessage) -> u32,
) -> Result<R, G::Error> {
    let mut out = MaybeUninit::<R>::uninit();
    let mut buf = [0u8; 1024];
    let mut msg = HookMessage {
        buf: buf.as_mut_ptr(),
        cap: buf.len(),
        len: 0,
    };
    let status = gate.enter(&mut |table| {
        // SAFETY: the Gate contract: `table` is this interface's checked
        // table, in an object that stays mapped until we return.
        let table = unsafe { &*(table as *const T) };
        shim(table, out.as_mut_ptr(), &mut msg)
    })?;
    match HookStatus::from_u32(status) {
        // SAFETY: a shim that returns Ok has written its result (below, in
        // `shim_body`), and `R` is plain data.
        HookStatus::Ok => Ok(unsafe { out.assume_init() }),
        _ => {
            let n = msg.len.min(buf.len());
            Err(gate.panicked(function, String::from_utf8_lossy(&buf[..n]).into_owned()))
        }
    }
}

/// The body of every plugin-side shim: run `f`, catch a panic, write the
/// result or the message.
///
/// # Safety
/// `out` is writable for an `R`; `msg` as in [`crate::__private::run_hook`].
#[doc(hidden)]
pub unsafe fn shim_body<R: PlainData>(out: *mut R, msg: *mut HookMessage, f: impl FnOnce() -> R) -> u32 {
    let body = || {
        let r = f();
        // SAFETY: the caller guarantees `out` is writable.
        unsafe { out.write(r) };
        Ok(())
    };
    // SAFETY: forwarded from the caller.
    unsafe { crate::export::run_hook(msg, body) }
}

// --- fingerprints -------------------------------------------------------------

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes`, continuing from `h` (`const`, so fingerprints are
/// computed by the compiler).
#[doc(hidden)]
pub const fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// The fingerprint of a function: its name, then each type's
/// [`PlainData::NAME`] (not its spelling, which may be an alias: red team
/// 9 changed `type Flag = u8` to `bool` and kept the fingerprint), size
/// and alignment (`types`, parameters then result).
#[doc(hidden)]
pub const fn fingerprint(name: &str, types: &[(&str, TypeLayout)]) -> u64 {
    let mut h = fnv(FNV_OFFSET, name.as_bytes());
    let mut i = 0;
    while i < types.len() {
        h = fnv(h, b"\0");
        h = fnv(h, types[i].0.as_bytes());
        h = fnv(h, &types[i].1.size.to_le_bytes());
        h = fnv(h, &types[i].1.align.to_le_bytes());
        i += 1;
    }
    h
}

// --- what an object exports ---------------------------------------------------

/// One function of an exported interface.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FunctionEntry {
    /// [`FunctionSpec::name`].
    pub name: StrRef,
    /// [`FunctionSpec::signature`].
    pub signature: StrRef,
    /// [`FunctionSpec::fingerprint`].
    pub fingerprint: u64,
}

/// One exported interface.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InterfaceEntry {
    /// [`Interface::NAME`].
    pub name: StrRef,
    /// [`Interface::VERSION`].
    pub version: u32,
    /// Number of [`FunctionEntry`]s at `functions`.
    pub function_count: u32,
    /// The functions, in table order.
    pub functions: *const FunctionEntry,
    /// Layout of the table.
    pub table_layout: TypeLayout,
    /// The table (an `Interface::Table`).
    pub table: *const c_void,
}

/// What [`INTERFACES_SYMBOL`] returns.
#[repr(C)]
#[derive(Debug)]
pub struct InterfaceList {
    /// [`INTERFACE_MAGIC`].
    pub magic: u64,
    /// [`INTERFACE_ABI_VERSION`].
    pub abi_version: u32,
    /// Number of entries.
    pub count: u32,
    /// The entries.
    pub entries: *const InterfaceEntry,
}

/// A static of [`export_interface!`]: its raw pointers point at other
/// statics of the same object, immutable, so it may be shared.
#[doc(hidden)]
#[derive(Debug)]
pub struct Statics<T>(pub T);

// SAFETY: every pointer inside points at an immutable static of the object
// (see `export_interface!`).
unsafe impl<T> Sync for Statics<T> {}

/// The function list of interface `specs` (`const`: built by the compiler).
#[doc(hidden)]
pub const fn functions<const N: usize>(specs: &'static [FunctionSpec]) -> [FunctionEntry; N] {
    let empty = FunctionEntry {
        name: StrRef::new(""),
        signature: StrRef::new(""),
        fingerprint: 0,
    };
    let mut out = [empty; N];
    let mut i = 0;
    while i < N {
        out[i] = FunctionEntry {
            name: StrRef::new(specs[i].name),
            signature: StrRef::new(specs[i].signature),
            fingerprint: specs[i].fingerprint,
        };
        i += 1;
    }
    out
}

/// One interface's entry, pointing at its function list and its table.
#[doc(hidden)]
pub const fn entry<I: Interface + ?Sized>(functions: *const FunctionEntry, table: *const c_void) -> InterfaceEntry {
    InterfaceEntry {
        name: StrRef::new(I::NAME),
        version: I::VERSION,
        function_count: I::FUNCTIONS.len() as u32,
        functions,
        table_layout: TypeLayout::of::<I::Table>(),
        table,
    }
}

/// The list of `count` entries at `entries`.
#[doc(hidden)]
pub const fn list(entries: *const InterfaceEntry, count: usize) -> InterfaceList {
    InterfaceList {
        magic: INTERFACE_MAGIC,
        abi_version: INTERFACE_ABI_VERSION,
        count: count as u32,
        entries,
    }
}

// --- checking -----------------------------------------------------------------

/// Why a plugin's interface does not match the host's declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InterfaceError {
    /// The object exports no interface list (no `export_interface!`).
    NotExported {
        /// The interface looked for.
        interface: &'static str,
    },
    /// The list is not one this host reads (magic or ABI version).
    BadList {
        /// What was found.
        found: String,
    },
    /// The object exports interfaces, but not this one.
    Missing {
        /// The interface looked for.
        interface: &'static str,
        /// The ones it exports.
        exported: Vec<String>,
    },
    /// Another version.
    Version {
        /// The interface.
        interface: &'static str,
        /// The plugin's version.
        plugin: u32,
        /// The host's.
        host: u32,
    },
    /// A function differs: signature, a type's layout, or its place.
    Function {
        /// The interface.
        interface: &'static str,
        /// The function (the host's name at that place, or the plugin's
        /// extra one).
        function: String,
        /// The plugin's signature there (empty: the plugin has none).
        plugin: String,
        /// The host's signature there (empty: the host has none).
        host: String,
    },
    /// Same functions, but the table is laid out differently.
    Layout {
        /// The interface.
        interface: &'static str,
        /// The plugin's table.
        plugin: TypeLayout,
        /// The host's.
        host: TypeLayout,
    },
}

impl fmt::Display for InterfaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterfaceError::NotExported { interface } => write!(
                f,
                "interface '{interface}': the object exports no interfaces (symbol `{INTERFACES_SYMBOL}`; was it built with usrcu_registry::export_interface!?)"
            ),
            InterfaceError::BadList { found } => write!(f, "the object's interface list is not readable: {found}"),
            InterfaceError::Missing { interface, exported } => {
                write!(f, "interface '{interface}' is not exported (the object exports {exported:?})")
            }
            InterfaceError::Version { interface, plugin, host } => {
                write!(f, "interface '{interface}': plugin has version {plugin}, host expects {host}")
            }
            InterfaceError::Function {
                interface,
                function,
                plugin,
                host,
            } => {
                let side = |s: &str| if s.is_empty() { "nothing".to_owned() } else { format!("`{s}`") };
                write!(
                    f,
                    "interface '{interface}': function `{function}` differs: plugin has {}, host expects {}",
                    side(plugin),
                    side(host)
                )
            }
            InterfaceError::Layout { interface, plugin, host } => write!(
                f,
                "interface '{interface}': table layout differs: plugin has {plugin}, host has {host}"
            ),
        }
    }
}

impl std::error::Error for InterfaceError {}

/// Find interface `I` in the list an object exported and check it against
/// the host's declaration; returns its table.
///
/// # Safety
/// `list` is null or what the object's [`INTERFACES_SYMBOL`] returned, and
/// the object is mapped.
pub unsafe fn find<I: Interface + ?Sized>(list: *const InterfaceList) -> Result<*const c_void, InterfaceError> {
    if list.is_null() {
        return Err(InterfaceError::NotExported { interface: I::NAME });
    }
    // SAFETY: the caller guarantees the list is the object's, and mapped.
    let list = unsafe { &*list };
    if list.magic != INTERFACE_MAGIC || list.abi_version != INTERFACE_ABI_VERSION {
        return Err(InterfaceError::BadList {
            found: format!("magic {:#x}, ABI version {}", list.magic, list.abi_version),
        });
    }
    let entries: &[InterfaceEntry] = if list.count == 0 || list.entries.is_null() {
        &[]
    } else {
        // SAFETY: `count` entries, built by `export`.
        unsafe { std::slice::from_raw_parts(list.entries, list.count as usize) }
    };
    let name = |e: &InterfaceEntry| {
        // SAFETY: the strings are the mapped object's.
        unsafe { e.name.to_string_lossy() }
    };
    let Some(e) = entries.iter().find(|e| name(e) == I::NAME) else {
        return Err(InterfaceError::Missing {
            interface: I::NAME,
            exported: entries.iter().map(name).collect(),
        });
    };
    if e.version != I::VERSION {
        return Err(InterfaceError::Version {
            interface: I::NAME,
            plugin: e.version,
            host: I::VERSION,
        });
    }
    let functions: &[FunctionEntry] = if e.function_count == 0 || e.functions.is_null() {
        &[]
    } else {
        // SAFETY: `function_count` entries, built by `entry`.
        unsafe { std::slice::from_raw_parts(e.functions, e.function_count as usize) }
    };
    for i in 0..functions.len().max(I::FUNCTIONS.len()) {
        let host = I::FUNCTIONS.get(i);
        let plugin = functions.get(i);
        // SAFETY: see above.
        let plugin_name = plugin.map(|p| unsafe { p.name.to_string_lossy() });
        let same = match (host, plugin) {
            (Some(h), Some(p)) => plugin_name.as_deref() == Some(h.name) && p.fingerprint == h.fingerprint,
            _ => false,
        };
        if !same {
            return Err(InterfaceError::Function {
                interface: I::NAME,
                function: host.map(|h| h.name.to_owned()).or(plugin_name).unwrap_or_default(),
                // SAFETY: see above.
                plugin: plugin
                    .map(|p| unsafe { p.signature.to_string_lossy() })
                    .unwrap_or_default(),
                host: host.map(|h| h.signature.to_owned()).unwrap_or_default(),
            });
        }
    }
    if e.table_layout != TypeLayout::of::<I::Table>() || e.table.is_null() {
        return Err(InterfaceError::Layout {
            interface: I::NAME,
            plugin: e.table_layout,
            host: TypeLayout::of::<I::Table>(),
        });
    }
    Ok(e.table)
}

// --- the macros ---------------------------------------------------------------

/// Declare a typed plugin interface. See the [module docs](crate::interface).
///
/// ```
/// usrcu_registry::plugin_interface! {
///     /// Greetings.
///     pub trait Greeter ["greeter", version 2] {
///         fn greet(times: u32) -> u64;
///         fn reset();
///     }
/// }
/// use usrcu_registry::interface::Interface;
/// assert_eq!(<dyn Greeter as Interface>::NAME, "greeter");
/// assert_eq!(<dyn Greeter as Interface>::FUNCTIONS[0].signature, "greet(u32) -> u64");
/// ```
///
/// A function named like a method of the host's handle
/// ([`RESERVED_NAMES`](crate::interface::RESERVED_NAMES): `module`,
/// `clone`, ...) is refused at compile time, since the handle's own method
/// would run instead of the plugin's:
///
/// ```compile_fail,E0080
/// usrcu_registry::plugin_interface! {
///     pub trait Shadowed ["shadowed", version 1] {
///         fn module() -> u64;
///     }
/// }
/// ```
#[macro_export]
macro_rules! plugin_interface {
    {
        $(#[$attr:meta])*
        $vis:vis trait $name:ident [$iface:literal, version $version:literal] {
            $(
                $(#[$fattr:meta])*
                fn $f:ident ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)?;
            )*
        }
    } => {
        $(#[$attr])*
        ///
        /// A typed plugin interface (see `usrcu_registry::interface`): a plugin
        /// implements these functions on a type of its own and exports them
        /// with `usrcu_registry::export_interface!`; a host calls them through
        /// `dyn` this trait's client, each returning a `Result`.
        $vis trait $name: 'static {
            $(
                $(#[$fattr])*
                #[allow(clippy::too_many_arguments)]
                fn $f($($arg: $ty),*) $(-> $ret)? where Self: Sized;
            )*
        }

        $(
            const _: () = ::core::assert!(
                !$crate::interface::__private::reserved_name(::core::stringify!($f)),
                ::core::concat!(
                    "plugin_interface!: the function `", ::core::stringify!($f),
                    "` is named like a method of the host's handle (`usrcu_registry::interface::RESERVED_NAMES`), \
                     which would run instead of it: rename it"
                )
            );
        )*

        const _: () = {
            use $crate::interface::__private as __p;

            /// The `#[repr(C)]` table of shims.
            #[repr(C)]
            #[allow(missing_debug_implementations)]
            pub struct Table {
                $(
                    $f: unsafe extern "C" fn(
                        *mut $crate::__ret_ty!($($ret)?),
                        *mut $crate::HookMessage
                        $(, $ty)*
                    ) -> u32,
                )*
            }

            /// The host's client: one method per function.
            #[allow(missing_debug_implementations)]
            pub struct Client<G> {
                gate: G,
            }

            impl<G: __p::Gate> Client<G> {
                $(
                    $(#[$fattr])*
                    #[allow(clippy::unused_unit, clippy::too_many_arguments)]
                    pub fn $f(&self $(, $arg: $ty)*) -> ::core::result::Result<$crate::__ret_ty!($($ret)?), G::Error> {
                        // SAFETY: the closure calls only the table's `$f`,
                        // whose result type is the one we read.
                        unsafe {
                            __p::call(&self.gate, stringify!($f), |t: &Table, out, msg| (t.$f)(out, msg $(, $arg)*))
                        }
                    }
                )*
            }

            impl dyn $name {
                /// The table whose shims call `P`'s functions.
                #[doc(hidden)]
                pub const fn __table<P: $name>() -> Table {
                    Table {
                        $(
                            $f: {
                                // A `()` parameter is a zero-sized argument
                                // that both sides pass alike (red team 10).
                                #[allow(improper_ctypes_definitions, clippy::too_many_arguments)]
                                unsafe extern "C" fn shim<P: $name>(
                                    out: *mut $crate::__ret_ty!($($ret)?),
                                    msg: *mut $crate::HookMessage
                                    $(, $arg: $ty)*
                                ) -> u32 {
                                    // SAFETY: the host passes a writable result
                                    // slot and a valid message buffer.
                                    unsafe { __p::shim_body(out, msg, || <P as $name>::$f($($arg),*)) }
                                }
                                shim::<P>
                            },
                        )*
                    }
                }
            }

            // SAFETY: `Table` is the repr(C) table of shims `FUNCTIONS`
            // describes, in order; the client calls them through `call`.
            unsafe impl $crate::interface::Interface for dyn $name {
                const NAME: &'static str = $iface;
                const VERSION: u32 = $version;
                const FUNCTIONS: &'static [$crate::interface::FunctionSpec] = &[
                    $(
                        {
                            $crate::interface::FunctionSpec {
                                name: stringify!($f),
                                signature: $crate::__signature!($f ($($ty),*) $(-> $ret)?),
                                // `PlainData::NAME` of every type: parameters
                                // that are not plain data do not compile.
                                fingerprint: $crate::interface::fingerprint(
                                    stringify!($f),
                                    &[
                                        $((
                                            <$ty as $crate::interface::PlainData>::NAME,
                                            $crate::TypeLayout::of::<$ty>(),
                                        ),)*
                                        (
                                            <$crate::__ret_ty!($($ret)?) as $crate::interface::PlainData>::NAME,
                                            $crate::TypeLayout::of::<$crate::__ret_ty!($($ret)?)>(),
                                        ),
                                    ],
                                ),
                            }
                        },
                    )*
                ];
                type Table = Table;
                type Client<G: $crate::interface::Gate> = Client<G>;
                fn client<G: $crate::interface::Gate>(gate: G) -> Client<G> {
                    Client { gate }
                }
            }
        };
    };
}

/// `()` when no result type is given.
#[doc(hidden)]
#[macro_export]
macro_rules! __ret_ty {
    () => {
        ()
    };
    ($t:ty) => {
        $t
    };
}

/// `name(T1, T2) -> R` as a string literal.
#[doc(hidden)]
#[macro_export]
macro_rules! __signature {
    ($f:ident ($($ty:ty),*)) => { $crate::__signature!($f ($($ty),*) -> ()) };
    ($f:ident () -> $ret:ty) => { concat!(stringify!($f), "() -> ", stringify!($ret)) };
    ($f:ident ($first:ty $(, $ty:ty)*) -> $ret:ty) => {
        concat!(stringify!($f), "(", stringify!($first), $(", ", stringify!($ty),)* ") -> ", stringify!($ret))
    };
}

/// Export interfaces from this object: `export_interface!(Calc for MyPlugin)`,
/// or several, comma-separated. Use once per `cdylib`.
///
/// The list, its entries, their function lists and tables are statics of
/// the object, built by the compiler: nothing is allocated, so nothing is
/// left on the heap when the object is unmapped (red team 9: a heap-built
/// list left about 190 bytes behind per loaded copy).
#[macro_export]
macro_rules! export_interface {
    ($($($iface:ident)::+ for $imp:ty),+ $(,)?) => {
        const _: () = {
            static ENTRIES: $crate::interface::__private::Statics<
                [$crate::interface::InterfaceEntry; [$(stringify!($imp)),+].len()],
            > = $crate::interface::__private::Statics([$(
                {
                    static TABLE: <dyn $($iface)::+ as $crate::interface::Interface>::Table =
                        <dyn $($iface)::+>::__table::<$imp>();
                    static FUNCTIONS: $crate::interface::__private::Statics<
                        [$crate::interface::FunctionEntry;
                            <dyn $($iface)::+ as $crate::interface::Interface>::FUNCTIONS.len()],
                    > = $crate::interface::__private::Statics($crate::interface::__private::functions(
                        <dyn $($iface)::+ as $crate::interface::Interface>::FUNCTIONS,
                    ));
                    $crate::interface::__private::entry::<dyn $($iface)::+>(
                        &FUNCTIONS.0 as *const _ as *const $crate::interface::FunctionEntry,
                        &TABLE as *const _ as *const ::core::ffi::c_void,
                    )
                },
            )+]);
            static LIST: $crate::interface::__private::Statics<$crate::interface::InterfaceList> =
                $crate::interface::__private::Statics($crate::interface::__private::list(
                    &ENTRIES.0 as *const _ as *const $crate::interface::InterfaceEntry,
                    ENTRIES.0.len(),
                ));

            #[unsafe(no_mangle)]
            pub extern "C" fn usrcu_interfaces() -> *const $crate::interface::InterfaceList {
                &LIST.0
            }
        };
    };
}

/// What the macros expand to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use super::{call, entry, functions, list, reserved_name, shim_body, Gate, Statics};
}

/// Names an interface function may not have: the host reaches the client
/// through its handle (`usrcu_module_loader::Plugin`, which derefs to the
/// client), and a method of the handle itself, or of a prelude trait it
/// implements, wins over the client's: `handle.module()` would return the
/// module's name instead of calling the plugin, silently (newcomer review).
/// Besides the prelude's, the list holds the methods of the traits every
/// handle implements that a host commonly imports (`Any`, `Borrow`,
/// `BorrowMut`, `Deref`, `Debug`: red team 16).
pub const RESERVED_NAMES: &[&str] = &[
    "module",
    "clone",
    "clone_from",
    "to_owned",
    "clone_into",
    "into",
    "try_into",
    "type_id",
    "borrow",
    "borrow_mut",
    "deref",
    "fmt",
];

/// Is `name` one of [`RESERVED_NAMES`]? (`const`: the macro checks each
/// function at compile time.)
#[doc(hidden)]
pub const fn reserved_name(name: &str) -> bool {
    // (Unit-tested below with every handle method red team 16 found.)
    let name = name.as_bytes();
    let mut i = 0;
    while i < RESERVED_NAMES.len() {
        let r = RESERVED_NAMES[i].as_bytes();
        if r.len() == name.len() {
            let mut j = 0;
            while j < r.len() && r[j] == name[j] {
                j += 1;
            }
            if j == r.len() {
                return true;
            }
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod reserved_tests {
    /// Every method the host's handle has before its `Deref` to the client,
    /// with `Any`, `Borrow`, `BorrowMut`, `Deref` and `Debug` imported (red
    /// team 16 compiled an interface with the last five and saw the
    /// handle's methods run): refused; an ordinary name is not.
    #[test]
    fn handle_methods_are_reserved() {
        for n in
            super::RESERVED_NAMES
                .iter()
                .copied()
                .chain(["module", "clone", "type_id", "borrow", "borrow_mut", "deref"])
        {
            assert!(super::reserved_name(n), "{n}");
        }
        for n in ["modules", "compute", "borrowed", "", "f"] {
            assert!(!super::reserved_name(n), "{n}");
        }
    }
}
