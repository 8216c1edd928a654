//! v1 cpuacct controller: CPU time per host CPU and mode (cpuacct.usage_all, Linux 4.16+), or
//! in USER_HZ ticks split by mode (cpuacct.stat) on older kernels; the total from
//! cpuacct.usage.
//!
//! Only cpuacct.usage is exact: the kernel splits time by mode from timer ticks, so the user and
//! system columns of cpuacct.usage_all are multiples of the tick (4 ms at HZ=250 on 6.18) and
//! their sum can run ahead of, or behind, the time really used (measured on 6.18: 196 ms in
//! usage_all against 185.5 ms in cpuacct.usage for one short loop).

use crate::error::Result;
use crate::model::CpuUsage;
use crate::parse::cgroupfs::{flat_keyed_values, parse_u64, parse_usage_all};
use crate::raw::{Edge, RawFile};
use crate::USER_HZ;
use std::path::Path;

/// The usage files a cgroup has: the split by mode, and the exact total.
#[derive(Debug, Clone)]
pub struct UsageFiles {
    /// By mode (and CPU).
    pub split: UsageFile,
    /// cpuacct.usage, the exact total in ns (absent only on a kernel without it).
    pub total: Option<RawFile>,
}

/// The file splitting usage by mode that a cgroup has.
#[derive(Debug, Clone)]
pub enum UsageFile {
    /// cpuacct.usage_all.
    UsageAll(RawFile),
    /// cpuacct.stat (kernels before cpuacct.usage_all).
    Stat(RawFile),
}

impl UsageFiles {
    /// Reads cpuacct.usage_all (cpuacct.stat where the kernel lacks it) and cpuacct.usage.
    pub(crate) fn read(edge: Edge<'_>, dir: &Path) -> Result<Self> {
        let split = match edge.optional(dir, "cpuacct.usage_all")? {
            Some(file) => UsageFile::UsageAll(file),
            None => UsageFile::Stat(edge.read(dir, "cpuacct.stat")?),
        };
        let total = edge.optional(dir, "cpuacct.usage")?;
        Ok(UsageFiles { split, total })
    }
}

/// CPU time: the exact total, and by mode (per host CPU where the kernel splits it).
pub fn usage(files: &UsageFiles) -> Result<CpuUsage> {
    let mut usage = usage_by_mode(&files.split)?;
    if let Some(total) = &files.total {
        usage.total_ns = total.parse(parse_u64)?;
    }
    Ok(usage)
}

/// CPU time by mode; the total is their sum (tick-sampled).
fn usage_by_mode(file: &UsageFile) -> Result<CpuUsage> {
    match file {
        UsageFile::UsageAll(file) => {
            let rows = file.parse(parse_usage_all)?;
            let user_ns = rows.iter().map(|r| r.user_ns).fold(0, u64::saturating_add);
            let system_ns = rows
                .iter()
                .map(|r| r.system_ns)
                .fold(0, u64::saturating_add);
            Ok(CpuUsage {
                total_ns: user_ns.saturating_add(system_ns),
                user_ns,
                system_ns,
                per_cpu: Some(rows),
            })
        }
        UsageFile::Stat(file) => {
            let [user, system] = file.parse(|text| flat_keyed_values(text, ["user", "system"]))?;
            let ns =
                |ticks: Option<u64>| ticks.unwrap_or(0).saturating_mul(1_000_000_000 / USER_HZ);
            let (user_ns, system_ns) = (ns(user), ns(system));
            Ok(CpuUsage {
                total_ns: user_ns.saturating_add(system_ns),
                user_ns,
                system_ns,
                per_cpu: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    #[test]
    fn usage_from_a_real_kernel() {
        let raw = |name: &str| RawFile::new(name, fixture(&format!("v1/6.18/{name}")));
        let split = UsageFile::UsageAll(raw("cpuacct.usage_all"));
        let by_mode = usage_by_mode(&split).unwrap();
        assert_eq!(by_mode.total_ns, by_mode.user_ns + by_mode.system_ns);
        let all = usage(&UsageFiles {
            split,
            total: Some(raw("cpuacct.usage")),
        })
        .unwrap();
        let per_cpu = all.per_cpu.as_ref().unwrap();
        assert_eq!(all.user_ns, per_cpu.iter().map(|r| r.user_ns).sum::<u64>());
        let exact: u64 = fixture("v1/6.18/cpuacct.usage").trim().parse().unwrap();
        assert_eq!(
            all.total_ns, exact,
            "the total is cpuacct.usage, not the tick-sampled sum"
        );
        let ticks = usage_by_mode(&UsageFile::Stat(raw("cpuacct.stat"))).unwrap();
        assert!(ticks.per_cpu.is_none());
        assert_eq!(ticks.user_ns % (1_000_000_000 / USER_HZ), 0);
    }
}
