//! Latency and throughput points, and the first read of new containers. Every read comes from a
//! `proclens-bench-reader` in a container cgroup (memory limit, cpuset) and its own pid
//! namespace, reading the bind-mounted files of [`Subjects`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use proclens_tests::perf::{clock_ticks_per_sec, median, LatencySummary, ProcSample};
use proclens_tests::rig::{self, process, TempCgroup};

use crate::subjects::{File, Subject, Subjects};
use crate::{check_interrupted, Options};

/// Reader thread counts of the latency points.
pub const THREADS: [usize; 2] = [1, 8];
/// Memory limit of the containers the readers run in.
const CONTAINER_MEMORY: u64 = 256 << 20;
/// Slack on top of a reader's own duration before it is stopped as hung.
const READER_SLACK: Duration = Duration::from_secs(30);

/// One latency point: a subject's file read by `threads` readers; medians over the rounds.
#[derive(Clone, Debug)]
pub struct Point {
    /// The file read.
    pub file: File,
    /// Reader threads.
    pub threads: usize,
    /// Who served it.
    pub subject: Subject,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Completed open+read+close per second, all threads together.
    pub ops_per_sec: f64,
    /// CPU time of the serving daemon per open+read+close, µs (NaN for the kernel).
    pub daemon_cpu_us: f64,
}

/// The first read of new containers: medians, in µs, over fresh containers.
#[derive(Clone, Debug)]
pub struct FirstRead {
    /// The file read first.
    pub file: File,
    /// proclens: median µs.
    pub proclens_us: f64,
    /// lxcfs: median µs.
    pub lxcfs_us: f64,
    /// The FUSE floor: median µs (what any FUSE daemon's first read from a new container costs).
    pub floor_us: f64,
    /// The kernel's own /proc file: median µs (what a fresh process's first open+read+close
    /// costs without FUSE).
    pub kernel_us: f64,
    /// Containers per subject.
    pub samples: usize,
}

/// The reader binary: env `PROCLENS_BENCH_READER_BIN`, else `<target dir>/proclens-bench-reader`.
pub fn reader_bin() -> Result<PathBuf> {
    rig::find_binary("PROCLENS_BENCH_READER_BIN", "proclens-bench-reader")
}

/// The host's online CPUs as a cpulist (`0,1`).
pub fn all_cpus() -> Result<String> {
    let cpus: Vec<String> = rig::host_cpus()?.iter().map(u32::to_string).collect();
    Ok(cpus.join(","))
}

/// A container cgroup: 256 MiB memory limit, cpuset of every online CPU.
pub fn container() -> Result<TempCgroup> {
    TempCgroup::builder()
        .memory_limit(CONTAINER_MEMORY)
        .cpus(&all_cpus()?)
        .create()
}

/// `--join` arguments for the cgroup.procs files of `cg`.
pub fn join_args(cmd: &mut Command, cg: &TempCgroup) {
    for file in cg.procs_files() {
        cmd.arg("--join").arg(file);
    }
}

/// Runs a reader to completion within `timeout`; its last stdout line.
fn run_reader(mut cmd: Command, timeout: Duration) -> Result<String> {
    let out = process::run(&mut cmd, timeout)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{cmd:?} failed with {}: {}", out.status, stderr.trim());
    }
    if !stderr.trim().is_empty() {
        bail!("{cmd:?} reported: {}", stderr.trim());
    }
    stdout
        .lines()
        .last()
        .map(str::to_string)
        .with_context(|| format!("{cmd:?} printed nothing"))
}

/// One measured loop of `threads` readers on `path`.
fn measure(
    options: &Options,
    cg: &TempCgroup,
    path: &Path,
    threads: usize,
) -> Result<LatencySummary> {
    let mut cmd = Command::new(reader_bin()?);
    cmd.arg("loop")
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--ms")
        .arg(options.point.as_millis().to_string())
        .arg("--warmup-ms")
        .arg(options.warmup.as_millis().to_string());
    join_args(&mut cmd, cg);
    cmd.arg(path);
    let line = run_reader(cmd, options.point + options.warmup + READER_SLACK)?;
    let summary = LatencySummary::parse(&line)?;
    ensure!(
        summary.errors == 0,
        "{} reads of {} failed",
        summary.errors,
        path.display()
    );
    ensure!(
        summary.ops > 0 && summary.bytes > 0,
        "no data read from {}: {line}",
        path.display()
    );
    Ok(summary)
}

/// Every (file, threads, subject) point, `options.rounds` times. Within a point the subjects run
/// one after another (in an order that rotates), so noise from the rest of the machine falls on
/// all of them alike.
pub fn points(options: &Options, subjects: &mut Subjects) -> Result<Vec<Point>> {
    let cg = container()?;
    subjects.attach_subtree(&cg)?;
    let mut samples: BTreeMap<(File, usize, Subject), Vec<(LatencySummary, f64)>> = BTreeMap::new();
    let mut turn = 0;
    for round in 0..options.rounds {
        for file in File::ALL {
            for threads in THREADS {
                turn += 1;
                let mut order = Subject::ALL;
                order.rotate_left(turn % Subject::ALL.len());
                for subject in order {
                    check_interrupted()?;
                    let pids = subjects.pids(subject, file)?;
                    let before = ProcSample::of(&pids)?;
                    let summary = measure(options, &cg, subjects.path(subject, file), threads)
                        .with_context(|| format!("{file} with {threads} readers on {subject}"))?;
                    let after = ProcSample::of(&pids)?;
                    // The daemon served the warm-up's reads too: divide by every read.
                    let cpu_us = if pids.is_empty() {
                        f64::NAN
                    } else {
                        after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 * 1e6
                            / clock_ticks_per_sec() as f64
                            / summary.total_ops.max(1) as f64
                    };
                    eprintln!(
                        "round {}/{} {file:<8} {threads} thread(s) {subject:<13} {:>9.0} ops/s  \
                         p50 {:>7.1} µs  p99 {:>7.1} µs  daemon CPU {:>6.1} µs/op",
                        round + 1,
                        options.rounds,
                        summary.ops_per_sec(),
                        summary.p50_ns as f64 / 1e3,
                        summary.p99_ns as f64 / 1e3,
                        cpu_us
                    );
                    samples
                        .entry((file, threads, subject))
                        .or_default()
                        .push((summary, cpu_us));
                }
            }
        }
    }
    Ok(samples
        .into_iter()
        .map(|((file, threads, subject), runs)| {
            let of = |f: fn(&(LatencySummary, f64)) -> f64| {
                median(&mut runs.iter().map(f).collect::<Vec<_>>())
            };
            Point {
                file,
                threads,
                subject,
                p50_us: of(|(s, _)| s.p50_ns as f64 / 1e3),
                p99_us: of(|(s, _)| s.p99_ns as f64 / 1e3),
                ops_per_sec: of(|(s, _)| s.ops_per_sec()),
                daemon_cpu_us: of(|(_, cpu)| *cpu),
            }
        })
        .collect())
}

/// The first read of a new container: a new cgroup and a new pid namespace whose pid 1 opens,
/// reads and closes `path` once. Returns that read's latency.
fn first_read(path: &Path) -> Result<Duration> {
    let cg = container()?;
    let mut cmd = Command::new(reader_bin()?);
    cmd.arg("once");
    join_args(&mut cmd, &cg);
    cmd.arg(path);
    let line = run_reader(cmd, READER_SLACK)?;
    let ns: u64 = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("ns="))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("reader said {line:?}"))?;
    Ok(Duration::from_nanos(ns))
}

/// `options.first_reads` fresh containers per file and subject (proclens, lxcfs, the floor and
/// the kernel's /proc in rotating order).
pub fn first_reads(options: &Options, subjects: &Subjects) -> Result<Vec<FirstRead>> {
    let mut out = Vec::new();
    for file in File::ALL {
        let subjects_in_turn = [
            Subject::Proclens,
            Subject::Lxcfs,
            Subject::Floor,
            Subject::Kernel,
        ];
        let mut samples: [Vec<f64>; 4] = Default::default();
        for i in 0..options.first_reads {
            // The order rotates, so no subject always follows the same one.
            for k in 0..subjects_in_turn.len() {
                let slot = (i + k) % subjects_in_turn.len();
                let subject = subjects_in_turn[slot];
                check_interrupted()?;
                let took = first_read(subjects.path(subject, file))
                    .with_context(|| format!("first read of {file} on {subject}"))?;
                samples[slot].push(took.as_secs_f64() * 1e6);
            }
        }
        let [proclens, lxcfs, floor, kernel] = &mut samples;
        let first = FirstRead {
            file,
            proclens_us: median(proclens),
            lxcfs_us: median(lxcfs),
            floor_us: median(floor),
            kernel_us: median(kernel),
            samples: options.first_reads,
        };
        eprintln!(
            "first read {file:<8} proclens {:>8.1} µs  lxcfs {:>8.1} µs  floor {:>8.1} µs  \
             kernel {:>6.1} µs  (medians of {})",
            first.proclens_us, first.lxcfs_us, first.floor_us, first.kernel_us, first.samples
        );
        out.push(first);
    }
    Ok(out)
}
