//! Threads the plugin started: a live thread whose start routine lies in the
//! object (std's `thread_start` of the plugin's own std, a pool's worker, a
//! raw `pthread_create`) runs the object's code for as long as it lives.
//!
//! Known from glibc's thread list (`crate::thread_list`). A thread told to
//! stop by `exit` gets a short grace (within the unload's budget) to finish;
//! any still alive then keeps the object mapped as a `Zombie` whose cause
//! names each thread (tid, name, start routine). Unloading the zombie again
//! once they have exited unmaps it.

use std::time::{Duration, Instant};

use super::{Proof, UnloadCx};
use crate::report::{PluginThread, ZombieCause};
use crate::thread_list::{thread_name, ThreadList};

/// See the module documentation.
pub(crate) struct Threads;

/// How long threads of the object get to finish after `exit` told them to.
const EXIT_GRACE: Duration = Duration::from_millis(50);

impl Proof for Threads {
    fn prove(&self, cx: &mut UnloadCx<'_>) -> Result<(), ZombieCause> {
        let list = ThreadList::open().ok_or(ZombieCause::ThreadsUnverifiable)?;
        let until = Instant::now() + EXIT_GRACE.min(cx.time_left());
        let mut nap = Duration::from_micros(50);
        loop {
            let live = list.live_threads().ok_or(ZombieCause::ThreadsUnverifiable)?;
            let ours: Vec<_> = live.iter().filter(|t| cx.contains(t.start_routine)).collect();
            if ours.is_empty() {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(ZombieCause::ThreadsInObject {
                    threads: ours
                        .iter()
                        .map(|t| PluginThread {
                            tid: t.tid,
                            name: thread_name(t.tid),
                            start_routine: t.start_routine,
                        })
                        .collect(),
                });
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(5));
        }
    }
}
