//! What may cross a call into a plugin and outlive it: the sealed traits
//! [`PluginValue`], [`FfiValue`] and [`FfiArg`], and [`PluginFn`], the
//! function handed to [`Symbol::call`](crate::Symbol::call)'s closure.
//!
//! # Why
//!
//! Once a module is unloaded its code and its statics are unmapped. A value
//! that safe code keeps past the call must therefore own nothing of the
//! module and point into nothing of it that safe code could follow: not a
//! `&'static str` of its rodata, not a `Box<dyn Trait>` whose vtable is its
//! code, not a function pointer into it. So:
//!
//! - what the closure returns is a [`PluginValue`]: plain data (integers,
//!   floats, `bool`, `char`, `()`), raw pointers (following one takes
//!   `unsafe`, whose author answers for it), `String` and `Vec` built by
//!   the host, and `Option`, `Result`, arrays and tuples of those;
//! - the plugin's function itself is reachable only through a
//!   [`PluginFn`], which can be called but not copied, cloned or kept: its
//!   lifetime `'call` is chosen anew for every call (the closure is
//!   `for<'call> FnOnce(PluginFn<'call, F>)`), and it is invariant, so it
//!   cannot be stored anywhere that outlives the closure;
//! - [`PluginFn::call`] exists only for `extern "C"` function types whose
//!   arguments are [`FfiArg`]s and whose result is an [`FfiValue`], so a
//!   plugin function cannot hand safe code a borrowed value either.
//!
//! All three traits are sealed: the crate decides what is plain data.

use std::fmt;
use std::marker::PhantomData;

mod sealed {
    pub trait Value {}
    pub trait Ffi {}
    pub trait Arg {}
}

/// A value that may leave a call into a plugin and outlive the module:
/// owned by the host, borrowing nothing of the plugin that safe code could
/// reach. Sealed.
pub trait PluginValue: sealed::Value + 'static {}

/// A value a plugin's `extern "C"` function may return: plain scalars and
/// raw pointers. Sealed.
pub trait FfiValue: sealed::Ffi + PluginValue {}

/// An argument the host may pass to a plugin's `extern "C"` function:
/// an [`FfiValue`], or a host function pointer (`extern "C" fn`, up to
/// four arguments) whose arguments are [`FfiValue`]s: the plugin calls it,
/// and a reference or function pointer of the plugin's that it passed
/// would reach safe host code and dangle after the unload (red team 9).
/// Sealed.
///
/// ```
/// # use usrcu_module_loader::{ModuleLoader, ModuleHandle};
/// // A host callback taking plain data: compiles.
/// extern "C" fn keep(_: u64) {}
/// fn f(loader: &ModuleLoader, m: ModuleHandle) {
///     // SAFETY: (the example's) `give` has this type.
///     let s = unsafe { loader.symbol::<extern "C" fn(extern "C" fn(u64))>(m, "give") }.unwrap();
///     s.call(|f| f.call(keep)).unwrap();
/// }
/// ```
///
/// ```compile_fail
/// # use usrcu_module_loader::{ModuleLoader, ModuleHandle};
/// // A host callback the plugin would hand a reference into its rodata.
/// extern "C" fn keep(_: &'static [u8; 16]) {}
/// fn f(loader: &ModuleLoader, m: ModuleHandle) {
///     // SAFETY: (the example's) `give` has this type.
///     let s = unsafe { loader.symbol::<extern "C" fn(extern "C" fn(&'static [u8; 16]))>(m, "give") }.unwrap();
///     s.call(|f| f.call(keep)).unwrap();
/// }
/// ```
pub trait FfiArg: sealed::Arg {}

macro_rules! plain {
    ($($t:ty),* $(,)?) => {$(
        impl sealed::Value for $t {}
        impl PluginValue for $t {}
        impl sealed::Ffi for $t {}
        impl FfiValue for $t {}
        impl sealed::Arg for $t {}
        impl FfiArg for $t {}
    )*};
}

plain!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64
);

impl<T: ?Sized + 'static> sealed::Value for *const T {}
impl<T: ?Sized + 'static> PluginValue for *const T {}
impl<T: ?Sized + 'static> sealed::Ffi for *const T {}
impl<T: ?Sized + 'static> FfiValue for *const T {}
impl<T: ?Sized + 'static> sealed::Arg for *const T {}
impl<T: ?Sized + 'static> FfiArg for *const T {}
impl<T: ?Sized + 'static> sealed::Value for *mut T {}
impl<T: ?Sized + 'static> PluginValue for *mut T {}
impl<T: ?Sized + 'static> sealed::Ffi for *mut T {}
impl<T: ?Sized + 'static> FfiValue for *mut T {}
impl<T: ?Sized + 'static> sealed::Arg for *mut T {}
impl<T: ?Sized + 'static> FfiArg for *mut T {}

impl sealed::Value for String {}
impl PluginValue for String {}
impl<T: PluginValue> sealed::Value for Vec<T> {}
impl<T: PluginValue> PluginValue for Vec<T> {}
impl<T: PluginValue> sealed::Value for Option<T> {}
impl<T: PluginValue> PluginValue for Option<T> {}
impl<T: PluginValue, E: PluginValue> sealed::Value for Result<T, E> {}
impl<T: PluginValue, E: PluginValue> PluginValue for Result<T, E> {}
impl<T: PluginValue, const N: usize> sealed::Value for [T; N] {}
impl<T: PluginValue, const N: usize> PluginValue for [T; N] {}

macro_rules! tuples {
    ($(($($t:ident),+)),* $(,)?) => {$(
        impl<$($t: PluginValue),+> sealed::Value for ($($t,)+) {}
        impl<$($t: PluginValue),+> PluginValue for ($($t,)+) {}
    )*};
}

tuples!(
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, G)
);

macro_rules! host_fn_args {
    ($(($($a:ident),*)),* $(,)?) => {$(
        impl<R, $($a: FfiValue),*> sealed::Arg for extern "C" fn($($a),*) -> R {}
        impl<R, $($a: FfiValue),*> FfiArg for extern "C" fn($($a),*) -> R {}
        impl<R, $($a: FfiValue),*> sealed::Arg for unsafe extern "C" fn($($a),*) -> R {}
        impl<R, $($a: FfiValue),*> FfiArg for unsafe extern "C" fn($($a),*) -> R {}
    )*};
}

host_fn_args!((), (A), (A, B), (A, B, C), (A, B, C, D));

/// A plugin's function, lent to the closure of one
/// [`Symbol::call`](crate::Symbol::call): callable with
/// [`call`](PluginFn::call), never copied, cloned or kept (see the module
/// docs, and the `compile_fail` examples on `Symbol::call`).
pub struct PluginFn<'call, F> {
    f: F,
    /// Invariant in `'call`: the brand cannot be widened to a lifetime that
    /// outlives the call.
    _brand: PhantomData<fn(&'call ()) -> &'call ()>,
}

impl<F> PluginFn<'_, F> {
    pub(crate) fn new(f: F) -> Self {
        PluginFn { f, _brand: PhantomData }
    }

    /// The raw function, for this crate's own checked callers (the typed
    /// interface and host-context paths, which never let it escape the call).
    pub(crate) fn raw(&self) -> F
    where
        F: Copy,
    {
        self.f
    }
}

impl<F> fmt::Debug for PluginFn<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PluginFn")
    }
}

macro_rules! callable {
    ($(($($a:ident),*)),* $(,)?) => {$(
        impl<'call, Ret: FfiValue, $($a: FfiArg),*> PluginFn<'call, extern "C" fn($($a),*) -> Ret> {
            /// Call the plugin's function.
            #[allow(non_snake_case, clippy::too_many_arguments)]
            #[inline]
            pub fn call(&self, $($a: $a),*) -> Ret {
                (self.f)($($a),*)
            }
        }

        impl<'call, Ret: FfiValue, $($a: FfiArg),*> PluginFn<'call, unsafe extern "C" fn($($a),*) -> Ret> {
            /// Call the plugin's function.
            ///
            /// # Safety
            /// The function's own contract, as its author documents it.
            #[allow(non_snake_case, clippy::too_many_arguments)]
            #[inline]
            pub unsafe fn call(&self, $($a: $a),*) -> Ret {
                // SAFETY: forwarded from the caller.
                unsafe { (self.f)($($a),*) }
            }
        }
    )*};
}

callable!(
    (),
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, G),
    (A, B, C, D, E, G, H),
    (A, B, C, D, E, G, H, I),
);
