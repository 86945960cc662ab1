//! A plugin hook (`init`, `exit`, an interface shim: all run through
//! `run_hook`) that panics with a payload whose own drop panics: the hook
//! reports `Panicked` and the process goes on. Before, the payload was
//! dropped inside the `extern "C"` hook and its second panic aborted the
//! process, so the scenario runs in a child.

use usrcu_registry::__private::run_hook;
use usrcu_registry::HookMessage;

const CHILD: &str = "USRCU_HOOK_PAYLOAD_CHILD";

/// A panic payload whose drop panics.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("hook-payload: the payload's drop panics too");
    }
}

#[test]
fn a_hook_whose_panic_payload_panics_on_drop_reports_panicked() {
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "a_hook_whose_panic_payload_panics_on_drop_reports_panicked",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the child died: {:?}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("child: status"));
        return;
    }
    let mut buf = [0u8; 128];
    let mut msg = HookMessage {
        buf: buf.as_mut_ptr(),
        cap: buf.len(),
        len: 0,
    };
    // SAFETY: `msg` points at 128 writable bytes.
    let status = unsafe { run_hook(&mut msg, || std::panic::panic_any(Bomb)) };
    println!("child: status {status}");
    assert_ne!(status, 0, "a panicking hook reported success");
}
