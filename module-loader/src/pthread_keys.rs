//! pthread keys whose destructor lies in a plugin's code, found and deleted
//! before the plugin is unmapped.
//!
//! # Why
//!
//! A Rust plugin that calls `std::thread::current()` (or panics, whose hook
//! asks for the thread's name) on a host thread makes its copy of `std`
//! create a pthread key whose destructor is plugin code, and set it on that
//! thread. Such a key does not pin the object: `dlclose` unmaps it, and when
//! the thread exits glibc calls the destructor at an address where nothing is
//! mapped any more (SIGSEGV in `__nptl_deallocate_tsd`). Each load also
//! leaks a key, and the process runs out of them after about a thousand
//! loads.
//!
//! # How
//!
//! glibc keeps its keys in `__pthread_keys`, an array of `{ seq, destr }`
//! where an odd `seq` marks a key in use. The array is `GLIBC_PRIVATE`, but
//! glibc publishes its layout for debuggers: `_thread_db___pthread_keys`
//! (element bits, count) and `_thread_db_pthread_key_struct_{seq,destr}`
//! (bits, count, offset), the descriptors `libthread_db` reads. We read the
//! layout from them, refuse anything unexpected, and then, with no plugin
//! code able to run, `pthread_key_delete` every key in use whose destructor
//! points into the plugin's segments. A deleted key's destructor is never
//! called (glibc compares each thread's stored sequence number with the
//! key's), and its slot is free for reuse, so nothing leaks but the
//! per-thread values the plugin stored (a few bytes each).
//!
//! Where the table cannot be read (another libc, a changed layout),
//! [`KeyTable::open`] returns `None` and the loader keeps the plugin mapped
//! rather than guess.

use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::address_space::ObjectMapping;

/// The table and its layout, as glibc describes it.
#[derive(Debug, Clone, Copy)]
pub struct KeyTable {
    base: usize,
    count: usize,
    stride: usize,
    seq_offset: usize,
    destr_offset: usize,
}

fn symbol(name: &CStr) -> *const c_void {
    // SAFETY: dlsym with RTLD_DEFAULT only looks a symbol up.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as *const c_void }
}

/// A `libthread_db` descriptor: `[bits, count, offset]`.
fn descriptor(name: &CStr) -> Option<[u32; 3]> {
    let p = symbol(name) as *const [u32; 3];
    // SAFETY: glibc defines these symbols as `const uint32_t[3]`.
    (!p.is_null()).then(|| unsafe { *p })
}

impl KeyTable {
    /// Find glibc's key table and check its layout; `None` if this is not a
    /// glibc whose table we understand.
    pub fn open() -> Option<KeyTable> {
        static TABLE: OnceLock<Option<KeyTable>> = OnceLock::new();
        *TABLE.get_or_init(|| {
            let base = symbol(c"__pthread_keys") as usize;
            let [elem_bits, count, _] = descriptor(c"_thread_db___pthread_keys")?;
            let [seq_bits, seq_n, seq_off] = descriptor(c"_thread_db_pthread_key_struct_seq")?;
            let [destr_bits, destr_n, destr_off] = descriptor(c"_thread_db_pthread_key_struct_destr")?;
            let word = usize::BITS;
            let stride = (elem_bits / 8) as usize;
            // SAFETY: sysconf has no preconditions.
            let keys_max = unsafe { libc::sysconf(libc::_SC_THREAD_KEYS_MAX) };
            let sane = base != 0
                && seq_bits == word
                && destr_bits == word
                && seq_n == 1
                && destr_n == 1
                && elem_bits % 8 == 0
                && (seq_off as usize) + 8 <= stride
                && (destr_off as usize) + 8 <= stride
                && seq_off % 8 == 0
                && destr_off % 8 == 0
                && keys_max > 0
                && count as i64 == keys_max as i64;
            sane.then_some(KeyTable {
                base,
                count: count as usize,
                stride,
                seq_offset: seq_off as usize,
                destr_offset: destr_off as usize,
            })
        })
    }

    fn word(&self, key: usize, offset: usize) -> usize {
        let p = (self.base + key * self.stride + offset) as *const AtomicUsize;
        // SAFETY: inside glibc's table, word-aligned (checked in `open`).
        // Relaxed: glibc publishes `seq` with a CAS and then writes `destr`;
        // a key created concurrently is not one of the plugin's (no plugin
        // code runs while we look), so a torn view of it does not matter.
        unsafe { (*p).load(Ordering::Relaxed) }
    }

    /// The sequence number of `key` (odd while in use).
    pub(crate) fn seq(&self, key: usize) -> usize {
        self.word(key, self.seq_offset)
    }

    /// How many keys glibc has.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Set the destructor of `key` in glibc's table.
    ///
    /// # Safety
    /// `key` is a key in use that its creator lets us give this destructor
    /// (the key interposer, right after creating it without one).
    pub(crate) unsafe fn set_destructor(&self, key: usize, destr: usize) {
        let p = (self.base + key * self.stride + self.destr_offset) as *const AtomicUsize;
        // SAFETY: inside glibc's table, word-aligned (checked in `open`).
        // Release: an exiting thread that reads it (a plain load in glibc)
        // calls the trampoline, whose slot was filled before this store.
        unsafe { (*p).store(destr, Ordering::Release) };
    }

    /// Keys in use, with their destructors.
    pub fn in_use(&self) -> Vec<(libc::pthread_key_t, usize)> {
        (0..self.count)
            .filter(|&k| self.word(k, self.seq_offset) & 1 == 1)
            .map(|k| (k as libc::pthread_key_t, self.word(k, self.destr_offset)))
            .collect()
    }

    /// Delete every key in use whose destructor lies in `object`; returns how many.
    ///
    /// # Safety
    /// No code of `object` may run concurrently or later on (the plugin is
    /// being unloaded and every path into it is closed).
    pub unsafe fn delete_keys_of(&self, object: &ObjectMapping) -> usize {
        let mut n = 0;
        for (key, destr) in self.in_use() {
            if destr != 0 && object.contains(destr) {
                // SAFETY: the key is in use and belongs to the departing
                // object, which the caller guarantees will not touch it again.
                if unsafe { libc::pthread_key_delete(key) } == 0 {
                    n += 1;
                }
            }
        }
        n
    }
}

/// How many pthread keys are in use in the process, where glibc's table can
/// be read (a test checks that reloads do not leak keys).
pub fn keys_in_use() -> Option<usize> {
    KeyTable::open().map(|t| t.in_use().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" fn dtor(_: *mut c_void) {}

    #[test]
    fn finds_and_deletes_only_keys_whose_destructor_lies_in_the_object() {
        let _one_at_a_time = crate::lock(&crate::KEY_TEST_LOCK);
        let table = KeyTable::open().expect("glibc's key table is readable");
        let mut ours: libc::pthread_key_t = 0;
        let mut other: libc::pthread_key_t = 0;
        // SAFETY: plain key creation.
        unsafe {
            assert_eq!(libc::pthread_key_create(&mut ours, Some(dtor)), 0);
            assert_eq!(libc::pthread_key_create(&mut other, None), 0);
        }
        let addr = dtor as unsafe extern "C" fn(*mut c_void) as usize;
        assert!(table.in_use().contains(&(ours, addr)));
        let object = ObjectMapping {
            base: addr,
            segments: std::iter::once(addr..addr + 1).collect(),
            nodelete: false,
            ..ObjectMapping::default()
        };
        // SAFETY: nothing uses `ours` afterwards.
        assert_eq!(unsafe { table.delete_keys_of(&object) }, 1);
        assert!(!table.in_use().iter().any(|&(k, _)| k == ours));
        assert!(table.in_use().iter().any(|&(k, _)| k == other));
        // SAFETY: `other` is ours to delete.
        assert_eq!(unsafe { libc::pthread_key_delete(other) }, 0);
    }
}
