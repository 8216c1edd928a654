//! v1 cpuacct controller: CPU time per host CPU and mode (cpuacct.usage_all, Linux 4.16+), or
//! in USER_HZ ticks split by mode (cpuacct.stat) on older kernels.

use crate::error::Result;
use crate::model::CpuUsage;
use crate::parse::cgroupfs::{flat_keyed_values, parse_usage_all};
use crate::raw::{Edge, RawFile};
use crate::USER_HZ;
use std::path::Path;

/// The usage file a cgroup has.
#[derive(Debug, Clone)]
pub enum UsageFile {
    /// cpuacct.usage_all.
    UsageAll(RawFile),
    /// cpuacct.stat (kernels before cpuacct.usage_all).
    Stat(RawFile),
}

impl UsageFile {
    /// Reads cpuacct.usage_all, or cpuacct.stat where the kernel lacks it.
    pub(crate) fn read(edge: Edge<'_>, dir: &Path) -> Result<Self> {
        match edge.optional(dir, "cpuacct.usage_all")? {
            Some(file) => Ok(UsageFile::UsageAll(file)),
            None => Ok(UsageFile::Stat(edge.read(dir, "cpuacct.stat")?)),
        }
    }
}

/// CPU time, per host CPU where the kernel splits it.
pub fn usage(file: &UsageFile) -> Result<CpuUsage> {
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
        let all = usage(&UsageFile::UsageAll(raw("cpuacct.usage_all"))).unwrap();
        let per_cpu = all.per_cpu.as_ref().unwrap();
        assert_eq!(all.user_ns, per_cpu.iter().map(|r| r.user_ns).sum::<u64>());
        assert_eq!(all.total_ns, all.user_ns + all.system_ns);
        let ticks = usage(&UsageFile::Stat(raw("cpuacct.stat"))).unwrap();
        assert!(ticks.per_cpu.is_none());
        assert_eq!(ticks.user_ns % (1_000_000_000 / USER_HZ), 0);
    }
}
