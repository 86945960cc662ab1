//! The environment switches: `USRCU_POSSIBLE_CPUS`, `USRCU_FENCE=seqcst`,
//! `USRCU_RSEQ=0`. Each re-runs this test binary in a child process with the
//! variable set, so that the process-wide choice is really exercised.

use usrcu::Srcu;

#[path = "common/child.rs"]
mod child;

fn run_child(test: &str, envs: &[(&str, &str)]) {
    let mut child = child::Child::new(test).env("USRCU_CHILD", "1");
    for (k, v) in envs {
        child = child.env(k, v);
    }
    child
        .run()
        .assert_passed("1 passed", &format!("child {test} with {envs:?}"));
}

fn exercise(d: &Srcu) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    {
        let _g = d.read_lock();
        let _h = d.read_lock();
    }
    let i = d.read_lock_raw();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            // SAFETY: `i` came from this domain's read_lock_raw, ended once.
            unsafe { d.read_unlock_raw(i) };
        });
        d.synchronize();
    });
    d.synchronize_expedited();
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = ran.clone();
        d.call_srcu(move || ran.store(true, Ordering::SeqCst));
    }
    d.barrier();
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
#[ignore = "run by possible_cpus_come_from_the_environment in a child process"]
fn child_possible_cpus_64() {
    static D: Srcu = Srcu::new_static("env-cpus");
    assert_eq!(usrcu::percpu::possible_cpus(), 64);
    assert_eq!(D.possible_cpus(), 64);
    exercise(&D);
}

#[test]
fn possible_cpus_come_from_the_environment() {
    run_child("child_possible_cpus_64", &[("USRCU_POSSIBLE_CPUS", "64")]);
}

#[test]
#[ignore = "run by fence_fallback_is_chosen_by_the_environment in a child process"]
fn child_seqcst_fence() {
    static D: Srcu = Srcu::new_static("env-fence");
    assert_eq!(D.fence_mode(), usrcu::fence::FenceMode::SeqCst);
    exercise(&D);
}

#[test]
fn fence_fallback_is_chosen_by_the_environment() {
    run_child("child_seqcst_fence", &[("USRCU_FENCE", "seqcst")]);
}

#[test]
#[ignore = "run by atomic_read_path_works_without_rseq in a child process"]
fn child_no_rseq() {
    static D: Srcu = Srcu::new_static("env-no-rseq");
    assert!(!usrcu::rseq_active());
    exercise(&D);
}

#[test]
fn atomic_read_path_works_without_rseq() {
    run_child("child_no_rseq", &[("USRCU_RSEQ", "0")]);
    // glibc's own switch, where glibc honours it.
    run_child(
        "child_no_rseq",
        &[("USRCU_RSEQ", "0"), ("GLIBC_TUNABLES", "glibc.pthread.rseq=0")],
    );
}

/// Does glibc register a `struct rseq` for every thread of this process
/// (glibc 2.35+, not switched off with `GLIBC_TUNABLES=glibc.pthread.rseq=0`)?
fn glibc_registers_rseq() -> bool {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name; when present
    // the symbol is glibc's `const unsigned int __rseq_size`.
    unsafe {
        let s = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr());
        !s.is_null() && *(s as *const u32) > 0
    }
}

#[test]
fn rseq_read_path_is_used_where_glibc_registers_rseq() {
    static D: Srcu = Srcu::new_static("rseq-path");
    let expected = cfg!(all(target_arch = "x86_64", target_os = "linux"))
        && glibc_registers_rseq()
        && std::env::var_os("USRCU_RSEQ").is_none_or(|v| v != "0");
    assert_eq!(
        usrcu::rseq_active(),
        expected,
        "rseq_active() disagrees with glibc's __rseq_size"
    );
    // SeqCst-fence domains never take the rseq path (percpu.rs).
    let rseq_domain = expected && D.fence_mode() == usrcu::fence::FenceMode::Membarrier;
    let before = usrcu::__testing::rseq_lock_count(&D);
    exercise(&D);
    let after = usrcu::__testing::rseq_lock_count(&D);
    if rseq_domain {
        assert!(
            after > before,
            "glibc registers rseq, but no section entered through it"
        );
    } else {
        assert_eq!(after, before, "sections entered through rseq where it is not in use");
    }
}

#[test]
fn malformed_possible_cpus_is_ignored_with_a_warning() {
    run_child("child_default_cpus", &[("USRCU_POSSIBLE_CPUS", "lots")]);
}

#[test]
#[ignore = "run by malformed_possible_cpus_is_ignored_with_a_warning in a child process"]
fn child_default_cpus() {
    assert!(usrcu::percpu::possible_cpus() >= 1);
    let sys = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    if !sys.is_empty() {
        assert_ne!(usrcu::percpu::possible_cpus(), 0);
    }
}

/// A read section on the rseq path leaves this thread's `rseq_cs` pointing
/// at its descriptor (as librseq does; the kernel clears it lazily), and
/// `usrcu::clear_rseq_descriptor` clears it: what the loader's unload relies
/// on (docs/abi.md, "rseq and unload").
#[test]
fn a_read_section_leaves_rseq_cs_set_and_clear_rseq_descriptor_clears_it() {
    static D: Srcu = Srcu::new_static("rseq-cs-left-set");
    D.attach();
    if !usrcu::rseq_active() || D.fence_mode() != usrcu::fence::FenceMode::Membarrier {
        eprintln!("SKIPPED: the rseq read path is not in use here");
        return;
    }
    // A few rounds: a preemption between the section and the look clears
    // the word (the kernel's lazy clear), which shows nothing; the rseq
    // path needs this CPU's chunk allocated, which the first section does.
    let mut seen_set = false;
    for _ in 0..1000 {
        drop(D.read_lock());
        if usrcu::__testing::rseq_descriptor() != 0 {
            seen_set = true;
            usrcu::clear_rseq_descriptor();
            assert_eq!(
                usrcu::__testing::rseq_descriptor(),
                0,
                "clear_rseq_descriptor left it set"
            );
            break;
        }
    }
    assert!(seen_set, "1000 read sections never left rseq_cs set");
}
