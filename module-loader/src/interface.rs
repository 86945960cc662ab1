//! Typed plugin interfaces on the host side: checked at load, called
//! without `unsafe` through the module's liveness gate, following reloads.
//!
//! An interface is declared once with `usrcu_registry::plugin_interface!`
//! in a crate that host and plugin share, and exported by the plugin with
//! `usrcu_registry::export_interface!`. The host asks for it by the name of
//! the module that serves it:
//!
//! ```no_run
//! # usrcu_registry::plugin_interface! { pub trait Calc ["calc", version 1] { fn compute(x: u64) -> u64; } }
//! use usrcu_module_loader::ModuleLoader;
//!
//! let loader = ModuleLoader::new();
//! // Refuse, at load, a "demo" module whose `calc` interface differs.
//! loader.require_interface::<dyn Calc>("demo");
//! // SAFETY: the plugin is ours, built against this host's crates.
//! unsafe { loader.load("target/plugins/release/libusrcu_demo_plugin.so")? };
//! let calc = loader.interface::<dyn Calc>("demo");
//! let y = calc.compute(20)?; // the newest live copy of "demo", every call
//! # let _ = y;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each call holds a read section of the module's liveness domain (through
//! [`Symbol::call`]), so an unload waits for it; once the copy it reached is
//! `Going`, the handle looks up the newest `Live` copy of that name and
//! calls that one. A counter bumped by a notifier whenever a module of that
//! name becomes `Live` or `Going` tells the handle when its cached table is
//! stale, so a call costs one atomic load and one reference count beside
//! the liveness section, and a lookup only after a reload.
//!
//! A panic in the plugin's function is caught by its shim and comes back as
//! [`CallError::Panicked`], naming the function.

use std::cell::RefCell;
use std::ffi::c_void;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libloading::os::unix::{Library, RTLD_NOW};
use usrcu_registry::interface::{self as iface, Gate, Interface, InterfaceError, InterfaceList, INTERFACES_SYMBOL};

use crate::error::{CallError, SymbolError};
use crate::{ModuleEvent, ModuleLoader, ModuleState, NotifierId, Symbol};

/// The exported getter of an object's interface list.
type ListFn = extern "C" fn() -> *const InterfaceList;

impl ModuleLoader {
    /// Check, at every load of a module named `module`, that it exports
    /// interface `I` exactly as this host declares it (name, version, table
    /// layout, each function's signature and type layouts). A module that
    /// does not is refused: its load fails with
    /// [`LoadError::NotifierFailed`](crate::LoadError::NotifierFailed), whose
    /// message names the first function that differs, and a reload leaves
    /// the old copy live.
    ///
    /// A `Coming` notifier does the check, before the module's `init` runs.
    pub fn require_interface<I: Interface + ?Sized>(&self, module: &str) -> NotifierId {
        let module = module.to_owned();
        self.register_notifier(&format!("interface '{}'", I::NAME), move |ev, info| {
            if ev != ModuleEvent::Coming || info.name != module {
                return Ok(());
            }
            check_object::<I>(&info.loaded_path).map_err(|e| e.to_string())
        })
    }

    /// A handle on interface `I` of the newest `Live` module named `module`:
    /// every call goes to the copy that is live then (after a reload, the
    /// new one), inside that copy's liveness section. No module is needed
    /// yet; a call made while none is live fails with
    /// [`CallError::NoLiveModule`].
    ///
    /// The handle is `Send` but not `Sync`: clone it for each thread.
    pub fn interface<I: Interface + ?Sized>(&self, module: &str) -> Plugin<'_, I> {
        let generation = Arc::new(AtomicU64::new(0));
        let g = generation.clone();
        let name = module.to_owned();
        let id = self.register_notifier(&format!("interface '{}' handle", I::NAME), move |ev, info| {
            if info.name == name && matches!(ev, ModuleEvent::Live | ModuleEvent::Going) {
                // Release: pairs with the Acquire in `LiveGate::current`; the
                // loader's table already shows the new state.
                g.fetch_add(1, Ordering::Release);
            }
            Ok::<(), String>(())
        });
        let watch = Arc::new(Watch {
            loader: self,
            generation,
            notifier: id,
        });
        Plugin::with_watch(watch, module.to_owned())
    }
}

/// Check the interface list of an object the loader has mapped at `path`
/// (a Coming notifier's view: the loader holds the object open; we take a
/// second reference with `RTLD_NOLOAD`, which never maps anything).
fn check_object<I: Interface + ?Sized>(path: &Path) -> Result<(), InterfaceError> {
    // SAFETY: RTLD_NOLOAD only returns an object that is already mapped and
    // initialised (the loader opened it); no code of it runs.
    let lib =
        unsafe { Library::open(Some(path), RTLD_NOW | libc::RTLD_NOLOAD) }.map_err(|e| InterfaceError::BadList {
            found: format!("cannot reopen {}: {e}", path.display()),
        })?;
    // SAFETY: `export_interface!` exports this symbol with this type.
    let Ok(list) = (unsafe { lib.get::<ListFn>(INTERFACES_SYMBOL.as_bytes()) }) else {
        return Err(InterfaceError::NotExported { interface: I::NAME });
    };
    // SAFETY: the list of a mapped object (we hold a reference to it).
    unsafe { iface::find::<I>(list()) }.map(|_| ())
}

/// Counts the `Live`/`Going` events of one module name; unregisters its
/// notifier when the last handle goes.
struct Watch<'l> {
    loader: &'l ModuleLoader,
    generation: Arc<AtomicU64>,
    notifier: NotifierId,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.loader.unregister_notifier(self.notifier);
    }
}

/// The table of the copy last called, and the generation it was found at.
struct Cached {
    generation: u64,
    symbol: Symbol<ListFn>,
    table: usize,
}

/// The [`Gate`] of a [`Plugin`]: the newest live copy of a module, entered
/// through its liveness section.
pub struct LiveGate<'l, I: ?Sized> {
    watch: Arc<Watch<'l>>,
    module: String,
    cache: RefCell<Option<Cached>>,
    _interface: PhantomData<fn() -> Box<I>>,
}

impl<I: ?Sized> fmt::Debug for LiveGate<'_, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveGate")
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

impl<I: Interface + ?Sized> LiveGate<'_, I> {
    /// The cached copy, or the newest live one (checked) if the cache is
    /// stale.
    fn current(&self) -> Result<(Symbol<ListFn>, usize), CallError> {
        // Acquire: pairs with the notifier's Release increment.
        let generation = self.watch.generation.load(Ordering::Acquire);
        if let Some(c) = self.cache.borrow().as_ref() {
            if c.generation == generation {
                return Ok((c.symbol.clone(), c.table));
            }
        }
        let loader = self.watch.loader;
        let no_module = || CallError::NoLiveModule {
            name: self.module.clone(),
        };
        let h = loader.find(&self.module).ok_or_else(no_module)?;
        // SAFETY: `export_interface!` exports INTERFACES_SYMBOL with type
        // `ListFn`; the pointer is used only inside `Symbol::call`.
        let symbol = match unsafe { loader.symbol::<ListFn>(h, INTERFACES_SYMBOL) } {
            Ok(s) => s,
            Err(SymbolError::NotFound { module, .. }) => {
                return Err(CallError::Interface {
                    module,
                    error: InterfaceError::NotExported { interface: I::NAME },
                })
            }
            // Went `Going` between `find` and `symbol`: a reload's newer
            // copy may be live by now; the caller looks again.
            Err(_) => {
                return Err(CallError::NotLive {
                    module: self.module.clone(),
                    state: ModuleState::Going,
                })
            }
        };
        let mut found = None;
        // A `NotLive` here (the copy went `Going` since `find`) goes back to
        // the caller, which looks again.
        symbol.call(|list| {
            // SAFETY: inside the call the object is mapped.
            found = Some(unsafe { iface::find::<I>((list.raw())()) }.map(|t| t as usize));
        })?;
        let table = match found {
            Some(Ok(t)) => t,
            Some(Err(error)) => {
                return Err(CallError::Interface {
                    module: self.module.clone(),
                    error,
                })
            }
            None => return Err(no_module()),
        };
        *self.cache.borrow_mut() = Some(Cached {
            generation,
            symbol: symbol.clone(),
            table,
        });
        Ok((symbol, table))
    }
}

/// How many times a typed call looks for a live copy before it gives up
/// (each miss is a copy that a reload replaced between the look and the
/// call).
const ENTER_ATTEMPTS: usize = 64;

// SAFETY: `enter` hands `f` only a table that `iface::find::<I>` checked
// against `I`, of a copy whose liveness section `Symbol::call` holds for the
// duration of `f` (so the object stays mapped).
unsafe impl<I: Interface + ?Sized> Gate for LiveGate<'_, I> {
    type Error = CallError;

    fn enter(&self, f: &mut dyn FnMut(*const c_void) -> u32) -> Result<u32, CallError> {
        let mut last = None;
        // The copy found may go `Going` before the call enters it (a reload
        // replaced it): look up the newest live copy again. A reload keeps
        // a live copy at every moment, so this ends unless reloads keep
        // winning every race; bounded all the same, then the last error.
        for _ in 0..ENTER_ATTEMPTS {
            let attempt = self
                .current()
                .and_then(|(symbol, table)| symbol.call(|_| f(table as *const c_void)));
            match attempt {
                Ok(status) => return Ok(status),
                Err(e @ CallError::NotLive { .. }) => {
                    self.cache.borrow_mut().take();
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(CallError::NoLiveModule {
            name: self.module.clone(),
        }))
    }

    fn panicked(&self, function: &'static str, message: String) -> CallError {
        CallError::Panicked {
            module: self.module.clone(),
            function: function.to_owned(),
            message,
        }
    }
}

/// A typed handle on interface `I` of a module, from
/// [`ModuleLoader::interface`]. Dereferences to the interface's client: call
/// its functions by name (`plugin.compute(20)?`), each returning
/// `Result<_, CallError>`.
///
/// `Send`, not `Sync` (it caches the copy it last reached): clone it for
/// each thread; clones share the reload counter.
pub struct Plugin<'l, I: Interface + ?Sized> {
    watch: Arc<Watch<'l>>,
    module: String,
    client: I::Client<LiveGate<'l, I>>,
}

impl<'l, I: Interface + ?Sized> Plugin<'l, I> {
    fn with_watch(watch: Arc<Watch<'l>>, module: String) -> Plugin<'l, I> {
        Plugin {
            client: I::client(LiveGate {
                watch: watch.clone(),
                module: module.clone(),
                cache: RefCell::new(None),
                _interface: PhantomData,
            }),
            watch,
            module,
        }
    }

    /// The name of the module whose live copy this handle calls.
    pub fn module(&self) -> &str {
        &self.module
    }
}

impl<I: Interface + ?Sized> Clone for Plugin<'_, I> {
    fn clone(&self) -> Self {
        Plugin::with_watch(self.watch.clone(), self.module.clone())
    }
}

impl<I: Interface + ?Sized> fmt::Debug for Plugin<'_, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("interface", &I::NAME)
            .field("version", &I::VERSION)
            .field("module", &self.module)
            .finish()
    }
}

impl<'l, I: Interface + ?Sized> Deref for Plugin<'l, I> {
    type Target = I::Client<LiveGate<'l, I>>;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

/// The plugin tutorial, `docs/plugins.md`: its Rust snippets are compiled
/// as doc tests (and built and loaded for real by `tests/plugins_doc.rs`).
#[cfg(doctest)]
#[doc = include_str!("../../docs/plugins.md")]
struct PluginsTutorial;
