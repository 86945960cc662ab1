//! Where a loaded object lies in the address space, and whether it is still
//! there: `dl_iterate_phdr` (the dynamic linker's own list of mapped objects)
//! and `dlopen(RTLD_NOLOAD)` (its lookup by name, which never maps anything).

use std::ffi::{c_int, c_void, CStr, CString};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `DT_FLAGS_1` and its `DF_1_NODELETE` bit: the object asked never to be
/// unloaded (`-z nodelete`, or a C++ unique symbol).
const DT_NULL: i64 = 0;
const DT_NEEDED: i64 = 1;
const DT_STRTAB: i64 = 5;
const DT_SONAME: i64 = 14;
const DT_FLAGS_1: i64 = 0x6fff_fffb;
const DF_1_NODELETE: u64 = 0x8;

/// An ELF dynamic-section entry (`Elf64_Dyn`).
#[repr(C)]
struct Dyn {
    tag: i64,
    val: u64,
}

/// The mapping of one loaded object, read while it is loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMapping {
    /// Load bias (`dlpi_addr`).
    pub base: usize,
    /// Every `PT_LOAD` segment, as absolute address ranges.
    pub segments: Vec<Range<usize>>,
    /// The object carries `DF_1_NODELETE`: `dlclose` will never unmap it.
    pub nodelete: bool,
    /// Its `PT_GNU_RELRO` range, read-only once relocated.
    pub relro: Option<Range<usize>>,
    /// Its writable `PT_LOAD` segments (data and bss).
    pub data_segments: Vec<Range<usize>>,
    /// Its `DT_NEEDED` names.
    pub needed: Vec<Vec<u8>>,
    /// Its `DT_SONAME`, if it has one.
    pub soname: Option<Vec<u8>>,
}

impl ObjectMapping {
    /// Does `addr` fall inside one of the object's segments?
    pub fn contains(&self, addr: usize) -> bool {
        self.segments.iter().any(|r| r.contains(&addr))
    }
}

struct Search<'a> {
    /// One object by name, or (`None`) every object.
    name: Option<&'a [u8]>,
    found: Vec<(Vec<u8>, ObjectMapping)>,
}

unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `Search` passed by `find`, alive for the call;
    // `info` is valid for the duration of the callback (dl_iterate_phdr's
    // contract).
    let (search, info) = unsafe { (&mut *(data as *mut Search<'_>), &*info) };
    if info.dlpi_name.is_null() {
        return 0;
    }
    // SAFETY: the dynamic linker's names are NUL-terminated strings.
    let name = unsafe { CStr::from_ptr(info.dlpi_name) };
    if search.name.is_some_and(|n| n != name.to_bytes()) {
        return 0;
    }
    let base = info.dlpi_addr as usize;
    let mut m = ObjectMapping {
        base,
        ..ObjectMapping::default()
    };
    let (mut strtab, mut needed, mut soname) = (None, Vec::new(), None);
    for i in 0..info.dlpi_phnum as usize {
        // SAFETY: `dlpi_phdr` has `dlpi_phnum` entries.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        let start = base + ph.p_vaddr as usize;
        match ph.p_type {
            libc::PT_LOAD => {
                m.segments.push(start..start + ph.p_memsz as usize);
                if ph.p_flags & libc::PF_W != 0 {
                    m.data_segments.push(start..start + ph.p_memsz as usize);
                }
            }
            libc::PT_GNU_RELRO => m.relro = Some(start..start + ph.p_memsz as usize),
            libc::PT_DYNAMIC => {
                let mut d = start as *const Dyn;
                // SAFETY: the mapped dynamic section is an array of `Dyn`
                // ending with `DT_NULL`.
                unsafe {
                    while (*d).tag != DT_NULL {
                        match (*d).tag {
                            DT_FLAGS_1 if (*d).val & DF_1_NODELETE != 0 => m.nodelete = true,
                            DT_STRTAB => strtab = Some((*d).val as usize),
                            DT_NEEDED => needed.push((*d).val as usize),
                            DT_SONAME => soname = Some((*d).val as usize),
                            _ => {}
                        }
                        d = d.add(1);
                    }
                }
            }
            _ => {}
        }
    }
    // The dynamic linker rewrites DT_STRTAB to an absolute address where the
    // dynamic section is writable, and leaves it relative where it is not:
    // take whichever reading lies inside the object.
    let strtab = strtab.and_then(|t| [t, base.wrapping_add(t)].into_iter().find(|a| m.contains(*a)));
    if let Some(strtab) = strtab {
        let segments = m.segments.clone();
        let string = |off: usize| {
            let p = strtab
                .checked_add(off)
                .filter(|p| segments.iter().any(|r| r.contains(p)))?;
            // SAFETY: inside the object's mapped string table, NUL-terminated.
            Some(
                unsafe { CStr::from_ptr(p as *const std::ffi::c_char) }
                    .to_bytes()
                    .to_vec(),
            )
        };
        m.needed = needed.into_iter().filter_map(string).collect();
        m.soname = soname.and_then(string);
    }
    search.found.push((name.to_bytes().to_vec(), m));
    // Stop at the object searched for; go on when listing every object.
    c_int::from(search.name.is_some())
}

/// The mapping of the loaded object whose name (the path it was opened by)
/// is `path`, if the dynamic linker has it.
pub fn find(path: &Path) -> Option<ObjectMapping> {
    iterate(Some(path.as_os_str().as_bytes())).pop().map(|(_, m)| m)
}

/// Every object the dynamic linker has loaded, by name (the main program's
/// name is empty), in its order.
pub fn loaded_objects() -> Vec<(Vec<u8>, ObjectMapping)> {
    iterate(None)
}

fn iterate(name: Option<&[u8]>) -> Vec<(Vec<u8>, ObjectMapping)> {
    let mut search = Search {
        name,
        found: Vec::new(),
    };
    // SAFETY: `visit` only touches `search`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut Search<'_> as *mut c_void) };
    search.found
}

/// Does the dynamic linker still know an object by this name? Asks with
/// `RTLD_NOLOAD`, which never maps anything; a handle it returns is closed at
/// once (it holds a reference).
pub fn still_loaded(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string; RTLD_NOLOAD only looks the name up.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
    if h.is_null() {
        return false;
    }
    // SAFETY: `h` is the reference RTLD_NOLOAD just took; give it back.
    unsafe { libc::dlclose(h) };
    true
}

/// Take a reference to the loaded object named `path` that is never given
/// back: the dynamic linker keeps the object mapped for the rest of the
/// process. `RTLD_NOLOAD` only looks the name up (never maps anything);
/// false if no object of that name is loaded.
pub fn pin_forever(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string; RTLD_NOLOAD only looks the name up. The
    // handle is leaked on purpose: it is the reference that keeps the object.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
    !h.is_null()
}

/// The mappings of `/proc/self/maps` text: each line's address range and
/// permission letters (`r-xp`), lines that do not parse left out.
pub(crate) fn maps_lines(maps: &str) -> impl Iterator<Item = (usize, usize, &str)> + '_ {
    maps.lines().filter_map(|line| {
        let mut f = line.split_ascii_whitespace();
        let (range, perms) = (f.next()?, f.next()?);
        let (a, b) = range.split_once('-')?;
        Some((
            usize::from_str_radix(a, 16).ok()?,
            usize::from_str_radix(b, 16).ok()?,
            perms,
        ))
    })
}

/// Is the object opened by `path` still in the address space, by either test?
pub fn is_mapped(path: &Path) -> bool {
    find(path).is_some() || still_loaded(path)
}
