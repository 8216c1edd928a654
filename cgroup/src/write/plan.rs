//! The pure half of the write path: from the limits a cgroup has now and a [`LimitUpdate`], the
//! ordered writes that reach the new limits through states the kernel accepts. No I/O here.

use super::{CpuBandwidth, Limit, LimitUpdate, WriteError};
use crate::layout::Version;
use crate::parse::cpulist::format_cpulist;
use std::path::{Path, PathBuf};

/// Shortest CFS period and smallest quota the kernel accepts, in µs (1 ms).
pub const MIN_CFS_US: u64 = 1_000;
/// Longest CFS period the kernel accepts, in µs (1 s).
pub const MAX_CFS_PERIOD_US: u64 = 1_000_000;
/// Range of v1 cpu.shares the kernel keeps without clamping.
pub const SHARES_RANGE: std::ops::RangeInclusive<u64> = 2..=262_144;

/// One write of the plan, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The control file.
    pub file: PathBuf,
    /// The text written, with no trailing newline.
    pub value: String,
    /// When set, the executor reads this usage file just before the write and writes only if
    /// the usage is at most the new limit: a v2 memory.max below usage makes the kernel OOM-kill
    /// instead of failing.
    pub usage_guard: Option<UsageGuard>,
}

/// A usage check taken just before a write (see [`Write::usage_guard`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageGuard {
    /// The usage file (v2 memory.current).
    pub file: PathBuf,
    /// The highest usage, in bytes, at which the write may go ahead.
    pub max_bytes: u64,
}

/// A cgroup's memory limits as read before an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryNow {
    /// A v1 memory cgroup.
    V1 {
        /// Its directory.
        dir: PathBuf,
        /// memory.limit_in_bytes.
        limit: Limit,
        /// memory.memsw.limit_in_bytes (memory + swap); `None` when swap is not accounted.
        memsw: Option<Limit>,
    },
    /// A v2 cgroup with the memory controller.
    V2 {
        /// Its directory.
        dir: PathBuf,
        /// memory.max.
        max: Limit,
        /// memory.high.
        high: Limit,
        /// memory.swap.max; `None` when the kernel has no swap accounting.
        swap_max: Option<Limit>,
    },
}

/// A cgroup's CPU bandwidth and weight as read before an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuNow {
    /// Its directory in the hierarchy providing `cpu`.
    pub dir: PathBuf,
    /// Which file set: v1 cpu.cfs_quota_us, cpu.cfs_period_us and cpu.shares, or v2 cpu.max and
    /// cpu.weight.
    pub version: Version,
    /// The CFS bandwidth.
    pub bandwidth: CpuBandwidth,
    /// v1 cpu.shares, or v2 cpu.weight.
    pub weight: u64,
}

/// A cgroup's cpuset as read before an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpusetNow {
    /// Its directory in the hierarchy providing `cpuset`.
    pub dir: PathBuf,
    /// The hierarchy's version.
    pub version: Version,
    /// cpuset.cpus.
    pub cpus: Vec<u32>,
    /// cpuset.mems.
    pub mems: Vec<u32>,
    /// What the parent allows, or `None` for a root cgroup.
    pub parent: Option<CpusetParent>,
}

/// The CPUs and memory nodes a parent cpuset lets its children use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpusetParent {
    /// The file the CPUs were read from (v1 cpuset.cpus, v2 cpuset.cpus.effective).
    pub cpus_file: PathBuf,
    /// Its CPUs.
    pub cpus: Vec<u32>,
    /// The file the memory nodes were read from (v1 cpuset.mems, v2 cpuset.mems.effective).
    pub mems_file: PathBuf,
    /// Its memory nodes.
    pub mems: Vec<u32>,
}

/// Everything [`plan`] needs to know about the cgroup now; a controller the update does not
/// touch may be `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Current {
    /// Memory limits, when the update touches memory or swap.
    pub memory: Option<MemoryNow>,
    /// CPU bandwidth and weight, when the update touches them.
    pub cpu: Option<CpuNow>,
    /// The cpuset, when the update touches it.
    pub cpuset: Option<CpusetNow>,
}

/// The ordered writes that take the cgroup from `current` to `update`; a value already in place
/// is not written again. Memory goes first (the change most likely to fail, so it fails before
/// anything else was written), then CPU, then the cpuset.
///
/// Fails with [`WriteError::Unsupported`] for a setting the cgroup has no file for (or when
/// `current` lacks the controller), [`WriteError::Invalid`] for a value the kernel would never
/// accept, and [`WriteError::Rejected`] for a cpuset outside what the parent allows.
pub fn plan(current: &Current, update: &LimitUpdate) -> Result<Vec<Write>, WriteError> {
    let mut writes = Vec::new();
    if update.memory_max.is_some() || update.memory_high.is_some() || update.swap_max.is_some() {
        let memory = current
            .memory
            .as_ref()
            .ok_or_else(|| unsupported(first_memory_setting(update), "no memory controller"))?;
        match memory {
            MemoryNow::V1 { dir, limit, memsw } => {
                plan_v1_memory(dir, *limit, *memsw, update, &mut writes)?
            }
            MemoryNow::V2 {
                dir,
                max,
                high,
                swap_max,
            } => plan_v2_memory(dir, *max, *high, *swap_max, update, &mut writes)?,
        }
    }
    if update.cpu_max.is_some() || update.cpu_shares.is_some() {
        let setting = if update.cpu_max.is_some() {
            "cpu_max"
        } else {
            "cpu_shares"
        };
        let cpu = current
            .cpu
            .as_ref()
            .ok_or_else(|| unsupported(setting, "no cpu controller"))?;
        plan_cpu(cpu, update, &mut writes)?;
    }
    if update.cpuset_cpus.is_some() || update.cpuset_mems.is_some() {
        let setting = if update.cpuset_cpus.is_some() {
            "cpuset_cpus"
        } else {
            "cpuset_mems"
        };
        let cpuset = current
            .cpuset
            .as_ref()
            .ok_or_else(|| unsupported(setting, "no cpuset controller"))?;
        plan_cpuset(cpuset, update, &mut writes)?;
    }
    Ok(writes)
}

fn first_memory_setting(update: &LimitUpdate) -> &'static str {
    if update.memory_max.is_some() {
        "memory_max"
    } else if update.memory_high.is_some() {
        "memory_high"
    } else {
        "swap_max"
    }
}

fn unsupported(setting: &'static str, reason: &str) -> WriteError {
    WriteError::Unsupported {
        setting,
        reason: reason.to_string(),
    }
}

fn invalid(setting: &'static str, value: impl std::fmt::Display, reason: &str) -> WriteError {
    WriteError::Invalid {
        setting,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn write(dir: &Path, file: &str, value: String) -> Write {
    Write {
        file: dir.join(file),
        value,
        usage_guard: None,
    }
}

/// v1 text of a memory limit: "-1" is unlimited.
fn v1_limit_text(limit: Limit) -> String {
    match limit {
        Limit::Max => "-1".to_string(),
        Limit::Bytes(b) => b.to_string(),
    }
}

/// v2 text of a limit: "max" is unlimited.
fn v2_limit_text(limit: Limit) -> String {
    match limit {
        Limit::Max => "max".to_string(),
        Limit::Bytes(b) => b.to_string(),
    }
}

/// v1: memory.memsw.limit_in_bytes (memory + swap) must stay ≥ memory.limit_in_bytes in every
/// state. Writing memsw first passes through (old limit, new memsw), valid when memsw grows;
/// writing the limit first passes through (new limit, old memsw), valid when memsw shrinks.
fn plan_v1_memory(
    dir: &Path,
    limit_now: Limit,
    memsw_now: Option<Limit>,
    update: &LimitUpdate,
    writes: &mut Vec<Write>,
) -> Result<(), WriteError> {
    if update.memory_high.is_some() {
        return Err(unsupported(
            "memory_high",
            "cgroup v1 has no memory.high (soft_limit_in_bytes acts only under global pressure)",
        ));
    }
    let limit = update.memory_max.unwrap_or(limit_now);
    let memsw =
        match (memsw_now, update.swap_max) {
            (None, Some(_)) => return Err(unsupported(
                "swap_max",
                "no memory.memsw.limit_in_bytes: the kernel does not account swap (swapaccount=0)",
            )),
            (None, None) => None,
            (Some(_), Some(Limit::Max)) => Some(Limit::Max),
            (Some(_), Some(Limit::Bytes(swap))) => match limit {
                Limit::Max => {
                    return Err(invalid(
                        "swap_max",
                        swap,
                        "v1 cannot limit swap while memory is unlimited (memsw ≥ limit)",
                    ))
                }
                Limit::Bytes(l) => Some(Limit::Bytes(l.checked_add(swap).ok_or_else(|| {
                    invalid("swap_max", swap, "memory limit + swap overflows 64 bits")
                })?)),
            },
            // Keep the swap allowance (memsw − limit) the container had.
            (Some(memsw_now), None) => Some(match (limit_now, memsw_now, limit) {
                (_, Limit::Max, _) | (_, _, Limit::Max) => Limit::Max,
                (Limit::Bytes(l0), Limit::Bytes(m0), Limit::Bytes(l)) => {
                    Limit::Bytes(l.checked_add(m0.saturating_sub(l0)).ok_or_else(|| {
                        invalid("memory_max", l, "memory limit + swap overflows 64 bits")
                    })?)
                }
                (Limit::Max, Limit::Bytes(m0), Limit::Bytes(l)) => Limit::Bytes(l.max(m0)),
            }),
        };
    let limit_write =
        (limit != limit_now).then(|| write(dir, "memory.limit_in_bytes", v1_limit_text(limit)));
    let memsw_write = match (memsw_now, memsw) {
        (Some(now), Some(new)) if new != now => Some(write(
            dir,
            "memory.memsw.limit_in_bytes",
            v1_limit_text(new),
        )),
        _ => None,
    };
    let memsw_grows = matches!((memsw_now, memsw), (Some(now), Some(new)) if new > now);
    if memsw_grows {
        writes.extend(memsw_write);
        writes.extend(limit_write);
    } else {
        writes.extend(limit_write);
        writes.extend(memsw_write);
    }
    Ok(())
}

/// v2: raising memory.max goes before memory.high; lowering memory.high goes before
/// memory.max, and a lower memory.max is guarded by memory.current. More swap is allowed before
/// the memory writes, less after them, so reclaim can use the larger of the two allowances.
fn plan_v2_memory(
    dir: &Path,
    max_now: Limit,
    high_now: Limit,
    swap_now: Option<Limit>,
    update: &LimitUpdate,
    writes: &mut Vec<Write>,
) -> Result<(), WriteError> {
    let swap = match (swap_now, update.swap_max) {
        (None, Some(_)) => {
            return Err(unsupported(
                "swap_max",
                "no memory.swap.max: the kernel does not account swap",
            ))
        }
        (Some(now), Some(new)) if new != now => Some((now, new)),
        _ => None,
    };
    let swap_write = |new| write(dir, "memory.swap.max", v2_limit_text(new));
    if let Some((now, new)) = swap {
        if new > now {
            writes.push(swap_write(new));
        }
    }
    let max = update.memory_max.filter(|&m| m != max_now);
    let high = update.memory_high.filter(|&h| h != high_now);
    let max_write = max.map(|m| Write {
        usage_guard: match m {
            Limit::Bytes(bytes) if m < max_now => Some(UsageGuard {
                file: dir.join("memory.current"),
                max_bytes: bytes,
            }),
            _ => None,
        },
        ..write(dir, "memory.max", v2_limit_text(m))
    });
    let high_write = high.map(|h| write(dir, "memory.high", v2_limit_text(h)));
    if max.is_some_and(|m| m > max_now) {
        writes.extend(max_write);
        writes.extend(high_write);
    } else {
        writes.extend(high_write);
        writes.extend(max_write);
    }
    if let Some((now, new)) = swap {
        if new < now {
            writes.push(swap_write(new));
        }
    }
    Ok(())
}

/// Whether quota `q` per period `p` is within the closed range of the two ratios `a` and `b`
/// (each a quota and a period), compared exactly by cross-multiplication.
fn ratio_between(q: u64, p: u64, a: (u64, u64), b: (u64, u64)) -> bool {
    let le = |x: (u64, u64), y: (u64, u64)| {
        u128::from(x.0) * u128::from(y.1) <= u128::from(y.0) * u128::from(x.1)
    };
    let (lo, hi) = if le(a, b) { (a, b) } else { (b, a) };
    le(lo, (q, p)) && le((q, p), hi)
}

fn quota_text(quota_us: Option<u64>, version: Version) -> String {
    match (quota_us, version) {
        (Some(q), _) => q.to_string(),
        (None, Version::V1) => "-1".to_string(),
        (None, Version::V2) => "max".to_string(),
    }
}

/// The v2 cpu.weight for v1 cpu.shares, as runc and crun convert it: 2..=262144 onto 1..=10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.clamp(2, 262_144) - 2) * 9_999 / 262_142
}

/// CPU: v2 cpu.max is one write of "quota period"; v1 writes cpu.cfs_quota_us and
/// cpu.cfs_period_us apart, and the kernel checks every state: a child's quota/period may not
/// exceed its parent's, nor drop below its own children's. An intermediate state whose ratio
/// lies between the old and the new one is therefore always accepted: the order is the one whose
/// intermediate ratio does, else the quota goes to unlimited (-1, bounded by the ancestors'
/// quota, always accepted) for the period write.
fn plan_cpu(cpu: &CpuNow, update: &LimitUpdate, writes: &mut Vec<Write>) -> Result<(), WriteError> {
    let dir = &cpu.dir;
    if let Some(new) = update.cpu_max {
        if !(MIN_CFS_US..=MAX_CFS_PERIOD_US).contains(&new.period_us) {
            return Err(invalid(
                "cpu_max",
                new.period_us,
                "the period must be 1000..=1000000 µs",
            ));
        }
        if new.quota_us.is_some_and(|q| q < MIN_CFS_US) {
            return Err(invalid(
                "cpu_max",
                new.quota_us.unwrap_or_default(),
                "the quota must be at least 1000 µs",
            ));
        }
        let now = cpu.bandwidth;
        match cpu.version {
            Version::V2 if new != now => writes.push(write(
                dir,
                "cpu.max",
                format!(
                    "{} {}",
                    quota_text(new.quota_us, Version::V2),
                    new.period_us
                ),
            )),
            Version::V2 => {}
            Version::V1 => {
                let quota = |q| write(dir, "cpu.cfs_quota_us", quota_text(q, Version::V1));
                let period = write(dir, "cpu.cfs_period_us", new.period_us.to_string());
                let quota_changes = new.quota_us != now.quota_us;
                let period_changes = new.period_us != now.period_us;
                match (now.quota_us, new.quota_us) {
                    _ if !period_changes => {
                        writes.extend(quota_changes.then(|| quota(new.quota_us)))
                    }
                    _ if !quota_changes => writes.push(period),
                    (_, None) => writes.extend([quota(None), period]),
                    (None, Some(_)) => writes.extend([period, quota(new.quota_us)]),
                    (Some(q0), Some(q1)) => {
                        let old = (q0, now.period_us);
                        let target = (q1, new.period_us);
                        if ratio_between(q1, now.period_us, old, target) {
                            writes.extend([quota(Some(q1)), period]);
                        } else if ratio_between(q0, new.period_us, old, target) {
                            writes.extend([period, quota(Some(q1))]);
                        } else {
                            writes.extend([quota(None), period, quota(Some(q1))]);
                        }
                    }
                }
            }
        }
    }
    if let Some(shares) = update.cpu_shares {
        if !SHARES_RANGE.contains(&shares) {
            return Err(invalid(
                "cpu_shares",
                shares,
                "cpu shares must be 2..=262144",
            ));
        }
        let (file, weight) = match cpu.version {
            Version::V1 => ("cpu.shares", shares),
            Version::V2 => ("cpu.weight", shares_to_weight(shares)),
        };
        if weight != cpu.weight {
            writes.push(write(dir, file, weight.to_string()));
        }
    }
    Ok(())
}

/// cpuset.cpus and cpuset.mems: each must be non-empty and within what the parent allows (v1
/// rejects anything else with EACCES; v2 would accept it and silently use less).
fn plan_cpuset(
    cpuset: &CpusetNow,
    update: &LimitUpdate,
    writes: &mut Vec<Write>,
) -> Result<(), WriteError> {
    let sets = [
        (
            "cpuset_cpus",
            "cpuset.cpus",
            &update.cpuset_cpus,
            &cpuset.cpus,
            cpuset.parent.as_ref().map(|p| (&p.cpus_file, &p.cpus)),
        ),
        (
            "cpuset_mems",
            "cpuset.mems",
            &update.cpuset_mems,
            &cpuset.mems,
            cpuset.parent.as_ref().map(|p| (&p.mems_file, &p.mems)),
        ),
    ];
    for (setting, file, new, now, parent) in sets {
        let Some(new) = new else { continue };
        let mut new = new.clone();
        new.sort_unstable();
        new.dedup();
        if new.is_empty() {
            return Err(invalid(
                setting,
                "",
                "an empty cpuset leaves its tasks nowhere to run",
            ));
        }
        let value = format_cpulist(&new);
        if let Some((parent_file, allowed)) = parent {
            if !new.iter().all(|c| allowed.contains(c)) {
                return Err(WriteError::Rejected {
                    file: cpuset.dir.join(file),
                    value,
                    by: super::RejectedBy::Parent {
                        parent_file: parent_file.clone(),
                        parent_value: format_cpulist(allowed),
                    },
                    restored: super::Rollback::NothingWritten,
                });
            }
        }
        if &new != now {
            writes.push(write(&cpuset.dir, file, value));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::RejectedBy;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    fn dir() -> PathBuf {
        PathBuf::from("/cg/c")
    }

    /// The plan as (file name, value) pairs, guards as ("guard <file>", max bytes).
    fn steps(writes: &[Write]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for w in writes {
            if let Some(g) = &w.usage_guard {
                out.push((
                    format!("guard {}", g.file.file_name().unwrap().to_string_lossy()),
                    g.max_bytes.to_string(),
                ));
            }
            out.push((
                w.file.file_name().unwrap().to_string_lossy().into_owned(),
                w.value.clone(),
            ));
        }
        out
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect()
    }

    fn v1_memory(limit: Limit, memsw: Option<Limit>) -> Current {
        Current {
            memory: Some(MemoryNow::V1 {
                dir: dir(),
                limit,
                memsw,
            }),
            ..Current::default()
        }
    }

    fn v2_memory(max: Limit, high: Limit, swap_max: Option<Limit>) -> Current {
        Current {
            memory: Some(MemoryNow::V2 {
                dir: dir(),
                max,
                high,
                swap_max,
            }),
            ..Current::default()
        }
    }

    fn cpu(version: Version, quota_us: Option<u64>, period_us: u64, weight: u64) -> Current {
        Current {
            cpu: Some(CpuNow {
                dir: dir(),
                version,
                bandwidth: CpuBandwidth {
                    quota_us,
                    period_us,
                },
                weight,
            }),
            ..Current::default()
        }
    }

    fn bandwidth(quota_us: Option<u64>, period_us: u64) -> LimitUpdate {
        LimitUpdate {
            cpu_max: Some(CpuBandwidth {
                quota_us,
                period_us,
            }),
            ..LimitUpdate::default()
        }
    }

    fn memory(max: Option<Limit>, high: Option<Limit>, swap: Option<Limit>) -> LimitUpdate {
        LimitUpdate {
            memory_max: max,
            memory_high: high,
            swap_max: swap,
            ..LimitUpdate::default()
        }
    }

    fn b(mib: u64) -> Limit {
        Limit::Bytes(mib * MIB)
    }

    fn s(mib: u64) -> String {
        (mib * MIB).to_string()
    }

    #[test]
    fn v1_raise_writes_memsw_first_and_keeps_the_swap_allowance() {
        let planned = plan(
            &v1_memory(b(100), Some(b(150))),
            &memory(Some(b(200)), None, None),
        );
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[
                ("memory.memsw.limit_in_bytes", &s(250)),
                ("memory.limit_in_bytes", &s(200)),
            ])
        );
    }

    #[test]
    fn v1_lower_writes_the_limit_first() {
        let planned = plan(
            &v1_memory(b(200), Some(b(250))),
            &memory(Some(b(100)), None, None),
        );
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[
                ("memory.limit_in_bytes", &s(100)),
                ("memory.memsw.limit_in_bytes", &s(150)),
            ])
        );
    }

    #[test]
    fn v1_unlimited_swap_stays_unlimited() {
        let planned = plan(
            &v1_memory(b(100), Some(Limit::Max)),
            &memory(Some(b(50)), None, None),
        );
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[("memory.limit_in_bytes", &s(50))])
        );
    }

    #[test]
    fn v1_to_unlimited_memory_raises_memsw_to_unlimited_first() {
        let planned = plan(
            &v1_memory(b(100), Some(b(100))),
            &memory(Some(Limit::Max), None, None),
        );
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[
                ("memory.memsw.limit_in_bytes", "-1"),
                ("memory.limit_in_bytes", "-1"),
            ])
        );
    }

    #[test]
    fn v1_explicit_swap_orders_by_the_memsw_direction() {
        // Limit up, memsw down (swap 200 → 0): the limit first, memsw last.
        let planned = plan(
            &v1_memory(b(100), Some(b(300))),
            &memory(Some(b(200)), None, Some(b(0))),
        );
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[
                ("memory.limit_in_bytes", &s(200)),
                ("memory.memsw.limit_in_bytes", &s(200)),
            ])
        );
        // Limit down, memsw up (swap 0 → 200): memsw first.
        let planned = plan(
            &v1_memory(b(200), Some(b(200))),
            &memory(Some(b(100)), None, Some(b(200))),
        );
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[
                ("memory.memsw.limit_in_bytes", &s(300)),
                ("memory.limit_in_bytes", &s(100)),
            ])
        );
        // Swap alone.
        let planned = plan(
            &v1_memory(b(100), Some(b(100))),
            &memory(None, None, Some(Limit::Max)),
        );
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[("memory.memsw.limit_in_bytes", "-1")])
        );
    }

    #[test]
    fn v1_without_swap_accounting_writes_the_limit_alone() {
        let planned = plan(&v1_memory(b(100), None), &memory(Some(b(300)), None, None));
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[("memory.limit_in_bytes", &s(300))])
        );
        let err = plan_err(&v1_memory(b(100), None), &memory(None, None, Some(b(1))));
        assert!(
            matches!(
                err,
                WriteError::Unsupported {
                    setting: "swap_max",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    fn plan_err(current: &Current, update: &LimitUpdate) -> WriteError {
        plan(current, update).expect_err("the plan must fail")
    }

    #[test]
    fn v1_refusals() {
        let err = plan_err(
            &v1_memory(b(100), Some(b(100))),
            &memory(None, Some(b(50)), None),
        );
        assert!(
            matches!(
                err,
                WriteError::Unsupported {
                    setting: "memory_high",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = plan_err(
            &v1_memory(b(100), Some(b(100))),
            &memory(Some(Limit::Max), None, Some(b(1))),
        );
        assert!(
            matches!(&err, WriteError::Invalid { setting: "swap_max", value, .. } if *value == s(1)),
            "{err:?}"
        );
        let err = plan_err(
            &v1_memory(b(100), Some(b(100))),
            &memory(Some(Limit::Bytes(u64::MAX)), None, Some(b(1))),
        );
        assert!(matches!(err, WriteError::Invalid { .. }), "{err:?}");
        let err = plan_err(&Current::default(), &memory(Some(b(1)), None, None));
        assert!(
            matches!(
                err,
                WriteError::Unsupported {
                    setting: "memory_max",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn values_in_place_are_not_written() {
        let current = v1_memory(b(100), Some(b(150)));
        assert_eq!(
            plan(&current, &memory(Some(b(100)), None, None)).unwrap(),
            []
        );
        assert_eq!(plan(&current, &LimitUpdate::default()).unwrap(), []);
        let current = v2_memory(b(100), b(90), Some(Limit::Max));
        let same = memory(Some(b(100)), Some(b(90)), Some(Limit::Max));
        assert_eq!(plan(&current, &same).unwrap(), []);
        assert_eq!(
            plan(
                &cpu(Version::V2, Some(50_000), 100_000, 100),
                &bandwidth(Some(50_000), 100_000)
            )
            .unwrap(),
            []
        );
        assert_eq!(
            plan(
                &cpu(Version::V1, None, 100_000, 1024),
                &bandwidth(None, 100_000)
            )
            .unwrap(),
            []
        );
    }

    #[test]
    fn v2_raise_writes_max_then_high() {
        let planned = plan(
            &v2_memory(b(100), b(90), None),
            &memory(Some(b(200)), Some(b(180)), None),
        );
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[("memory.max", &s(200)), ("memory.high", &s(180))])
        );
    }

    #[test]
    fn v2_lower_writes_high_then_guarded_max() {
        let planned = plan(
            &v2_memory(Limit::Max, Limit::Max, None),
            &memory(Some(b(100)), Some(b(90)), None),
        );
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[
                ("memory.high", &s(90)),
                ("guard memory.current", &s(100)),
                ("memory.max", &s(100)),
            ])
        );
        // memory.max alone, lowered: still guarded; raised: not.
        let planned = plan(
            &v2_memory(b(200), Limit::Max, None),
            &memory(Some(b(100)), None, None),
        );
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[("guard memory.current", &s(100)), ("memory.max", &s(100))])
        );
        let planned = plan(
            &v2_memory(b(200), Limit::Max, None),
            &memory(Some(Limit::Max), None, None),
        );
        assert_eq!(steps(&planned.unwrap()), pairs(&[("memory.max", "max")]));
    }

    #[test]
    fn v2_raise_max_and_lower_high() {
        let planned = plan(
            &v2_memory(b(100), b(100), None),
            &memory(Some(b(200)), Some(b(50)), None),
        );
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[("memory.max", &s(200)), ("memory.high", &s(50))])
        );
    }

    #[test]
    fn v2_swap_grows_before_memory_and_shrinks_after() {
        let planned = plan(
            &v2_memory(b(200), Limit::Max, Some(b(0))),
            &memory(Some(b(100)), None, Some(Limit::Max)),
        );
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[
                ("memory.swap.max", "max"),
                ("guard memory.current", &s(100)),
                ("memory.max", &s(100)),
            ])
        );
        let planned = plan(
            &v2_memory(b(100), Limit::Max, Some(Limit::Max)),
            &memory(Some(b(200)), None, Some(b(0))),
        );
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[("memory.max", &s(200)), ("memory.swap.max", "0")])
        );
        let err = plan_err(
            &v2_memory(b(100), Limit::Max, None),
            &memory(None, None, Some(b(0))),
        );
        assert!(
            matches!(
                err,
                WriteError::Unsupported {
                    setting: "swap_max",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn v2_cpu_max_is_one_write() {
        let current = cpu(Version::V2, None, 100_000, 100);
        let planned = plan(&current, &bandwidth(Some(250_000), 50_000));
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[("cpu.max", "250000 50000")])
        );
        let current = cpu(Version::V2, Some(250_000), 50_000, 100);
        let planned = plan(&current, &bandwidth(None, 100_000));
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[("cpu.max", "max 100000")])
        );
    }

    #[test]
    fn v1_cfs_single_changes() {
        let current = cpu(Version::V1, Some(50_000), 100_000, 1024);
        let planned = plan(&current, &bandwidth(Some(80_000), 100_000));
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[("cpu.cfs_quota_us", "80000")])
        );
        let planned = plan(&current, &bandwidth(Some(50_000), 200_000));
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[("cpu.cfs_period_us", "200000")])
        );
        let planned = plan(&current, &bandwidth(None, 100_000));
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[("cpu.cfs_quota_us", "-1")])
        );
    }

    #[test]
    fn v1_cfs_to_and_from_unlimited() {
        let limited = cpu(Version::V1, Some(50_000), 100_000, 1024);
        let planned = plan(&limited, &bandwidth(None, 200_000));
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[("cpu.cfs_quota_us", "-1"), ("cpu.cfs_period_us", "200000")])
        );
        let unlimited = cpu(Version::V1, None, 100_000, 1024);
        let planned = plan(&unlimited, &bandwidth(Some(20_000), 50_000));
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[
                ("cpu.cfs_period_us", "50000"),
                ("cpu.cfs_quota_us", "20000")
            ])
        );
    }

    #[test]
    fn v1_cfs_opposite_moves_write_in_the_order_staying_between() {
        // 0.5 → 0.75 with quota up, period down: both intermediates lie between; quota first
        // (60000/100000 = 0.6).
        let current = cpu(Version::V1, Some(50_000), 100_000, 1024);
        let planned = plan(&current, &bandwidth(Some(60_000), 80_000));
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[
                ("cpu.cfs_quota_us", "60000"),
                ("cpu.cfs_period_us", "80000")
            ])
        );
        // 0.5 → 0.2 with quota down, period up: 20000/100000 = 0.2 is between.
        let planned = plan(&current, &bandwidth(Some(20_000), 100_001));
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[
                ("cpu.cfs_quota_us", "20000"),
                ("cpu.cfs_period_us", "100001")
            ])
        );
    }

    #[test]
    fn v1_cfs_same_direction_moves_pass_through_unlimited() {
        // Same ratio, doubled period: 100000/100000 = 1.0 and 50000/200000 = 0.25 both leave 0.5.
        let current = cpu(Version::V1, Some(50_000), 100_000, 1024);
        let planned = plan(&current, &bandwidth(Some(100_000), 200_000));
        assert_eq!(
            steps(&planned.unwrap()),
            pairs(&[
                ("cpu.cfs_quota_us", "-1"),
                ("cpu.cfs_period_us", "200000"),
                ("cpu.cfs_quota_us", "100000"),
            ])
        );
    }

    #[test]
    fn cpu_values_the_kernel_never_takes_are_invalid() {
        let current = cpu(Version::V1, Some(50_000), 100_000, 1024);
        for update in [
            bandwidth(Some(50_000), 999),
            bandwidth(Some(50_000), 1_000_001),
            bandwidth(Some(999), 100_000),
            LimitUpdate {
                cpu_shares: Some(1),
                ..LimitUpdate::default()
            },
        ] {
            let err = plan_err(&current, &update);
            assert!(
                matches!(err, WriteError::Invalid { .. }),
                "{update:?}: {err:?}"
            );
        }
    }

    #[test]
    fn shares_are_cpu_shares_on_v1_and_converted_weight_on_v2() {
        let update = LimitUpdate {
            cpu_shares: Some(512),
            ..LimitUpdate::default()
        };
        let v1 = plan(&cpu(Version::V1, None, 100_000, 1024), &update).unwrap();
        assert_eq!(steps(&v1), pairs(&[("cpu.shares", "512")]));
        let v2 = plan(&cpu(Version::V2, None, 100_000, 100), &update).unwrap();
        assert_eq!(steps(&v2), pairs(&[("cpu.weight", "20")]));
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    fn cpuset(parent: Option<(Vec<u32>, Vec<u32>)>) -> Current {
        Current {
            cpuset: Some(CpusetNow {
                dir: dir(),
                version: Version::V1,
                cpus: vec![0],
                mems: vec![0],
                parent: parent.map(|(cpus, mems)| CpusetParent {
                    cpus_file: PathBuf::from("/cg/cpuset.cpus"),
                    cpus,
                    mems_file: PathBuf::from("/cg/cpuset.mems"),
                    mems,
                }),
            }),
            ..Current::default()
        }
    }

    fn cpus(cpus: &[u32]) -> LimitUpdate {
        LimitUpdate {
            cpuset_cpus: Some(cpus.to_vec()),
            ..LimitUpdate::default()
        }
    }

    #[test]
    fn cpuset_within_the_parent_is_written_as_a_cpulist() {
        let current = cpuset(Some((vec![0, 1, 2, 3], vec![0])));
        let planned = plan(&current, &cpus(&[3, 1, 2, 1])).unwrap();
        assert_eq!(steps(&planned), pairs(&[("cpuset.cpus", "1-3")]));
        assert_eq!(plan(&current, &cpus(&[0])).unwrap(), []);
        let root = cpuset(None);
        assert_eq!(
            steps(&plan(&root, &cpus(&[7])).unwrap()),
            pairs(&[("cpuset.cpus", "7")])
        );
    }

    #[test]
    fn cpuset_outside_the_parent_is_rejected_before_any_write() {
        let current = cpuset(Some((vec![0, 1], vec![0])));
        let update = LimitUpdate {
            memory_max: None,
            cpuset_cpus: Some(vec![0]),
            cpuset_mems: Some(vec![0, 1]),
            ..LimitUpdate::default()
        };
        let err = plan_err(&current, &update);
        let WriteError::Rejected {
            file,
            value,
            by,
            restored,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(file, Path::new("/cg/c/cpuset.mems"));
        assert_eq!(value, "0-1");
        assert_eq!(
            by,
            &RejectedBy::Parent {
                parent_file: PathBuf::from("/cg/cpuset.mems"),
                parent_value: "0".into()
            }
        );
        assert!(matches!(restored, crate::write::Rollback::NothingWritten));
        let err = plan_err(&current, &cpus(&[]));
        assert!(
            matches!(
                err,
                WriteError::Invalid {
                    setting: "cpuset_cpus",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn memory_goes_before_cpu_and_cpuset() {
        let mut current = v1_memory(b(100), None);
        current.cpu = cpu(Version::V1, Some(50_000), 100_000, 1024).cpu;
        current.cpuset = cpuset(Some((vec![0, 1], vec![0]))).cpuset;
        let update = LimitUpdate {
            memory_max: Some(b(200)),
            cpu_max: Some(CpuBandwidth {
                quota_us: Some(100_000),
                period_us: 100_000,
            }),
            cpuset_cpus: Some(vec![0, 1]),
            ..LimitUpdate::default()
        };
        assert_eq!(
            steps(&plan(&current, &update).unwrap()),
            pairs(&[
                ("memory.limit_in_bytes", &s(200)),
                ("cpu.cfs_quota_us", "100000"),
                ("cpuset.cpus", "0-1"),
            ])
        );
    }

    fn limit_strategy() -> impl Strategy<Value = Limit> {
        prop_oneof![1 => Just(Limit::Max), 4 => (0u64..1 << 40).prop_map(Limit::Bytes)]
    }

    /// Replays v1 memory writes from (limit, memsw) and checks memsw ≥ limit in every state.
    fn replay_v1_memory(mut limit: Limit, mut memsw: Limit, writes: &[Write]) -> (Limit, Limit) {
        let parse = |v: &str| {
            if v == "-1" {
                Limit::Max
            } else {
                Limit::Bytes(v.parse().unwrap())
            }
        };
        for w in writes {
            match w.file.file_name().unwrap().to_str().unwrap() {
                "memory.limit_in_bytes" => limit = parse(&w.value),
                "memory.memsw.limit_in_bytes" => memsw = parse(&w.value),
                other => panic!("unexpected {other}"),
            }
            assert!(
                memsw >= limit,
                "after {w:?}: memsw {memsw:?} < limit {limit:?}"
            );
        }
        (limit, memsw)
    }

    proptest! {
        #[test]
        fn v1_memory_states_keep_memsw_at_least_the_limit(
            l0 in limit_strategy(),
            extra in limit_strategy(),
            target in proptest::option::of(limit_strategy()),
            swap in proptest::option::of(limit_strategy()),
        ) {
            let m0 = match (l0, extra) {
                (Limit::Bytes(l), Limit::Bytes(e)) => Limit::Bytes(l + e),
                _ => Limit::Max,
            };
            let update = memory(target, None, swap);
            if let Ok(writes) = plan(&v1_memory(l0, Some(m0)), &update) {
                let (limit, memsw) = replay_v1_memory(l0, m0, &writes);
                prop_assert_eq!(limit, target.unwrap_or(l0));
                if let (Some(Limit::Bytes(s)), Limit::Bytes(l)) = (swap, limit) {
                    prop_assert_eq!(memsw, Limit::Bytes(l + s));
                }
                if swap.is_none() && target.is_some() {
                    if let (Limit::Bytes(l0), Limit::Bytes(m0), Limit::Bytes(l), Limit::Bytes(m)) =
                        (l0, m0, limit, memsw)
                    {
                        prop_assert_eq!(m - l, m0 - l0, "swap allowance kept");
                    }
                }
            }
        }

        /// Every v1 CFS intermediate state is accepted by a kernel whose parent allows at most
        /// the larger ratio and whose children need at least the smaller one.
        #[test]
        fn v1_cfs_states_stay_between_old_and_new(
            q0 in proptest::option::of(1_000u64..4_000_000),
            p0 in 1_000u64..=1_000_000,
            q1 in proptest::option::of(1_000u64..4_000_000),
            p1 in 1_000u64..=1_000_000,
        ) {
            let writes = plan(&cpu(Version::V1, q0, p0, 1024), &bandwidth(q1, p1)).unwrap();
            prop_assert!(writes.len() <= 3);
            let (mut q, mut p) = (q0, p0);
            for w in &writes {
                match w.file.file_name().unwrap().to_str().unwrap() {
                    "cpu.cfs_quota_us" => q = if w.value == "-1" { None } else { Some(w.value.parse().unwrap()) },
                    "cpu.cfs_period_us" => p = w.value.parse().unwrap(),
                    other => panic!("unexpected {other}"),
                }
                if let (Some(q), Some(q0), Some(q1)) = (q, q0, q1) {
                    prop_assert!(ratio_between(q, p, (q0, p0), (q1, p1)), "{q}/{p} after {w:?}");
                }
            }
            prop_assert_eq!((q, p), (q1, p1));
        }
    }
}
