//! proclens-exporter scraped by a real Prometheus: real cgroups with real workloads (a process
//! allocating a known amount, CPU burners, a quota that throttles), queried back through
//! Prometheus's API. Runs on the v1 host and again in the v2 VM.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proclens_tests::rig::prometheus::http_get;
use proclens_tests::rig::{
    self, ExporterDaemon, PrometheusOptions, PrometheusServer, Sample, TempCgroup,
};

use crate::util::MIB;

/// How long a condition in Prometheus may take to appear (scrapes every second; TCG in the VM).
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(120);

/// A process in a test cgroup, killed on drop.
struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Workload {
    /// Spawns `program args`, moves it into `cg`, and only then tells it to start (a line on its
    /// stdin): on v1, memory charged before the move would stay with the old cgroup.
    fn start_in(cg: &TempCgroup, program: &str, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawn {program}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        let mut workload = Workload {
            child,
            stdin,
            stdout,
        };
        cg.add_pid(workload.child.id())?;
        let stdin = workload.stdin.as_mut().context("no stdin")?;
        writeln!(stdin, "go").context("start the workload")?;
        stdin.flush()?;
        Ok(workload)
    }

    /// A python process that, once in `cg`, allocates and touches `bytes` and says "ready".
    fn allocating(cg: &TempCgroup, bytes: u64) -> Result<Self> {
        let script = format!(
            "import sys\nsys.stdin.readline()\nb = b'x' * {bytes}\nprint('ready', flush=True)\nsys.stdin.readline()\n"
        );
        let mut workload = Workload::start_in(cg, "python3", &["-c", &script])?;
        let mut line = String::new();
        let stdout = workload.stdout.as_mut().context("no stdout")?;
        stdout
            .read_line(&mut line)
            .context("read the allocator's answer")?;
        if line.trim() != "ready" {
            bail!("the allocator said {line:?} instead of ready");
        }
        Ok(workload)
    }

    /// A shell spinning on the CPU once in `cg`.
    fn burning(cg: &TempCgroup) -> Result<Self> {
        Workload::start_in(cg, "sh", &["-c", "read _; while :; do :; done"])
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the one sample of `samples`, failing unless there is exactly one.
fn single(samples: &[Sample], what: &str) -> Result<f64> {
    match samples {
        [one] => Ok(one.value),
        _ => bail!("{what}: expected one series, got {samples:?}"),
    }
}

/// The cgroup's path as the exporter's `id` label shows it.
fn id_of(cg: &TempCgroup) -> String {
    format!("/{}", cg.name())
}

/// The kernel's CPU usage of `cg` in seconds: v1 cpuacct.usage where a cpuacct hierarchy has
/// the cgroup, else v2 cpu.stat usage_usec (a hybrid host's controller-less v2 directory counts
/// too, but lazily: never prefer it).
fn kernel_cpu_seconds(cg: &TempCgroup) -> Result<f64> {
    let dirs: Vec<_> = cg
        .procs_files()
        .iter()
        .filter_map(|f| f.parent().map(|d| d.to_path_buf()))
        .collect();
    if let Some(usage) = dirs
        .iter()
        .map(|d| d.join("cpuacct.usage"))
        .find(|f| f.exists())
    {
        let ns: u64 = std::fs::read_to_string(&usage)?.trim().parse()?;
        return Ok(ns as f64 / 1e9);
    }
    let stat = dirs
        .iter()
        .map(|d| d.join("cpu.stat"))
        .find(|f| f.exists())
        .context("no cpuacct.usage or cpu.stat")?;
    let text = std::fs::read_to_string(&stat)?;
    let usec: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .context("cpu.stat has no usage_usec")?
        .trim()
        .parse()?;
    Ok(usec as f64 / 1e6)
}

#[test]
fn prometheus_scrapes_memory_and_cpu_of_real_cgroups() -> Result<()> {
    rig::preflight()?;
    let memory_cg = TempCgroup::builder().memory_limit(512 * MIB).create()?;
    let burner_cg = TempCgroup::builder().create()?;
    let allocated = 200 * MIB;
    let _allocator = Workload::allocating(&memory_cg, allocated)?;
    let _burner = Workload::burning(&burner_cg)?;
    let exporter = ExporterDaemon::start(None, &[])?;
    let prometheus = PrometheusServer::start(&PrometheusOptions {
        targets: vec![exporter.target()],
        interval: Duration::from_secs(1),
        ..PrometheusOptions::default()
    })?;

    prometheus.wait_for("up{job=\"proclens\"} == 1", PROMETHEUS_TIMEOUT, |s| {
        s.len() == 1
    })?;

    // Memory: the allocation, within 10% (the interpreter itself adds a few MiB).
    let memory_id = id_of(&memory_cg);
    let within = |value: f64| (value - allocated as f64).abs() <= 0.1 * allocated as f64;
    for family in [
        "container_memory_usage_bytes",
        "container_memory_working_set_bytes",
    ] {
        let expr = format!("{family}{{id=\"{memory_id}\"}}");
        let samples = prometheus.wait_for(&expr, PROMETHEUS_TIMEOUT, |s| s.len() == 1)?;
        let value = single(&samples, &expr)?;
        assert!(
            within(value),
            "{expr} = {value} bytes, expected {allocated} ± 10%"
        );
    }
    let limit = format!("container_spec_memory_limit_bytes{{id=\"{memory_id}\"}}");
    let samples = prometheus.wait_for(&limit, PROMETHEUS_TIMEOUT, |s| s.len() == 1)?;
    assert_eq!(single(&samples, &limit)?, (512 * MIB) as f64, "{limit}");

    // CPU, exactly: a value Prometheus scraped after the kernel counted k0 lies between k0
    // and what the kernel counts right after the query.
    let burner_id = id_of(&burner_cg);
    let counter = format!("container_cpu_usage_seconds_total{{id=\"{burner_id}\",cpu=\"total\"}}");
    let k0 = kernel_cpu_seconds(&burner_cg)?;
    let samples = prometheus.wait_for(&counter, PROMETHEUS_TIMEOUT, |s| {
        s.len() == 1 && s[0].value >= k0
    })?;
    let k1 = kernel_cpu_seconds(&burner_cg)?;
    let scraped = single(&samples, &counter)?;
    assert!(
        k0 <= scraped && scraped <= k1,
        "{counter} = {scraped}, the kernel counted {k0} before and {k1} after"
    );

    // And its rate over 10 s: the burner's share of a core, as the kernel counted it over the
    // same 10 s (loosely: scrapes land anywhere within a second of the window's ends).
    let rate_expr = format!("rate({counter}[10s])");
    let (k_start, started) = (kernel_cpu_seconds(&burner_cg)?, Instant::now());
    rig::poll(Duration::from_secs(60), "10 s to pass", || {
        Ok((started.elapsed() >= Duration::from_secs(10)).then_some(()))
    })?;
    let kernel_rate = (kernel_cpu_seconds(&burner_cg)? - k_start) / started.elapsed().as_secs_f64();
    let samples = prometheus.wait_for(&rate_expr, PROMETHEUS_TIMEOUT, |s| s.len() == 1)?;
    let rate = single(&samples, &rate_expr)?;
    assert!(
        kernel_rate > 0.2,
        "the burner ran only {kernel_rate} cores: the machine is too busy to judge"
    );
    assert!(
        (rate - kernel_rate).abs() <= 0.5 * kernel_rate,
        "{rate_expr} = {rate} cores, the kernel counted {kernel_rate}; samples: {}",
        prometheus.query_raw(&format!("{counter}[15s]"))?
    );
    Ok(())
}

#[test]
fn a_throttled_cgroup_shows_throttling_in_prometheus() -> Result<()> {
    rig::preflight()?;
    // Half a core for two burners: throttled in nearly every period.
    let cg = TempCgroup::builder().cfs_quota(50_000, 100_000).create()?;
    let _burners = [Workload::burning(&cg)?, Workload::burning(&cg)?];
    let exporter = ExporterDaemon::start(None, &[])?;
    let prometheus = PrometheusServer::start(&PrometheusOptions {
        targets: vec![exporter.target()],
        interval: Duration::from_secs(1),
        ..PrometheusOptions::default()
    })?;
    let id = id_of(&cg);
    let ratio = format!(
        "increase(container_cpu_cfs_throttled_periods_total{{id=\"{id}\"}}[10s]) \
         / increase(container_cpu_cfs_periods_total{{id=\"{id}\"}}[10s]) > 0.25"
    );
    prometheus.wait_for(&ratio, PROMETHEUS_TIMEOUT, |s| s.len() == 1)?;
    let quota = format!("container_spec_cpu_quota{{id=\"{id}\"}}");
    assert_eq!(single(&prometheus.query(&quota)?, &quota)?, 50_000.0);
    let period = format!("container_spec_cpu_period{{id=\"{id}\"}}");
    assert_eq!(single(&prometheus.query(&period)?, &period)?, 100_000.0);
    let throttled = format!("container_cpu_cfs_throttled_seconds_total{{id=\"{id}\"}} > 0");
    prometheus.wait_for(&throttled, PROMETHEUS_TIMEOUT, |s| s.len() == 1)?;
    Ok(())
}

/// The families of one exposition, from its TYPE lines.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn exposition_passes_promtool_but_for_the_documented_cadvisor_names() -> Result<()> {
    rig::preflight()?;
    let cg = TempCgroup::builder().memory_limit(64 * MIB).create()?;
    let _sleeper = Workload::start_in(&cg, "sh", &["-c", "read _; read _"])?;
    let exporter = ExporterDaemon::start(None, &[])?;
    let text = exporter.scrape()?;
    assert!(text.contains(&format!("id=\"{}\"", id_of(&cg))), "{text}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn promtool (apt-get install prometheus)")?;
    promtool
        .stdin
        .take()
        .context("no stdin")?
        .write_all(text.as_bytes())?;
    let out = promtool.wait_with_output()?;
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let unexpected: Vec<&str> = complaints
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("container_memory_failcnt "))
        .collect();
    assert!(unexpected.is_empty(), "promtool: {complaints}");
    assert!(families(&text).contains("container_memory_failcnt"));
    Ok(())
}

#[test]
fn openmetrics_and_gzip_when_asked() -> Result<()> {
    rig::preflight()?;
    let exporter = ExporterDaemon::start(None, &[])?;
    let url = format!("{}/metrics", exporter.url());
    let text = http_get(&url, &[("Accept-Encoding", "identity")])?;
    assert_eq!(text.status, 200);
    assert_eq!(
        text.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(text.content_encoding, "");
    assert!(!text.body.contains("# EOF"), "0.0.4 text has no EOF marker");
    assert!(text
        .body
        .contains("# TYPE container_cpu_usage_seconds_total counter"));
    let om = http_get(
        &url,
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
    )?;
    assert_eq!(om.status, 200);
    assert!(om
        .content_type
        .starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(om.body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert!(
        om.body
            .contains("# TYPE container_cpu_usage_seconds counter"),
        "{}",
        om.body
    );
    // Compressed when asked (the rig decodes it).
    let gz = http_get(&url, &[("Accept-Encoding", "gzip")])?;
    assert_eq!((gz.status, gz.content_encoding.as_str()), (200, "gzip"));
    assert!(
        gz.body.contains("# TYPE machine_cpu_cores gauge"),
        "{}",
        gz.body
    );
    let health = http_get(&format!("{}/healthz", exporter.url()), &[])?;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    Ok(())
}
