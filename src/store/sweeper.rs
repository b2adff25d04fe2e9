//! The expiry sweeper: a thread of the store's that calls the store's
//! sweep step (`Store::sweep_tick`, in `remove.rs`) every `sweep_interval`.
//!
//! The store owns it: `Store::start_sweeper` starts it (a daemon does; a
//! store opened by a test or an offline command never has one), and
//! `end_session` stops it and waits for it. It holds only a weak
//! reference, so it never keeps a store alive, and it knows nothing of the
//! store beyond the step it is given.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The running sweeper, if started: its stop signal and its thread.
#[derive(Default)]
pub(super) struct SweeperSlot(Mutex<Option<(Sender<()>, JoinHandle<()>)>>);

/// What the sweep step remembers between calls: the totals at its last
/// summary line, and when that was.
pub(super) struct SweepLog {
    pub last: Option<(u64, u64)>,
    pub at: Instant,
}

impl Default for SweepLog {
    fn default() -> SweepLog {
        SweepLog {
            last: None,
            at: Instant::now(),
        }
    }
}

impl SweeperSlot {
    /// Starts calling `step` on `target` until it is gone or `stop` is
    /// called; `step` returns how long to wait before the next call.
    /// Does nothing if already started.
    pub(super) fn start<T: Send + Sync + 'static>(
        &self,
        target: Weak<T>,
        step: fn(&T, &mut SweepLog) -> Duration,
    ) {
        let mut slot = crate::sync::lock(&self.0);
        if slot.is_some() {
            return;
        }
        let (tx, rx) = channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("sweeper".into())
            .spawn(move || run(&target, step, &rx));
        match spawned {
            Ok(thread) => *slot = Some((tx, thread)),
            Err(e) => log::warn!("no sweeper thread ({e}): expired entries go when met"),
        }
    }

    /// Stops the thread and waits for it (a sweep under way finishes).
    pub(super) fn stop(&self) {
        let running = crate::sync::lock(&self.0).take();
        if let Some((stop, thread)) = running {
            drop(stop);
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

fn run<T>(target: &Weak<T>, step: fn(&T, &mut SweepLog) -> Duration, stop: &Receiver<()>) {
    let mut log = SweepLog::default();
    loop {
        let wait = match target.upgrade() {
            Some(t) => step(&t, &mut log),
            None => return,
        };
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}
