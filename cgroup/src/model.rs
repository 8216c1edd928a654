//! Plain snapshot structs of one container's cgroup state, with units in field names. Built by
//! [`crate::reader`], consumed by the view renderers and (later) the exporter and control plane.

use crate::parse::cgroupfs::{IoDeviceStat, PerCpuUsage, Psi};
use std::collections::BTreeMap;

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

impl MemoryStat {
    /// From v1 memory.stat (hierarchical `total_*` keys, which include descendants).
    pub fn from_v1(keys: &BTreeMap<&str, u64>) -> Self {
        let get = |k: &str| keys.get(k).copied().unwrap_or(0);
        MemoryStat {
            anon_bytes: get("total_rss"),
            file_bytes: get("total_cache"),
            active_anon_bytes: get("total_active_anon"),
            inactive_anon_bytes: get("total_inactive_anon"),
            active_file_bytes: get("total_active_file"),
            inactive_file_bytes: get("total_inactive_file"),
            unevictable_bytes: get("total_unevictable"),
            shmem_bytes: get("total_shmem"),
            mapped_file_bytes: get("total_mapped_file"),
            dirty_bytes: get("total_dirty"),
            writeback_bytes: get("total_writeback"),
            slab_reclaimable_bytes: 0,
            slab_unreclaimable_bytes: 0,
            anon_thp_bytes: get("total_rss_huge"),
            shmem_thp_bytes: 0,
            file_thp_bytes: 0,
        }
    }

    /// From v2 memory.stat.
    pub fn from_v2(keys: &BTreeMap<&str, u64>) -> Self {
        let get = |k: &str| keys.get(k).copied().unwrap_or(0);
        MemoryStat {
            anon_bytes: get("anon"),
            file_bytes: get("file"),
            active_anon_bytes: get("active_anon"),
            inactive_anon_bytes: get("inactive_anon"),
            active_file_bytes: get("active_file"),
            inactive_file_bytes: get("inactive_file"),
            unevictable_bytes: get("unevictable"),
            shmem_bytes: get("shmem"),
            mapped_file_bytes: get("file_mapped"),
            dirty_bytes: get("file_dirty"),
            writeback_bytes: get("file_writeback"),
            slab_reclaimable_bytes: get("slab_reclaimable"),
            slab_unreclaimable_bytes: get("slab_unreclaimable"),
            anon_thp_bytes: get("anon_thp"),
            shmem_thp_bytes: get("shmem_thp"),
            file_thp_bytes: get("file_thp"),
        }
    }
}

/// Memory limits and usage of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemorySnapshot {
    /// Hard limit: the minimum over the cgroup and its ancestors; `None` when unlimited.
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
    /// Breakdown from memory.stat.
    pub stat: MemoryStat,
}

/// A CFS bandwidth limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    /// CPU time allowed per period, in µs.
    pub quota_us: u64,
    /// Period, in µs.
    pub period_us: u64,
}

impl CpuQuota {
    /// The number of whole CPUs the quota amounts to, rounded up (at least 1).
    pub fn cpus_ceil(&self) -> u64 {
        self.quota_us.div_ceil(self.period_us.max(1)).max(1)
    }
}

/// CPU time used by a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuUsage {
    /// User time in ns.
    pub user_ns: u64,
    /// System time in ns.
    pub system_ns: u64,
    /// Per host CPU split (v1 cpuacct.usage_all); v2 has none.
    pub per_cpu: Option<Vec<PerCpuUsage>>,
}

/// CPU limits and usage of a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuSnapshot {
    /// Host CPUs the container may run on (effective cpuset); `None` without a cpuset controller.
    pub cpuset: Option<Vec<u32>>,
    /// The tightest CFS quota over the cgroup and its ancestors; `None` when unlimited.
    pub quota: Option<CpuQuota>,
    /// Time used.
    pub usage: CpuUsage,
}

/// Pressure stall information of a container (v2 only).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PressureSnapshot {
    /// cpu.pressure.
    pub cpu: Option<Psi>,
    /// memory.pressure.
    pub memory: Option<Psi>,
    /// io.pressure.
    pub io: Option<Psi>,
}

/// Everything the views need about one container, read at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSnapshot {
    /// Memory, if a memory controller is mounted.
    pub memory: Option<MemorySnapshot>,
    /// CPU.
    pub cpu: CpuSnapshot,
    /// Block I/O per device.
    pub io: Vec<IoDeviceStat>,
    /// PSI, on v2.
    pub pressure: Option<PressureSnapshot>,
}

/// Counts of a container's tasks by scheduler state, for loadavg and /proc/stat procs_*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskCounts {
    /// Tasks in state R.
    pub running: u32,
    /// Tasks in state D.
    pub blocked: u32,
    /// All tasks (threads).
    pub total: u32,
}
