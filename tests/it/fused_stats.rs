//! proclens-fused's own numbers: counted as a real reader reads, kept across a worker's kill -9,
//! a reload and a supervisor re-exec, published to its stats file, and carried into a real
//! exporter's scrapes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use proclens_tests::rig::prometheus::http_get;
use proclens_tests::rig::{self, ExporterDaemon, FusedDaemon, TempCgroup};
use tempfile::TempDir;

use crate::util::{container_cgroup, new_worker, probe_in, promtool_complaints};

/// Reads of meminfo the test makes before it looks.
const READS: u64 = 25;

/// The value of the sample `name{labels}` (labels as the exposition writes them, `""` for none)
/// in an exposition or stats file.
pub fn value_of(text: &str, name: &str, labels: &str) -> Option<f64> {
    let head = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(head.as_str())?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// fused's numbers in its stats file now (0 for a sample not there yet).
fn stats_now(path: &Path, name: &str, labels: &str) -> Result<f64> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(value_of(&text, name, labels).unwrap_or(0.0)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(0.0),
        Err(err) => Err(err).with_context(|| format!("read {}", path.display())),
    }
}

/// Waits until fused's stats file shows `name{labels}` at `at_least` or more; returns it.
fn wait_for_stat(path: &Path, name: &str, labels: &str, at_least: f64) -> Result<f64> {
    rig::poll(
        Duration::from_secs(20),
        &format!("{name}{{{labels}}} >= {at_least} in {}", path.display()),
        || {
            let value = stats_now(path, name, labels)?;
            Ok((value >= at_least).then_some(value))
        },
    )
}

/// A fused daemon writing its numbers every second into a directory of the test's.
pub struct PublishingFused {
    /// The daemon.
    pub daemon: FusedDaemon,
    /// Its stats file.
    pub stats_file: PathBuf,
    _dir: TempDir,
}

impl PublishingFused {
    /// Starts one.
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("proclens-test-stats-")
            .tempdir()?;
        let stats_file = dir.path().join("fused.stats");
        let path = stats_file.to_str().context("utf-8 temp path")?;
        let daemon = FusedDaemon::start(&["--stats-file", path, "--stats-interval", "1"])?;
        Ok(PublishingFused {
            daemon,
            stats_file,
            _dir: dir,
        })
    }
}

/// An exporter over `cg` only, reading fused's numbers from `stats_file`.
pub fn exporter_reading(cg: &TempCgroup, stats_file: &Path) -> Result<ExporterDaemon> {
    ExporterDaemon::start_with_config(
        &format!(
            "[discovery]\nroots = [\"/{}\"]\n[fused]\nstats_file = {:?}\n",
            cg.name(),
            stats_file.to_str().context("utf-8 path")?
        ),
        &[],
    )
}

#[test]
fn reads_are_counted_across_kill_reload_and_reexec_and_reach_the_exporter() -> Result<()> {
    rig::preflight()?;
    let cg = container_cgroup()?;
    let mut probe = probe_in(&cg)?;
    let fused = PublishingFused::start()?;
    let stats = &fused.stats_file;
    let meminfo = fused.daemon.path("proc/meminfo");
    for _ in 0..READS {
        probe.read_string(&meminfo)?;
    }
    let label = "file=\"meminfo\"";
    let before = wait_for_stat(stats, "proclens_fused_reads_total", label, READS as f64)?;
    let latency_count = wait_for_stat(
        stats,
        "proclens_fused_read_duration_seconds_count",
        label,
        READS as f64,
    )?;
    ensure!(latency_count >= READS as f64);
    let restarts = stats_now(stats, "proclens_fused_worker_restarts_total", "")?;

    // kill -9 the worker: the counters live in the supervisor's region, so none goes back, and
    // the restart is counted.
    let workers = fused.daemon.worker_pids()?;
    ensure!(workers.len() == 1, "expected one worker, found {workers:?}");
    rig::process::signal(workers[0], libc::SIGKILL)?;
    new_worker(&fused.daemon, workers[0])?;
    let after_kill = wait_for_stat(
        stats,
        "proclens_fused_worker_restarts_total",
        "",
        restarts + 1.0,
    )?;
    ensure!(after_kill >= restarts + 1.0);
    let kept = stats_now(stats, "proclens_fused_reads_total", label)?;
    ensure!(kept >= before, "reads went back from {before} to {kept}");
    for _ in 0..READS {
        probe.read_string(&meminfo)?;
    }
    let mut total = wait_for_stat(
        stats,
        "proclens_fused_reads_total",
        label,
        before + READS as f64,
    )?;

    // A reload (new worker) and a supervisor re-exec (new supervisor image, same region): the
    // counts carry on from where they were (a reset would show fewer than total + READS).
    for (signal, what) in [(libc::SIGHUP, "reload"), (libc::SIGUSR2, "re-exec")] {
        let workers = fused.daemon.worker_pids()?;
        ensure!(workers.len() == 1, "expected one worker, found {workers:?}");
        rig::process::signal(fused.daemon.pid(), signal)?;
        new_worker(&fused.daemon, workers[0]).with_context(|| what.to_string())?;
        for _ in 0..READS {
            probe.read_string(&meminfo)?;
        }
        total = wait_for_stat(
            stats,
            "proclens_fused_reads_total",
            label,
            total + READS as f64,
        )
        .with_context(|| format!("after the {what}"))?;
    }
    ensure!(
        stats_now(stats, "proclens_fused_worker_restarts_total", "")? >= restarts + 1.0,
        "the restart count went back"
    );

    // The exporter carries them, in both formats, and promtool is content.
    let exporter = exporter_reading(&cg, stats)?;
    let text = exporter.scrape()?;
    let exported = value_of(&text, "proclens_fused_reads_total", label)
        .with_context(|| format!("no meminfo reads in the scrape:\n{text}"))?;
    ensure!(
        exported >= total,
        "exported {exported} < {total} in the stats file"
    );
    ensure!(
        value_of(&text, "proclens_fused_up", "") == Some(1.0),
        "{text}"
    );
    ensure!(
        value_of(&text, "proclens_fused_worker_restarts_total", "").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    ensure!(text.contains("# TYPE proclens_fused_read_duration_seconds histogram\n"));
    let complaints = promtool_complaints(&text)?;
    ensure!(complaints.is_empty(), "promtool: {complaints:?}");
    let om = http_get(
        &format!("{}/metrics", exporter.url()),
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
    )?;
    ensure!(
        om.body.contains("# TYPE proclens_fused_reads counter\n")
            && om
                .body
                .contains("proclens_fused_reads_total{file=\"meminfo\"} "),
        "{}",
        om.body
    );
    Ok(())
}

#[test]
fn a_malformed_stats_file_leaves_fused_out_of_a_scrape_that_still_succeeds() -> Result<()> {
    rig::preflight()?;
    let cg = TempCgroup::builder().create()?;
    let dir = tempfile::Builder::new()
        .prefix("proclens-test-stats-")
        .tempdir()?;
    let stats = dir.path().join("fused.stats");
    std::fs::write(
        &stats,
        "proclens_fused_reads_total{file=\"meminfo\"} 3\nproclens_fused_reads_total{file=\"meminfo\" 4\n",
    )?;
    let exporter = exporter_reading(&cg, &stats)?;
    let text = exporter.scrape()?;
    ensure!(
        !text.contains("proclens_fused_reads_total"),
        "fused series from a malformed file:\n{text}"
    );
    ensure!(
        value_of(&text, "proclens_fused_up", "") == Some(0.0),
        "{text}"
    );
    ensure!(
        value_of(&text, "proclens_exporter_fused_stats_errors_total", "") == Some(1.0),
        "{text}"
    );
    ensure!(text.contains("# TYPE container_cpu_usage_seconds_total counter\n"));
    let complaints = promtool_complaints(&text)?;
    ensure!(complaints.is_empty(), "promtool: {complaints:?}");
    Ok(())
}
