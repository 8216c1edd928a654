//! The host's own /proc files that containers' views are derived from: meminfo, stat, cpuinfo,
//! uptime, diskstats; and a network namespace's net/dev.

use super::{number, ParseResult};
use crate::error::ParseError;
use crate::model::host::{
    CpuTimes, Cpuinfo, CpuinfoBlock, DiskName, HostStat, Meminfo, MeminfoLine, Uptime,
};
use crate::model::net::NetDevStat;

/// Parses /proc/meminfo ("MemTotal:       24542432 kB").
pub fn parse_meminfo(text: &str) -> ParseResult<Meminfo<'_>> {
    let lines = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (key, rest) = line
                .split_once(':')
                .ok_or_else(|| ParseError::new(format!("meminfo: malformed line {line:?}")))?;
            let mut parts = rest.split_whitespace();
            let value = number(parts.next().unwrap_or(""), key)?;
            let in_kb = match (parts.next(), parts.next()) {
                (None, None) => false,
                (Some("kB"), None) => true,
                _ => return Err(ParseError::new(format!("meminfo: malformed line {line:?}"))),
            };
            Ok(MeminfoLine { key, value, in_kb })
        })
        .collect::<ParseResult<Vec<_>>>()?;
    if lines.is_empty() {
        return Err(ParseError::new("meminfo: empty"));
    }
    Ok(Meminfo { lines })
}

fn parse_cpu_times(fields: &[&str], line: &str) -> ParseResult<CpuTimes> {
    if fields.len() < 4 {
        return Err(ParseError::new(format!("stat: short cpu row {line:?}")));
    }
    let mut values = [0u64; 10];
    for (slot, token) in values.iter_mut().zip(fields) {
        *slot = number(token, "stat cpu time")?;
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice] = values;
    Ok(CpuTimes {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
        guest,
        guest_nice,
    })
}

/// Parses /proc/stat.
pub fn parse_stat(text: &str) -> ParseResult<HostStat<'_>> {
    let mut stat = HostStat::default();
    let mut saw_total = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        let key = parts.next().unwrap_or("");
        // Only cpu rows are split into fields (the intr line holds one number per interrupt).
        let Some(n) = key.strip_prefix("cpu") else {
            stat.other_lines.push(line);
            continue;
        };
        let fields: Vec<&str> = parts.collect();
        if n.is_empty() {
            stat.total = parse_cpu_times(&fields, line)?;
            saw_total = true;
        } else {
            let n = u32::try_from(number(n, "stat cpu number")?)
                .map_err(|_| ParseError::new("stat: cpu number out of range"))?;
            stat.cpus.push((n, parse_cpu_times(&fields, line)?));
        }
    }
    if !saw_total {
        return Err(ParseError::new("stat: no aggregate cpu row"));
    }
    Ok(stat)
}

/// Parses /proc/cpuinfo. Text that does not start every block with a `processor` line (non-x86
/// layouts) is an error; callers then pass the host file through.
pub fn parse_cpuinfo(text: &str) -> ParseResult<Cpuinfo> {
    let mut blocks = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let block = block.trim_start_matches('\n');
        let (first, rest) = block.split_once('\n').unwrap_or((block, ""));
        let (key, value) = first
            .split_once(':')
            .ok_or_else(|| ParseError::new(format!("cpuinfo: bad first line {first:?}")))?;
        if key.trim() != "processor" {
            return Err(ParseError::new(format!(
                "cpuinfo: block starts with {first:?}"
            )));
        }
        let processor = u32::try_from(number(value.trim(), "cpuinfo processor")?)
            .map_err(|_| ParseError::new("cpuinfo: processor out of range"))?;
        let mut rest = rest.trim_end_matches('\n').to_string();
        if !rest.is_empty() {
            rest.push('\n');
        }
        blocks.push(CpuinfoBlock { processor, rest });
    }
    if blocks.is_empty() {
        return Err(ParseError::new("cpuinfo: no processor blocks"));
    }
    Ok(Cpuinfo { blocks })
}

/// Parses /proc/uptime.
pub fn parse_uptime(text: &str) -> ParseResult<Uptime> {
    let mut parts = text.split_whitespace();
    let mut next = |what: &str| {
        parts
            .next()
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| ParseError::new(format!("uptime: bad {what}")))
    };
    Ok(Uptime {
        uptime_secs: next("uptime")?,
        idle_secs: next("idle")?,
    })
}

/// Parses the device columns (major, minor, name) of /proc/diskstats.
pub fn parse_diskstats_names(text: &str) -> ParseResult<Vec<DiskName>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                return Err(ParseError::new(format!("diskstats: short line {line:?}")));
            }
            let to_u32 = |t: &str| {
                u32::try_from(number(t, "diskstats device")?)
                    .map_err(|_| ParseError::new("diskstats: device number out of range"))
            };
            Ok(DiskName {
                major: to_u32(f[0])?,
                minor: to_u32(f[1])?,
                name: f[2].to_string(),
            })
        })
        .collect()
}

/// Parses /proc/net/dev (or /proc/<pid>/net/dev): every interface's row after the two header
/// lines, receive columns then transmit columns.
pub fn parse_net_dev(text: &str) -> ParseResult<Vec<NetDevStat>> {
    let mut lines = text.lines();
    for header in ["Inter-|", " face |"] {
        match lines.next() {
            Some(line) if line.starts_with(header) => {}
            _ => {
                return Err(ParseError::new(format!(
                    "net/dev: no {header:?} header line"
                )))
            }
        }
    }
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (name, counters) = line
                .split_once(':')
                .ok_or_else(|| ParseError::new(format!("net/dev: no ':' in {line:?}")))?;
            let name = name.trim();
            if name.is_empty() {
                return Err(ParseError::new(format!(
                    "net/dev: no interface name in {line:?}"
                )));
            }
            let mut values = [0u64; 16];
            let mut count = 0;
            for token in counters.split_whitespace() {
                let slot = values
                    .get_mut(count)
                    .ok_or_else(|| ParseError::new(format!("net/dev: long row {line:?}")))?;
                *slot = number(token, "net/dev counter")?;
                count += 1;
            }
            if count != values.len() {
                return Err(ParseError::new(format!("net/dev: short row {line:?}")));
            }
            Ok(NetDevStat {
                interface: name.to_string(),
                rx_bytes: values[0],
                rx_packets: values[1],
                rx_errors: values[2],
                rx_dropped: values[3],
                tx_bytes: values[8],
                tx_packets: values[9],
                tx_errors: values[10],
                tx_dropped: values[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{appears, check_fixture_mutants, fixture, non_blank_lines};
    use proptest::prelude::*;

    #[test]
    fn meminfo_fixtures() {
        for name in ["v1/6.18/proc-meminfo", "v2/6.1/proc-meminfo"] {
            let text = fixture(name);
            let m = parse_meminfo(&text).unwrap();
            assert_eq!(m.lines[0].key, "MemTotal", "{name}");
            assert!(m.lines[0].in_kb);
            assert!(m.get("MemAvailable").unwrap() <= m.get("MemTotal").unwrap());
            let pages = m.lines.iter().find(|l| l.key == "HugePages_Total").unwrap();
            assert!(!pages.in_kb);
        }
        assert!(parse_meminfo("MemTotal: x kB\n").is_err());
        assert!(parse_meminfo("").is_err());
    }

    #[test]
    fn stat_fixtures() {
        for name in ["v1/6.18/proc-stat", "v2/6.1/proc-stat"] {
            let text = fixture(name);
            let s = parse_stat(&text).unwrap();
            assert!(!s.cpus.is_empty(), "{name}");
            assert_eq!(s.cpus[0].0, 0);
            assert!(s.field("btime").unwrap() > 0);
            assert!(s.other_lines.iter().any(|l| l.starts_with("intr ")));
            let sum: u64 = s.cpus.iter().map(|(_, t)| t.user).sum();
            assert!(
                sum.abs_diff(s.total.user) <= s.cpus.len() as u64 * 2,
                "{name}"
            );
        }
        assert!(parse_stat("cpu0 1 2 3 4\n").is_err());
        assert!(parse_stat("cpu 1 2 3 4\ncpu4294967296 1 2 3 4\n").is_err());
        assert!(parse_stat("cpu 1 2\n").is_err());
    }

    #[test]
    fn cpuinfo_fixtures() {
        for name in ["v1/6.18/proc-cpuinfo", "v2/6.1/proc-cpuinfo"] {
            let c = parse_cpuinfo(&fixture(name)).unwrap();
            let numbers: Vec<u32> = c.blocks.iter().map(|b| b.processor).collect();
            assert_eq!(
                numbers,
                (0..numbers.len() as u32).collect::<Vec<_>>(),
                "{name}"
            );
            assert!(c.blocks[0].rest.contains("model name"));
        }
        assert!(parse_cpuinfo("Processor\t: AArch64\n").is_err());
        assert!(parse_cpuinfo("processor\t: 4294967296\n").is_err());
        assert!(parse_cpuinfo("\n\n\n").is_err());
    }

    #[test]
    fn uptime_and_diskstats() {
        let u = parse_uptime(&fixture("v2/6.1/proc-uptime")).unwrap();
        assert!(u.uptime_secs > 0.0);
        assert!(parse_uptime("1.0").is_err());
        let names = parse_diskstats_names(&fixture("v2/6.1/proc-diskstats")).unwrap();
        assert!(!names.is_empty());
        assert!(parse_diskstats_names("8 0\n").is_err());
    }

    #[test]
    fn net_dev_fixture() {
        let rows = parse_net_dev(&fixture("v1/6.18/proc-net-dev")).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.interface.as_str()).collect();
        assert_eq!(names, ["lo", "plcap1"]);
        let veth = &rows[1];
        assert_eq!(
            (
                veth.rx_bytes,
                veth.rx_packets,
                veth.tx_bytes,
                veth.tx_packets
            ),
            (7228, 12, 4884, 12)
        );
        assert_eq!(
            (
                veth.rx_errors,
                veth.rx_dropped,
                veth.tx_errors,
                veth.tx_dropped
            ),
            (0, 0, 0, 0)
        );
        assert!(parse_net_dev("lo: 1 2\n").is_err(), "no header");
    }

    #[test]
    fn mutated_net_dev() {
        check_fixture_mutants("parse_net_dev", &["v1/6.18/proc-net-dev"], |text| {
            let parsed = parse_net_dev(text);
            if let Ok(rows) = &parsed {
                // One row per line after the two headers, each value from its own line.
                let lines = non_blank_lines(text);
                prop_assert_eq!(rows.len() + 2, lines.len());
                for (row, line) in rows.iter().zip(&lines[2..]) {
                    let prefix = format!("{}:", row.interface);
                    prop_assert!(
                        line.trim_start().starts_with(&prefix),
                        "{prefix} from {line:?}"
                    );
                    prop_assert!(appears(line, row.rx_bytes) && appears(line, row.tx_dropped));
                }
            }
            Ok(parsed.map(drop))
        });
    }

    #[test]
    fn mutated_meminfo() {
        let files = ["v1/6.18/proc-meminfo", "v2/6.1/proc-meminfo"];
        check_fixture_mutants("parse_meminfo", &files, |text| {
            let parsed = parse_meminfo(text);
            if let Ok(m) = &parsed {
                // One entry per line: "key:" starts the line, the value is on it, " kB" ends it.
                let lines = non_blank_lines(text);
                prop_assert_eq!(m.lines.len(), lines.len());
                for (entry, line) in m.lines.iter().zip(&lines) {
                    let key = format!("{}:", entry.key);
                    prop_assert!(line.starts_with(&key), "{key} from {line:?}");
                    prop_assert!(appears(line, entry.value), "{entry:?} from {line:?}");
                    prop_assert_eq!(entry.in_kb, line.trim_end().ends_with("kB"));
                }
            }
            Ok(parsed.map(drop))
        });
    }

    #[test]
    fn mutated_stat() {
        let files = ["v1/6.18/proc-stat", "v2/6.1/proc-stat"];
        check_fixture_mutants("parse_stat", &files, |text| {
            let parsed = parse_stat(text);
            if let Ok(s) = &parsed {
                // Every line is the aggregate row, a cpuN row or kept verbatim; the numbers of
                // the rows come from the text.
                let lines = non_blank_lines(text);
                let aggregate = lines
                    .iter()
                    .filter(|l| l.split_whitespace().next() == Some("cpu"))
                    .count();
                prop_assert!(aggregate >= 1);
                prop_assert_eq!(aggregate + s.cpus.len() + s.other_lines.len(), lines.len());
                for line in &s.other_lines {
                    prop_assert!(lines.contains(line) && !line.trim_start().starts_with("cpu"));
                }
                prop_assert!(appears(text, s.total.user) && appears(text, s.total.idle));
                for (n, times) in &s.cpus {
                    prop_assert!(appears(text, n) && appears(text, times.system));
                }
            }
            Ok(parsed.map(drop))
        });
    }

    #[test]
    fn mutated_cpuinfo() {
        let files = ["v1/6.18/proc-cpuinfo", "v2/6.1/proc-cpuinfo"];
        check_fixture_mutants("parse_cpuinfo", &files, |text| {
            let parsed = parse_cpuinfo(text);
            if let Ok(c) = &parsed {
                // One block per blank-line-separated paragraph, its lines from the text.
                let paragraphs = text.split("\n\n").filter(|b| !b.trim().is_empty()).count();
                prop_assert_eq!(c.blocks.len(), paragraphs);
                for block in &c.blocks {
                    prop_assert!(appears(text, block.processor));
                    for line in block.rest.lines() {
                        prop_assert!(text.contains(line), "{line:?} not in the text");
                    }
                }
            }
            Ok(parsed.map(drop))
        });
    }

    #[test]
    fn mutated_uptime() {
        let files = ["v1/6.18/proc-uptime", "v2/6.1/proc-uptime"];
        check_fixture_mutants("parse_uptime", &files, |text| {
            let parsed = parse_uptime(text);
            if let Ok(u) = &parsed {
                prop_assert!(u.uptime_secs.is_finite() && u.uptime_secs >= 0.0);
                prop_assert!(u.idle_secs.is_finite() && u.idle_secs >= 0.0);
            }
            Ok(parsed.map(drop))
        });
        let u = parse_uptime(&fixture("v2/6.1/proc-uptime")).unwrap();
        assert_eq!(
            u,
            Uptime {
                uptime_secs: 17.70,
                idle_secs: 21.89
            }
        );
    }

    #[test]
    fn mutated_diskstats() {
        let files = ["v1/6.18/proc-diskstats", "v2/6.1/proc-diskstats"];
        check_fixture_mutants("parse_diskstats_names", &files, |text| {
            let parsed = parse_diskstats_names(text);
            if let Ok(names) = &parsed {
                // One device per line, named by its third column.
                let lines = non_blank_lines(text);
                prop_assert_eq!(names.len(), lines.len());
                for (disk, line) in names.iter().zip(&lines) {
                    prop_assert_eq!(line.split_whitespace().nth(2), Some(disk.name.as_str()));
                    prop_assert!(appears(line, disk.major) && appears(line, disk.minor));
                }
            }
            Ok(parsed.map(drop))
        });
        let names = parse_diskstats_names(&fixture("v1/6.18/proc-diskstats")).unwrap();
        let vda = DiskName {
            major: 254,
            minor: 0,
            name: "vda".into(),
        };
        assert!(names.contains(&vda));
    }
}
