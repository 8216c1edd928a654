//! `proclens-bench`: proclens-fused against lxcfs 5.0.3, a FUSE floor and the kernel's own /proc,
//! side by side in one run on the same cgroups, with the targets marked met or missed.
//! Run it as root through `scripts/bench.sh` (which builds everything in release mode first);
//! the results and how to read them are in BENCHMARKS.md.
//!
//! Phases, each independent (a failed phase is reported and the next one still runs):
//! 1. [`latency`]: open+read+close ops/s and p50/p99 latency of meminfo, stat, cpuinfo, uptime
//!    and loadavg at 1 and 8 reader threads, from a reader in a container cgroup (memory limit,
//!    cpuset) and its own pid namespace, against every subject in turn.
//! 2. [`latency::first_reads`]: the first read of a new container (new cgroup, new pid
//!    namespace), median over fresh containers, proclens against lxcfs.
//! 3. [`scale`]: 1,000 live containers, each with a reader in its own pid namespace reading once a
//!    second: CPU and RSS of proclens and lxcfs under the same load, the cost of loadavg for all
//!    of them (lxcfs with `-l`), then proclens's RSS over a soak.
//!
//! Every cgroup, mount and process it creates is behind an RAII guard; SIGINT/SIGTERM stop it at
//! the next check (within a second or one measurement point) and clean up.

mod report;
mod scale;
mod subjects;

mod latency;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proclens_tests::rig;

use report::{Machine, Report};
use subjects::Subjects;

/// Raised by SIGINT/SIGTERM: phases stop at their next check and the guards clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

const USAGE: &str = "\
usage: proclens-bench [--quick] [--soak SECS] [--containers N] [--rounds N] [--point-secs S]
                      [--window SECS] [--first-reads N] [--skip-latency] [--skip-first]
                      [--skip-scale] [--out FILE]

Runs as root. Without options: the full run (3 s per latency point, 3 rounds, 20 first reads,
1,000 containers, 30 s CPU windows, 600 s soak). --quick: 1 s points, 1 round, 8 first reads,
10 s windows, 60 s soak. Other options override --quick. --out also writes the results as
Markdown to FILE.
Binaries: PROCLENS_FUSED_BIN (default <target>/proclens-fused), PROCLENS_FLOOR_BIN,
PROCLENS_BENCH_READER_BIN, PROCLENS_LXCFS_BIN (default /usr/bin/lxcfs).";

/// What to run and for how long.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `--quick` preset was chosen.
    pub quick: bool,
    /// Measured duration of one latency point.
    pub point: Duration,
    /// Unmeasured reads before each latency point.
    pub warmup: Duration,
    /// Latency rounds; each point's result is the median over rounds.
    pub rounds: usize,
    /// Fresh containers per file and subject for the first-read measurement.
    pub first_reads: usize,
    /// Live containers of the scale phase.
    pub containers: usize,
    /// CPU measurement window of the scale phase.
    pub window: Duration,
    /// Time after the readers started before a window opens (every reader has read).
    pub settle: Duration,
    /// Length of proclens's RSS soak.
    pub soak: Duration,
    /// Phases to skip.
    pub skip_latency: bool,
    /// Skip the first-read phase.
    pub skip_first: bool,
    /// Skip the 1,000-container phase and the soak.
    pub skip_scale: bool,
    /// Where to write the Markdown results.
    pub out: Option<PathBuf>,
}

impl Options {
    /// The full run's settings.
    fn full() -> Self {
        Self {
            quick: false,
            point: Duration::from_secs(3),
            warmup: Duration::from_millis(500),
            rounds: 3,
            first_reads: 20,
            containers: 1000,
            window: Duration::from_secs(30),
            settle: Duration::from_secs(5),
            soak: Duration::from_secs(600),
            skip_latency: false,
            skip_first: false,
            skip_scale: false,
            out: None,
        }
    }

    /// Parses the command line; `Ok(None)` for `--help`.
    fn parse(args: Vec<String>) -> Result<Option<Self>> {
        let mut o = Self::full();
        if args.iter().any(|a| a == "--quick") {
            o.quick = true;
            o.point = Duration::from_secs(1);
            o.rounds = 1;
            o.warmup = Duration::from_millis(300);
            o.first_reads = 8;
            o.window = Duration::from_secs(10);
            o.soak = Duration::from_secs(60);
        }
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            let mut number = || -> Result<u64> {
                let v = value()?;
                v.parse().with_context(|| format!("{arg} {v}"))
            };
            match arg.as_str() {
                "--quick" => {}
                "--help" | "-h" => return Ok(None),
                "--soak" => o.soak = Duration::from_secs(number()?),
                "--containers" => o.containers = usize::try_from(number()?)?.max(1),
                "--rounds" => o.rounds = usize::try_from(number()?)?.max(1),
                "--point-secs" => o.point = Duration::from_secs(number()?.max(1)),
                "--window" => o.window = Duration::from_secs(number()?.max(1)),
                "--first-reads" => o.first_reads = usize::try_from(number()?)?.max(1),
                "--skip-latency" => o.skip_latency = true,
                "--skip-first" => o.skip_first = true,
                "--skip-scale" => o.skip_scale = true,
                "--out" => o.out = Some(PathBuf::from(value()?)),
                _ => bail!("unknown argument {arg:?}\n{USAGE}"),
            }
        }
        Ok(Some(o))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match Options::parse(args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("proclens-bench: {err:#}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("proclens-bench: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs every phase; `Ok(false)` if one of them failed (the report says which and why).
fn run(options: &Options) -> Result<bool> {
    rig::preflight()?;
    install_interrupt_handlers();
    raise_fd_limit(options.containers)?;
    let machine = Machine::detect();
    eprintln!("proclens-bench: {}", machine.one_line());
    let started = Instant::now();
    let mut report = Report::new(options.clone(), machine);
    {
        let mut subjects = Subjects::start().context("starting the filesystems")?;
        eprintln!("proclens-bench: {}", subjects.describe());
        if !options.skip_latency {
            match latency::points(options, &mut subjects) {
                Ok(points) => report.latency = points,
                Err(err) => report.failed("latency", err),
            }
        }
        if !options.skip_first && !interrupted() {
            match latency::first_reads(options, &subjects) {
                Ok(first) => report.first_reads = first,
                Err(err) => report.failed("first read", err),
            }
        }
        if !options.skip_scale && !interrupted() {
            scale::run(options, &mut subjects, &mut report);
        }
        subjects.check_alive(&mut report);
    }
    report.elapsed = started.elapsed();
    let text = report.markdown();
    println!("{text}");
    if let Some(path) = &options.out {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        }
        std::fs::write(path, &text).with_context(|| format!("write {}", path.display()))?;
        eprintln!("proclens-bench: results written to {}", path.display());
    }
    if interrupted() {
        bail!("interrupted; partial results above");
    }
    Ok(report.errors.is_empty())
}

/// True once SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Fails if the run was interrupted: call between steps.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `duration` in short steps, failing early if the run is interrupted.
pub fn sleep(duration: Duration) -> Result<()> {
    let deadline = Instant::now() + duration;
    loop {
        check_interrupted()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM raise [`INTERRUPTED`] instead of killing the bench, so guards clean up.
fn install_interrupt_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_interrupt as *const () as libc::sighandler_t) };
    }
}

/// Raises the soft open-file limit to the hard one when `containers` readers might need more
/// than it allows (the bench itself holds a few fds per container at most).
fn raise_fd_limit(containers: usize) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    let want = (containers as u64) * 4 + 1024;
    if limit.rlim_cur < want && limit.rlim_cur < limit.rlim_max {
        let old = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: a valid pointer to an initialised rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
        }
        eprintln!(
            "proclens-bench: raised the open-file limit from {old} to {}",
            limit.rlim_cur
        );
    }
    if limit.rlim_cur < want {
        eprintln!(
            "proclens-bench: warning: open-file limit {} is below the {want} this run may need",
            limit.rlim_cur
        );
    }
    Ok(())
}
