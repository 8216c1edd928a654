//! The collector benchmark: how long `proclens-cgroup` takes to list every container of a host
//! and read a full snapshot ([`Parts::ALL`]) of each, at 1,000 and 5,000 live cgroups (each with
//! one sleeping process, limits in every v1 hierarchy or in v2), against the floor of reading
//! the same files with one open+read+close each, or one pread of a kept descriptor (on one
//! thread and on `--threads`), and nothing else. Each round times, one after the other so that
//! all see the same load: [`Collector::list`] then [`Collector::snapshot`] of each on this
//! thread; `list` then [`Collector::snapshot_many`] on `--threads` threads; and
//! [`Collector::collect`] (both in one call, each file read once) on this thread and on
//! `--threads` threads. Run as root:
//!
//!     cargo run --release -p proclens-tests --bin proclens-collect-bench -- [--cgroups 1000,5000] [--rounds 20] [--threads N] [--kept-only]
//!
//! Prints a Markdown table (median and p90 over the rounds, per collection and per container).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proclens_cgroup::files::FileCache;
use proclens_cgroup::{Collector, Discovery, HostPaths, Parts};
use proclens_tests::cgbench::{
    ms, open_all, p50_p90, pread_rounds, raise_nofile, snapshot_files, us, Population,
};

/// Command-line options.
struct Options {
    cgroups: Vec<usize>,
    rounds: usize,
    /// Threads of the parallel snapshots (0: the host's available parallelism).
    threads: usize,
    /// Only the run with kept descriptors (for a profiler).
    kept_only: bool,
}

fn parse_args() -> Result<Options> {
    let mut options = Options {
        cgroups: vec![1000, 5000],
        rounds: 20,
        threads: 0,
        kept_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--cgroups" => {
                options.cgroups = value()?
                    .split(',')
                    .map(|n| n.parse().context("--cgroups: numbers separated by commas"))
                    .collect::<Result<_>>()?
            }
            "--rounds" => options.rounds = value()?.parse().context("--rounds: a number")?,
            "--threads" => options.threads = value()?.parse().context("--threads: a number")?,
            "--kept-only" => options.kept_only = true,
            other => bail!(
                "unknown option {other:?} (options: --cgroups N[,N...] --rounds N --threads N \
                 --kept-only)"
            ),
        }
    }
    Ok(options)
}

/// One subject's times per round: the list alone (when it is a call of its own), the list with
/// the snapshots, and the CPU time of all the process's threads in that.
#[derive(Default)]
struct Timings {
    list: Vec<Duration>,
    total: Vec<Duration>,
    cpu: Vec<Duration>,
}

impl Timings {
    fn push(&mut self, list: Option<Duration>, cpu: Duration, total: Duration) {
        self.list.extend(list);
        self.total.push(total);
        self.cpu.push(cpu);
    }
}

/// CPU time used so far by all of this process's threads (those that ended included).
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec passed.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn run(n: usize, options: &Options, nofile: u64) -> Result<Vec<String>> {
    let rounds = options.rounds;
    eprintln!("creating {n} cgroups with one sleeper each");
    let population = Population::create(n)?;
    let discovery = Discovery {
        roots: vec![population.top().name().to_string()],
        ..Discovery::default()
    };
    let mut rows = Vec::new();
    // Kept descriptors: as many as the snapshot files (what the exporter would configure),
    // and none (every file opened for every read).
    let files_per_cgroup = {
        let probe = Collector::discover(HostPaths::default(), FileCache::new(0))?;
        snapshot_files(&probe, &format!("/{}", population.children()[0].name())).len()
    };
    let wanted = (files_per_cgroup + 4) * n;
    let keep = wanted.min(nofile.saturating_sub(256) as usize);
    let capacities: &[usize] = if options.kept_only {
        &[keep]
    } else {
        &[keep, 0]
    };
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    for &capacity in capacities {
        // As an exporter would: a cache for reads in rounds, its idle descriptors closed after
        // each collection (timed with it).
        let collector = Collector::discover(HostPaths::default(), FileCache::for_rounds(capacity))?;
        // Per round, one after the other: the list, then the snapshots on this thread; the
        // list, then the snapshots on `threads` threads; the collection (list and snapshots in
        // one call) on this thread, and on `threads` threads.
        let subjects = [
            "list, then `snapshot` of each on this thread".to_string(),
            format!("list, then `snapshot_many` on {threads} threads"),
            "`collect` on this thread".to_string(),
            format!("`collect` on {threads} threads"),
        ];
        let mut timings: Vec<Timings> = subjects.iter().map(|_| Timings::default()).collect();
        for round in 0..=rounds {
            for (subject, timings) in timings.iter_mut().enumerate() {
                let cpu = process_cpu_time();
                let start = Instant::now();
                let (listed, snapshots) = match subject {
                    0 | 1 => {
                        let found = collector.list(&discovery)?;
                        let listed = start.elapsed();
                        let sets: Vec<_> = found.iter().map(|f| &f.set).collect();
                        let snapshots = match subject {
                            0 => sets
                                .iter()
                                .map(|set| collector.snapshot(set, Parts::ALL))
                                .collect(),
                            _ => collector.snapshot_many(&sets, Parts::ALL, threads),
                        };
                        (Some(listed), snapshots)
                    }
                    _ => {
                        let threads = if subject == 2 { 1 } else { threads };
                        let collected = collector.collect(&discovery, Parts::ALL, threads)?;
                        (None, collected.into_iter().map(|(_, snap)| snap).collect())
                    }
                };
                collector.files().close_idle();
                let total = start.elapsed();
                let cpu = process_cpu_time() - cpu;
                if snapshots.len() != n {
                    bail!("listed {} cgroups, created {n}", snapshots.len());
                }
                for snap in snapshots {
                    snap?;
                }
                // Round 0 opens the descriptors: not counted.
                if round > 0 {
                    timings.push(listed, cpu, total);
                }
            }
        }
        for (subject, timings) in subjects.iter().zip(&mut timings) {
            // The snapshots alone: each round's total less its list, paired before sorting.
            let mut snapshots: Vec<Duration> = (timings.total.iter().zip(&timings.list))
                .map(|(total, list)| *total - *list)
                .collect();
            let (list, snapshots) = match (p50_p90(&mut timings.list), p50_p90(&mut snapshots)) {
                (Some((list50, list90)), Some((snap50, snap90))) => (
                    format!("{} / {}", ms(list50), ms(list90)),
                    format!("{} / {}", ms(snap50), ms(snap90)),
                ),
                _ => ("–".to_string(), "–".to_string()),
            };
            let (cpu50, _) = p50_p90(&mut timings.cpu).unwrap_or_default();
            let (full50, full90) = p50_p90(&mut timings.total).unwrap_or_default();
            rows.push(format!(
                "| {n} | {subject}, {capacity} kept descriptors | {list} | {snapshots} | {} / {} | {} | {} |",
                ms(full50),
                ms(full90),
                ms(cpu50),
                us(full50, n)
            ));
        }
    }
    if options.kept_only {
        return Ok(rows);
    }
    // The floor: open+read+close of each file of each cgroup, the list already known.
    let probe = Collector::discover(HostPaths::default(), FileCache::new(0))?;
    let files = population.snapshot_files(&probe);
    let mut floor_times = Vec::new();
    for round in 0..=rounds {
        let start = Instant::now();
        for file in &files {
            std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
        }
        if round > 0 {
            floor_times.push(start.elapsed());
        }
    }
    let (floor50, floor90) = p50_p90(&mut floor_times).unwrap_or_default();
    rows.push(format!(
        "| {n} | floor: open+read+close of the same {} files, no parsing | – | {} / {} | – | – | {} |",
        files.len(),
        ms(floor50),
        ms(floor90),
        us(floor50, n)
    ));
    // The kept-descriptor floor: one pread at offset 0 of each file through a descriptor kept
    // open, into one reused buffer: the kernel's own cost of generating the files.
    if files.len() + 256 <= nofile as usize {
        let kept = open_all(&files)?;
        let mut pread_times = pread_rounds(&kept, 1, rounds)?;
        let (kept50, kept90) = p50_p90(&mut pread_times).unwrap_or_default();
        rows.push(format!(
            "| {n} | floor: pread of kept descriptors of the same files, no parsing | – | {} / {} | – | – | {} |",
            ms(kept50),
            ms(kept90),
            us(kept50, n)
        ));
        // The same on `threads` threads, each its share of the descriptors: the kernel's cost
        // with every core generating files.
        let mut parallel_times = pread_rounds(&kept, threads, rounds)?;
        let (kept50, kept90) = p50_p90(&mut parallel_times).unwrap_or_default();
        rows.push(format!(
            "| {n} | floor: the same preads on {threads} threads | – | {} / {} | – | – | {} |",
            ms(kept50),
            ms(kept90),
            us(kept50, n)
        ));
    }
    drop(population);
    Ok(rows)
}

fn main() -> Result<()> {
    let options = parse_args()?;
    let nofile = raise_nofile()?;
    let mut rows = vec![
        "| cgroups | subject | list p50 / p90 | full snapshots p50 / p90 | list + full snapshots p50 / p90 | CPU time p50 (all threads) | per cgroup (p50) |"
            .to_string(),
        "|---|---|---|---|---|---|---|".to_string(),
    ];
    for &n in &options.cgroups {
        rows.extend(run(n, &options, nofile)?);
    }
    println!("{}", rows.join("\n"));
    Ok(())
}
