//! The Tasks part of the runtime ABI: a `#[repr(C)]` table of `extern "C"`
//! functions that a plugin's copy of this crate reaches through
//! `RuntimeVTable::tasks`, so that every grace period, callback, quiescent
//! record and hook-slot registration is the host's.

use super::engine::{engine, set_stall_timeout_ms};
use super::hook_slot::registry;
use super::record::{record_for, TasksRecord};
use std::ffi::c_void;
use std::sync::atomic::AtomicPtr;

/// ABI version of [`TasksVTable`]; bumped on any layout or meaning change.
/// 2: `synchronize`, `barrier` and `barrier_timeout_ms` report a refusal
/// (called on the `usrcu-tasks` thread) instead of panicking inside the
/// `extern "C"` function, which aborted the process.
/// 3: the Tasks record's callout word. 4: `on_callback_thread` (a
/// plugin's copy asked its own thread-local, which only the host's engine
/// sets: red team 12). 5: `note_reader_code` (the registry's normal
/// probes were recorded in the defining object's copy, which the host's
/// loader never asked: red team 16).
pub const TASKS_ABI_VERSION: u32 = 5;

/// The host's Tasks operations.
#[repr(C)]
#[derive(Debug)]
pub struct TasksVTable {
    /// [`TASKS_ABI_VERSION`] of the copy that built this table.
    pub abi_version: u32,
    /// `size_of::<TasksVTable>()` of that copy.
    pub size: u32,
    /// Wait for a Tasks grace period: 0, or [`WAIT_REFUSED`] without waiting
    /// when called on the `usrcu-tasks` thread (it would wait for itself).
    pub synchronize: unsafe extern "C" fn() -> u32,
    /// Run `f(arg)` on the host's `usrcu-tasks` thread after a grace period.
    pub call: unsafe extern "C" fn(unsafe extern "C" fn(*mut c_void), *mut c_void),
    /// Wait for every callback queued before the call: 0, or [`WAIT_REFUSED`]
    /// as for `synchronize`.
    pub barrier: unsafe extern "C" fn() -> u32,
    /// The calling thread's quiescent record (allocated on first use).
    pub record: unsafe extern "C" fn() -> *const TasksRecord,
    /// A cookie; with a non-zero argument, also make sure it completes.
    pub get_state: unsafe extern "C" fn(u32) -> u64,
    /// Non-zero if the cookie's grace period completed.
    pub poll_state: unsafe extern "C" fn(u64) -> u32,
    /// Store `new` into the slot (registering or unregistering it with the
    /// host's list of non-empty slots); returns the previous pointer.
    pub hook_swap: unsafe extern "C" fn(*const AtomicPtr<()>, *mut ()) -> *mut (),
    /// The slot is being dropped: forget it.
    pub hook_forget: unsafe extern "C" fn(*const AtomicPtr<()>),
    /// Set the stall timeout of Tasks grace periods (ms; 0: the default).
    pub set_stall_timeout_ms: unsafe extern "C" fn(u64),
    /// `barrier` bounded by a timeout in ms: 1 if it completed, 0 if it
    /// timed out, [`WAIT_REFUSED`] as for `synchronize`.
    pub barrier_timeout_ms: unsafe extern "C" fn(u64) -> u32,
    /// Non-zero if the calling thread is the host's `usrcu-tasks` callback
    /// thread (version 4).
    pub on_callback_thread: unsafe extern "C" fn() -> u32,
    /// Record `n` addresses (at `addrs`) of code or data that may run as a
    /// Tasks reader with no marker, in the host's record that
    /// `hooks_ever_into` reads (version 5).
    pub note_reader_code: unsafe extern "C" fn(*const usize, usize),
}

/// What `synchronize`, `barrier` and `barrier_timeout_ms` return when called
/// on the `usrcu-tasks` thread (from a Tasks callback), where they would
/// wait for themselves. The caller's copy of the crate panics on its own
/// side: a panic cannot unwind out of an `extern "C"` function.
pub const WAIT_REFUSED: u32 = 2;

unsafe extern "C" fn rt_synchronize() -> u32 {
    if engine().synchronize() {
        0
    } else {
        WAIT_REFUSED
    }
}

unsafe extern "C" fn rt_call(f: unsafe extern "C" fn(*mut c_void), arg: *mut c_void) {
    engine().call(f, arg);
}

unsafe extern "C" fn rt_barrier() -> u32 {
    if engine().barrier() {
        0
    } else {
        WAIT_REFUSED
    }
}

unsafe extern "C" fn rt_record() -> *const TasksRecord {
    record_for(super::proc::gettid())
}

unsafe extern "C" fn rt_get_state(start: u32) -> u64 {
    engine().get_state(start != 0)
}

unsafe extern "C" fn rt_poll_state(cookie: u64) -> u32 {
    engine().poll_state(cookie) as u32
}

unsafe extern "C" fn rt_hook_swap(slot: *const AtomicPtr<()>, new: *mut ()) -> *mut () {
    // SAFETY: the caller passes a live slot (`HookSlot` passes itself).
    unsafe { registry::swap(slot, new) }
}

unsafe extern "C" fn rt_hook_forget(slot: *const AtomicPtr<()>) {
    registry::forget(slot);
}

unsafe extern "C" fn rt_set_stall_timeout_ms(ms: u64) {
    set_stall_timeout_ms(ms);
}

unsafe extern "C" fn rt_on_callback_thread() -> u32 {
    super::engine::on_tasks_thread() as u32
}

unsafe extern "C" fn rt_note_reader_code(addrs: *const usize, n: usize) {
    if n == 0 || addrs.is_null() {
        return;
    }
    // SAFETY: the caller passes `n` readable addresses (`note_reader_code`
    // passes a slice).
    registry::note(unsafe { std::slice::from_raw_parts(addrs, n) });
}

unsafe extern "C" fn rt_barrier_timeout_ms(ms: u64) -> u32 {
    match engine().barrier_timeout(std::time::Duration::from_millis(ms)) {
        Some(done) => done as u32,
        None => WAIT_REFUSED,
    }
}

/// This copy's own Tasks table (what `RuntimeVTable::tasks` of the host
/// points at).
pub static HOST_TASKS_VTABLE: TasksVTable = TasksVTable {
    abi_version: TASKS_ABI_VERSION,
    size: std::mem::size_of::<TasksVTable>() as u32,
    synchronize: rt_synchronize,
    call: rt_call,
    barrier: rt_barrier,
    record: rt_record,
    get_state: rt_get_state,
    poll_state: rt_poll_state,
    hook_swap: rt_hook_swap,
    hook_forget: rt_hook_forget,
    set_stall_timeout_ms: rt_set_stall_timeout_ms,
    barrier_timeout_ms: rt_barrier_timeout_ms,
    on_callback_thread: rt_on_callback_thread,
    note_reader_code: rt_note_reader_code,
};

/// The Tasks table this copy uses: the installed runtime's. A mismatch of
/// version or size is fatal: falling back to this copy's own engine would
/// start threads that run this copy's (a plugin's) code.
#[inline]
pub(crate) fn current() -> &'static TasksVTable {
    // `runtime::install` checked the runtime table's version and size.
    let t = crate::runtime::current().tasks;
    if t.abi_version == TASKS_ABI_VERSION && t.size as usize == std::mem::size_of::<TasksVTable>() {
        t
    } else {
        panic!(
            "usrcu::tasks: the host's Tasks table is version {} size {}, this copy expects {} size {}",
            t.abi_version,
            t.size,
            TASKS_ABI_VERSION,
            std::mem::size_of::<TasksVTable>()
        )
    }
}
