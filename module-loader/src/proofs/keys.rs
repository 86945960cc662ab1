//! pthread-key destructors in the object: glibc calls a key's destructor on
//! every thread that exits holding a value under it, wherever that thread
//! is, long after the plugin's calls have returned, and a thread may be
//! exiting *while* the object is unloaded.
//!
//! Keys the plugin created through the loader's interposer
//! (`crate::key_interposer`): their slots are cleared and their keys deleted,
//! then a grace period of the key-destructor domain (bounded by the
//! unload's budget) proves that no thread is still inside one of the
//! object's destructors; if one is, the object stays a Zombie naming the
//! key. Keys created another way (ELF constructors run inside `dlopen`,
//! before the interposer is in place): deleted from glibc's key table
//! (`crate::pthread_keys`), which narrows that race but cannot close it.
//! Where the table cannot be read the object stays mapped.

use super::readers::wait_for_grace_period;
use super::{Proof, UnloadCx};
use crate::key_interposer;
use crate::report::ZombieCause;

/// See the module documentation.
pub(crate) struct Keys;

impl Proof for Keys {
    fn prove(&self, cx: &mut UnloadCx<'_>) -> Result<(), ZombieCause> {
        let keys = cx.key_table.ok_or(ZombieCause::PthreadKeysUnverifiable)?;
        // SAFETY: every path into the module is closed: it is `Going`, calls
        // have drained, `exit` ran, its callbacks are drained, its domains
        // cleaned up and none of its threads lives (the proofs before this
        // one), so none of its code creates or deletes keys.
        let retired = unsafe { key_interposer::retire(|a| cx.contains(a)) };
        cx.report.pthread_keys_deleted += retired.deleted.len();
        if retired.wait && wait_for_grace_period(key_interposer::domain(), cx.time_left()).is_err() {
            // Name a key retired now, or the one an earlier attempt named.
            let key = retired
                .deleted
                .first()
                .copied()
                .or_else(|| match *crate::lock(&cx.module.zombie_cause) {
                    Some(ZombieCause::KeyDestructorRunning { key }) => Some(key),
                    _ => None,
                });
            return Err(ZombieCause::KeyDestructorRunning {
                key: key.unwrap_or(u32::MAX),
            });
        }
        for object in &cx.objects {
            // SAFETY: as above.
            cx.report.pthread_keys_deleted += unsafe { keys.delete_keys_of(object) };
        }
        Ok(())
    }
}
