//! Command line of `usrcu-torture`.

use std::time::Duration;
use usrcu::fault::Fault;

pub const USAGE: &str = "\
usage: usrcu-torture [options]

  --duration <secs>       how long to torture (default 60; --short: 5)
  --short                 CI mode: 5 s, 3 readers, 1 fake writer, stats every second
  --flavor srcu|trace|tasks
                          what to torture: an SRCU domain, the Tasks Trace flavor, or Tasks RCU
                          (hooks called through a HookSlot, with the process stopped and continued
                          meanwhile) (default srcu)
  --fence membarrier|seqcst
                          the fence pair of the tortured domain (default membarrier)
  --domain static|dynamic a `static` Srcu::new_static_with or an Srcu::with_config (default dynamic)
  --cpus <n>|real         possible CPUs of the domain: simulated n slots, or the OS's (default real);
                          a static domain takes real, 1, 1024 or 4096
  --readers <n>           reader threads (default 4)
  --fake-writers <n>      threads requesting grace periods concurrently (default 2)
  --pool <n>              objects in the pool (default 128)
  --stat-interval <secs>  seconds between stats lines (default 10)
  --seed <n>              seed of the operation mix (default: from the clock)
  --broken <fault>        inject a bug: skip-second-scan | no-heavy-fence | no-reader-fence |
                          trace-skip-holdout-recheck | trace-no-reader-fence |
                          tasks-trust-counter | tasks-skip-running
  --stop-on-failure       end the run at the first error found
  --help

Prints periodic stats lines and the reader-pipe histogram, then a final line
`usrcu-torture: SUCCESS` or `usrcu-torture: FAILURE (...)`. Exit status: 0 on
SUCCESS, 1 on FAILURE, 2 on a usage or setup error.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceArg {
    Membarrier,
    SeqCst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlavorArg {
    Srcu,
    Trace,
    Tasks,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainArg {
    Static,
    Dynamic,
}

#[derive(Clone, Debug)]
pub struct Args {
    pub duration: Duration,
    pub fence: FenceArg,
    pub flavor: FlavorArg,
    pub domain: DomainArg,
    /// `None`: the OS's possible CPUs (or `USRCU_POSSIBLE_CPUS`).
    pub cpus: Option<u32>,
    pub readers: usize,
    pub fake_writers: usize,
    pub pool: usize,
    pub stat_interval: Duration,
    pub seed: u64,
    pub broken: Option<Fault>,
    pub stop_on_failure: bool,
}

/// The faults `--broken` takes, by name.
const FAULTS: [(&str, Fault); 7] = [
    ("skip-second-scan", Fault::SkipSecondScan),
    ("no-heavy-fence", Fault::NoHeavyFence),
    ("no-reader-fence", Fault::NoReaderFence),
    ("trace-skip-holdout-recheck", Fault::TraceSkipHoldoutRecheck),
    ("trace-no-reader-fence", Fault::TraceNoReaderFence),
    ("tasks-trust-counter", Fault::TasksTrustCounterAcrossStop),
    ("tasks-skip-running", Fault::TasksSkipRunning),
];

pub fn fault_name(f: Option<Fault>) -> &'static str {
    match f {
        None => "none",
        Some(f) => FAULTS.iter().find(|(_, x)| *x == f).map_or("other", |(n, _)| n),
    }
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: not a number: {v:?}"))
}

/// Parse `argv` (without the program name). `Ok(None)`: `--help`.
pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut short = false;
    let mut duration = None;
    let mut readers = None;
    let mut fake_writers = None;
    let mut stat_interval = None;
    let mut a = Args {
        duration: Duration::from_secs(60),
        fence: FenceArg::Membarrier,
        flavor: FlavorArg::Srcu,
        domain: DomainArg::Dynamic,
        cpus: None,
        readers: 4,
        fake_writers: 2,
        pool: 128,
        stat_interval: Duration::from_secs(10),
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        broken: None,
        stop_on_failure: false,
    };
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it.next().ok_or_else(|| format!("{flag}: missing value")),
            }
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--short" => short = true,
            "--stop-on-failure" => a.stop_on_failure = true,
            "--duration" => duration = Some(Duration::from_secs_f64(num(&flag, &value()?)?)),
            "--stat-interval" => stat_interval = Some(Duration::from_secs_f64(num(&flag, &value()?)?)),
            "--readers" => readers = Some(num(&flag, &value()?)?),
            "--fake-writers" => fake_writers = Some(num(&flag, &value()?)?),
            "--pool" => a.pool = num(&flag, &value()?)?,
            "--seed" => a.seed = num(&flag, &value()?)?,
            "--fence" => {
                a.fence = match value()?.as_str() {
                    "membarrier" => FenceArg::Membarrier,
                    "seqcst" => FenceArg::SeqCst,
                    v => return Err(format!("--fence: expected membarrier or seqcst, got {v:?}")),
                }
            }
            "--flavor" => {
                a.flavor = match value()?.as_str() {
                    "srcu" => FlavorArg::Srcu,
                    "trace" => FlavorArg::Trace,
                    "tasks" => FlavorArg::Tasks,
                    v => return Err(format!("--flavor: expected srcu, trace or tasks, got {v:?}")),
                }
            }
            "--domain" => {
                a.domain = match value()?.as_str() {
                    "static" => DomainArg::Static,
                    "dynamic" => DomainArg::Dynamic,
                    v => return Err(format!("--domain: expected static or dynamic, got {v:?}")),
                }
            }
            "--cpus" => {
                let v = value()?;
                a.cpus = match v.as_str() {
                    "real" => None,
                    n => match n.parse::<u32>() {
                        Ok(n) if n >= 1 && n as usize <= usrcu::percpu::MAX_CPUS => Some(n),
                        _ => {
                            return Err(format!(
                                "--cpus: expected real or 1..={}, got {v:?}",
                                usrcu::percpu::MAX_CPUS
                            ))
                        }
                    },
                }
            }
            "--broken" => {
                let v = value()?;
                a.broken = Some(FAULTS.iter().find(|(n, _)| *n == v).map(|(_, f)| *f).ok_or_else(|| {
                    let names: Vec<&str> = FAULTS.iter().map(|(n, _)| *n).collect();
                    format!("--broken: expected one of {}, got {v:?}", names.join(", "))
                })?)
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    if short {
        a.duration = Duration::from_secs(5);
        a.readers = 3;
        a.fake_writers = 1;
        a.stat_interval = Duration::from_secs(1);
    }
    // Explicit values win over --short, whatever their order.
    a.duration = duration.unwrap_or(a.duration);
    a.readers = readers.unwrap_or(a.readers);
    a.fake_writers = fake_writers.unwrap_or(a.fake_writers);
    a.stat_interval = stat_interval.unwrap_or(a.stat_interval);
    if a.readers == 0 {
        return Err("--readers: at least one reader is needed".into());
    }
    if a.pool < 4 {
        return Err("--pool: at least 4 objects".into());
    }
    if a.stat_interval.is_zero() {
        return Err("--stat-interval: must be positive".into());
    }
    Ok(Some(a))
}
