//! Tasks Trace registers each reader thread under a pthread key whose
//! destructor releases the thread's record at exit. When the process has no
//! key to spare, registering used to `assert!` inside an `extern "C"` vtable
//! function, which aborts the process; now the reader runs, one warning says
//! what is lost, and grace periods still complete.

use std::thread;

use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::trace;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_TRACE_KEY_EXHAUSTION_CHILD";

#[test]
fn a_tasks_trace_reader_runs_when_the_process_has_no_pthread_key_left() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    child::Child::new("a_tasks_trace_reader_runs_when_the_process_has_no_pthread_key_left")
        .env(CHILD_ENV, "1")
        .must_pass("trace key exhaustion: done");
}

fn child() {
    // Take every pthread key the process has left (glibc: 1024 in all).
    let mut taken = 0usize;
    loop {
        let mut k: libc::pthread_key_t = 0;
        // SAFETY: `k` is writable; no destructor.
        if unsafe { libc::pthread_key_create(&mut k, None) } != 0 {
            break;
        }
        taken += 1;
        assert!(taken <= 1 << 20, "pthread_key_create never fails here");
    }
    let cap = Capture::start();
    // A fresh thread registers with Tasks Trace on its first read section.
    let reads = thread::spawn(|| {
        for _ in 0..100 {
            drop(trace::read_lock());
        }
        100
    })
    .join()
    .expect("the reader thread ran");
    assert_eq!(reads, 100);
    trace::synchronize();
    let warnings: Vec<_> = cap
        .warnings()
        .into_iter()
        .filter(|w| w.domain == trace::DOMAIN_NAME && w.kind == WarningKind::Other)
        .collect();
    assert_eq!(warnings.len(), 1, "one warning about the key: {warnings:?}");
    assert!(
        warnings[0].message.contains("pthread_key_create failed"),
        "{warnings:?}"
    );
    println!("trace key exhaustion: done ({taken} keys taken first)");
}
