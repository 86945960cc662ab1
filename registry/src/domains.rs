//! The per-object slice of static domains and the macro that fills it.

use usrcu::Srcu;

/// Every static domain declared with [`define_static_srcu!`](crate::define_static_srcu)
/// in the object (executable or shared library) this copy of the registry is
/// linked into, and only those.
#[linkme::distributed_slice]
pub static SRCU_DOMAINS: [&'static Srcu];

/// This object's static domains, in link order.
pub fn domains() -> impl ExactSizeIterator<Item = &'static Srcu> + Clone {
    SRCU_DOMAINS.iter().copied()
}

/// Declare a `const`-initialised static SRCU domain and register it in this
/// object's [`SRCU_DOMAINS`](crate::SRCU_DOMAINS).
///
/// The domain is named after the static; give an initialiser to choose the
/// name or the settings:
///
/// ```
/// use usrcu_registry::{define_static_srcu, usrcu::{Srcu, SrcuConfig}};
///
/// define_static_srcu!(pub static PLAIN);
/// define_static_srcu!(static WIDE = Srcu::new_static_with("wide", SrcuConfig::new().possible_cpus(64)));
///
/// assert_eq!(PLAIN.name(), "PLAIN");
/// assert_eq!(WIDE.possible_cpus(), 64);
/// let names: Vec<_> = usrcu_registry::domains().map(|d| d.name()).collect();
/// assert!(names.contains(&"PLAIN") && names.contains(&"wide"));
/// ```
#[macro_export]
macro_rules! define_static_srcu {
    ($(#[$attr:meta])* $vis:vis static $name:ident $(;)?) => {
        $crate::define_static_srcu!(
            $(#[$attr])* $vis static $name = $crate::__private::Srcu::new_static(::core::stringify!($name))
        );
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident = $init:expr $(;)?) => {
        $(#[$attr])*
        $vis static $name: $crate::__private::Srcu = $init;

        const _: () = {
            #[$crate::__private::distributed_slice($crate::__private::SRCU_DOMAINS)]
            #[linkme(crate = $crate::__private::linkme)]
            static ELEMENT: &'static $crate::__private::Srcu = &$name;
        };
    };
}
