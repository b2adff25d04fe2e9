//! Reads that must wait for the disk, on threads of their own.
//!
//! The session has few request threads (`mount --threads`, two by
//! default), and nearly every request is answered from memory in
//! microseconds. A thread waiting on the disk is one fewer for all of
//! them, so a read first tries the page cache alone (`RWF_NOWAIT`, see
//! `ReadHandle::read_cached`); only a read that would wait comes here.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

/// Cold reads waited for at once; more queue.
const THREADS: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

pub struct DiskReaders {
    tx: Sender<Job>,
}

impl DiskReaders {
    pub fn new() -> DiskReaders {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..THREADS {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("disk-read-{i}"))
                .spawn(move || run(&rx));
            if let Err(e) = spawned {
                log::warn!("cannot start a disk reader thread: {e}");
            }
        }
        DiskReaders { tx }
    }

    /// Runs `job` on a disk reader thread, or here if none is left.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        if let Err(failed) = self.tx.send(Box::new(job)) {
            (failed.0)();
        }
    }
}

fn run(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(p) => p.into_inner().recv(),
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}
