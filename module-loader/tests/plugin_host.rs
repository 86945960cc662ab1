//! The demo runs end to end: `plugin-host` builds the example plugin,
//! reloads it under reader threads, and reports every object unmapped, each
//! unload with the plugin's forgotten probe removed and its hook cleared.

use std::process::Command;

#[test]
fn plugin_host_reloads_the_example_plugin_and_verifies_every_unmap() {
    let out = Command::new(env!("CARGO_BIN_EXE_plugin-host"))
        .args(["demo", "--cycles", "8", "--threads", "2"])
        .output()
        .expect("run plugin-host");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "plugin-host failed:\n{stdout}\n{stderr}");
    let row = |name: &str| -> String {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no '{name}' row in:\n{stdout}"))
            .trim_start()[name.len()..]
            .trim()
            .to_owned()
    };
    assert_eq!(row("reload cycles"), "8");
    // 8 reloads plus the final unload, each with one barrier issued
    // (demo.config) and two skipped (demo.stats, demo.audit).
    assert_eq!(row("objects verified unmapped"), "9 / 9");
    assert_eq!(row("barriers issued"), "9");
    assert_eq!(row("barriers skipped"), "18");
    assert_eq!(row("failures"), "0");
    assert!(row("calls served").parse::<u64>().unwrap() > 0);
    assert!(row("unload latency median").ends_with("ms"));
    // Every copy attached one probe in `init` and had its hook installed.
    assert_eq!(row("probes removed"), "9");
    assert_eq!(row("hook slots cleared"), "9");
    assert!(row("guarded call rate / thread").ends_with("M/s"), "{stdout}");
    assert!(row("hook call rate / thread").ends_with("M/s"), "{stdout}");
    assert!(row("events fired").parse::<u64>().unwrap() > 0);

    // The per-unload table: unload, module, time (2 words), barriers,
    // callbacks, probes removed, hooks cleared, unmapped.
    let unloads: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() == 9 && w[0].parse::<usize>().is_ok() && w[1].starts_with('#'))
        .collect();
    assert_eq!(unloads.len(), 9, "per-unload rows in:\n{stdout}");
    for w in &unloads {
        let probes: usize = w[6].parse().unwrap();
        assert!(probes > 0, "unload {} removed no probe:\n{stdout}", w[0]);
        assert_eq!(w[7], "1", "unload {} cleared no hook slot:\n{stdout}", w[0]);
        assert_eq!(w[8], "yes", "unload {} did not unmap:\n{stdout}", w[0]);
    }
}
