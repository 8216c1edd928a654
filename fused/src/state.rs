//! Per-container state that must persist between reads: the last /proc/stat rows shown (so
//! counters never go backwards) and the load average. Keyed by [`ContainerId`] (paths + cgroup
//! inodes, so a recreated cgroup starts fresh), bounded in size.

use proclens_cgroup::parse::host::CpuTimes;
use proclens_cgroup::ContainerId;
use proclens_view::loadavg::{LoadAvg, LOAD_INTERVAL_SECS};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most containers remembered at once.
pub const CAPACITY: usize = 8192;
/// Entries not read for this long are dropped first when the map is full.
const IDLE_EVICT: Duration = Duration::from_secs(600);

/// State of one container.
#[derive(Debug, Clone)]
pub struct ContainerState {
    /// Last stat rows shown.
    pub stat_rows: Vec<CpuTimes>,
    /// Load averages.
    pub load: LoadAvg,
    /// When `load` was last advanced.
    pub load_updated: Instant,
    last_seen: Instant,
}

/// All containers' state.
#[derive(Debug, Default)]
pub struct States {
    map: Mutex<HashMap<ContainerId, ContainerState>>,
}

impl States {
    /// Runs `f` on the container's state, creating it if new.
    pub fn with<T>(&self, id: &ContainerId, f: impl FnOnce(&mut ContainerState) -> T) -> T {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(id) && map.len() >= CAPACITY {
            map.retain(|_, s| now.duration_since(s.last_seen) < IDLE_EVICT);
            if map.len() >= CAPACITY {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.last_seen)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        let state = map.entry(id.clone()).or_insert_with(|| ContainerState {
            stat_rows: Vec::new(),
            load: LoadAvg::default(),
            load_updated: now,
            last_seen: now,
        });
        state.last_seen = now;
        f(state)
    }
}

/// How many whole load intervals have passed since `since`, and the instant they end at.
pub fn load_samples(since: Instant, now: Instant) -> (u64, Instant) {
    let interval = Duration::from_secs(LOAD_INTERVAL_SECS);
    let n = now.duration_since(since).as_secs() / LOAD_INTERVAL_SECS;
    let advanced = since + interval * u32::try_from(n).unwrap_or(u32::MAX);
    (n, advanced)
}
