//! pthread-key destructors in the object: glibc calls a key's destructor on
//! every thread that exits holding a value under it, wherever that thread
//! is, long after the plugin's calls have returned.
//!
//! Known from glibc's key table (`crate::pthread_keys`): every key in use
//! whose destructor lies in the object (or a library loaded with it) is
//! deleted once everything else is proven idle, so that no exiting thread
//! calls it after the unmap. Where the table cannot be read the object stays
//! mapped.

use super::{Proof, UnloadCx};
use crate::pthread_keys::KeyTable;
use crate::report::ZombieCause;

/// See the module documentation.
pub(crate) struct Keys;

impl Proof for Keys {
    fn prove(&self, cx: &mut UnloadCx<'_>) -> Result<(), ZombieCause> {
        let keys = KeyTable::open().ok_or(ZombieCause::PthreadKeysUnverifiable)?;
        for object in &cx.objects {
            // SAFETY: every path into the module is closed: it is `Going`,
            // calls have drained, `exit` ran, its callbacks are drained and
            // its domains cleaned up (the proofs before this one).
            cx.report.pthread_keys_deleted += unsafe { keys.delete_keys_of(object) };
        }
        Ok(())
    }
}
