//! Tiny parsers for the values the integration tests assert on. They fail on malformed input
//! instead of guessing, so a garbled file fails the test that reads it.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

/// Parses `/proc/meminfo` text into `key -> value`; values are in kB (the `HugePages_*` counts
/// are plain numbers). Each line must be `Key: <number>[ kB]`.
pub fn meminfo(text: &str) -> Result<BTreeMap<String, u64>> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let (key, rest) = line
            .split_once(':')
            .with_context(|| format!("meminfo line {line:?}"))?;
        let number = rest.trim().trim_end_matches(" kB").trim();
        let value = number
            .parse()
            .with_context(|| format!("meminfo line {line:?}"))?;
        if map.insert(key.to_string(), value).is_some() {
            bail!("meminfo key {key:?} appears twice");
        }
    }
    Ok(map)
}

/// The value of `key` in `/proc/meminfo` text, in kB.
pub fn meminfo_kb(text: &str, key: &str) -> Result<u64> {
    meminfo(text)?
        .get(key)
        .copied()
        .with_context(|| format!("no {key} in meminfo:\n{text}"))
}

/// The numbers of the `processor : N` lines of `/proc/cpuinfo` text, in file order.
pub fn cpuinfo_processors(text: &str) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key.trim() == "processor" {
            out.push(
                value
                    .trim()
                    .parse()
                    .with_context(|| format!("cpuinfo line {line:?}"))?,
            );
        }
    }
    Ok(out)
}

/// The first word of every `/proc/stat` line that starts with `cpu` (`cpu`, `cpu0`, …), in order.
pub fn stat_cpu_rows(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.starts_with("cpu"))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Every `cpu`/`cpuN` row of `/proc/stat` text: its name and its counters (USER_HZ ticks:
/// user nice system idle iowait irq softirq steal guest guest_nice).
pub fn stat_cpu_times(text: &str) -> Result<Vec<(String, Vec<u64>)>> {
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("cpu")) {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let values: Vec<u64> = words
            .map(|w| w.parse().with_context(|| format!("stat line {line:?}")))
            .collect::<Result<_>>()?;
        if values.len() < 8 {
            bail!("stat line {line:?} has fewer than 8 counters");
        }
        rows.push((name, values));
    }
    Ok(rows)
}

/// The two fields of `/proc/uptime` text: (uptime, idle) in seconds.
pub fn uptime(text: &str) -> Result<(f64, f64)> {
    let mut fields = text.split_whitespace();
    let mut next = || -> Result<f64> {
        let field = fields.next().with_context(|| format!("uptime {text:?}"))?;
        field.parse().with_context(|| format!("uptime {text:?}"))
    };
    let parsed = (next()?, next()?);
    if fields.next().is_some() {
        bail!("uptime has more than two fields: {text:?}");
    }
    Ok(parsed)
}

/// The fields of `/proc/loadavg` text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loadavg {
    /// The 1, 5 and 15 minute averages.
    pub averages: [f64; 3],
    /// Running tasks (the number before the slash).
    pub running: u64,
    /// All tasks (after the slash).
    pub total: u64,
    /// The last field: a pid.
    pub last_pid: u64,
}

/// Parses `/proc/loadavg` text: `avg1 avg5 avg15 running/total last_pid`.
pub fn loadavg(text: &str) -> Result<Loadavg> {
    let bad = || format!("loadavg {text:?}");
    let f: Vec<&str> = text.split_whitespace().collect();
    if f.len() != 5 {
        bail!("loadavg {text:?}: want 5 fields");
    }
    let (running, total) = f[3].split_once('/').with_context(bad)?;
    Ok(Loadavg {
        averages: [
            f[0].parse().with_context(bad)?,
            f[1].parse().with_context(bad)?,
            f[2].parse().with_context(bad)?,
        ],
        running: running.parse().with_context(bad)?,
        total: total.parse().with_context(bad)?,
        last_pid: f[4].parse().with_context(bad)?,
    })
}

/// The value of a one-number line of `/proc/stat` text, such as `procs_running`.
pub fn stat_value(text: &str, key: &str) -> Result<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .with_context(|| format!("no {key} line in stat"))?
        .trim()
        .parse()
        .with_context(|| format!("{key} in stat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_values_in_kb() {
        let text =
            "MemTotal:         262144 kB\nMemFree:          100 kB\nHugePages_Total:       0\n";
        assert_eq!(meminfo_kb(text, "MemTotal").unwrap(), 262144);
        assert_eq!(meminfo_kb(text, "HugePages_Total").unwrap(), 0);
        assert!(meminfo_kb(text, "MemAvailable").is_err());
        assert!(meminfo("MemTotal: lots kB\n").is_err());
    }

    #[test]
    fn cpuinfo_and_stat_rows() {
        let cpuinfo = "processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\n";
        assert_eq!(cpuinfo_processors(cpuinfo).unwrap(), [0, 1]);
        let stat = "cpu  1 2 3\ncpu0 1 2 3\nintr 5\nctxt 9\n";
        assert_eq!(stat_cpu_rows(stat), ["cpu", "cpu0"]);
        assert!(stat_cpu_times(stat).is_err(), "3 counters are too few");
        let full = "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(
            stat_cpu_times(full).unwrap()[1],
            ("cpu0".into(), vec![1, 2, 3, 4, 5, 6, 7, 8, 0, 0])
        );
    }

    #[test]
    fn uptime_fields() {
        assert_eq!(uptime("12.50 3.25\n").unwrap(), (12.5, 3.25));
        assert!(uptime("12.50\n").is_err());
    }
}
