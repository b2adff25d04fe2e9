//! The expiry sweeper: a thread of the store's that reclaims expired
//! entries every `sweep_interval` and, at most every few minutes, logs one
//! line summing up what was evicted and expired.
//!
//! The store owns it: `Store::start_sweeper` starts it (a daemon does; a
//! store opened by a test or an offline command never has one), and
//! `end_session` stops it and waits for it. It holds only a weak reference,
//! so it never keeps a store alive.

use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Store;

const SUMMARY_EVERY: Duration = Duration::from_secs(300);

/// The running sweeper, if started: its stop signal and its thread.
#[derive(Default)]
pub(super) struct SweeperSlot(Mutex<Option<(Sender<()>, JoinHandle<()>)>>);

impl SweeperSlot {
    /// Stops the thread and waits for it (a sweep under way finishes).
    pub(super) fn stop(&self) {
        let running = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, thread)) = running {
            drop(stop);
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Store {
    /// Starts expiring entries in the background (once; later calls do
    /// nothing).
    pub fn start_sweeper(self: &Arc<Self>) {
        let mut slot = self.sweeper.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return;
        }
        let (tx, rx) = channel::<()>();
        let store = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("sweeper".into())
            .spawn(move || run(&store, &rx));
        match spawned {
            Ok(thread) => *slot = Some((tx, thread)),
            Err(e) => log::warn!("no sweeper thread ({e}): expired entries go when met"),
        }
    }
}

fn run(store: &Weak<Store>, stop: &std::sync::mpsc::Receiver<()>) {
    let Some(s) = store.upgrade() else { return };
    let mut last = s.stats().total;
    let mut last_summary = Instant::now();
    drop(s);
    loop {
        let interval = match store.upgrade() {
            Some(s) => s.config().cache.sweep_interval,
            None => return,
        };
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let Some(s) = store.upgrade() else { return };
        let n = s.sweep_expired();
        if n > 0 {
            log::debug!("swept {n} expired entries");
        }
        if last_summary.elapsed() >= SUMMARY_EVERY {
            let now = s.stats().total;
            let (evicted, expired) = (
                now.evictions - last.evictions,
                now.expirations - last.expirations,
            );
            if evicted + expired > 0 {
                log::info!(
                    "last {}: {evicted} entries evicted, {expired} expired; {} entries, {} stored",
                    humantime::format_duration(last_summary.elapsed()),
                    now.entries,
                    bytesize::ByteSize(now.bytes).to_string_as(true),
                );
            }
            last = now;
            last_summary = Instant::now();
        }
    }
}
