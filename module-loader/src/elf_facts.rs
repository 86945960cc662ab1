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

use object::read::elf::{FileHeader, Rel, Rela, SectionHeader, Sym};
use usrcu::Srcu;

use crate::address_space::ObjectMapping;

/// Which key function a GOT entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyFn {
    /// `pthread_key_create`.
    Create,
    /// `pthread_key_delete`.
    Delete,
    /// `__cxa_thread_atexit_impl` (how Rust's std and C++ register
    /// thread-local destructors): interposed so that host code clears the
    /// thread's rseq descriptor after each of the object's thread-local
    /// destructors (`key_interposer::thread_atexit`).
    ThreadAtexit,
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
    /// Parse `data` (a whole ELF file of this host's class); empty if it
    /// cannot be parsed (nothing is interposed then, and the fallbacks
    /// apply).
    pub(crate) fn parse(data: &[u8]) -> FileFacts {
        let facts = if cfg!(target_pointer_width = "64") {
            parse_as::<object::elf::FileHeader64<object::Endianness>>(data)
        } else {
            parse_as::<object::elf::FileHeader32<object::Endianness>>(data)
        };
        facts.unwrap_or_default()
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

/// [`FileFacts::parse`] over `object`'s ELF tables directly: the symbol
/// tables' raw entries are read without building names (a plugin has
/// thousands of symbols and of dynamic relocations; only two dynamic
/// symbols are wanted by name).
fn parse_as<Elf: FileHeader<Endian = object::Endianness>>(data: &[u8]) -> Option<FileFacts> {
    use object::elf::{SHT_DYNSYM, SHT_REL, SHT_RELA, SHT_SYMTAB, STT_COMMON, STT_OBJECT};

    let mut facts = FileFacts::default();
    let header = Elf::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;

    // The indexes of the two key functions in the dynamic symbol table (a
    // name may appear more than once, under several versions), then the
    // dynamic relocations against them, matched by index.
    let dynsym = sections.symbols(endian, data, SHT_DYNSYM).ok()?;
    let mut wanted: Vec<(usize, KeyFn)> = Vec::new();
    for (i, sym) in dynsym.iter().enumerate() {
        match dynsym.symbol_name(endian, sym) {
            Ok(b"pthread_key_create") => wanted.push((i, KeyFn::Create)),
            Ok(b"pthread_key_delete") => wanted.push((i, KeyFn::Delete)),
            Ok(b"__cxa_thread_atexit_impl") => wanted.push((i, KeyFn::ThreadAtexit)),
            _ => {}
        }
    }
    if !wanted.is_empty() {
        let which = |sym: usize| wanted.iter().find(|(i, _)| *i == sym).map(|&(_, w)| w);
        for section in sections.iter() {
            // Relocation sections that refer to the dynamic symbol table.
            if section.sh_link(endian) as usize != dynsym.section().0 {
                continue;
            }
            match section.sh_type(endian) {
                SHT_RELA => {
                    for r in section.data_as_array::<Elf::Rela, _>(endian, data).ok()? {
                        if let Some(w) = which(r.r_sym(endian, false) as usize) {
                            facts.key_slots.push((r.r_offset(endian).into(), w));
                        }
                    }
                }
                SHT_REL => {
                    for r in section.data_as_array::<Elf::Rel, _>(endian, data).ok()? {
                        if let Some(w) = which(r.r_sym(endian) as usize) {
                            facts.key_slots.push((r.r_offset(endian).into(), w));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    // Data symbols (`STT_OBJECT`, `STT_COMMON`) of exactly a `Srcu`'s size.
    let size = std::mem::size_of::<Srcu>() as u64;
    if let Ok(symtab) = sections.symbols(endian, data, SHT_SYMTAB) {
        for sym in symtab.iter() {
            let kind = sym.st_type();
            if (kind == STT_OBJECT || kind == STT_COMMON) && sym.st_size(endian).into() == size {
                facts.srcu_statics.push(sym.st_value(endian).into());
            }
        }
    }
    Some(facts)
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
