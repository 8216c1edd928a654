//! Memory limits, usage and events.

/// memory.stat fields proclens uses, normalised across versions (v1 hierarchical `total_*`
/// names, v2 names). Fields a version does not report are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryStat {
    /// Anonymous memory (v1 total_rss, v2 anon).
    pub anon_bytes: u64,
    /// Page cache (v1 total_cache, v2 file).
    pub file_bytes: u64,
    /// Active anonymous LRU.
    pub active_anon_bytes: u64,
    /// Inactive anonymous LRU.
    pub inactive_anon_bytes: u64,
    /// Active file LRU.
    pub active_file_bytes: u64,
    /// Inactive file LRU.
    pub inactive_file_bytes: u64,
    /// Unevictable LRU.
    pub unevictable_bytes: u64,
    /// Shared memory (tmpfs, shm).
    pub shmem_bytes: u64,
    /// Mapped file pages.
    pub mapped_file_bytes: u64,
    /// Dirty file pages.
    pub dirty_bytes: u64,
    /// Pages under writeback.
    pub writeback_bytes: u64,
    /// Reclaimable slab (v2 only).
    pub slab_reclaimable_bytes: u64,
    /// Unreclaimable slab (v2 only).
    pub slab_unreclaimable_bytes: u64,
    /// Anonymous transparent huge pages.
    pub anon_thp_bytes: u64,
    /// Shared memory backed by transparent huge pages (v2 only).
    pub shmem_thp_bytes: u64,
    /// Page cache backed by transparent huge pages (v2 only).
    pub file_thp_bytes: u64,
}

/// Memory limits and usage of a container: what its views need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemorySnapshot {
    /// Effective hard limit: the minimum over the cgroup and its ancestors; `None` when unlimited.
    pub limit_bytes: Option<u64>,
    /// Current usage (v1 memory.usage_in_bytes, v2 memory.current).
    pub usage_bytes: u64,
    /// Swap the container may use (v2 memory.swap.max, v1 memsw limit − limit), minimum over
    /// ancestors; `None` when unlimited or when swap is not accounted.
    pub swap_limit_bytes: Option<u64>,
    /// Swap in use (v2 memory.swap.current, v1 memsw usage − usage).
    pub swap_usage_bytes: u64,
    /// Whether the kernel accounts swap for this cgroup (v1 needs swapaccount=1).
    pub swap_accounted: bool,
    /// Breakdown from memory.stat (descendants included).
    pub stat: MemoryStat,
}

impl MemorySnapshot {
    /// The working set as cAdvisor and the kubelet define it: usage minus the inactive file
    /// pages (which the kernel reclaims first), never below 0.
    pub fn working_set_bytes(&self) -> u64 {
        self.usage_bytes
            .saturating_sub(self.stat.inactive_file_bytes)
    }
}

/// Counts of memory events since the cgroup was created (v2 memory.events; v1 has only some).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryEvents {
    /// Times usage went over memory.high and was throttled (v2 `high`); `None` on v1.
    pub high: Option<u64>,
    /// Times usage was about to go over the hard limit (v2 `max`; v1 memory.failcnt, which
    /// counts the same limit hits).
    pub max: u64,
    /// Times the OOM killer was invoked for the cgroup (v2 `oom`); `None` on v1.
    pub oom: Option<u64>,
    /// Processes killed by the OOM killer (v2 `oom_kill`, v1 memory.oom_control `oom_kill`
    /// from Linux 4.13); `None` where the kernel does not count them.
    pub oom_kill: Option<u64>,
}

/// What the control plane and the exporter need beyond the views: the cgroup's own limits,
/// the peak and the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryDetail {
    /// The cgroup's own hard limit (v1 memory.limit_in_bytes, v2 memory.max); `None` when
    /// unlimited (v2 "max"; v1's huge page-aligned value is kept as a number).
    pub own_limit_bytes: Option<u64>,
    /// The cgroup's own throttling limit (v2 memory.high); `None` when "max" or on v1.
    pub high_bytes: Option<u64>,
    /// The cgroup's own swap limit (v2 memory.swap.max; v1 memsw limit − limit); `None` when
    /// unlimited or not accounted.
    pub own_swap_limit_bytes: Option<u64>,
    /// Highest usage recorded (v1 memory.max_usage_in_bytes, v2 memory.peak from Linux 5.19);
    /// `None` where the kernel has no such file.
    pub peak_bytes: Option<u64>,
    /// Event counts.
    pub events: MemoryEvents,
}
