//! CPU limits and usage.

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

    /// The quota allowing the least CPU time per second (the first of equals): what a cgroup
    /// gets under its own quota and its ancestors'.
    pub fn tightest(quotas: impl IntoIterator<Item = CpuQuota>) -> Option<CpuQuota> {
        quotas.into_iter().fold(None, |best, quota| match best {
            Some(b) if !quota.is_tighter_than(&b) => Some(b),
            _ => Some(quota),
        })
    }

    /// Whether this quota allows less CPU time per second than `other`.
    pub fn is_tighter_than(&self, other: &CpuQuota) -> bool {
        u128::from(self.quota_us) * u128::from(other.period_us)
            < u128::from(other.quota_us) * u128::from(self.period_us)
    }
}

/// A cgroup's own CFS setting, limited or not (v2 cpu.max; v1 cpu.cfs_quota_us and
/// cpu.cfs_period_us).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    /// Allowed CPU time per period in µs; `None` is unlimited.
    pub quota_us: Option<u64>,
    /// Period length in µs.
    pub period_us: u64,
}

impl CpuMax {
    /// The quota, when there is one.
    pub fn quota(&self) -> Option<CpuQuota> {
        self.quota_us.map(|quota_us| CpuQuota {
            quota_us,
            period_us: self.period_us,
        })
    }
}

/// One host CPU's user and system time charged to a cgroup (v1 cpuacct.usage_all), in ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerCpuUsage {
    /// Host CPU number.
    pub cpu: u32,
    /// User time in ns.
    pub user_ns: u64,
    /// System time in ns.
    pub system_ns: u64,
}

/// CPU time used by a container and its descendants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuUsage {
    /// All CPU time in ns, exact (v1 cpuacct.usage, v2 cpu.stat usage_usec); user and system
    /// are split from timer ticks by the kernel and need not add up to it.
    pub total_ns: u64,
    /// User time in ns.
    pub user_ns: u64,
    /// System time in ns.
    pub system_ns: u64,
    /// Per host CPU split (v1 cpuacct.usage_all); v2 has none.
    pub per_cpu: Option<Vec<PerCpuUsage>>,
}

/// CFS bandwidth enforcement counts (v1 cpu.stat of the cpu hierarchy, v2 cpu.stat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuThrottling {
    /// Enforcement periods that elapsed while the cgroup had runnable tasks.
    pub periods: u64,
    /// Of those, periods in which the cgroup used up its quota and was throttled.
    pub throttled_periods: u64,
    /// Total time the cgroup's tasks were throttled, in ns.
    pub throttled_ns: u64,
}

/// A cgroup's relative CPU weight, in the unit of its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuWeight {
    /// v1 cpu.shares (2..=262144, default 1024).
    Shares(u64),
    /// v2 cpu.weight (1..=10000, default 100).
    Weight(u64),
}

impl CpuWeight {
    /// The weight in v1 shares, converting a v2 weight the way the kubelet and runc map shares
    /// to weights (weight = 1 + (shares − 2) × 9999 / 262142), inverted.
    pub fn shares(&self) -> u64 {
        match *self {
            CpuWeight::Shares(shares) => shares,
            CpuWeight::Weight(weight) => {
                2 + weight.saturating_sub(1).saturating_mul(262_142) / 9999
            }
        }
    }
}

/// What the control plane and the exporter need beyond the views: the cgroup's own settings
/// and its throttling.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuDetail {
    /// The cgroup's own CFS setting; `None` without a cpu controller.
    pub own_max: Option<CpuMax>,
    /// Its relative weight; `None` without a cpu controller.
    pub weight: Option<CpuWeight>,
    /// Enforcement counts; `None` without a cpu controller.
    pub throttling: Option<CpuThrottling>,
    /// Memory nodes the cgroup may allocate on (effective cpuset mems); `None` without cpuset.
    pub cpuset_mems: Option<Vec<u32>>,
}
