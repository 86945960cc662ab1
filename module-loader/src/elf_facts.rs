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

/// The same facts as read from the file, before it is mapped: addresses
/// relative to the load bias. They depend on the file's bytes alone, so the
/// facts of a sealed copy (which cannot change) hold for every load of it.
#[derive(Clone, Debug, Default)]
pub(crate) struct FileFacts {
    /// Virtual addresses of words relocated against the key functions.
    key_slots: Vec<(u64, KeyFn)>,
    /// Virtual addresses of data symbols the size of a `Srcu`.
    srcu_statics: Vec<u64>,
}

impl FileFacts {
    /// Parse `data` (a whole ELF file); empty if it cannot be parsed
    /// (nothing is interposed then, and the fallbacks apply).
    pub(crate) fn parse(data: &[u8]) -> FileFacts {
        use object::{Object, ObjectSymbol, ObjectSymbolTable, RelocationTarget, SymbolIndex, SymbolKind};

        let mut facts = FileFacts::default();
        let Ok(file) = object::File::parse(data) else {
            return facts;
        };
        if let (Some(relocs), Some(symbols)) = (file.dynamic_relocations(), file.dynamic_symbol_table()) {
            // The two symbols' indexes first (the dynamic symbol table is
            // small; a name may appear more than once, under several
            // versions), so that each of the many relocations is matched by
            // index rather than by a name lookup.
            let mut wanted: Vec<(SymbolIndex, KeyFn)> = Vec::new();
            for sym in symbols.symbols() {
                match sym.name() {
                    Ok("pthread_key_create") => wanted.push((sym.index(), KeyFn::Create)),
                    Ok("pthread_key_delete") => wanted.push((sym.index(), KeyFn::Delete)),
                    _ => {}
                }
            }
            if !wanted.is_empty() {
                for (offset, reloc) in relocs {
                    if let RelocationTarget::Symbol(index) = reloc.target() {
                        if let Some(&(_, w)) = wanted.iter().find(|(i, _)| *i == index) {
                            facts.key_slots.push((offset, w));
                        }
                    }
                }
            }
        }
        let size = std::mem::size_of::<Srcu>() as u64;
        for sym in file.symbols() {
            if sym.kind() == SymbolKind::Data && sym.size() == size {
                facts.srcu_statics.push(sym.address());
            }
        }
        facts
    }

    /// The facts of the object loaded at `mapping`.
    pub(crate) fn at(&self, mapping: &ObjectMapping) -> ElfFacts {
        let at = |offset: u64| mapping.base.checked_add(usize::try_from(offset).ok()?);
        ElfFacts {
            key_slots: self.key_slots.iter().filter_map(|&(o, w)| Some((at(o)?, w))).collect(),
            srcu_statics: self
                .srcu_statics
                .iter()
                .filter_map(|&o| at(o))
                .filter(|a| mapping.data_segments.iter().any(|r| r.contains(a)))
                .collect(),
        }
    }
}

/// Read the facts of the object loaded from `path` at `mapping` (a library
/// loaded together with a plugin, which the loader did not copy); empty if
/// the file cannot be read or parsed.
pub(crate) fn read(path: &Path, mapping: &ObjectMapping) -> ElfFacts {
    let Some(map) = FileMap::open(path) else {
        return ElfFacts::default();
    };
    FileFacts::parse(map.bytes()).at(mapping)
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
