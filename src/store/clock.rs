//! Time as the store sees it. TTL logic reads the clock only through
//! `Clock`, so tests drive expiry with `ManualClock` instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock nanoseconds since the Unix epoch: what entry headers store,
/// so TTLs keep running across restarts.
pub type UnixNanos = i64;

pub trait Clock: Send + Sync {
    /// MUST be wall-clock time: expiry instants are persisted.
    fn now(&self) -> UnixNanos;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixNanos {
        to_nanos(SystemTime::now())
    }
}

/// A clock that moves only when told to.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: UnixNanos) -> Self {
        ManualClock(AtomicI64::new(start))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_nanos() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixNanos {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn to_nanos(t: SystemTime) -> UnixNanos {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_nanos().min(i64::MAX as u128) as i64),
    }
}

pub fn to_system_time(n: UnixNanos) -> SystemTime {
    if n >= 0 {
        UNIX_EPOCH + Duration::from_nanos(n as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(n.unsigned_abs())
    }
}
