//! Typed calls into a live module, each inside a read section of the
//! module's liveness domain.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use crate::error::CallError;
use crate::module::Module;
use crate::state::ModuleState;
use crate::ModuleHandle;

/// A function of a loaded module, of the type its getter claimed.
///
/// [`Symbol::call`] enters a read section of the module's liveness domain,
/// checks that the module is `Live`, and only then hands the function
/// pointer to the closure; `unload` marks the module `Going` and waits for a
/// grace period of that domain before it runs `exit`. So a call either
/// fails with [`CallError::NotLive`] or completes before the module's code
/// goes away. A `Symbol` may outlive its module: it then only fails.
pub struct Symbol<F: Copy> {
    pub(crate) module: Arc<Module>,
    pub(crate) f: F,
}

impl<F: Copy> Clone for Symbol<F> {
    fn clone(&self) -> Self {
        Symbol {
            module: self.module.clone(),
            f: self.f,
        }
    }
}

impl<F: Copy> fmt::Debug for Symbol<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Symbol")
            .field("module", &self.module.name)
            .field("handle", &self.module.handle)
            .finish_non_exhaustive()
    }
}

impl<F: Copy> Symbol<F> {
    /// Call into the module: `body` receives the function pointer and runs
    /// inside the module's liveness read section. The pointer must not
    /// escape `body` (the contract of [`ModuleLoader::symbol`](crate::ModuleLoader::symbol)).
    ///
    /// `body` may block or sleep; `unload` waits for it (up to the loader's
    /// unload timeout, after which the unload gives up and the module stays live).
    #[track_caller]
    pub fn call<R>(&self, body: impl FnOnce(F) -> R) -> Result<R, CallError> {
        let _section = self.module.liveness.read_lock();
        let state = self.module.state.get();
        if state != ModuleState::Live {
            return Err(CallError::NotLive {
                module: self.module.name.clone(),
                state,
            });
        }
        let _frame = CallFrame::enter(self.module.handle);
        Ok(body(self.f))
    }

    /// The module this symbol belongs to.
    pub fn module(&self) -> ModuleHandle {
        self.module.handle
    }

    /// Is that module still `Live`?
    pub fn is_live(&self) -> bool {
        self.module.state.get() == ModuleState::Live
    }
}

// ---------------------------------------------------------------------------
// Which modules this thread is calling into (to refuse an unload from inside
// a call into the same module, which would wait for itself).

const MAX_DEPTH: usize = 64;

thread_local! {
    // Const-initialised Cells: no destructor is registered.
    static CALLS: [Cell<u64>; MAX_DEPTH] = const { [const { Cell::new(0) }; MAX_DEPTH] };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// One call in progress on this thread; popped on drop (unwinding included).
struct CallFrame;

impl CallFrame {
    fn enter(h: ModuleHandle) -> CallFrame {
        let d = DEPTH.with(|d| d.get());
        if d < MAX_DEPTH {
            CALLS.with(|c| c[d].set(h.0));
        }
        DEPTH.with(|x| x.set(d + 1));
        CallFrame
    }
}

impl Drop for CallFrame {
    fn drop(&mut self) {
        DEPTH.with(|x| x.set(x.get().saturating_sub(1)));
    }
}

/// Is this thread inside a call into module `h`? (Calls nested deeper than
/// 64 are not tracked.)
pub(crate) fn inside_call_into(h: ModuleHandle) -> bool {
    let d = DEPTH.with(|d| d.get()).min(MAX_DEPTH);
    CALLS.with(|c| c[..d].iter().any(|x| x.get() == h.0))
}
