//! The short torture (`usrcu-torture --short`) over the matrix the core must
//! survive: both fence paths, static and dynamic domains, and 1, the real
//! number, and 1024 possible CPUs; and the deliberately broken flavor, which
//! it must report as FAILURE (the proof that the checks can fail).
//!
//! Each case runs the real binary in its own process (faults and the fence
//! choice are process-wide), and prints its output when it fails.

use std::process::{Command, Output};

fn torture(args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_usrcu-torture"))
        .args(args)
        // The matrix names its fence path and CPU count explicitly.
        .env_remove("USRCU_FENCE")
        .env_remove("USRCU_POSSIBLE_CPUS")
        .output()
        .expect("cannot run usrcu-torture");
    let text = format!(
        "usrcu-torture {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn last_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

/// The count of error kind `kind` on the final `Errors:` line.
fn error_count(out: &Output, kind: &str) -> u64 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("usrcu-torture: Errors:"))
        .expect("no Errors line");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(kind)?.strip_prefix('='))
        .expect("error kind missing from the Errors line")
        .parse()
        .unwrap()
}

fn survives(domain: &str, fence: &str, cpus: &str) {
    let (out, text) = torture(&["--short", "--domain", domain, "--fence", fence, "--cpus", cpus]);
    assert!(
        out.status.success() && last_line(&out).starts_with("usrcu-torture: SUCCESS"),
        "torture failed:\n{text}"
    );
    assert!(text.contains("usrcu-torture: Reader Pipe:"), "no reader pipe:\n{text}");
    // A SUCCESS that exercised nothing proves nothing: readers read, grace
    // periods completed, and the writer used every primitive it chooses from
    // (`Op::ALL` in `usrcu-torture/writer.rs`).
    for counter in [
        "reads", "gps", "writes", "sync", "exp", "call", "poll", "getstate", "barrier",
    ] {
        assert!(
            final_stat(&out, counter) > 0,
            "{counter}=0: the run did not exercise it:\n{text}"
        );
    }
}

/// The value of `name=N` on the last statistics line (`usrcu-torture: t=...`).
fn final_stat(out: &Output, name: &str) -> u64 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("usrcu-torture: t="))
        .expect("no statistics line");
    line.split_whitespace()
        .map(|w| w.trim_matches(|c| c == '(' || c == ')'))
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{name} missing from the statistics line: {line}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not a number ({e}): {line}"))
}

macro_rules! matrix {
    ($($name:ident: $domain:literal $fence:literal $cpus:literal;)*) => {
        $(
            #[test]
            fn $name() {
                survives($domain, $fence, $cpus);
            }
        )*
    };
}

matrix! {
    static_domain_membarrier_1_cpu_survives_torture: "static" "membarrier" "1";
    static_domain_membarrier_real_cpus_survives_torture: "static" "membarrier" "real";
    static_domain_membarrier_1024_cpus_survives_torture: "static" "membarrier" "1024";
    static_domain_seqcst_1_cpu_survives_torture: "static" "seqcst" "1";
    static_domain_seqcst_real_cpus_survives_torture: "static" "seqcst" "real";
    static_domain_seqcst_1024_cpus_survives_torture: "static" "seqcst" "1024";
    dynamic_domain_membarrier_1_cpu_survives_torture: "dynamic" "membarrier" "1";
    dynamic_domain_membarrier_real_cpus_survives_torture: "dynamic" "membarrier" "real";
    dynamic_domain_membarrier_1024_cpus_survives_torture: "dynamic" "membarrier" "1024";
    dynamic_domain_seqcst_1_cpu_survives_torture: "dynamic" "seqcst" "1";
    dynamic_domain_seqcst_real_cpus_survives_torture: "dynamic" "seqcst" "real";
    dynamic_domain_seqcst_1024_cpus_survives_torture: "dynamic" "seqcst" "1024";
}

/// A grace period that skips its second scan returns while pre-existing
/// readers are still inside: both the reader pipe (an age of 2) and the
/// in-section cookie check must see it, and the run must end in FAILURE.
fn broken_flavor_fails(domain: &str, fence: &str, cpus: &str) {
    let (out, text) = torture(&[
        "--short",
        "--duration",
        "2",
        "--domain",
        domain,
        "--fence",
        fence,
        "--cpus",
        cpus,
        "--broken",
        "skip-second-scan",
    ]);
    assert_eq!(out.status.code(), Some(1), "broken flavor did not exit with 1:\n{text}");
    assert!(
        last_line(&out).starts_with("usrcu-torture: FAILURE"),
        "broken flavor did not end in FAILURE:\n{text}"
    );
    assert!(
        error_count(&out, "too_old") > 0,
        "the reader pipe missed the bug:\n{text}"
    );
    assert!(
        error_count(&out, "cookie_early") > 0,
        "the cookie check missed the bug:\n{text}"
    );
}

#[test]
fn skipped_second_scan_is_reported_as_failure_on_membarrier_path() {
    broken_flavor_fails("dynamic", "membarrier", "real");
}

#[test]
fn skipped_second_scan_is_reported_as_failure_on_seqcst_path() {
    broken_flavor_fails("static", "seqcst", "1");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let (out, text) = torture(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{text}");
}

#[test]
fn trace_flavor_membarrier_survives_torture() {
    let (out, text) = torture(&["--short", "--flavor", "trace", "--fence", "membarrier"]);
    assert!(
        out.status.success() && last_line(&out).starts_with("usrcu-torture: SUCCESS"),
        "torture failed:\n{text}"
    );
}

#[test]
fn trace_flavor_seqcst_survives_torture() {
    let (out, text) = torture(&["--short", "--flavor", "trace", "--fence", "seqcst"]);
    assert!(
        out.status.success() && last_line(&out).starts_with("usrcu-torture: SUCCESS"),
        "torture failed:\n{text}"
    );
}

/// A Tasks Trace grace period that does not re-check its holdouts ends while
/// readers are inside: the run must end in FAILURE with too-old reads.
#[test]
fn broken_trace_flavor_without_holdout_recheck_is_reported_as_failure() {
    let (out, text) = torture(&[
        "--short",
        "--duration",
        "2",
        "--flavor",
        "trace",
        "--broken",
        "trace-skip-holdout-recheck",
    ]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(last_line(&out).starts_with("usrcu-torture: FAILURE"), "{text}");
    assert!(
        error_count(&out, "too_old") > 0,
        "no too-short grace period seen:\n{text}"
    );
}
