//! Module notifiers: user code told when a module is `Coming`, `Live` or
//! `Going`, in the manner of the kernel's module notifier chain.
//!
//! `Coming` and `Live` notifiers run in registration order, `Going` in
//! reverse. A failing (or panicking) `Coming` notifier fails the load, and
//! the notifiers that had already seen `Coming` are told `Going`, in
//! reverse. The built-in SRCU notifier (barrier and cleanup of every static
//! domain) counts as registered first: on the way down it runs after every
//! user notifier.

use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::ModuleInfo;

/// The event a notifier is told about: the state the module enters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleEvent {
    /// Loaded, runtime installed, static domains attached; `init` not yet run.
    Coming,
    /// `init` succeeded.
    Live,
    /// Being unloaded (after `exit`), or a load being rolled back.
    Going,
}

/// Names a registered notifier, to unregister it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NotifierId(u64);

type Callback = dyn Fn(ModuleEvent, &ModuleInfo) -> Result<(), String> + Send + Sync;

pub(crate) struct Notifier {
    id: NotifierId,
    pub(crate) name: String,
    f: Box<Callback>,
}

/// A notifier's failure: (message, panicked).
pub(crate) type NotifierFailure = (String, bool);

impl Notifier {
    /// Run the notifier, catching a panic.
    pub(crate) fn call(&self, ev: ModuleEvent, info: &ModuleInfo) -> Result<(), NotifierFailure> {
        match catch_unwind(AssertUnwindSafe(|| (self.f)(ev, info))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err((e, false)),
            Err(p) => {
                let msg = panic_message(&*p);
                // Leaked, not dropped: the payload's drop is user code, and a
                // panic in it would unwind out of the loader with the module
                // left `Going` (tests/tests/redteam7_loader.rs, seen failing).
                std::mem::forget(p);
                Err((msg, true))
            }
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned())
}

#[derive(Default)]
pub(crate) struct Notifiers {
    list: Mutex<Vec<Arc<Notifier>>>,
}

/// The next notifier id, process-wide (as module handles are): an id one
/// loader handed out never names another loader's notifier (red team 8:
/// with a counter per loader, loader B's `unregister_notifier` with loader
/// A's id removed B's own notifier).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl Notifiers {
    pub(crate) fn register<F, E>(&self, name: &str, f: F) -> NotifierId
    where
        F: Fn(ModuleEvent, &ModuleInfo) -> Result<(), E> + Send + Sync + 'static,
        E: Display,
    {
        // Relaxed: a unique number, nothing else.
        let id = NotifierId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let n = Notifier {
            id,
            name: name.to_owned(),
            f: Box::new(move |ev, info| f(ev, info).map_err(|e| e.to_string())),
        };
        crate::lock(&self.list).push(Arc::new(n));
        id
    }

    pub(crate) fn unregister(&self, id: NotifierId) -> bool {
        let mut l = crate::lock(&self.list);
        let before = l.len();
        l.retain(|n| n.id != id);
        l.len() != before
    }

    /// The chain as it stands, in registration order.
    pub(crate) fn snapshot(&self) -> Vec<Arc<Notifier>> {
        crate::lock(&self.list).clone()
    }
}
