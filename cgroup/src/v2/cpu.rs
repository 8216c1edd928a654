//! v2 cpu controller and core accounting: cpu.max (quota, minimum over the chain), cpu.weight,
//! and cpu.stat (usage in every cgroup; throttling counts where the cpu controller is enabled).

use crate::error::{Error, ParseError, Result};
use crate::model::{CpuMax, CpuQuota, CpuThrottling, CpuUsage, CpuWeight};
use crate::parse::cgroupfs::{flat_keyed_values, parse_cpu_max, parse_u64};
use crate::raw::{parse_optional, RawFile};

/// The tightest quota over a chain of cpu.max files (the cgroup first; `None` entries are
/// cgroups without the cpu controller enabled).
pub fn effective_quota(chain: &[Option<RawFile>]) -> Result<Option<CpuQuota>> {
    let mut best = None;
    for file in chain.iter().flatten() {
        let quota = file.parse(parse_cpu_max)?.quota();
        best = CpuQuota::tightest(best.into_iter().chain(quota));
    }
    Ok(best)
}

/// The cgroup's own cpu.max.
pub fn own_max(cpu_max: Option<&RawFile>) -> Result<Option<CpuMax>> {
    parse_optional(cpu_max, parse_cpu_max)
}

/// cpu.weight.
pub fn weight(cpu_weight: Option<&RawFile>) -> Result<Option<CpuWeight>> {
    Ok(parse_optional(cpu_weight, parse_u64)?.map(CpuWeight::Weight))
}

/// CPU time from cpu.stat (µs in the file, ns in the model).
pub fn usage(cpu_stat: &RawFile) -> Result<CpuUsage> {
    const KEYS: [&str; 3] = ["usage_usec", "user_usec", "system_usec"];
    let values = cpu_stat.parse(|text| flat_keyed_values(text, KEYS))?;
    let get = |at: usize| {
        values[at].map(|v| v.saturating_mul(1000)).ok_or_else(|| {
            let missing = format!("cpu.stat: no {}", KEYS[at]);
            Error::parse(&cpu_stat.path, ParseError::new(missing))
        })
    };
    Ok(CpuUsage {
        total_ns: get(0)?,
        user_ns: get(1)?,
        system_ns: get(2)?,
        per_cpu: None,
    })
}

/// Throttling counts from cpu.stat; `None` where the cpu controller is not enabled (the file
/// then has only the usage keys).
pub fn throttling(cpu_stat: &RawFile) -> Result<Option<CpuThrottling>> {
    let values = cpu_stat
        .parse(|text| flat_keyed_values(text, ["nr_periods", "nr_throttled", "throttled_usec"]))?;
    let [Some(periods), Some(throttled_periods), Some(throttled_us)] = values else {
        return Ok(None);
    };
    Ok(Some(CpuThrottling {
        periods,
        throttled_periods,
        throttled_ns: throttled_us.saturating_mul(1000),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    fn raw(name: &str) -> RawFile {
        RawFile::new(name, fixture(&format!("v2/6.1/{name}")))
    }

    #[test]
    fn usage_and_throttling_from_a_real_kernel() {
        let stat = raw("cpu.stat");
        let used = usage(&stat).unwrap();
        assert_eq!(used.total_ns, 5_544_470_000);
        assert_eq!(used.user_ns, 120_158_000);
        assert_eq!(used.system_ns, 5_424_311_000);
        assert_eq!(
            throttling(&stat).unwrap(),
            Some(CpuThrottling {
                periods: 113,
                throttled_periods: 110,
                throttled_ns: 5_398_757_000
            })
        );
        let without_cpu_controller =
            RawFile::new("cpu.stat", "usage_usec 3\nuser_usec 1\nsystem_usec 2\n");
        assert_eq!(throttling(&without_cpu_controller).unwrap(), None);
        let err = usage(&RawFile::new(
            "/cg/cpu.stat",
            "user_usec 1\nsystem_usec 2\n",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("no usage_usec"), "{err}");
    }

    #[test]
    fn the_tightest_quota_wins() {
        let chain = vec![
            Some(RawFile::new("a/cpu.max", "max 100000\n")),
            None,
            Some(RawFile::new("cpu.max", "150000 100000\n")),
            Some(RawFile::new("cpu.max", "20000 10000\n")),
        ];
        assert_eq!(
            effective_quota(&chain).unwrap(),
            Some(CpuQuota {
                quota_us: 150000,
                period_us: 100000
            })
        );
        assert_eq!(effective_quota(&chain[..2]).unwrap(), None);
        let own = own_max(Some(&raw("cpu.max"))).unwrap().unwrap();
        assert_eq!((own.quota_us, own.period_us), (Some(50000), 100000));
        assert_eq!(
            weight(Some(&raw("cpu.weight"))).unwrap(),
            Some(CpuWeight::Weight(100))
        );
        assert_eq!(CpuWeight::Weight(1).shares(), 2);
        assert_eq!(CpuWeight::Weight(10000).shares(), 262144);
        assert_eq!(CpuWeight::Shares(1024).shares(), 1024);
    }
}
