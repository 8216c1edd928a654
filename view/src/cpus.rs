//! Which host CPUs a container sees, in order; the container numbers them from 0.

use proclens_cgroup::CpuQuota;

/// How the visible CPU count is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuView {
    /// The effective cpuset only (lxcfs's default).
    #[default]
    Cpuset,
    /// The cpuset, further capped at ceil(quota / period) (lxcfs `--enable-cfs`).
    Quota,
}

/// The host CPUs a container sees: its cpuset intersected with the host's online CPUs (all online
/// CPUs without a cpuset), truncated to ceil(quota/period) in [`CpuView::Quota`]. Never empty while
/// the host has an online CPU.
pub fn visible_cpus(
    cpuset: Option<&[u32]>,
    quota: Option<CpuQuota>,
    host_online: &[u32],
    view: CpuView,
) -> Vec<u32> {
    let mut cpus: Vec<u32> = match cpuset {
        Some(set) => host_online
            .iter()
            .copied()
            .filter(|c| set.contains(c))
            .collect(),
        None => host_online.to_vec(),
    };
    if cpus.is_empty() {
        cpus = host_online.to_vec();
    }
    if let (CpuView::Quota, Some(quota)) = (view, quota) {
        let cap = usize::try_from(quota.cpus_ceil()).unwrap_or(usize::MAX);
        cpus.truncate(cap.max(1));
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF: CpuQuota = CpuQuota {
        quota_us: 50000,
        period_us: 100000,
    };

    #[test]
    fn cpuset_view_ignores_quota() {
        assert_eq!(
            visible_cpus(Some(&[0, 1]), Some(HALF), &[0, 1], CpuView::Cpuset),
            vec![0, 1]
        );
    }

    #[test]
    fn quota_view_caps_count() {
        assert_eq!(
            visible_cpus(Some(&[0, 1]), Some(HALF), &[0, 1], CpuView::Quota),
            vec![0]
        );
        let big = CpuQuota {
            quota_us: 150000,
            period_us: 100000,
        };
        assert_eq!(
            visible_cpus(None, Some(big), &[0, 1, 2, 3], CpuView::Quota),
            vec![0, 1]
        );
        assert_eq!(
            visible_cpus(None, None, &[0, 1], CpuView::Quota),
            vec![0, 1]
        );
    }

    #[test]
    fn offline_cpus_are_dropped() {
        assert_eq!(
            visible_cpus(Some(&[1, 2]), None, &[0, 2], CpuView::Cpuset),
            vec![2]
        );
        assert_eq!(
            visible_cpus(Some(&[5]), None, &[0, 1], CpuView::Cpuset),
            vec![0, 1]
        );
    }
}
