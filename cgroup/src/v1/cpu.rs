//! v1 cpu controller: cpu.cfs_quota_us with cpu.cfs_period_us (quota, minimum over the chain),
//! cpu.shares, and cpu.stat's throttling counts.

use crate::error::Result;
use crate::model::{CpuMax, CpuQuota, CpuThrottling, CpuWeight};
use crate::parse::cgroupfs::{flat_keyed_values, parse_u64, parse_v1_quota};
use crate::raw::{parse_optional, Edge, RawFile};
use std::path::Path;

/// One cgroup's CFS files.
#[derive(Debug, Clone)]
pub struct CfsFiles {
    /// cpu.cfs_quota_us ("-1" unlimited).
    pub quota: RawFile,
    /// cpu.cfs_period_us; not read for an unlimited quota unless asked for.
    pub period: Option<RawFile>,
}

impl CfsFiles {
    /// Reads the CFS files of `dir`; `None` when the cgroup has none. The period is read only
    /// when the quota is set, or when `always_period` (the cgroup's own setting is wanted):
    /// the view of an unlimited container then costs one read less. An `ancestor`'s files
    /// (of the cgroup being read) are read once per collection ([`Edge::ancestor`]).
    pub(crate) fn read(
        edge: Edge<'_>,
        dir: &Path,
        always_period: bool,
        ancestor: bool,
    ) -> Result<Option<Self>> {
        let read = |name: &str| match ancestor {
            true => edge.ancestor(dir, name),
            false => edge.optional(dir, name),
        };
        let Some(quota) = read("cpu.cfs_quota_us")? else {
            return Ok(None);
        };
        let limited = quota.parse(parse_v1_quota)?.is_some();
        let period = if limited || always_period {
            match read("cpu.cfs_period_us")? {
                Some(period) => Some(period),
                // The quota's cgroup is there, its period not: gone since (Vanished).
                None => Some(edge.read(dir, "cpu.cfs_period_us")?),
            }
        } else {
            None
        };
        Ok(Some(CfsFiles { quota, period }))
    }
}

/// A cgroup's own CFS setting; `None` when its period was not read.
pub fn own_max(files: &CfsFiles) -> Result<Option<CpuMax>> {
    let Some(period) = &files.period else {
        return Ok(None);
    };
    Ok(Some(CpuMax {
        quota_us: files.quota.parse(parse_v1_quota)?,
        period_us: period.parse(parse_u64)?,
    }))
}

/// The tightest quota over a chain (the cgroup first; `None` entries have no CFS files).
pub fn effective_quota(chain: &[Option<CfsFiles>]) -> Result<Option<CpuQuota>> {
    let mut best = None;
    for files in chain.iter().flatten() {
        let quota = own_max(files)?.and_then(|max| max.quota().filter(|q| q.period_us > 0));
        best = CpuQuota::tightest(best.into_iter().chain(quota));
    }
    Ok(best)
}

/// cpu.shares.
pub fn weight(cpu_shares: Option<&RawFile>) -> Result<Option<CpuWeight>> {
    Ok(parse_optional(cpu_shares, parse_u64)?.map(CpuWeight::Shares))
}

/// Throttling counts from the cpu hierarchy's cpu.stat (throttled_time is in ns).
pub fn throttling(cpu_stat: &RawFile) -> Result<CpuThrottling> {
    let [periods, throttled_periods, throttled_ns] = cpu_stat
        .parse(|text| flat_keyed_values(text, ["nr_periods", "nr_throttled", "throttled_time"]))?;
    Ok(CpuThrottling {
        periods: periods.unwrap_or(0),
        throttled_periods: throttled_periods.unwrap_or(0),
        throttled_ns: throttled_ns.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    fn raw(name: &str) -> RawFile {
        RawFile::new(name, fixture(&format!("v1/6.18/{name}")))
    }

    fn cfs(quota: &str, period: &str) -> Option<CfsFiles> {
        Some(CfsFiles {
            quota: RawFile::new("cpu.cfs_quota_us", quota),
            period: Some(RawFile::new("cpu.cfs_period_us", period)),
        })
    }

    #[test]
    fn quota_shares_and_throttling_from_a_real_kernel() {
        let own = CfsFiles {
            quota: raw("cpu.cfs_quota_us"),
            period: Some(raw("cpu.cfs_period_us")),
        };
        assert_eq!(
            own_max(&own).unwrap(),
            Some(CpuMax {
                quota_us: Some(50000),
                period_us: 100000
            })
        );
        let unread = CfsFiles {
            period: None,
            ..own.clone()
        };
        assert_eq!(own_max(&unread).unwrap(), None);
        assert_eq!(
            weight(Some(&raw("cpu.shares"))).unwrap(),
            Some(CpuWeight::Shares(
                fixture("v1/6.18/cpu.shares").trim().parse().unwrap()
            ))
        );
        assert_eq!(
            throttling(&raw("cpu.stat")).unwrap(),
            CpuThrottling {
                periods: 16,
                throttled_periods: 13,
                throttled_ns: 593299743
            }
        );
    }

    #[test]
    fn the_tightest_quota_wins() {
        let chain = vec![
            cfs("-1\n", "100000\n"),
            None,
            cfs("300000\n", "100000\n"),
            cfs("20000\n", "10000\n"),
        ];
        assert_eq!(
            effective_quota(&chain).unwrap(),
            Some(CpuQuota {
                quota_us: 20000,
                period_us: 10000
            })
        );
        assert_eq!(effective_quota(&chain[..2]).unwrap(), None);
        assert!(effective_quota(&[cfs("-2\n", "100000\n")]).is_err());
        // An unlimited cgroup whose period was not read sets no limit.
        let unread = Some(CfsFiles {
            quota: RawFile::new("cpu.cfs_quota_us", "-1\n"),
            period: None,
        });
        assert_eq!(
            effective_quota(&[unread, cfs("20000\n", "10000\n")])
                .unwrap()
                .map(|q| q.quota_us),
            Some(20000)
        );
    }
}
