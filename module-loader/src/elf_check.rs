//! The checks a plugin's copy passes before `dlopen` maps it, with the
//! `object` crate's ELF reader (a maintained parser: bounds-checked tables,
//! both classes and byte orders) rather than hand-written offsets.
//!
//! `dlopen` trusts the file: it maps each `PT_LOAD` for its `p_filesz`
//! bytes whether or not the file has them (a truncated `.so` then dies with
//! `SIGBUS` on first touch), follows `PT_DYNAMIC` and the `DT_*` pointers
//! into the mapping, `mprotect`s `PT_GNU_RELRO`, and reads notes where
//! `PT_NOTE` says. So every address it will follow must lie in what it maps,
//! and every offset in what the file holds. What is checked, in order:
//!
//! | check | refused as |
//! |---|---|
//! | ELF magic | not a shared object |
//! | class (`ELFCLASS64` on a 64-bit host), byte order, `e_machine` = the host's | foreign object, naming both |
//! | header, program and section header tables inside the file (`object`) | malformed |
//! | `ET_DYN`, no `PT_INTERP`, no `DF_1_PIE` | not a shared object (an executable) |
//! | every `PT_LOAD`: `p_offset + p_filesz` inside the file, `p_filesz <= p_memsz`, `p_vaddr ≡ p_offset` modulo the page and `p_align`, in address order without overlap | malformed |
//! | `PT_DYNAMIC` (exactly one), `PT_PHDR`, `PT_NOTE`, `PT_GNU_PROPERTY`, `PT_GNU_EH_FRAME`, `PT_TLS`, `PT_GNU_RELRO`: inside one `PT_LOAD`, in memory and (where file-backed) at the matching file offset; `PT_GNU_RELRO` inside a writable one | malformed |
//! | the dynamic section ends with `DT_NULL`; every `DT_*` address (and address + size) inside a `PT_LOAD`; every `DT_*` string offset inside `DT_STRSZ` | malformed |
//! | section headers present; every allocated section inside a `PT_LOAD` at the matching offset (a `NOBITS` one past its `p_filesz`, so that `.bss` is zero), with the permissions its flags need (`PF_R`, plus `PF_X` for `SHF_EXECINSTR`, `PF_W` for `SHF_WRITE`); `PT_GNU_RELRO` (page-rounded as `ld.so` does) covers no `.data`/`.bss` | malformed |
//!
//! Every sum is computed with `checked_add`: an overflow is a defect, never
//! a wrap. The section cross-check is what catches a flipped byte in a
//! program header that is still self-consistent (a segment moved, shrunk, or
//! stripped of a permission); an object without section headers cannot be
//! cross-checked and is refused.

use std::fmt;
use std::path::Path;

use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader};
use object::Endianness;

use crate::error::LoadError;

/// What is wrong with an ELF file whose headers the loader refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ElfDefect {
    /// The ELF reader could not read a header or table (out of the file's
    /// bounds, a wrong entry size, an unsupported ident).
    Unreadable {
        /// The reader's message.
        message: String,
    },
    /// An offset or address computation overflows.
    Overflow {
        /// Which computation.
        what: String,
    },
    /// A `PT_LOAD` maps bytes past the end of the file (a truncated or
    /// partly written file).
    SegmentPastEndOfFile {
        /// Index in the program header table.
        segment: usize,
        /// `p_offset + p_filesz`.
        end: u64,
        /// The file's length.
        file_len: u64,
    },
    /// A program header is inconsistent in itself or with the others.
    BadSegment {
        /// Index in the program header table.
        segment: usize,
        /// What is wrong.
        problem: String,
    },
    /// No `PT_LOAD` segment, or no `PT_DYNAMIC`.
    Missing {
        /// What is missing.
        what: &'static str,
    },
    /// A dynamic-section entry points outside the object's segments.
    BadDynamicEntry {
        /// The `DT_*` tag.
        tag: u64,
        /// What is wrong.
        problem: String,
    },
    /// An allocated section is not where the segments map it, or lacks a
    /// permission it needs.
    BadSection {
        /// The section's name.
        section: String,
        /// What is wrong.
        problem: String,
    },
}

impl fmt::Display for ElfDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfDefect::Unreadable { message } => write!(f, "unreadable ELF structure: {message}"),
            ElfDefect::Overflow { what } => write!(f, "{what} overflows"),
            ElfDefect::SegmentPastEndOfFile { segment, end, file_len } => write!(
                f,
                "PT_LOAD #{segment} maps file bytes up to {end:#x}, but the file has {file_len:#x} (truncated or partly written?)"
            ),
            ElfDefect::BadSegment { segment, problem } => write!(f, "program header #{segment}: {problem}"),
            ElfDefect::Missing { what } => write!(f, "no {what}"),
            ElfDefect::BadDynamicEntry { tag, problem } => write!(f, "dynamic entry {tag:#x}: {problem}"),
            ElfDefect::BadSection { section, problem } => write!(f, "section {section}: {problem}"),
        }
    }
}

/// Why a file was refused, before it is tied to a path.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Not ELF at all.
    NotElf(String),
    /// ELF, but not a library (an executable, an object file).
    NotLibrary(String),
    /// Built for another class, byte order or machine.
    Foreign {
        what: &'static str,
        plugin: String,
        host: String,
    },
    /// Inconsistent or truncated.
    Malformed(ElfDefect),
}

impl Refusal {
    pub(crate) fn into_load_error(self, path: &Path) -> LoadError {
        let path = path.to_owned();
        match self {
            Refusal::NotElf(reason) | Refusal::NotLibrary(reason) => LoadError::NotSharedObject { path, reason },
            Refusal::Foreign { what, plugin, host } => LoadError::ForeignObject {
                path,
                what,
                plugin,
                host,
            },
            Refusal::Malformed(defect) => LoadError::MalformedElf { path, defect },
        }
    }
}

impl From<ElfDefect> for Refusal {
    fn from(d: ElfDefect) -> Refusal {
        Refusal::Malformed(d)
    }
}

/// `e_machine` of the host.
const HOST_MACHINE: u16 = if cfg!(target_arch = "x86_64") {
    elf::EM_X86_64
} else if cfg!(target_arch = "aarch64") {
    elf::EM_AARCH64
} else if cfg!(target_arch = "x86") {
    elf::EM_386
} else if cfg!(target_arch = "arm") {
    elf::EM_ARM
} else if cfg!(any(target_arch = "riscv64", target_arch = "riscv32")) {
    elf::EM_RISCV
} else if cfg!(target_arch = "powerpc64") {
    elf::EM_PPC64
} else if cfg!(target_arch = "powerpc") {
    elf::EM_PPC
} else if cfg!(target_arch = "s390x") {
    elf::EM_S390
} else if cfg!(target_arch = "loongarch64") {
    elf::EM_LOONGARCH
} else if cfg!(any(target_arch = "mips", target_arch = "mips64")) {
    elf::EM_MIPS
} else if cfg!(target_arch = "sparc64") {
    elf::EM_SPARCV9
} else {
    elf::EM_NONE
};

const HOST_CLASS: u8 = if cfg!(target_pointer_width = "64") {
    elf::ELFCLASS64
} else {
    elf::ELFCLASS32
};

const HOST_DATA: u8 = if cfg!(target_endian = "little") {
    elf::ELFDATA2LSB
} else {
    elf::ELFDATA2MSB
};

fn class_name(c: u8) -> String {
    match c {
        elf::ELFCLASS32 => "ELFCLASS32 (32-bit)".to_owned(),
        elf::ELFCLASS64 => "ELFCLASS64 (64-bit)".to_owned(),
        c => format!("ELF class {c}"),
    }
}

fn data_name(d: u8) -> String {
    match d {
        elf::ELFDATA2LSB => "little-endian".to_owned(),
        elf::ELFDATA2MSB => "big-endian".to_owned(),
        d => format!("ELF data encoding {d}"),
    }
}

/// Check a whole ELF image (the copy, as it will be mapped).
pub(crate) fn check(data: &[u8]) -> Result<(), Refusal> {
    if data.len() < 4 || data[..4] != elf::ELFMAG {
        return Err(Refusal::NotElf(format!(
            "no ELF magic (first bytes {:02x?})",
            &data[..data.len().min(4)]
        )));
    }
    if data.len() < 6 {
        return Err(Refusal::NotElf(format!("truncated ELF header ({} bytes)", data.len())));
    }
    let (class, encoding) = (data[4], data[5]);
    if class != HOST_CLASS {
        return Err(Refusal::Foreign {
            what: "ELF class",
            plugin: class_name(class),
            host: class_name(HOST_CLASS),
        });
    }
    if encoding != HOST_DATA {
        return Err(Refusal::Foreign {
            what: "byte order",
            plugin: data_name(encoding),
            host: data_name(HOST_DATA),
        });
    }
    if cfg!(target_pointer_width = "64") {
        check_as::<elf::FileHeader64<Endianness>>(data)
    } else {
        check_as::<elf::FileHeader32<Endianness>>(data)
    }
}

fn unreadable(e: object::read::Error) -> ElfDefect {
    ElfDefect::Unreadable { message: e.to_string() }
}

fn overflow(what: impl Into<String>) -> ElfDefect {
    ElfDefect::Overflow { what: what.into() }
}

/// One program header, widened to `u64`, with its ends computed.
#[derive(Clone, Copy, Debug)]
struct Seg {
    index: usize,
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
    file_end: u64,
    mem_end: u64,
}

impl Seg {
    fn bad(&self, problem: impl Into<String>) -> ElfDefect {
        ElfDefect::BadSegment {
            segment: self.index,
            problem: problem.into(),
        }
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// The `PT_LOAD` whose memory image holds `[addr, addr + len)`.
fn load_holding(loads: &[Seg], addr: u64, len: u64) -> Option<&Seg> {
    let end = addr.checked_add(len)?;
    loads.iter().find(|l| l.vaddr <= addr && end <= l.mem_end)
}

/// Is `[vaddr, vaddr + len)` at file offset `offset` inside `load`'s file
/// image, at the offset `load` maps it from?
fn file_backed_in(load: &Seg, vaddr: u64, offset: u64, len: u64) -> bool {
    vaddr.checked_sub(load.vaddr) == offset.checked_sub(load.offset)
        && offset >= load.offset
        && offset.checked_add(len).is_some_and(|e| e <= load.file_end)
}

fn check_as<Elf: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<(), Refusal> {
    let file_len = data.len() as u64;
    let header = Elf::parse(data).map_err(unreadable)?;
    let endian = header.endian().map_err(unreadable)?;
    let machine = header.e_machine(endian);
    if machine != HOST_MACHINE {
        return Err(Refusal::Foreign {
            what: "machine (e_machine)",
            plugin: machine.to_string(),
            host: HOST_MACHINE.to_string(),
        });
    }
    match header.e_type(endian) {
        elf::ET_DYN => {}
        elf::ET_REL => return Err(Refusal::NotLibrary("a relocatable object (ET_REL)".to_owned())),
        elf::ET_EXEC => return Err(Refusal::NotLibrary("an executable (ET_EXEC)".to_owned())),
        elf::ET_CORE => return Err(Refusal::NotLibrary("a core dump (ET_CORE)".to_owned())),
        t => return Err(Refusal::NotLibrary(format!("ELF type {t}"))),
    }
    let phdrs = header.program_headers(endian, data).map_err(unreadable)?;
    let page = page_size();

    let mut segs = Vec::with_capacity(phdrs.len());
    for (index, ph) in phdrs.iter().enumerate() {
        let (offset, vaddr): (u64, u64) = (ph.p_offset(endian).into(), ph.p_vaddr(endian).into());
        let (filesz, memsz): (u64, u64) = (ph.p_filesz(endian).into(), ph.p_memsz(endian).into());
        let seg = Seg {
            index,
            p_type: ph.p_type(endian),
            flags: ph.p_flags(endian),
            offset,
            vaddr,
            filesz,
            memsz,
            align: ph.p_align(endian).into(),
            file_end: offset
                .checked_add(filesz)
                .ok_or_else(|| overflow(format!("program header #{index}: p_offset + p_filesz")))?,
            mem_end: vaddr
                .checked_add(memsz)
                .ok_or_else(|| overflow(format!("program header #{index}: p_vaddr + p_memsz")))?,
        };
        if seg.p_type == elf::PT_INTERP {
            return Err(Refusal::NotLibrary(
                "a position-independent executable (it has PT_INTERP), not a library".to_owned(),
            ));
        }
        segs.push(seg);
    }

    // PT_LOAD: inside the file, self-consistent, in order.
    let loads: Vec<Seg> = segs.iter().copied().filter(|s| s.p_type == elf::PT_LOAD).collect();
    if loads.is_empty() {
        return Err(ElfDefect::Missing {
            what: "PT_LOAD segment",
        }
        .into());
    }
    let mut prev_end: Option<u64> = None;
    for l in &loads {
        if l.file_end > file_len {
            return Err(ElfDefect::SegmentPastEndOfFile {
                segment: l.index,
                end: l.file_end,
                file_len,
            }
            .into());
        }
        if l.filesz > l.memsz {
            return Err(l.bad("p_filesz is larger than p_memsz").into());
        }
        if l.align > 1 && !l.align.is_power_of_two() {
            return Err(l.bad(format!("p_align {:#x} is not a power of two", l.align)).into());
        }
        let modulus = l.align.max(page);
        if l.vaddr % modulus != l.offset % modulus {
            return Err(l.bad(format!("p_vaddr and p_offset differ modulo {modulus:#x}")).into());
        }
        if prev_end.is_some_and(|e| l.vaddr < e) {
            return Err(l.bad("PT_LOAD segments overlap or are out of address order").into());
        }
        prev_end = Some(l.mem_end);
    }

    // Headers that ld.so follows into the mapping.
    let mut dynamic = None;
    let mut relro = None;
    let mut tls = 0;
    for s in &segs {
        let (name, len) = match s.p_type {
            elf::PT_DYNAMIC => ("PT_DYNAMIC", s.memsz),
            elf::PT_PHDR => ("PT_PHDR", s.memsz),
            elf::PT_NOTE => ("PT_NOTE", s.memsz),
            elf::PT_GNU_PROPERTY => ("PT_GNU_PROPERTY", s.memsz),
            elf::PT_GNU_EH_FRAME => ("PT_GNU_EH_FRAME", s.memsz),
            elf::PT_GNU_RELRO => ("PT_GNU_RELRO", s.memsz),
            // Only the initialisation image (p_filesz) is read from the mapping.
            elf::PT_TLS => ("PT_TLS", s.filesz),
            _ => continue,
        };
        let Some(load) = load_holding(&loads, s.vaddr, len) else {
            return Err(s.bad(format!("{name} lies outside every PT_LOAD")).into());
        };
        let file_len_needed = s.filesz.min(len);
        if file_len_needed > 0 && !file_backed_in(load, s.vaddr, s.offset, file_len_needed) {
            return Err(s
                .bad(format!(
                    "{name} is not at the file offset its PT_LOAD #{} maps",
                    load.index
                ))
                .into());
        }
        match s.p_type {
            elf::PT_DYNAMIC if dynamic.is_some() => return Err(s.bad("a second PT_DYNAMIC").into()),
            elf::PT_DYNAMIC => dynamic = Some(*s),
            elf::PT_GNU_RELRO if relro.is_some() => return Err(s.bad("a second PT_GNU_RELRO").into()),
            elf::PT_GNU_RELRO => {
                if load.flags & elf::PF_W == 0 {
                    return Err(s.bad("PT_GNU_RELRO lies in a read-only PT_LOAD").into());
                }
                relro = Some(*s);
            }
            elf::PT_TLS => {
                tls += 1;
                if tls > 1 {
                    return Err(s.bad("a second PT_TLS").into());
                }
                if s.align > 1 && !s.align.is_power_of_two() {
                    return Err(s.bad("PT_TLS alignment is not a power of two").into());
                }
            }
            elf::PT_PHDR => {
                let phoff: u64 = header.e_phoff(endian).into();
                let table = (header.e_phentsize(endian) as u64) * (phdrs.len() as u64);
                if s.offset != phoff || s.filesz != table {
                    return Err(s.bad("PT_PHDR does not describe the program header table").into());
                }
            }
            _ => {}
        }
    }
    let Some(dynamic) = dynamic else {
        return Err(ElfDefect::Missing { what: "PT_DYNAMIC" }.into());
    };
    let dyn_ph = &phdrs[dynamic.index];
    let dyns = dyn_ph
        .dynamic(endian, data)
        .map_err(unreadable)?
        .ok_or(ElfDefect::Missing { what: "PT_DYNAMIC" })?;
    check_dynamic::<Elf>(endian, dyns, &loads)?;
    check_sections(header, endian, data, &loads, relro, page)?;
    Ok(())
}

/// The dynamic section: terminated, every address inside a segment, every
/// string inside the string table, not a PIE.
fn check_dynamic<Elf: FileHeader<Endian = Endianness>>(
    endian: Endianness,
    dyns: &[Elf::Dyn],
    loads: &[Seg],
) -> Result<(), Refusal> {
    let end = dyns
        .iter()
        .position(|d| d.d_tag(endian).into() == u64::from(elf::DT_NULL))
        .ok_or(ElfDefect::BadDynamicEntry {
            tag: 0,
            problem: "the dynamic section has no DT_NULL terminator".to_owned(),
        })?;
    let dyns = &dyns[..end];
    let get = |tag: u32| {
        dyns.iter()
            .find(|d| d.d_tag(endian).into() == u64::from(tag))
            .map(|d| d.d_val(endian).into())
    };
    if get(elf::DT_FLAGS_1).is_some_and(|f| f & u64::from(elf::DF_1_PIE) != 0) {
        return Err(Refusal::NotLibrary(
            "a position-independent executable (DF_1_PIE), not a library".to_owned(),
        ));
    }
    // (address tag, size tag or 0): what ld.so dereferences.
    const ADDRESSES: [(u32, u32); 17] = [
        (elf::DT_PLTGOT, 0),
        (elf::DT_HASH, 0),
        (elf::DT_GNU_HASH, 0),
        (elf::DT_STRTAB, elf::DT_STRSZ),
        (elf::DT_SYMTAB, 0),
        (elf::DT_RELA, elf::DT_RELASZ),
        (elf::DT_REL, elf::DT_RELSZ),
        (elf::DT_JMPREL, elf::DT_PLTRELSZ),
        // DT_RELR, DT_RELRSZ (not named by this version of `object`).
        (36, 35),
        (elf::DT_INIT, 0),
        (elf::DT_FINI, 0),
        (elf::DT_INIT_ARRAY, elf::DT_INIT_ARRAYSZ),
        (elf::DT_FINI_ARRAY, elf::DT_FINI_ARRAYSZ),
        (elf::DT_PREINIT_ARRAY, elf::DT_PREINIT_ARRAYSZ),
        (elf::DT_VERSYM, 0),
        (elf::DT_VERDEF, 0),
        (elf::DT_VERNEED, 0),
    ];
    for (tag, size_tag) in ADDRESSES {
        let Some(addr) = get(tag) else { continue };
        let size = if size_tag == 0 {
            1
        } else {
            get(size_tag).unwrap_or(0).max(1)
        };
        if load_holding(loads, addr, size).is_none() {
            return Err(ElfDefect::BadDynamicEntry {
                tag: u64::from(tag),
                problem: format!("[{addr:#x}, +{size:#x}) lies outside every PT_LOAD"),
            }
            .into());
        }
    }
    let strsz = get(elf::DT_STRSZ).unwrap_or(0);
    for d in dyns {
        if d.is_string(endian) {
            let off: u64 = d.d_val(endian).into();
            if off >= strsz {
                return Err(ElfDefect::BadDynamicEntry {
                    tag: d.d_tag(endian).into(),
                    problem: format!("string offset {off:#x} outside DT_STRSZ {strsz:#x}"),
                }
                .into());
            }
        }
    }
    Ok(())
}

/// Is this a section of ordinary writable data (never part of RELRO)?
fn is_plain_data(name: &str) -> bool {
    name == ".data"
        || name == ".bss"
        || (name.starts_with(".data.") && !name.starts_with(".data.rel.ro"))
        || name.starts_with(".bss.")
}

/// The section headers, cross-checked against the segments.
fn check_sections<Elf: FileHeader<Endian = Endianness>>(
    header: &Elf,
    endian: Endianness,
    data: &[u8],
    loads: &[Seg],
    relro: Option<Seg>,
    page: u64,
) -> Result<(), Refusal> {
    let sections = header.sections(endian, data).map_err(unreadable)?;
    if sections.is_empty() {
        return Err(ElfDefect::Missing {
            what: "section headers (the segments cannot be cross-checked)",
        }
        .into());
    }
    // ld.so's `_dl_protect_relro`: both ends rounded down to the page.
    let relro = relro.map(|r| (r.vaddr / page * page, r.mem_end / page * page));
    for sh in sections.iter() {
        let flags: u64 = sh.sh_flags(endian).into();
        if flags & u64::from(elf::SHF_ALLOC) == 0 {
            continue;
        }
        let (addr, size, offset): (u64, u64, u64) = (
            sh.sh_addr(endian).into(),
            sh.sh_size(endian).into(),
            sh.sh_offset(endian).into(),
        );
        let nobits = sh.sh_type(endian) == elf::SHT_NOBITS;
        // `.tbss` occupies no address range of its own.
        if size == 0 || (nobits && flags & u64::from(elf::SHF_TLS) != 0) {
            continue;
        }
        let name = || {
            sections
                .section_name(endian, sh)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_else(|_| format!("at {addr:#x}"))
        };
        let bad = |problem: String| {
            Refusal::Malformed(ElfDefect::BadSection {
                section: name(),
                problem,
            })
        };
        let Some(load) = load_holding(loads, addr, size) else {
            return Err(bad(format!("[{addr:#x}, +{size:#x}) lies outside every PT_LOAD")));
        };
        // A NOBITS section (`.bss`) is zero-filled only past `p_filesz`: a
        // segment that maps file bytes over it hands the plugin non-zero
        // "zeroed" statics.
        if nobits && addr < load.vaddr.saturating_add(load.filesz) {
            return Err(bad(format!(
                "NOBITS at {addr:#x} lies inside the file image of PT_LOAD #{} (p_filesz {:#x} too large)",
                load.index, load.filesz
            )));
        }
        if !nobits && !file_backed_in(load, addr, offset, size) {
            return Err(bad(format!(
                "file offset {offset:#x} is not where PT_LOAD #{} maps address {addr:#x} from",
                load.index
            )));
        }
        let mut needs = vec![(elf::PF_R, "PF_R")];
        if flags & u64::from(elf::SHF_EXECINSTR) != 0 {
            needs.push((elf::PF_X, "PF_X"));
        }
        if flags & u64::from(elf::SHF_WRITE) != 0 {
            needs.push((elf::PF_W, "PF_W"));
        }
        if let Some((_, missing)) = needs.iter().find(|(bit, _)| load.flags & bit == 0) {
            return Err(bad(format!(
                "PT_LOAD #{} that holds it lacks {missing} (p_flags {:#x})",
                load.index, load.flags
            )));
        }
        if let Some((lo, hi)) = relro {
            let end = addr
                .checked_add(size)
                .ok_or_else(|| overflow("section address + size"))?;
            if flags & u64::from(elf::SHF_WRITE) != 0 && addr < hi && lo < end && is_plain_data(&name()) {
                return Err(bad(format!(
                    "PT_GNU_RELRO [{lo:#x}, {hi:#x}) would make writable data read-only"
                )));
            }
        }
    }
    Ok(())
}
