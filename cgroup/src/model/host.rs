//! The host's own /proc files that containers' views are derived from, as parsed: meminfo,
//! stat, cpuinfo, uptime, diskstats names.

/// One line of /proc/meminfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeminfoLine<'a> {
    /// Field name without the colon, e.g. "MemTotal" (borrowed from the parsed text).
    pub key: &'a str,
    /// Value in kB when `in_kb`, else a count (HugePages_*).
    pub value: u64,
    /// Whether the kernel prints " kB" after the value.
    pub in_kb: bool,
}

/// /proc/meminfo, in the kernel's field order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meminfo<'a> {
    /// Lines in file order.
    pub lines: Vec<MeminfoLine<'a>>,
}

impl Meminfo<'_> {
    /// The value of a field, if present.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.lines.iter().find(|l| l.key == key).map(|l| l.value)
    }
}

/// The time columns of a `cpu` row of /proc/stat, in USER_HZ ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Normal processes in user mode (includes guest).
    pub user: u64,
    /// Niced processes in user mode (includes guest_nice).
    pub nice: u64,
    /// Kernel mode.
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Waiting for I/O.
    pub iowait: u64,
    /// Servicing interrupts.
    pub irq: u64,
    /// Servicing softirqs.
    pub softirq: u64,
    /// Stolen by the hypervisor.
    pub steal: u64,
    /// Running a guest (already counted in `user`).
    pub guest: u64,
    /// Running a niced guest (already counted in `nice`).
    pub guest_nice: u64,
}

impl CpuTimes {
    /// All elapsed time on the CPU (guest time is inside user/nice, so not added again).
    pub fn total(&self) -> u64 {
        self.user
            .saturating_add(self.nice)
            .saturating_add(self.system)
            .saturating_add(self.idle)
            .saturating_add(self.iowait)
            .saturating_add(self.irq)
            .saturating_add(self.softirq)
            .saturating_add(self.steal)
    }
}

/// /proc/stat: the aggregate row, one row per online CPU, and every other line verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostStat<'a> {
    /// The aggregate `cpu` row.
    pub total: CpuTimes,
    /// `cpuN` rows as (N, times), in file order.
    pub cpus: Vec<(u32, CpuTimes)>,
    /// The lines after the cpu rows (intr, ctxt, btime, processes, procs_running, ...), verbatim
    /// (borrowed from the parsed text).
    pub other_lines: Vec<&'a str>,
}

impl HostStat<'_> {
    /// The times of host CPU `cpu`, if it is online.
    pub fn cpu(&self, cpu: u32) -> Option<&CpuTimes> {
        self.cpus.iter().find(|(n, _)| *n == cpu).map(|(_, t)| t)
    }

    /// The value of a single-number line such as `btime` or `processes`.
    pub fn field(&self, key: &str) -> Option<u64> {
        self.other_lines.iter().find_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some(key))
                .then(|| parts.next()?.parse().ok())
                .flatten()
        })
    }
}

/// One processor's block of /proc/cpuinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuinfoBlock {
    /// The host's processor number.
    pub processor: u32,
    /// The block's lines after the `processor` line, verbatim, each ending in '\n'.
    pub rest: String,
}

/// /proc/cpuinfo split into per-processor blocks (x86 layout: every block starts with
/// "processor\t: N").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cpuinfo {
    /// Blocks in file order.
    pub blocks: Vec<CpuinfoBlock>,
}

/// /proc/uptime: seconds since boot and summed idle seconds of all CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Uptime {
    /// Seconds since boot.
    pub uptime_secs: f64,
    /// Idle seconds summed over CPUs.
    pub idle_secs: f64,
}

/// A block device named in /proc/diskstats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskName {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Kernel name, e.g. "vda".
    pub name: String,
}
