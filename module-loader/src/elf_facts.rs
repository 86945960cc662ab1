//! What the loader reads from a plugin's file once, at load, with the
//! `object` crate (a maintained ELF parser rather than hand-read tables):
//! the GOT entries the key interposer rewrites, and the plugin's `static`
//! SRCU domains, listed in its slice or not.
//!
//! A `static X: Srcu` is a data symbol of exactly `size_of::<Srcu>()` bytes
//! in a writable segment. Searching the object's memory for domain headers
//! instead would also find the bytes a moved-away domain left behind (an
//! `Option<Srcu>` taken out of a `static`), whose state is freed. A plugin
//! whose symbol table was stripped has no such list; its unlisted domains
//! are then left to the runtime's inventory.

use std::path::Path;

use usrcu::Srcu;

use crate::address_space::ObjectMapping;

/// Which key function a GOT entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyFn {
    /// `pthread_key_create`.
    Create,
    /// `pthread_key_delete`.
    Delete,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct ElfFacts {
    /// Absolute addresses of words relocated against the key functions.
    pub(crate) key_slots: Vec<(usize, KeyFn)>,
    /// Absolute addresses of data symbols the size of a `Srcu`.
    pub(crate) srcu_statics: Vec<usize>,
}

/// Read the facts of the object loaded from `path` at `mapping`; empty if
/// the file cannot be read or parsed (nothing is interposed then, and the
/// fallbacks apply).
pub(crate) fn read(path: &Path, mapping: &ObjectMapping) -> ElfFacts {
    use object::{Object, ObjectSymbol, ObjectSymbolTable, RelocationTarget, SymbolKind};

    let mut facts = ElfFacts::default();
    let Some(map) = FileMap::open(path) else { return facts };
    let Ok(file) = object::File::parse(map.bytes()) else {
        return facts;
    };
    let at = |offset: u64| mapping.base.checked_add(usize::try_from(offset).ok()?);
    if let (Some(relocs), Some(symbols)) = (file.dynamic_relocations(), file.dynamic_symbol_table()) {
        for (offset, reloc) in relocs {
            let RelocationTarget::Symbol(index) = reloc.target() else {
                continue;
            };
            let which = match symbols.symbol_by_index(index).and_then(|s| s.name()) {
                Ok("pthread_key_create") => KeyFn::Create,
                Ok("pthread_key_delete") => KeyFn::Delete,
                _ => continue,
            };
            if let Some(addr) = at(offset) {
                facts.key_slots.push((addr, which));
            }
        }
    }
    let size = std::mem::size_of::<Srcu>() as u64;
    for sym in file.symbols() {
        if sym.kind() == SymbolKind::Data && sym.size() == size {
            if let Some(addr) = at(sym.address()) {
                if mapping.data_segments.iter().any(|r| r.contains(&addr)) {
                    facts.srcu_statics.push(addr);
                }
            }
        }
    }
    facts
}

/// A read-only private mapping of a whole file: the parser reads the pages
/// it needs from the page cache, no copy of the rest (a plugin is hundreds
/// of kilobytes; its dynamic relocations and symbols a small part).
struct FileMap {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

impl FileMap {
    fn open(path: &Path) -> Option<FileMap> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(path).ok()?;
        let len = usize::try_from(f.metadata().ok()?.len()).ok().filter(|&l| l > 0)?;
        // SAFETY: a fresh read-only private mapping of an open file. The
        // file is the loader's own copy, which nothing writes while the
        // module is loaded (dlopen has mapped the same file already).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(FileMap { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes, mapped until `self` drops.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, no longer borrowed.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}
