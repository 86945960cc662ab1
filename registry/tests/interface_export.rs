//! `export_interface!` with two interfaces: the list it exports is built
//! in statics of the object (no allocation), names both interfaces, and
//! its entries point at their function lists and tables.

use usrcu_registry::interface::{InterfaceList, INTERFACE_ABI_VERSION, INTERFACE_MAGIC};

usrcu_registry::plugin_interface! {
    /// First.
    pub trait One ["test.one", version 3] {
        /// Twice `x`.
        fn twice(x: u64) -> u64;
        /// A flag.
        fn flag() -> bool;
    }
}

usrcu_registry::plugin_interface! {
    /// Second.
    pub trait Two ["test.two", version 1] {
        /// Nothing.
        fn nothing();
    }
}

struct Imp;

impl One for Imp {
    fn twice(x: u64) -> u64 {
        2 * x
    }
    fn flag() -> bool {
        true
    }
}

impl Two for Imp {
    fn nothing() {}
}

usrcu_registry::export_interface!(One for Imp, Two for Imp);

extern "C" {
    fn usrcu_interfaces() -> *const InterfaceList;
}

#[test]
fn two_interfaces_are_listed_from_statics() {
    // SAFETY: the symbol `export_interface!` defined above.
    let list = unsafe { &*usrcu_interfaces() };
    // SAFETY: as above: the same statics every time.
    assert_eq!(list as *const _, unsafe { usrcu_interfaces() });
    assert_eq!(list.magic, INTERFACE_MAGIC);
    assert_eq!(list.abi_version, INTERFACE_ABI_VERSION);
    assert_eq!(list.count, 2);
    // SAFETY: `count` entries at `entries`, statics of this binary.
    let entries = unsafe { std::slice::from_raw_parts(list.entries, list.count as usize) };
    let name = |s: &usrcu_registry::StrRef| {
        // SAFETY: a `StrRef` of a `&'static str` of this binary.
        unsafe {
            std::str::from_utf8(std::slice::from_raw_parts(s.ptr, s.len))
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(name(&entries[0].name), "test.one");
    assert_eq!(entries[0].version, 3);
    assert_eq!(entries[0].function_count, 2);
    assert_eq!(name(&entries[1].name), "test.two");
    assert_eq!(entries[1].function_count, 1);
    // SAFETY: `function_count` entries at `functions`.
    let f = unsafe { std::slice::from_raw_parts(entries[0].functions, 2) };
    assert_eq!(name(&f[0].name), "twice");
    assert_eq!(name(&f[1].name), "flag");
    assert_ne!(f[0].fingerprint, f[1].fingerprint);
    assert!(!entries[0].table.is_null() && !entries[1].table.is_null());
}
