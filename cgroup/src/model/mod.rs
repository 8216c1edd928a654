//! The collector's model: plain values with units in field names, one [`ContainerSnapshot`] per
//! container, built by [`crate::Collector::snapshot`] and consumed by fused's views, the exporter
//! and the control plane. No I/O and no file formats here.

pub mod cpu;
pub mod host;
pub mod io;
pub mod memory;
pub mod net;
pub mod pressure;
pub mod tasks;

pub use cpu::{CpuDetail, CpuMax, CpuQuota, CpuThrottling, CpuUsage, CpuWeight, PerCpuUsage};
pub use io::{IoCoverage, IoDeviceStat, IoSnapshot};
pub use memory::{MemoryDetail, MemoryEvents, MemorySnapshot, MemoryStat};
pub use net::{NetDevStat, NetworkSnapshot};
pub use pressure::{PressureSnapshot, Psi, PsiLine};
pub use tasks::{PidsSnapshot, TaskCounts};

/// Which parts of a [`ContainerSnapshot`] to read: each part costs its files' reads, so a
/// consumer asks for what it uses (a meminfo view only [`Parts::MEMORY`], an exporter
/// [`Parts::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts(u16);

impl Parts {
    /// Nothing.
    pub const NONE: Parts = Parts(0);
    /// [`ContainerSnapshot::memory`].
    pub const MEMORY: Parts = Parts(1);
    /// [`ContainerSnapshot::memory_detail`].
    pub const MEMORY_DETAIL: Parts = Parts(1 << 1);
    /// [`ContainerSnapshot::cpuset`] and [`ContainerSnapshot::cpu_quota`].
    pub const CPU_LIMITS: Parts = Parts(1 << 2);
    /// [`ContainerSnapshot::cpu_usage`].
    pub const CPU_USAGE: Parts = Parts(1 << 3);
    /// [`ContainerSnapshot::cpu_detail`].
    pub const CPU_DETAIL: Parts = Parts(1 << 4);
    /// [`ContainerSnapshot::io`].
    pub const IO: Parts = Parts(1 << 5);
    /// [`ContainerSnapshot::pressure`].
    pub const PRESSURE: Parts = Parts(1 << 6);
    /// [`ContainerSnapshot::pids`].
    pub const PIDS: Parts = Parts(1 << 7);
    /// Everything.
    pub const ALL: Parts = Parts((1 << 8) - 1);

    /// Whether every part of `other` is in `self`.
    pub const fn contains(self, other: Parts) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Parts {
    type Output = Parts;

    fn bitor(self, other: Parts) -> Parts {
        Parts(self.0 | other.0)
    }
}

/// One container's cgroup state, read at one moment. A part not asked for, or whose controller
/// the host does not have, is `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSnapshot {
    /// Memory limits and usage ([`Parts::MEMORY`]).
    pub memory: Option<MemorySnapshot>,
    /// Own limits, peak and events ([`Parts::MEMORY_DETAIL`]).
    pub memory_detail: Option<MemoryDetail>,
    /// Host CPUs the container may run on, its effective cpuset ([`Parts::CPU_LIMITS`]).
    pub cpuset: Option<Vec<u32>>,
    /// The tightest CFS quota over the cgroup and its ancestors ([`Parts::CPU_LIMITS`]);
    /// `None` also when unlimited.
    pub cpu_quota: Option<CpuQuota>,
    /// CPU time used ([`Parts::CPU_USAGE`]).
    pub cpu_usage: Option<CpuUsage>,
    /// Own CFS setting, weight, throttling, memory nodes ([`Parts::CPU_DETAIL`]).
    pub cpu_detail: Option<CpuDetail>,
    /// Block I/O ([`Parts::IO`]).
    pub io: Option<IoSnapshot>,
    /// PSI ([`Parts::PRESSURE`]): on v2 only, where the memory controller is.
    pub pressure: Option<PressureSnapshot>,
    /// Task count and limit ([`Parts::PIDS`]).
    pub pids: Option<PidsSnapshot>,
}
