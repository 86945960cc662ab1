//! CPU helpers shared by the tests that pin threads (`percpu_chunks.rs`,
//! `closure_slot_retention.rs`): which CPUs this process may use, and
//! running code on a thread pinned to one of them.

/// Up to two CPUs this process may run on.
pub fn two_allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most size_of::<cpu_set_t>() bytes into it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        set
    };
    let is_set = |c: usize| {
        // SAFETY: CPU_ISSET reads the set for ids below CPU_SETSIZE.
        unsafe { libc::CPU_ISSET(c, &set) }
    };
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize).filter(|&c| is_set(c)).take(2).collect();
    assert!(!cpus.is_empty());
    cpus
}

/// Pin the calling thread to `cpu`; the kernel moves it there before
/// returning.
pub fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it;
    // pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

/// Run `f` on a thread pinned to `cpu`.
pub fn on_cpu<T: Send>(cpu: usize, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to(cpu);
            f()
        })
        .join()
        .unwrap()
    })
}
