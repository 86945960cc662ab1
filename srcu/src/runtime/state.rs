//! The runtime's per-domain state (behind `Srcu::private`), and the registry
//! of every attached domain that the inventory walks.

use crate::callbacks::Callbacks;
use crate::domain::Srcu;
use crate::fence::{heavy_fence, FenceMode};
use crate::grace_period::{Cookie, GpState};
use crate::percpu::PerCpu;
use crate::stats::Counters;
use crate::sync::{lock, AtomicBool, AtomicU64, Mutex, Ordering};
use crate::wake::Wake;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

/// Everything a domain needs beyond the shared header: owned by the runtime.
pub(crate) struct DomainState {
    pub(crate) name: String,
    /// Address of the `Srcu` this state belongs to.
    pub(crate) srcu: usize,
    /// Where the copy of this crate that created the domain lives (see
    /// `Srcu::origin`): a dynamic domain made by plugin code is the plugin's.
    pub(crate) origin: usize,
    pub(crate) pc: Box<PerCpu>,
    pub(crate) mode: FenceMode,
    pub(crate) gp: GpState,
    pub(crate) cbs: Callbacks,
    pub(crate) stats: Counters,
    pub(crate) stall_timeout_ms: u64,
    /// The grace period in progress (its sequence value) and the wait, in
    /// ms, at which its next stall report is due (the timeout, then each
    /// doubling). Keyed by the sequence value so that a report decided
    /// late, after its grace period completed, neither reports a finished
    /// grace period nor raises the next one's threshold.
    pub(crate) next_stall: Mutex<(u64, u64)>,
    /// The grace period in progress (its odd sequence value) and when a
    /// scan first found readers holding it up: how long it has waited, for
    /// stall reports and the driver's backoff. Written only on that slow
    /// path (`GpHooks::blocked`), so an idle grace period reads no clock
    /// for it (only the scan-cost statistic's two reads remain); a
    /// different sequence value means the recorded one completed.
    pub(crate) blocked_since: Mutex<Option<(u64, Instant)>>,
    /// The newest cookie someone needs completed (callbacks, polls).
    pub(crate) gp_needed: AtomicU64,
    /// The wake-up handshake with the driver.
    pub(crate) wake: Wake,
    /// The driver's bookkeeping for this domain (under the driver's lock).
    pub(crate) sched: Mutex<super::driver::Sched>,
    /// An invoker holds or is about to serve this domain.
    pub(crate) invoking: AtomicBool,
    /// The driver holds a trim of this domain's invoker buffers
    /// (`driver::trim_later`).
    pub(crate) trim_pending: AtomicBool,
    /// Cleaned up from inside one of its own callbacks (`orphan`): the
    /// domain no longer points here, and the runtime releases the state
    /// when the driver finds it idle (`release_orphan_if_idle`).
    pub(crate) orphan: AtomicBool,
    /// An orphan that a later state of the same address continues
    /// (`orphans_of`): set for a static domain, whose address is its
    /// identity; not for a dynamic one, which is orphaned as it is dropped,
    /// so that an unrelated domain the allocator puts at the freed address
    /// is not taken for it (red team 7: its `barrier` waited for the old
    /// domain's left-behind callbacks).
    pub(crate) orphan_by_address: AtomicBool,
}

impl DomainState {
    /// Ask for the grace period named by `c` to be driven; true if this
    /// call raised the request (the caller then makes sure the driver looks
    /// soon, not at its next poll).
    #[inline]
    pub(crate) fn request_gp(&self, c: Cookie) -> bool {
        // Relaxed pre-check: a burst of callbacks shares one cookie, so most
        // calls skip the RMW. SeqCst RMW: the producer's side of the wake-up
        // handshake (`wake.rs`); the driver re-reads it with SeqCst.
        self.gp_needed.load(Ordering::Relaxed) < c.0 && self.gp_needed.fetch_max(c.0, Ordering::SeqCst) < c.0
    }

    /// Is a grace period running or requested and not complete?
    pub(crate) fn gp_in_flight(&self) -> bool {
        self.gp.in_progress() || !self.gp.done(Cookie(self.gp_needed.load(Ordering::SeqCst)))
    }

    /// Finish the grace periods requested or running here, as a cleanup
    /// that found no reader inside and nothing queued: one that someone
    /// stopped waiting for (a timed-out `synchronize_timeout`, a started
    /// poll) is otherwise left to the driver, and the cleanup would have to
    /// leak the state. With no reader inside and none allowed to enter (the
    /// cleanup's contract), it ends after a few scans; `within` bounds it
    /// anyway. True if nothing is in flight any more.
    pub(crate) fn finish_grace_periods(&self, within: std::time::Duration) -> bool {
        // Past every grace period requested or running: one that starts
        // after now ends after all of them.
        let c = self.gp.snap();
        let c = c.max(Cookie(self.gp_needed.load(Ordering::SeqCst)));
        let deadline = Instant::now() + within;
        self.gp.wait_for(
            c,
            &self.pc,
            self.mode,
            crate::grace_period::Urgency::Expedited,
            self,
            Some(deadline),
        ) && !self.gp_in_flight()
    }

    pub(crate) fn possible_cpus(&self) -> usize {
        self.pc.nr_slots()
    }

    /// Readers inside a section of either rank, after a heavy fence so that
    /// every reader that already left is seen as gone.
    pub(crate) fn readers_inside(&self) -> isize {
        heavy_fence(self.mode);
        let t0 = Instant::now();
        let (n, slots) = self.pc.active_readers();
        Counters::add(&self.stats.slots_scanned, slots as u64);
        Counters::add(&self.stats.scan_nanos, t0.elapsed().as_nanos() as u64);
        n
    }

    /// Bytes of runtime state this domain holds.
    pub(crate) fn footprint(&self) -> usize {
        std::mem::size_of::<DomainState>() + self.name.len() + self.pc.bytes() + self.cbs.footprint()
    }

    /// An owning reference, for the driver's heap and the invokers' queue.
    pub(crate) fn arc(&self) -> Arc<DomainState> {
        let p: *const DomainState = self;
        // SAFETY: every `DomainState` lives in the Arc that `build_state`
        // made, and the caller's `&self` keeps one reference alive while we
        // take another.
        unsafe {
            Arc::increment_strong_count(p);
            Arc::from_raw(p)
        }
    }
}

/// Default stall timeout: `USRCU_STALL_TIMEOUT_MS`, else 10 s.
fn default_stall_ms() -> u64 {
    static V: OnceLock<u64> = OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("USRCU_STALL_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            // At least 1 ms: warnings come at the timeout and then at each
            // doubling, and 0 doubled is 0 (a warning at every check).
            .map_or(10_000, |ms| ms.max(1))
    })
}

/// Every attached domain's state, for the inventory.
static REGISTRY: Mutex<Vec<Weak<DomainState>>> = Mutex::new(Vec::new());

/// The registry, for the fork handler (`fork.rs`).
pub(super) fn lock_registry_for_fork() -> std::sync::MutexGuard<'static, Vec<Weak<DomainState>>> {
    lock(&REGISTRY)
}

/// Every attached domain's state that is still alive.
pub(super) fn registered() -> Vec<Arc<DomainState>> {
    lock(&REGISTRY).iter().filter_map(Weak::upgrade).collect()
}

fn register(st: &Arc<DomainState>) {
    // Before the registry is first taken: a fork while another thread holds
    // it would leave it held in the child (`fork.rs`).
    super::fork::register_handler_once();
    let mut r = lock(&REGISTRY);
    // Prune dead entries whenever the table doubles: amortised O(1).
    if r.len() >= 64 && r.len().is_power_of_two() {
        r.retain(|w| w.strong_count() > 0);
    }
    r.push(Arc::downgrade(st));
}

/// Where a new domain state's grace-period sequence starts: past every
/// cookie a cleaned-up state can have handed out (`release_state`), so that
/// a cookie taken before `cleanup` reads complete after the domain attaches
/// again (no reader of the old state was left: `cleanup` proved it) instead
/// of waiting for the new state's count to catch up. Process-wide, because
/// the runtime keeps nothing per `Srcu` across a cleanup; a cookie is only
/// meaningful for the domain it came from, so a higher start elsewhere
/// changes nothing that was promised.
static SEQ_FLOOR: AtomicU64 = AtomicU64::new(0);

/// Build the state of `s` (called once per attach, by the CAS winner).
pub(crate) fn build_state(s: &Srcu) -> *mut PerCpu {
    let cfg = s.config();
    let nr = if cfg.possible_cpus != 0 {
        cfg.possible_cpus as usize
    } else {
        crate::percpu::possible_cpus()
    };
    let mode = if cfg.force_seqcst_fence_set() {
        FenceMode::SeqCst
    } else {
        crate::fence::default_mode()
    };
    let stall = if cfg.stall_timeout_ms != 0 {
        cfg.stall_timeout_ms as u64
    } else {
        default_stall_ms()
    };
    let st = Arc::new(DomainState {
        name: s.name().to_owned(),
        srcu: s as *const Srcu as usize,
        origin: s.origin(),
        pc: Box::new(PerCpu::new(nr, mode == FenceMode::SeqCst)),
        mode,
        gp: GpState::starting_at(SEQ_FLOOR.load(Ordering::Acquire)),
        cbs: Callbacks::new(nr),
        stats: Counters::default(),
        stall_timeout_ms: stall,
        next_stall: Mutex::new((u64::MAX, stall)),
        blocked_since: Mutex::new(None),
        gp_needed: AtomicU64::new(0),
        wake: Wake::default(),
        sched: Mutex::new(super::driver::Sched::default()),
        invoking: AtomicBool::new(false),
        trim_pending: AtomicBool::new(false),
        orphan: AtomicBool::new(false),
        orphan_by_address: AtomicBool::new(false),
    });
    register(&st);
    let pc: *const PerCpu = &*st.pc;
    s.set_private(Arc::into_raw(st) as *mut DomainState);
    pc as *mut PerCpu
}

/// Release the runtime's reference to a cleaned-up domain's state (the
/// driver or an invoker may still hold one for a moment: it finds nothing
/// to do and drops it).
///
/// # Safety
/// `p` came from `build_state` and the domain no longer points at it.
pub(crate) unsafe fn release_state(p: *mut DomainState) {
    // Out of the registry now, not at the next pruning: a dead entry's
    // `Weak` keeps the state's allocation (the `ArcInner`, 360 bytes here)
    // until the registry is pruned, which `register` does only when its
    // length reaches a power of two, so a process that loads and unloads
    // plugins carried up to 64 freed domains' allocations.
    unregister(p);
    // SAFETY: the caller hands back a live state.
    raise_seq_floor(unsafe { &*p });
    // SAFETY: the caller hands back the reference `build_state` created.
    drop(unsafe { Arc::from_raw(p) });
}

/// Later states start past every cookie `st` has handed out. A cookie of
/// this state names at most the grace period after the one running at its
/// last `snap`: `(seq + 3) & !1` <= seq rounded up to even + 2. Start later
/// states 4 past the rounded sequence.
fn raise_seq_floor(st: &DomainState) {
    let seq = st.gp.seq_now();
    // AcqRel: a maximum; pairs with the Acquire load in `build_state`.
    SEQ_FLOOR.fetch_max(((seq + 1) & !1) + 4, Ordering::AcqRel);
}

/// A domain cleaned up from inside one of its own callbacks (the last
/// `Arc<Srcu>` dropped by a callback it runs): its remaining callbacks, the
/// one running among them, still have to run, so the state cannot be
/// released now, and leaking it (what a cleanup with callbacks pending
/// does) would leak one state per such domain. The domain is detached
/// already (`p` came from `take_private`); the state stays registered, so
/// the inventory still sees its callbacks, and the driver releases it when
/// it finds it idle (`release_orphan_if_idle`). Later states start past
/// its cookies now: it hands out no more.
///
/// `by_address`: a later state of the domain's address continues this one
/// (a static domain; see `DomainState::orphan_by_address`).
///
/// # Safety
/// `p` is the reference `build_state` created, taken out of its domain.
pub(crate) unsafe fn orphan_state(p: *mut DomainState, by_address: bool) {
    // SAFETY: the caller hands over a live state.
    let st = unsafe { &*p };
    // SeqCst: read by `orphans_of` after the `orphan` flag below.
    st.orphan_by_address.store(by_address, Ordering::SeqCst);
    // Relaxed: a hint that lets `orphans_of` skip the registry walk; an
    // orphan is seen through the registry's lock.
    ORPHANS.fetch_add(1, Ordering::Relaxed);
    raise_seq_floor(st);
    // SeqCst: read by the driver's `release_orphan_if_idle` after the
    // pass that runs this callback ends (its `schedule_at` follows).
    st.orphan.store(true, Ordering::SeqCst);
}

/// States orphaned by a cleanup from their own callback and not released
/// yet (a hint: see `orphans_of`).
static ORPHANS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The orphaned states of the domain at address `srcu` with callbacks
/// still pending. Cheap while there is no orphan at all.
pub(crate) fn orphans_of(srcu: usize) -> Vec<Arc<DomainState>> {
    // Relaxed: an orphaning that happened before the caller's `barrier`
    // began, the only kind it must cover, is visible through that
    // happens-before; a racing one may be missed, as a racing `call_srcu`
    // may.
    if ORPHANS.load(Ordering::Relaxed) == 0 {
        return Vec::new();
    }
    registered()
        .into_iter()
        .filter(|o| {
            o.srcu == srcu
                && o.orphan.load(Ordering::SeqCst)
                && o.orphan_by_address.load(Ordering::SeqCst)
                && o.cbs.pending() > 0
        })
        .collect()
}

/// The driver found `st` idle: release it if it is an orphan
/// (`orphan_state`). The driver's own `Arc` keeps it alive meanwhile.
pub(crate) fn release_orphan_if_idle(st: &Arc<DomainState>) {
    // SeqCst: pairs with the store in `orphan_state`; the swap makes the
    // release happen once.
    if st.orphan.load(Ordering::SeqCst)
        && st.cbs.pending() == 0
        && !st.gp_in_flight()
        && st.orphan.swap(false, Ordering::SeqCst)
    {
        // Relaxed: see `ORPHANS`.
        ORPHANS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the reference `orphan_state` was handed, released once
        // (the swap above).
        unsafe { release_state(Arc::as_ptr(st) as *mut DomainState) };
        // The states that replaced it wait for its callbacks with a slow
        // poll only (`invoke::Again::AfterOrphans`): look at them now.
        for s in registered() {
            if s.srcu == st.srcu && !Arc::ptr_eq(&s, st) {
                super::driver::schedule_at(s, std::time::Instant::now());
            }
        }
    }
}

/// Take the registry's entry for the state at `p` out.
fn unregister(p: *const DomainState) {
    lock(&REGISTRY).retain(|w| !std::ptr::eq(w.as_ptr(), p));
}

/// The state behind a domain, if attached.
pub(crate) fn attached_state(s: &Srcu) -> Option<&DomainState> {
    let p = s.private_ptr();
    // SAFETY: non-null private pointers are live until a successful cleanup,
    // which nobody races (`Srcu::cleanup`'s contract).
    (!p.is_null()).then(|| unsafe { &*p })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the registry still has an entry for the state at `p`.
    fn listed(p: *const DomainState) -> bool {
        lock(&REGISTRY).iter().any(|w| std::ptr::eq(w.as_ptr(), p))
    }

    #[test]
    fn a_cleaned_up_domain_leaves_no_entry_in_the_registry() {
        // Other tests in this process attach domains concurrently: look
        // only for the states this test created and released.
        let mut released = Vec::new();
        for i in 0..40 {
            let d = Srcu::new(&format!("registry-{i}"));
            drop(d.read_lock());
            let p = d.private_ptr() as *const DomainState;
            assert!(!p.is_null() && listed(p), "an attached domain is listed");
            // SAFETY: nobody else uses `d`.
            unsafe { d.cleanup() }.expect("an idle domain cleans up");
            released.push(p);
        }
        // An address may be reused by a later domain's state: only the last
        // release of each address counts, and it must not be listed unless a
        // live domain (another test's) now owns that address.
        let live: Vec<_> = registered().iter().map(Arc::as_ptr).collect();
        let stale = released.iter().filter(|&&p| listed(p) && !live.contains(&p)).count();
        assert_eq!(stale, 0, "{stale} released states still in the registry");
    }
}
