//! The threads that serve requests which may wait: on the backing disk
//! (a publish's link or rename, a staging create, a cold read), on
//! another request (a RELEASE being published), or on the kernel. The one
//! request thread hands them here and goes back to the kernel's queue
//! (`dispatch.rs` says which requests and why).
//!
//! Grown on demand up to a bound (`mount --threads`), so that eight
//! writers publish in parallel, and parked when idle: an idle worker
//! costs nothing but its stack. The worker that went idle last is woken
//! first, so a steady trickle of hand-offs keeps one thread (and its
//! caches) busy rather than rotating through all of them.
//!
//! Invariants: a job submitted runs (on a worker, or on the caller's
//! thread if no thread can be started); a job `urgent` is one that other
//! jobs may wait for (a writer's RELEASE: lookups and stats of its inode
//! wait for its publish), so it never queues behind the bound: it jumps
//! the queue, and if every worker is busy a thread beyond the bound runs
//! it and then ends. Lock order: `state` is a leaf, no job runs under it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

thread_local! {
    /// Set on the thread that reads the kernel's queue (`fuse.rs`).
    static REQUEST_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread as the request thread: a wait on it is a bug
/// (see `dispatch.rs`).
pub fn mark_request_thread() {
    REQUEST_THREAD.with(|r| r.set(true));
}

/// Whether the current thread is the request thread.
pub fn on_request_thread() -> bool {
    REQUEST_THREAD.with(|r| r.get())
}

/// Whether one thread alone reads the kernel's queue (`mount
/// --request-threads 1`): only then is a wait on it a bug. With two, a
/// request checked free may meet a writer the other reader's FLUSH made
/// meanwhile, and waits for it, bounded (see `dispatch.rs`).
static SOLE_READER: AtomicBool = AtomicBool::new(false);

/// Says how many threads read the kernel's queue (set once at mount).
pub fn set_request_readers(n: usize) {
    SOLE_READER.store(n == 1, Ordering::Relaxed);
}

/// Whether a wait on this thread is one `dispatch.rs` rules out.
pub fn wait_here_is_a_bug() -> bool {
    SOLE_READER.load(Ordering::Relaxed) && on_request_thread()
}

/// Workers started when the mount asks for no bound of its own.
pub const DEFAULT_MAX: usize = 16;

type Job = Box<dyn FnOnce() + Send>;

/// An idle worker: woken by setting `woken` and unparking it (a park may
/// return without an unpark, so the flag, not the return, says "go").
struct Idle {
    thread: Thread,
    woken: AtomicBool,
}

struct State {
    queue: VecDeque<Job>,
    /// Most recently idle last.
    idle: Vec<Arc<Idle>>,
    /// Workers alive (busy or idle), not counting those beyond the bound.
    threads: usize,
    max: usize,
}

pub struct Workers {
    state: Arc<Mutex<State>>,
}

impl Default for Workers {
    fn default() -> Self {
        Workers::new(DEFAULT_MAX)
    }
}

impl Workers {
    pub fn new(max: usize) -> Workers {
        Workers {
            state: Arc::new(Mutex::new(State {
                queue: VecDeque::new(),
                idle: Vec::new(),
                threads: 0,
                max: max.max(1),
            })),
        }
    }

    /// At most `max` workers from now on (those beyond stay until idle).
    pub fn set_max(&self, max: usize) {
        crate::sync::lock(&self.state).max = max.max(1);
    }

    /// Runs `job` on a worker: an idle one, a new one while under the
    /// bound, else the first free one.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        self.push(Box::new(job), false)
    }

    /// Runs `job` before anything queued, on a thread of its own if no
    /// worker is free (see the module docs).
    pub fn submit_urgent(&self, job: impl FnOnce() + Send + 'static) {
        self.push(Box::new(job), true)
    }

    fn push(&self, job: Job, urgent: bool) {
        let mut st = crate::sync::lock(&self.state);
        if let Some(idle) = st.idle.pop() {
            if urgent {
                st.queue.push_front(job);
            } else {
                st.queue.push_back(job);
            }
            drop(st);
            idle.woken.store(true, Ordering::Release);
            idle.thread.unpark();
            return;
        }
        if st.threads < st.max {
            st.threads += 1;
            drop(st);
            return self.spawn(Some(job), true);
        }
        if urgent {
            drop(st);
            return self.spawn(Some(job), false);
        }
        st.queue.push_back(job);
    }

    /// Starts a thread that runs `first`, then (if `stays`) serves the
    /// queue until the process ends; a thread that cannot be started
    /// leaves the job to the caller's thread.
    fn spawn(&self, first: Option<Job>, stays: bool) {
        let state = Arc::clone(&self.state);
        let slot = Arc::new(Mutex::new(first));
        let mine = Arc::clone(&slot);
        let spawned = std::thread::Builder::new()
            .name(if stays { "worker" } else { "worker-extra" }.into())
            .spawn(move || {
                if let Some(job) = crate::sync::lock(&mine).take() {
                    job();
                }
                if stays {
                    serve(&state);
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot start a worker thread ({e}): the request waits here");
            if stays {
                crate::sync::lock(&self.state).threads -= 1;
            }
            if let Some(job) = crate::sync::lock(&slot).take() {
                job();
            }
        }
    }
}

/// A worker's life: the queue's jobs, parked while there are none.
fn serve(state: &Mutex<State>) {
    let me = Arc::new(Idle {
        thread: std::thread::current(),
        woken: AtomicBool::new(false),
    });
    loop {
        let mut st = crate::sync::lock(state);
        if let Some(job) = st.queue.pop_front() {
            drop(st);
            job();
            continue;
        }
        me.woken.store(false, Ordering::Relaxed);
        st.idle.push(Arc::clone(&me));
        drop(st);
        while !me.woken.load(Ordering::Acquire) {
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn jobs_up_to_the_bound_run_at_once() {
        let w = Workers::new(4);
        // Four jobs that each wait for all four: they finish only if they
        // run at the same time.
        let barrier = Arc::new(Barrier::new(4));
        let (tx, rx) = channel();
        for _ in 0..4 {
            let (b, tx) = (Arc::clone(&barrier), tx.clone());
            w.submit(move || {
                b.wait();
                tx.send(()).unwrap();
            });
        }
        for _ in 0..4 {
            rx.recv_timeout(Duration::from_secs(10)).expect("a job ran");
        }
    }

    #[test]
    fn past_the_bound_jobs_queue_and_an_urgent_one_still_runs() {
        let w = Workers::new(1);
        let (release_tx, release_rx) = channel::<()>();
        let (done_tx, done_rx) = channel();
        // The one worker is held until the urgent job has run.
        w.submit(move || release_rx.recv().unwrap());
        let d = done_tx.clone();
        w.submit(move || d.send("queued").unwrap());
        w.submit_urgent(move || {
            done_tx.send("urgent").unwrap();
            release_tx.send(()).unwrap();
        });
        let first = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(first, "urgent");
        let second = done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(second, "queued");
    }

    #[test]
    fn idle_workers_are_reused() {
        let w = Workers::new(8);
        let (tx, rx) = channel();
        for _ in 0..50 {
            let tx = tx.clone();
            w.submit(move || tx.send(std::thread::current().id()).unwrap());
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
            // Until the worker is parked again (it sent before it parked).
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while crate::sync::lock(&w.state).idle.is_empty() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the worker never parked"
                );
                std::thread::yield_now();
            }
        }
        // One job at a time: the idle worker takes each, none is added.
        assert_eq!(crate::sync::lock(&w.state).threads, 1);
    }
}
