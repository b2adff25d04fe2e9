//! The pace of the disk as writers' requests on the request thread meet
//! it: they are answered there while the disk is fast, and sent to
//! workers for a while when it is not (`dispatch.rs`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Inline writers' requests that slept and average more than this (a
/// network volume, writeback throttling `pwrite` for seconds) or one that
/// takes more than `STALL` (a journal commit) say the disk is slow right
/// now: writers' requests go to workers for `SLOW_FOR`, then are tried
/// here again. Only requests that slept count (see `DiskPace::timed`);
/// on a loaded machine (load 12-15 on 2 vCPUs) those that slept briefly
/// (page cache allocation, a lock) then waited for a CPU averaged
/// 0.6 ms, so the bound is above that: handing writers off there made
/// publishes slower, not faster.
const SLOW_MEAN: Duration = Duration::from_millis(1);
const STALL: Duration = Duration::from_millis(50);
const SLOW_FOR: Duration = Duration::from_millis(500);

/// How long writers' requests answered inline took of late (see
/// `SLOW_MEAN`). Updated without a lock: a lost update of the mean by two
/// racing writers changes nothing that matters.
#[derive(Default)]
pub struct DiskPace {
    /// A moving mean (weight 1/8) of inline writers' requests, in ns.
    mean: AtomicU64,
    /// Nanoseconds since `epoch` until which writers go to workers.
    slow_until: AtomicU64,
    epoch: OnceLock<Instant>,
}

impl DiskPace {
    fn now(&self) -> u64 {
        let epoch = *self.epoch.get_or_init(Instant::now);
        epoch.elapsed().as_nanos() as u64
    }

    pub fn is_slow(&self) -> bool {
        let until = self.slow_until.load(Ordering::Relaxed);
        until != 0 && self.now() < until
    }

    /// Runs a writer's request on this thread, and notes how long it took
    /// if it slept on the way (the disk, a lock): a request that never
    /// slept was only preempted, as on any busy machine, and says nothing
    /// of the disk.
    pub fn timed<R>(&self, f: impl FnOnce() -> R) -> R {
        let (start, slept) = (self.now(), sleeps());
        let r = f();
        if sleeps() != slept {
            let end = self.now();
            self.note(end, end - start);
        }
        r
    }

    fn note(&self, now: u64, took: u64) {
        let mean = self.mean.load(Ordering::Relaxed);
        let mean = mean - mean / 8 + took / 8;
        if took > STALL.as_nanos() as u64 || mean > SLOW_MEAN.as_nanos() as u64 {
            self.slow_until
                .store(now + SLOW_FOR.as_nanos() as u64, Ordering::Relaxed);
            // Measured afresh when they come back.
            self.mean.store(0, Ordering::Relaxed);
            log::debug!(
                "writers' requests are slow ({} us, mean {} us): on workers for a while",
                took / 1000,
                mean / 1000
            );
        } else {
            self.mean.store(mean, Ordering::Relaxed);
        }
    }
}

/// How many times the current thread has slept (voluntary context
/// switches), or 0 if the kernel does not say.
fn sleeps() -> libc::c_long {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a valid, writable rusage; RUSAGE_THREAD only reads
    // the calling thread's counters into it.
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) };
    if r != 0 {
        return 0;
    }
    // SAFETY: getrusage succeeded, so it filled `ru` (and it was zeroed).
    unsafe { ru.assume_init() }.ru_nvcsw
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1000;

    #[test]
    fn fast_writers_stay_inline() {
        let p = DiskPace::default();
        for i in 0..1000 {
            p.note(p.now() + i, 80 * US);
        }
        assert!(!p.is_slow());
    }

    #[test]
    fn a_slow_disk_sends_writers_to_workers_for_a_while() {
        let p = DiskPace::default();
        let now = p.now();
        // A mean over 1 ms takes a few slow requests, not one.
        let mut notes = 0;
        while !p.is_slow() {
            assert!(notes < 20, "1.9 ms requests never made the disk slow");
            p.note(now, 1900 * US);
            notes += 1;
        }
        assert!(notes > 2, "slow after {notes} requests of 1.9 ms");
        // Measured afresh, and tried again once the while is over.
        assert_eq!(p.mean.load(Ordering::Relaxed), 0);
        p.slow_until.store(now, Ordering::Relaxed);
        assert!(!p.is_slow());
    }

    #[test]
    fn a_request_that_sleeps_is_timed_one_that_spins_is_not() {
        let p = DiskPace::default();
        // Busy for 60 ms without sleeping: the machine, not the disk.
        p.timed(|| {
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(60) {
                std::hint::spin_loop();
            }
        });
        assert!(!p.is_slow());
        p.timed(|| std::thread::sleep(Duration::from_millis(60)));
        assert!(p.is_slow());
    }

    #[test]
    fn one_stall_is_enough() {
        let p = DiskPace::default();
        p.note(p.now(), 55_000 * US);
        assert!(p.is_slow());
    }
}
