//! Many live containers: `options.containers` cgroups (1,000 by default), each with a
//! `proclens-bench-reader tick` process as pid 1 of its own pid namespace, reading once a second
//! (staggered over the second). Under that load: CPU and memory of proclens-fused (supervisor
//! and workers summed) against lxcfs, the cost of loadavg for every container (lxcfs with `-l`),
//! proclens's memory over a soak, and last the same meminfo load on the per-container subtree
//! (each container reading its own `containers/<pid>/proc/meminfo`).

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use proclens_tests::perf::{cpu_percent, ProcSample, Resident};
use proclens_tests::rig::{process, TempCgroup};
use tempfile::TempDir;

use crate::latency::{all_cpus, join_args, reader_bin};
use crate::report::Report;
use crate::subjects::{File, Subject, Subjects};
use crate::{check_interrupted, sleep, Options};

/// Memory limit of each of the many containers.
const FLEET_MEMORY: u64 = 64 << 20;
/// Threads creating and removing cgroups and spawning readers.
const PARALLEL: usize = 8;
/// Time between a reader's reads.
const INTERVAL: Duration = Duration::from_secs(1);
/// Time between RSS samples of the soak.
const SOAK_SAMPLE: Duration = Duration::from_secs(10);

/// The load the many containers put on a subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// Every container reads meminfo once a second.
    Meminfo,
    /// Every container reads loadavg once a second.
    Loadavg,
    /// Every container read loadavg once, then nothing: only the daemon's own upkeep remains.
    LoadavgUpkeep,
}

impl Load {
    /// Description for tables.
    pub fn describe(self) -> &'static str {
        match self {
            Load::Meminfo => "meminfo, 1 read/s per container",
            Load::Loadavg => "loadavg, 1 read/s per container",
            Load::LoadavgUpkeep => "loadavg upkeep: read once, then idle",
        }
    }
}

/// A subject's cost under a [`Load`].
#[derive(Clone, Debug)]
pub struct LoadResult {
    /// The load.
    pub load: Load,
    /// Who served it.
    pub subject: Subject,
    /// CPU time over the window, % of one core (all processes and threads).
    pub cpu_percent: f64,
    /// Sum of VmRSS over the subject's processes at the window's end, kB.
    pub rss_kb: u64,
    /// Sum of PSS at the window's end, kB.
    pub pss_kb: u64,
    /// Resident pages at the window's end, each physical page counted once over the subject's
    /// processes.
    pub unique: Resident,
    /// Failed reads logged by the readers.
    pub failures: usize,
    /// Containers reading.
    pub containers: usize,
}

/// proclens-fused's memory over the soak.
#[derive(Clone, Debug)]
pub struct Soak {
    /// (time since the soak's start, sample), every 10 s.
    pub samples: Vec<(Duration, ProcSample)>,
    /// CPU over the whole soak, % of one core.
    pub cpu_percent: f64,
    /// Failed reads logged by the readers.
    pub failures: usize,
    /// Containers reading.
    pub containers: usize,
}

impl Soak {
    /// RSS sum of the first sample, kB.
    pub fn first_rss_kb(&self) -> u64 {
        self.samples.first().map_or(0, |(_, s)| s.rss_kb)
    }

    /// RSS sum of the last sample, kB.
    pub fn last_rss_kb(&self) -> u64 {
        self.samples.last().map_or(0, |(_, s)| s.rss_kb)
    }

    /// Largest RSS sum seen, kB.
    pub fn max_rss_kb(&self) -> u64 {
        self.samples
            .iter()
            .map(|(_, s)| s.rss_kb)
            .max()
            .unwrap_or(0)
    }

    /// Resident pages counted once, first sample, kB.
    pub fn first_unique_kb(&self) -> u64 {
        self.samples.first().map_or(0, |(_, s)| s.unique.total_kb)
    }

    /// Resident pages counted once, last sample, kB.
    pub fn last_unique_kb(&self) -> u64 {
        self.samples.last().map_or(0, |(_, s)| s.unique.total_kb)
    }

    /// Largest count of resident pages counted once, kB.
    pub fn max_unique_kb(&self) -> u64 {
        self.samples
            .iter()
            .map(|(_, s)| s.unique.total_kb)
            .max()
            .unwrap_or(0)
    }

    /// Length of the soak.
    pub fn duration(&self) -> Duration {
        self.samples.last().map_or(Duration::ZERO, |(t, _)| *t)
    }
}

/// The many container cgroups. `Drop` removes them, several at a time.
struct Fleet {
    cgroups: Vec<TempCgroup>,
    logs: TempDir,
}

impl Fleet {
    /// Creates `n` container cgroups (64 MiB, every CPU), several at a time.
    fn create(n: usize) -> Result<Self> {
        let cpus = all_cpus()?;
        let started = Instant::now();
        let logs = tempfile::Builder::new()
            .prefix("proclens-bench-logs-")
            .tempdir()?;
        let results: Vec<Result<Vec<TempCgroup>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..PARALLEL)
                .map(|t| {
                    let cpus = &cpus;
                    scope.spawn(move || -> Result<Vec<TempCgroup>> {
                        let mut mine = Vec::new();
                        for _ in (t..n).step_by(PARALLEL) {
                            check_interrupted()?;
                            mine.push(
                                TempCgroup::builder()
                                    .memory_limit(FLEET_MEMORY)
                                    .cpus(cpus)
                                    .create()?,
                            );
                        }
                        Ok(mine)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| bail!("cgroup thread panicked")))
                .collect()
        });
        let mut fleet = Self {
            cgroups: Vec::with_capacity(n),
            logs,
        };
        let mut first_error = None;
        for result in results {
            match result {
                Ok(mine) => fleet.cgroups.extend(mine),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            return Err(err.context("creating the container cgroups"));
        }
        eprintln!(
            "scale: {n} container cgroups created in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(fleet)
    }

    /// A log file for one set of readers.
    fn log(&self, name: &str) -> PathBuf {
        self.logs.path().join(format!("{name}.log"))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let started = Instant::now();
        let mut all = std::mem::take(&mut self.cgroups);
        let n = all.len();
        let chunk = n.div_ceil(PARALLEL).max(1);
        std::thread::scope(|scope| {
            while !all.is_empty() {
                let part: Vec<TempCgroup> = all.drain(..chunk.min(all.len())).collect();
                scope.spawn(move || drop(part));
            }
        });
        eprintln!(
            "scale: {n} container cgroups removed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// One reader per container of a [`Fleet`]. `Drop` kills them (SIGKILL to each reader's outer
/// process; its pid 1 follows through `PR_SET_PDEATHSIG`) and reaps them.
struct Readers {
    children: Vec<Child>,
    log: PathBuf,
}

impl Readers {
    /// Starts a `tick` reader in every container of `fleet`, reading `paths` in turn every
    /// second (first reads spread over the first second); with `reads` > 0 each stops reading
    /// after that many reads and stays alive. Failures go to `log`.
    fn spawn(fleet: &Fleet, paths: &[&Path], reads: u64, log: PathBuf) -> Result<Self> {
        let bin = reader_bin()?;
        let n = fleet.cgroups.len();
        let started = Instant::now();
        let results: Vec<(Vec<Child>, Option<anyhow::Error>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..PARALLEL)
                .map(|t| {
                    let (bin, log, cgroups) = (&bin, &log, &fleet.cgroups);
                    scope.spawn(move || {
                        let mut mine = Vec::new();
                        for i in (t..n).step_by(PARALLEL) {
                            let spawned = check_interrupted().and_then(|()| {
                                let offset = INTERVAL.as_millis() as usize * i / n;
                                spawn_reader(bin, &cgroups[i], paths, offset, reads, log)
                            });
                            match spawned {
                                Ok(child) => mine.push(child),
                                Err(err) => return (mine, Some(err)),
                            }
                        }
                        (mine, None)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| (Vec::new(), Some(anyhow::anyhow!("spawn panicked"))))
                })
                .collect()
        });
        let mut readers = Self {
            children: Vec::with_capacity(n),
            log,
        };
        let mut first_error = None;
        for (children, err) in results {
            readers.children.extend(children);
            if let Some(err) = err {
                first_error.get_or_insert(err);
            }
        }
        if let Some(err) = first_error {
            return Err(err.context("starting the container readers"));
        }
        eprintln!(
            "scale: {n} readers started in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(readers)
    }

    /// Fails, with the log's start, if any reader has exited.
    fn check_alive(&mut self) -> Result<()> {
        let mut dead = 0;
        for child in &mut self.children {
            if child.try_wait()?.is_some() {
                dead += 1;
            }
        }
        if dead > 0 {
            bail!(
                "{dead} of {} readers exited; their log starts:\n{}",
                self.children.len(),
                self.failures()?.1
            );
        }
        Ok(())
    }

    /// Lines in the failure log, and its first three lines.
    fn failures(&self) -> Result<(usize, String)> {
        let text = match std::fs::read_to_string(&self.log) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(err) => return Err(err).context(format!("read {}", self.log.display())),
        };
        let head: Vec<&str> = text.lines().take(3).collect();
        Ok((text.lines().count(), head.join("\n")))
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            if !matches!(
                process::wait_timeout(child, Duration::from_secs(5)),
                Ok(Some(_))
            ) {
                eprintln!("!!! reader {} did not exit after SIGKILL", child.id());
            }
        }
    }
}

/// Spawns one `tick` reader in `cg`, in its own process group (a Ctrl-C on the terminal reaches
/// only the bench, which then cleans up in order).
fn spawn_reader(
    bin: &Path,
    cg: &TempCgroup,
    paths: &[&Path],
    offset_ms: usize,
    reads: u64,
    log: &Path,
) -> Result<Child> {
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg("tick")
        .arg("--interval-ms")
        .arg(INTERVAL.as_millis().to_string())
        .arg("--offset-ms")
        .arg(offset_ms.to_string())
        .arg("--reads")
        .arg(reads.to_string());
    join_args(&mut cmd, cg);
    cmd.args(paths)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .process_group(0);
    cmd.spawn().with_context(|| format!("spawn {cmd:?}"))
}

/// The pids whose CPU and memory count for `subject` under `load`.
fn pids(subjects: &Subjects, subject: Subject, load: Load) -> Result<Vec<u32>> {
    match (subject, load) {
        (Subject::Proclens | Subject::Subtree, _) => subjects.proclens_pids(),
        (Subject::Lxcfs, Load::Meminfo) => Ok(vec![subjects.lxcfs.pid()]),
        (Subject::Lxcfs, _) => Ok(vec![subjects.lxcfs_load.pid()]),
        (Subject::Floor, _) => Ok(vec![subjects.floor.pid()]),
        _ => bail!("no daemon to measure for {subject}"),
    }
}

/// `subject`'s CPU and memory while every container of `fleet` puts `load` on it.
fn measure(
    options: &Options,
    subjects: &Subjects,
    fleet: &Fleet,
    load: Load,
    subject: Subject,
) -> Result<LoadResult> {
    let (file, reads) = match load {
        Load::Meminfo => (File::Meminfo, 0),
        Load::Loadavg => (File::Loadavg, 0),
        Load::LoadavgUpkeep => (File::Loadavg, 1),
    };
    let log = fleet.log(&format!("{load:?}-{subject}"));
    let path = match subject {
        // Each container reads its own subtree file.
        Subject::Subtree => subjects.subtree_template(file),
        _ => subjects.path(subject, file).to_path_buf(),
    };
    let mut readers = Readers::spawn(fleet, &[&path], reads, log)?;
    // Every reader has read at least once (first reads are spread over one interval).
    sleep(options.settle.max(INTERVAL * 2))?;
    readers.check_alive()?;
    let measured = pids(subjects, subject, load)?;
    let before = ProcSample::of(&measured)?;
    let started = Instant::now();
    sleep(options.window)?;
    let after = ProcSample::of(&measured)?;
    let elapsed = started.elapsed();
    ensure!(
        pids(subjects, subject, load)? == measured,
        "{subject}'s processes changed during the window (a worker restarted?)"
    );
    readers.check_alive()?;
    let (failures, head) = readers.failures()?;
    if failures > 0 {
        eprintln!("scale: {failures} failed reads on {subject}; first:\n{head}");
    }
    let result = LoadResult {
        load,
        subject,
        cpu_percent: cpu_percent(&before, &after, elapsed),
        rss_kb: after.rss_kb,
        pss_kb: after.pss_kb,
        unique: after.unique,
        failures,
        containers: fleet.cgroups.len(),
    };
    eprintln!(
        "scale: {} on {subject}: CPU {:.2}% of one core, RSS {} kB, PSS {} kB, each page once \
         {} kB",
        load.describe(),
        result.cpu_percent,
        result.rss_kb,
        result.pss_kb,
        result.unique.total_kb
    );
    Ok(result)
}

/// proclens-fused's memory while every container reads its five files in turn, once a second,
/// for `options.soak`.
fn soak(options: &Options, subjects: &Subjects, fleet: &Fleet) -> Result<Soak> {
    let paths: Vec<&Path> = File::ALL
        .iter()
        .map(|&f| subjects.path(Subject::Proclens, f))
        .collect();
    let mut readers = Readers::spawn(fleet, &paths, 0, fleet.log("soak"))?;
    sleep(options.settle.max(INTERVAL * 2))?;
    readers.check_alive()?;
    let pids = subjects.proclens_pids()?;
    let started = Instant::now();
    let first = ProcSample::of(&pids)?;
    let mut samples = vec![(Duration::ZERO, first)];
    let mut next_report = Duration::from_secs(60);
    while started.elapsed() < options.soak {
        let left = options.soak.saturating_sub(started.elapsed());
        sleep(left.min(SOAK_SAMPLE))?;
        let sample = ProcSample::of(&pids)?;
        let at = started.elapsed();
        samples.push((at, sample));
        if at >= next_report {
            eprintln!(
                "soak: {:>4} s  RSS {} kB  PSS {} kB  each page once {} kB",
                at.as_secs(),
                sample.rss_kb,
                sample.pss_kb,
                sample.unique.total_kb
            );
            next_report += Duration::from_secs(60);
        }
        readers.check_alive()?;
    }
    ensure!(
        subjects.proclens_pids()? == pids,
        "proclens-fused's processes changed during the soak (a worker restarted?)"
    );
    let (failures, head) = readers.failures()?;
    if failures > 0 {
        eprintln!("soak: {failures} failed reads; first:\n{head}");
    }
    let last = samples.last().map_or(first, |(_, s)| *s);
    Ok(Soak {
        cpu_percent: cpu_percent(&first, &last, started.elapsed()),
        samples,
        failures,
        containers: fleet.cgroups.len(),
    })
}

/// Runs the scale measurements and the soak, recording results and failures in `report`.
pub fn run(options: &Options, subjects: &mut Subjects, report: &mut Report) {
    for subject in [Subject::Proclens, Subject::Lxcfs] {
        match pids(subjects, subject, Load::Meminfo).and_then(|p| ProcSample::of(&p)) {
            Ok(sample) => report.idle.push((subject, sample)),
            Err(err) => report.failed("idle memory", err),
        }
    }
    let fleet = match Fleet::create(options.containers) {
        Ok(fleet) => fleet,
        Err(err) => return report.failed("containers", err),
    };
    for load in [Load::Meminfo, Load::Loadavg, Load::LoadavgUpkeep] {
        // The floor answers every file alike: its cost under the meminfo load is what the FUSE
        // protocol alone costs at this rate.
        let compared: &[Subject] = match load {
            Load::Meminfo => &[Subject::Proclens, Subject::Lxcfs, Subject::Floor],
            _ => &[Subject::Proclens, Subject::Lxcfs],
        };
        for &subject in compared {
            match measure(options, subjects, &fleet, load, subject) {
                Ok(result) => report.loads.push(result),
                Err(err) => report.failed(&format!("{} on {subject}", load.describe()), err),
            }
            if check_interrupted().is_err() {
                return;
            }
        }
    }
    match soak(options, subjects, &fleet) {
        Ok(soak) => report.soak = Some(soak),
        Err(err) => report.failed("soak", err),
    }
    // Last, so the subtree's table does not count in the memory of the lxcfs layout's runs.
    match measure(options, subjects, &fleet, Load::Meminfo, Subject::Subtree) {
        Ok(result) => report.loads.push(result),
        Err(err) => report.failed("meminfo on the subtree", err),
    }
}
