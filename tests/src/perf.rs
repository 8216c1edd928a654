//! Measurement helpers of the benchmark (`perf/`, binary `proclens-bench`) and its reader
//! (`proclens-bench-reader`): latency summaries exchanged as one text line, and the CPU time and
//! memory of daemon processes read from `/proc`.

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// What a timed read loop measured: operations started in the measured window and their
/// open+read+close latency percentiles.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencySummary {
    /// Successful open+read+close operations.
    pub ops: u64,
    /// Length of the measured window.
    pub window: Duration,
    /// Median latency, ns.
    pub p50_ns: u64,
    /// 90th percentile latency, ns.
    pub p90_ns: u64,
    /// 99th percentile latency, ns.
    pub p99_ns: u64,
    /// 99.9th percentile latency, ns.
    pub p999_ns: u64,
    /// Slowest operation, ns.
    pub max_ns: u64,
    /// Failed operations.
    pub errors: u64,
    /// Bytes the last successful read returned (a sanity check: 0 means an empty file).
    pub bytes: u64,
    /// Every operation the loop ran, warm-up included (what the daemon served).
    pub total_ops: u64,
}

impl LatencySummary {
    /// Summarises `samples_ns` (sorted in place) measured over `window`; `total_ops` counts
    /// the warm-up's operations too.
    pub fn from_samples(
        samples_ns: &mut [u64],
        window: Duration,
        errors: u64,
        bytes: usize,
        total_ops: u64,
    ) -> Self {
        samples_ns.sort_unstable();
        Self {
            ops: samples_ns.len() as u64,
            window,
            p50_ns: percentile(samples_ns, 0.50),
            p90_ns: percentile(samples_ns, 0.90),
            p99_ns: percentile(samples_ns, 0.99),
            p999_ns: percentile(samples_ns, 0.999),
            max_ns: samples_ns.last().copied().unwrap_or(0),
            errors,
            bytes: bytes as u64,
            total_ops,
        }
    }

    /// Operations per second over the window.
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }

    /// The one-line form: `ops=N window_ms=N p50_ns=N p90_ns=N p99_ns=N p999_ns=N max_ns=N
    /// errors=N bytes=N total_ops=N`.
    pub fn to_line(&self) -> String {
        format!(
            "ops={} window_ms={} p50_ns={} p90_ns={} p99_ns={} p999_ns={} max_ns={} errors={} \
             bytes={} total_ops={}",
            self.ops,
            self.window.as_millis(),
            self.p50_ns,
            self.p90_ns,
            self.p99_ns,
            self.p999_ns,
            self.max_ns,
            self.errors,
            self.bytes,
            self.total_ops
        )
    }

    /// Parses [`Self::to_line`]'s form; every field must be present.
    pub fn parse(line: &str) -> Result<Self> {
        let mut s = Self::default();
        let mut seen = 0;
        for field in line.split_whitespace() {
            let (key, value) = field
                .split_once('=')
                .with_context(|| format!("summary {line:?}"))?;
            let v: u64 = value
                .parse()
                .with_context(|| format!("summary {line:?}: {key}"))?;
            match key {
                "ops" => s.ops = v,
                "window_ms" => s.window = Duration::from_millis(v),
                "p50_ns" => s.p50_ns = v,
                "p90_ns" => s.p90_ns = v,
                "p99_ns" => s.p99_ns = v,
                "p999_ns" => s.p999_ns = v,
                "max_ns" => s.max_ns = v,
                "errors" => s.errors = v,
                "bytes" => s.bytes = v,
                "total_ops" => s.total_ops = v,
                _ => continue,
            }
            seen += 1;
        }
        if seen != 10 {
            bail!("summary {line:?} lacks fields");
        }
        Ok(s)
    }
}

/// Nearest-rank percentile `q` (0..=1) of ascending `sorted`; 0 if empty.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of `values` (sorted in place); NaN if empty.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// CPU time and memory of a set of processes at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// utime + stime of every process (all threads, living and exited), in clock ticks.
    pub cpu_ticks: u64,
    /// Sum of VmRSS, kB (pages shared between the processes count once per process).
    pub rss_kb: u64,
    /// Sum of Pss from `smaps_rollup`, kB (shared pages split between their users).
    pub pss_kb: u64,
}

impl ProcSample {
    /// Samples `pids` now.
    pub fn of(pids: &[u32]) -> Result<Self> {
        let mut s = Self::default();
        for &pid in pids {
            s.cpu_ticks += cpu_ticks(pid)?;
            s.rss_kb += status_kb(pid, "VmRSS:")?;
            s.pss_kb += pss_kb(pid)?;
        }
        Ok(s)
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(100)
}

/// CPU use between two samples as a percentage of one core.
pub fn cpu_percent(before: &ProcSample, after: &ProcSample, elapsed: Duration) -> f64 {
    let ticks = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64;
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    100.0 * ticks / clock_ticks_per_sec() as f64 / secs
}

/// utime + stime of process `pid` (fields 14 and 15 of `/proc/<pid>/stat`), clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: {text:?}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{path}: field {} in {text:?}", i + 3))
    };
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    Ok(field(11)? + field(12)?)
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`, …).
pub fn status_kb(pid: u32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    kb_line(&text, key).with_context(|| format!("{path}: no {key}"))
}

/// `Pss:` of `/proc/<pid>/smaps_rollup`, kB.
pub fn pss_kb(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    kb_line(&text, "Pss:").with_context(|| format!("{path}: no Pss"))
}

/// The number after `key` on the line starting with it.
fn kb_line(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_round_trips() {
        let mut samples = vec![5, 1, 4, 2, 3, 100, 7, 6, 8, 9];
        let s =
            LatencySummary::from_samples(&mut samples, Duration::from_millis(2000), 1, 1400, 12);
        assert_eq!((s.ops, s.p50_ns, s.p90_ns, s.max_ns), (10, 5, 9, 100));
        assert_eq!(s.ops_per_sec(), 5.0);
        assert_eq!(LatencySummary::parse(&s.to_line()).unwrap(), s);
        assert!(LatencySummary::parse("ops=1").is_err());
    }

    #[test]
    fn percentiles_and_medians() {
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), 2);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn own_process_has_cpu_and_memory() {
        let s = ProcSample::of(&[std::process::id()]).unwrap();
        assert!(s.rss_kb > 0 && s.pss_kb > 0);
    }
}
