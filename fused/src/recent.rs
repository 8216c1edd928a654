//! Host-wide inputs shared by every container's render for a short time.
//!
//! `/proc/cpuinfo` describes the host, not the caller, changes only in its MHz lines, and costs
//! more to generate and parse than everything else in a render (~30 µs on a 2-CPU host, growing
//! with the CPU count), so one parse serves every container for a while. Limits and usage always
//! come from the caller's own cgroup files, read for every request.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A value loaded at most once per `max_age` and shared.
#[derive(Debug)]
pub struct Recent<T> {
    max_age: Duration,
    slot: Mutex<Option<(Instant, Arc<T>)>>,
}

impl<T> Recent<T> {
    /// An empty slot whose value is reused for `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Recent {
            max_age,
            slot: Mutex::new(None),
        }
    }

    /// The value, loaded by `load` if none is younger than `max_age`. A failed load is not
    /// remembered (the next call tries again).
    pub fn get<E>(&self, load: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E> {
        let now = Instant::now();
        if let Ok(slot) = self.slot.lock() {
            if let Some((at, value)) = slot.as_ref() {
                if now.duration_since(*at) < self.max_age {
                    return Ok(Arc::clone(value));
                }
            }
        }
        // Loaded outside the lock: two threads may both load, and the later one is kept.
        let value = Arc::new(load()?);
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some((now, Arc::clone(&value)));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_within_max_age_and_reloaded_after() {
        let recent = Recent::new(Duration::from_millis(50));
        let mut loads = 0;
        let mut load = || -> Result<u32, ()> {
            loads += 1;
            Ok(loads)
        };
        assert_eq!(*recent.get(&mut load).unwrap(), 1);
        assert_eq!(*recent.get(&mut load).unwrap(), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(*recent.get(&mut load).unwrap(), 2);
    }

    #[test]
    fn failures_are_not_remembered() {
        let recent: Recent<u32> = Recent::new(Duration::from_secs(60));
        assert!(recent.get(|| Err("boom")).is_err());
        assert_eq!(*recent.get(|| Ok::<_, ()>(7)).unwrap(), 7);
    }
}
