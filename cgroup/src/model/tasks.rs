//! Tasks of a container: counts by state and the pids controller.

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

/// The pids controller of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PidsSnapshot {
    /// Tasks (threads) in the cgroup and its descendants (pids.current).
    pub current: u64,
    /// The cgroup's own pids.max; `None` when "max".
    pub limit: Option<u64>,
}
