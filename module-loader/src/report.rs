//! What an unload did: per domain, the barrier and the cleanup; for the
//! object, whether it left the address space and, if not, why.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use usrcu::CleanupError;

use crate::state::ModuleState;
use crate::ModuleHandle;

/// What the built-in SRCU notifier did about one domain's callbacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierOutcome {
    /// `call_srcu` had been used: `barrier` ran and drained every callback.
    Issued,
    /// `call_srcu` was never used: no barrier, no scan of the queues.
    Skipped,
    /// The automatic barrier is switched off (the kernel's behaviour).
    Disabled,
    /// Readers stayed inside the domain past the unload timeout, so a barrier
    /// (which waits for them) was not attempted.
    ReadersStuck,
    /// The unload ran on a runtime thread (inside a `call_srcu` callback),
    /// where `barrier` cannot wait and returns at once (see `Srcu::barrier`):
    /// callbacks may still be pending, and the cleanup that follows says so.
    ReturnedEarly,
    /// `barrier` did not return within the unload's budget (callbacks that
    /// block); it goes on in the background and the object stays mapped.
    TimedOut,
}

/// The built-in SRCU notifier's work on one static domain.
#[derive(Clone, Debug)]
pub struct DomainReport {
    /// The domain's name.
    pub name: String,
    /// Its possible CPUs (per-CPU slots).
    pub possible_cpus: u64,
    /// Had `call_srcu` ever been used on it?
    pub call_srcu_used: bool,
    /// Barrier issued or skipped.
    pub barrier: BarrierOutcome,
    /// Per-CPU slots read during the barrier step (the barrier's visit of
    /// every slot's queue and the grace periods it waited for); 0 when skipped.
    pub slots_scanned: u64,
    /// Callbacks queued over the domain's life, and invoked, as of just
    /// before `dlclose`.
    pub callbacks_queued: u64,
    /// See `callbacks_queued`.
    pub callbacks_invoked: u64,
    /// The result of `cleanup`.
    pub cleanup: Result<(), CleanupError>,
    /// Time spent on this domain (barrier and cleanup).
    pub elapsed: Duration,
}

/// Why an object was kept mapped on purpose. New causes may be added:
/// match with a wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZombieCause {
    /// A static domain could not be cleaned up (readers inside, callbacks
    /// pending, a grace period in flight).
    DomainBusy {
        /// The domain.
        domain: String,
        /// What cleanup found.
        error: CleanupError,
    },
    /// A domain the loader cannot see (a dynamic domain of the plugin)
    /// reported a missed barrier while the module was going: its callbacks
    /// would run plugin code.
    DynamicDomainMissedBarrier {
        /// The domain named in the warning.
        domain: String,
    },
    /// glibc's pthread-key table could not be read, so a key whose
    /// destructor is plugin code might survive the unmap.
    PthreadKeysUnverifiable,
    /// A Tasks grace period (a thread still inside a hook) or Tasks
    /// callbacks did not complete within the unload timeout.
    HooksBusy,
    /// The runtime still holds callbacks (or a domain with readers or
    /// callbacks) whose code or data lies in the object, past the unload's
    /// time budget.
    CallbacksInObject {
        /// The domain concerned (empty when the runtime named none).
        domain: String,
        /// Callbacks still queued or running.
        callbacks: usize,
        /// Readers still inside that domain.
        readers: isize,
    },
    /// Threads started with a start routine in the object are still alive.
    ThreadsInObject {
        /// Each such thread.
        threads: Vec<PluginThread>,
    },
    /// glibc's thread list could not be read, so a thread running the
    /// object's code might survive the unmap.
    ThreadsUnverifiable,
    /// A thread was still running a pthread-key destructor of the object
    /// past the unload's time budget.
    KeyDestructorRunning {
        /// The key.
        key: u32,
    },
    /// A load that may share a library loaded with the module was still
    /// between its `dlopen` and counting its libraries past the unload's
    /// time budget: the unload cannot know whether it is the library's last
    /// user, so it neither deleted the library's keys nor closed it. A
    /// retry decides once that load has counted.
    SharedLibraryLoading,
    /// The unload of another module that shares a library loaded with this
    /// module was still between its decision about that library and its
    /// `dlclose` past the unload's time budget: until it is done, this
    /// unload cannot know whether it is the library's last user, so it
    /// neither deleted the library's keys nor closed it. A retry decides
    /// once that unload is done.
    SharedLibraryUnloading,
    /// A signal's handler lies in the object (installed by the plugin, or
    /// by the host with a plugin function, and not removed in `exit`): the
    /// next delivery of that signal would jump into unmapped memory. The
    /// handler is left installed; the lowest such signal is named.
    SignalHandlerInObject {
        /// The signal number.
        signal: i32,
        /// The handler's address (`sa_handler` or `sa_sigaction`).
        handler: usize,
    },
    /// The unloading thread's alternate signal stack (`sigaltstack`) lies
    /// in the object: its next signal handled on that stack would write
    /// into unmapped memory. Only the calling thread's stack can be seen.
    SignalStackInObject {
        /// The stack's base address.
        base: usize,
        /// Its size in bytes.
        size: usize,
    },
    /// Tracepoint probes of the object were detached, but the grace period
    /// of their flavor (or the barrier after it) did not complete within
    /// the unload timeout: a thread may still be inside one. A retry waits
    /// for a new grace period of both flavors.
    ProbesInUse,
    /// These threads' `rseq->rseq_cs` still pointed at a restartable-sequence
    /// descriptor in the object when the unload's wait ran out: each ran
    /// the object's read side some other way than through the loader's
    /// calls (a raw function address, say) and has not returned to user space since (it sleeps, or waits for a
    /// CPU). The kernel would kill the process at a named thread's next
    /// return to user space after the unmap. A thread is cleared when it
    /// next runs, or when it calls `usrcu::clear_rseq_descriptor`; a retry
    /// looks again.
    RseqDescriptorInObject {
        /// Their kernel thread ids.
        threads: Vec<i32>,
    },
    /// These threads were still blocked, when the unload's time ran out,
    /// inside a signal handler that had interrupted the object's code (a
    /// hook or a normal tracepoint probe, which Tasks RCU cannot see while
    /// the handler sleeps), or blocked in the object's own code. When the
    /// handler returns, the thread resumes in the object; a retry looks
    /// again.
    InterruptedInObject {
        /// Their kernel thread ids.
        threads: Vec<i32>,
    },
}

/// `SIGUSR1`, `SIGRTMIN+3`, or the number for a signal without a name here.
fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSTKFLT => "SIGSTKFLT",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        s if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&s) => {
            return format!("SIGRTMIN+{}", s - libc::SIGRTMIN());
        }
        s => return format!("signal {s}"),
    };
    name.to_owned()
}

/// A live thread that runs code of a departing object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginThread {
    /// Its kernel thread id.
    pub tid: i32,
    /// Its name (`/proc/self/task/<tid>/comm`).
    pub name: String,
    /// The address of its start routine.
    pub start_routine: usize,
}

impl fmt::Display for PluginThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tid {} '{}' (start routine {:#x})",
            self.tid, self.name, self.start_routine
        )
    }
}

impl fmt::Display for ZombieCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZombieCause::DomainBusy { domain, error } => write!(f, "domain '{domain}': {error}"),
            ZombieCause::DynamicDomainMissedBarrier { domain } => write!(
                f,
                "dynamic domain '{domain}' was dropped with callbacks pending (missed barrier in exit)"
            ),
            ZombieCause::PthreadKeysUnverifiable => {
                f.write_str("cannot read glibc's pthread-key table to remove keys with plugin destructors")
            }
            ZombieCause::HooksBusy => f.write_str("a Tasks grace period or Tasks callbacks did not complete in time"),
            ZombieCause::CallbacksInObject {
                domain,
                callbacks,
                readers,
            } => write!(
                f,
                "the runtime still holds {callbacks} callback(s) and {readers} reader(s) in the object (domain '{domain}')"
            ),
            ZombieCause::ThreadsInObject { threads } => {
                f.write_str("threads started in the object are still alive:")?;
                for t in threads {
                    write!(f, " {t};")?;
                }
                Ok(())
            }
            ZombieCause::ThreadsUnverifiable => {
                f.write_str("cannot read glibc's thread list to check for threads running the object's code")
            }
            ZombieCause::KeyDestructorRunning { key } => {
                write!(f, "a thread is still running the destructor of pthread key {key}")
            }
            ZombieCause::SharedLibraryLoading => f.write_str(
                "a load that may share a library of the module was still in progress when the unload timeout ran out",
            ),
            ZombieCause::SharedLibraryUnloading => f.write_str(
                "the unload of another module sharing a library of the module was still in progress when the unload \
                 timeout ran out",
            ),
            ZombieCause::SignalHandlerInObject { signal, handler } => write!(
                f,
                "the handler of signal {signal} ({}) lies in the object (handler {handler:#x}); it was not removed in exit",
                signal_name(*signal)
            ),
            ZombieCause::SignalStackInObject { base, size } => write!(
                f,
                "the unloading thread's alternate signal stack lies in the object (base {base:#x}, {size} bytes)"
            ),
            ZombieCause::ProbesInUse => write!(
                f,
                "tracepoint probes of the object were detached but their grace period did not complete in time: a thread may still be inside one"
            ),
            ZombieCause::RseqDescriptorInObject { threads } => write!(
                f,
                "threads {threads:?} still point at a restartable-sequence descriptor in the object (their rseq_cs): \
                 they ran its read side outside the loader's calls and have not returned to user space since"
            ),
            ZombieCause::InterruptedInObject { threads } => write!(
                f,
                "threads {threads:?} are blocked in a signal handler that interrupted the object's code (or in that code \
                 itself): they resume in it when the handler returns"
            ),
        }
    }
}

/// Why an object is still mapped after an unload that was not a `Zombie`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResidentCause {
    /// Likely a thread-local destructor registered by plugin code on a
    /// thread that is still alive (the usual case for a Rust
    /// `thread_local!` with `Drop`). glibc would keep the object only until
    /// that thread exits and then unmap it at the next `dlclose` in the
    /// process, while work the destructor queued (a callback of the
    /// plugin) may still be pending; so the loader keeps a reference of
    /// its own and the object stays mapped for the life of the process.
    ThreadLocalDestructor,
    /// The object is marked `DF_1_NODELETE`.
    NoDelete,
    /// The loader runs as [`UnmapPolicy::Never`](crate::UnmapPolicy::Never)
    /// (configured, or because this platform cannot prove a module idle):
    /// the object was not closed and stays mapped for the life of the process.
    KeptMappedByPolicy,
}

impl fmt::Display for ResidentCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResidentCause::ThreadLocalDestructor => f.write_str(
                "likely a thread-local destructor registered by plugin code on a live thread; kept mapped for the life of the process (the destructor runs plugin code when that thread exits, and may queue more)",
            ),
            ResidentCause::NoDelete => f.write_str("the object is marked NODELETE"),
            ResidentCause::KeptMappedByPolicy => f.write_str("kept mapped by policy (UnmapPolicy::Never)"),
        }
    }
}

/// Which hook failed during an unload (the unload went on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookFailure {
    /// The module's `exit`.
    Exit {
        /// Its message.
        message: String,
        /// It panicked (rather than reporting an error).
        panicked: bool,
    },
    /// A `Going` notifier.
    Notifier {
        /// The notifier's name.
        notifier: String,
        /// Its message.
        message: String,
        /// It panicked.
        panicked: bool,
    },
}

impl fmt::Display for HookFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = |p: bool| if p { "panicked" } else { "failed" };
        match self {
            HookFailure::Exit { message, panicked } => write!(f, "exit {}: {message}", how(*panicked)),
            HookFailure::Notifier {
                notifier,
                message,
                panicked,
            } => write!(f, "going notifier '{notifier}' {}: {message}", how(*panicked)),
        }
    }
}

/// What [`ModuleLoader::unload`](crate::ModuleLoader::unload) did.
#[derive(Clone, Debug)]
pub struct UnloadReport {
    /// The module.
    pub handle: ModuleHandle,
    /// Its name.
    pub name: String,
    /// The private copy that was opened: a file in the copy directory, or
    /// `/proc/self/fd/N` for a memfd (which names the copy only while the
    /// object is loaded).
    pub loaded_path: PathBuf,
    /// `Unloaded` or `Zombie`.
    pub state: ModuleState,
    /// One entry per domain of the object: its static domains in slice
    /// order, then the domains found in its memory that it does not list
    /// (a plain `static` domain, a dynamic one kept in a `static`).
    pub domains: Vec<DomainReport>,
    /// Hooks that failed (the unload went on without them).
    pub hook_failures: Vec<HookFailure>,
    /// pthread keys whose destructor was plugin code, deleted before `dlclose`.
    pub pthread_keys_deleted: usize,
    /// `dlclose` was called.
    pub dlclosed: bool,
    /// The object verifiably left the address space (`dl_iterate_phdr` no
    /// longer lists it and `dlopen(RTLD_NOLOAD)` does not find it).
    pub unmapped: bool,
    /// Closed but still mapped: the likely cause.
    pub resident_cause: Option<ResidentCause>,
    /// Kept mapped on purpose: the cause.
    pub zombie_cause: Option<ZombieCause>,
    /// Time spent waiting for calls in flight (the liveness grace period).
    pub calls_drained_in: Duration,
    /// Whole unload, from `Going` to the address-space check.
    pub elapsed: Duration,
    /// Tracepoint probes whose code or data lay in the object, detached by
    /// the built-in probe notifier (after their grace period) before `dlclose`.
    pub probes_removed: Vec<usrcu_registry::tracepoint::RemovedProbe>,
    /// Hook slots emptied and the Tasks grace period waited for.
    pub hook_slots: crate::hook_slots::HookSlotsReport,
    /// Libraries loaded together with the module (its `DT_NEEDED` closure)
    /// that are still mapped after `dlclose` (then `unmapped` is false). A
    /// library another live module also needs is that module's to unmap,
    /// and is not listed here.
    pub libraries_still_mapped: Vec<PathBuf>,
    /// Steps (`exit`, a `Going` notifier) that ran longer than the unload
    /// timeout on their own, as the watchdog saw them: each is measured from
    /// its own start, so a short step that began when earlier ones (or the
    /// loader's own waits, a Tasks grace period say) had spent most or all
    /// of the budget is not blamed for their time. The unload could not
    /// return before these did.
    pub overruns: Vec<String>,
}

impl UnloadReport {
    /// Barriers issued (domains that had used `call_srcu`).
    pub fn barriers_issued(&self) -> usize {
        self.count(BarrierOutcome::Issued)
    }

    /// Barriers skipped by the `call_srcu_used` gate.
    pub fn barriers_skipped(&self) -> usize {
        self.count(BarrierOutcome::Skipped)
    }

    /// Slots scanned by all barrier steps.
    pub fn slots_scanned(&self) -> u64 {
        self.domains.iter().map(|d| d.slots_scanned).sum()
    }

    /// The domain named `name`.
    pub fn domain(&self, name: &str) -> Option<&DomainReport> {
        self.domains.iter().find(|d| d.name == name)
    }

    fn count(&self, o: BarrierOutcome) -> usize {
        self.domains.iter().filter(|d| d.barrier == o).count()
    }
}

impl fmt::Display for UnloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "module '{}' ({}): {}", self.name, self.handle, self.state)?;
        for d in &self.domains {
            write!(
                f,
                "; domain '{}': barrier {:?}, {} slots scanned",
                d.name, d.barrier, d.slots_scanned
            )?;
        }
        if !self.probes_removed.is_empty() {
            write!(f, "; probes removed:")?;
            for (i, p) in self.probes_removed.iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                write!(f, "{sep}'{}'", p.tracepoint)?;
            }
        }
        if self.hook_slots.cleared > 0 || self.hook_slots.waited_grace_period {
            write!(
                f,
                "; hook slots: {} cleared, Tasks grace period {}",
                self.hook_slots.cleared,
                if self.hook_slots.timed_out {
                    "timed out"
                } else {
                    "passed"
                }
            )?;
        }
        if self.unmapped {
            write!(f, "; unmapped")?;
        } else if let Some(c) = &self.resident_cause {
            write!(f, "; still mapped: {c}")?;
        } else if let Some(c) = &self.zombie_cause {
            write!(f, "; kept mapped: {c}")?;
        }
        Ok(())
    }
}
