//! /proc/stat: `cpu`/`cpuN` rows for the visible CPUs from the container's CPU usage, host lines
//! otherwise (DESIGN §2).

use proclens_cgroup::model::host::{CpuTimes, HostStat};
use proclens_cgroup::{CpuUsage, TaskCounts};
use std::fmt::Write;

/// Nanoseconds per USER_HZ tick.
const NS_PER_TICK: u64 = 1_000_000_000 / proclens_cgroup::USER_HZ;

/// Computes one row per visible CPU (host CPU ids in `visible`), in ticks.
///
/// With a per-CPU split (v1 cpuacct.usage_all) and one row per host CPU of the set, each row gets
/// the container's own time on that CPU. Otherwise (v2, or a quota-capped view) the container's
/// total busy time is spread evenly over the rows, bounded by each row's elapsed time. In both
/// cases idle = the host CPU's elapsed time − the container's busy time on the row, so that every
/// row advances like a real CPU's and `top` computes the container's share.
pub fn container_cpu_rows(host: &HostStat<'_>, visible: &[u32], usage: &CpuUsage) -> Vec<CpuTimes> {
    let capacity = |cpu: u32| host.cpu(cpu).map_or(0, CpuTimes::total);
    if let Some(per_cpu) = &usage.per_cpu {
        let exact = visible.iter().all(|c| per_cpu.iter().any(|p| p.cpu == *c))
            && per_cpu
                .iter()
                .filter(|p| p.user_ns + p.system_ns > 0)
                .all(|p| visible.contains(&p.cpu));
        if exact {
            return visible
                .iter()
                .map(|&cpu| {
                    let p = per_cpu
                        .iter()
                        .find(|p| p.cpu == cpu)
                        .copied()
                        .unwrap_or_default();
                    row(
                        p.user_ns / NS_PER_TICK,
                        p.system_ns / NS_PER_TICK,
                        capacity(cpu),
                    )
                })
                .collect();
        }
    }
    let n = visible.len().max(1) as u64;
    let (user, system) = (usage.user_ns / NS_PER_TICK, usage.system_ns / NS_PER_TICK);
    visible
        .iter()
        .enumerate()
        .map(|(i, &cpu)| {
            // Even split, remainder to the first rows.
            let share = |total: u64| total / n + u64::from((i as u64) < total % n);
            row(share(user), share(system), capacity(cpu))
        })
        .collect()
}

fn row(user: u64, system: u64, capacity: u64) -> CpuTimes {
    let user = user.min(capacity);
    let system = system.min(capacity - user);
    CpuTimes {
        user,
        system,
        idle: capacity - user - system,
        ..Default::default()
    }
}

/// Returns `rows` with every field raised to at least its previous value, so no counter a reader
/// sees ever goes backwards (rows beyond `previous` are taken as they are).
pub fn monotonic(previous: &[CpuTimes], rows: Vec<CpuTimes>) -> Vec<CpuTimes> {
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| match previous.get(i) {
            None => r,
            Some(p) => CpuTimes {
                user: r.user.max(p.user),
                nice: r.nice.max(p.nice),
                system: r.system.max(p.system),
                idle: r.idle.max(p.idle),
                iowait: r.iowait.max(p.iowait),
                irq: r.irq.max(p.irq),
                softirq: r.softirq.max(p.softirq),
                steal: r.steal.max(p.steal),
                guest: r.guest.max(p.guest),
                guest_nice: r.guest_nice.max(p.guest_nice),
            },
        })
        .collect()
}

fn push_row(out: &mut String, label: &str, t: &CpuTimes) {
    let _ = writeln!(
        out,
        "{label} {} {} {} {} {} {} {} {} {} {}",
        t.user,
        t.nice,
        t.system,
        t.idle,
        t.iowait,
        t.irq,
        t.softirq,
        t.steal,
        t.guest,
        t.guest_nice
    );
}

/// Renders /proc/stat from computed rows: the aggregate `cpu` row (the sum), `cpu0..` rows, then
/// the host's other lines with procs_running/procs_blocked replaced by the container's counts.
pub fn render_stat(host: &HostStat<'_>, rows: &[CpuTimes], tasks: &TaskCounts) -> String {
    let mut out = String::with_capacity(256 + rows.len() * 64 + 1024);
    let sum = rows.iter().fold(CpuTimes::default(), |a, r| CpuTimes {
        user: a.user + r.user,
        nice: a.nice + r.nice,
        system: a.system + r.system,
        idle: a.idle + r.idle,
        iowait: a.iowait + r.iowait,
        irq: a.irq + r.irq,
        softirq: a.softirq + r.softirq,
        steal: a.steal + r.steal,
        guest: a.guest + r.guest,
        guest_nice: a.guest_nice + r.guest_nice,
    });
    push_row(&mut out, "cpu ", &sum);
    for (i, r) in rows.iter().enumerate() {
        push_row(&mut out, &format!("cpu{i}"), r);
    }
    for line in &host.other_lines {
        match line.split_whitespace().next() {
            Some("procs_running") => {
                let _ = writeln!(out, "procs_running {}", tasks.running.max(1));
            }
            Some("procs_blocked") => {
                let _ = writeln!(out, "procs_blocked {}", tasks.blocked);
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;
    use proclens_cgroup::model::PerCpuUsage;
    use proclens_cgroup::parse::host::parse_stat;

    fn host() -> HostStat<'static> {
        static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        parse_stat(TEXT.get_or_init(|| fixture("v1/6.18/proc-stat"))).unwrap()
    }

    #[test]
    fn exact_per_cpu_rows() {
        let host = host();
        let usage = CpuUsage {
            total_ns: 4_000_000_000,
            user_ns: 3_000_000_000,
            system_ns: 1_000_000_000,
            per_cpu: Some(vec![
                PerCpuUsage {
                    cpu: 0,
                    user_ns: 0,
                    system_ns: 0,
                },
                PerCpuUsage {
                    cpu: 1,
                    user_ns: 3_000_000_000,
                    system_ns: 1_000_000_000,
                },
            ]),
        };
        let rows = container_cpu_rows(&host, &[1], &usage);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].user, rows[0].system), (300, 100));
        assert_eq!(rows[0].total(), host.cpu(1).unwrap().total());
    }

    #[test]
    fn spread_when_no_split() {
        let host = host();
        let usage = CpuUsage {
            total_ns: 5_010_000_000,
            user_ns: 5_010_000_000,
            system_ns: 0,
            per_cpu: None,
        };
        let rows = container_cpu_rows(&host, &[0, 1], &usage);
        assert_eq!((rows[0].user, rows[1].user), (251, 250));
        for (row, cpu) in rows.iter().zip([0, 1]) {
            assert_eq!(row.total(), host.cpu(cpu).unwrap().total());
        }
    }

    #[test]
    fn busy_is_bounded_by_capacity() {
        let host = host();
        let usage = CpuUsage {
            total_ns: u64::MAX,
            user_ns: u64::MAX,
            system_ns: u64::MAX,
            per_cpu: None,
        };
        let rows = container_cpu_rows(&host, &[0], &usage);
        assert_eq!(rows[0].idle, 0);
        assert_eq!(rows[0].total(), host.cpu(0).unwrap().total());
    }

    #[test]
    fn monotonic_never_goes_back() {
        let a = CpuTimes {
            user: 10,
            idle: 100,
            ..Default::default()
        };
        let b = CpuTimes {
            user: 12,
            idle: 90,
            ..Default::default()
        };
        let out = monotonic(&[a], vec![b, b]);
        assert_eq!((out[0].user, out[0].idle), (12, 100));
        assert_eq!(out[1], b);
    }

    #[test]
    fn renders_rows_and_host_lines() {
        let host = host();
        let rows = vec![CpuTimes {
            user: 1,
            system: 2,
            idle: 3,
            ..Default::default()
        }];
        let tasks = TaskCounts {
            running: 2,
            blocked: 1,
            total: 5,
        };
        let text = render_stat(&host, &rows, &tasks);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "cpu  1 0 2 3 0 0 0 0 0 0");
        assert_eq!(lines[1], "cpu0 1 0 2 3 0 0 0 0 0 0");
        assert!(!lines[2].starts_with("cpu"));
        assert!(lines.contains(&"procs_running 2"));
        assert!(lines.contains(&"procs_blocked 1"));
        let btime = host
            .other_lines
            .iter()
            .find(|l| l.starts_with("btime"))
            .unwrap();
        assert!(lines.contains(btime));
        // The kernel's own stat parses back with one cpu row.
        let reparsed = parse_stat(&text).unwrap();
        assert_eq!(reparsed.cpus.len(), 1);
    }
}
