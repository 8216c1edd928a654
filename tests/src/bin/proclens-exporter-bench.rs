//! The exporter benchmark: what one scrape of `/metrics` costs the release `proclens-exporter`
//! at 100, 1,000 and 5,000 live cgroups (each with one sleeping process, limits like the
//! collector benchmark's), against the kernel floor of reading the same cgroup files in the
//! same run (one pread of a kept descriptor each, on `--threads` threads).
//!
//! For each count: the cgroups are created under one parent; the exporter is started with a
//! configuration whose `[discovery] roots` is that parent and `[cri] endpoint = ""`, on
//! 127.0.0.1 and a free port; two scrapes warm it up; then `--rounds` plain HTTP/1.1 scrapes
//! (no compression) are timed end to end, and as many with `Accept-Encoding: gzip`. The
//! exporter's CPU time comes from `/proc/<pid>/stat` (utime + stime in clock ticks, 10 ms at
//! USER_HZ=100), so it is taken over all rounds and divided by their number; its memory from
//! `/proc/<pid>/status` (VmRSS and VmHWM) after the rounds. Where the time goes: the exporter's
//! own `proclens_exporter_collect_seconds` of each scrape (listing, reading and writing the
//! container families), and [`Collector::collect`] alone in this process with the exporter's
//! number of kept descriptors, then with as many as this process's open-file limit holds. Run
//! as root, with release builds (`--bin` selects in every package named, so both are named):
//!
//!     cargo build --release -p proclens-exporter -p proclens-tests --bin proclens-exporter --bin proclens-exporter-bench
//!     ./target/release/proclens-exporter-bench [--cgroups 100,1000,5000] [--rounds 30] [--threads N] [--exporter PATH]
//!
//! Prints two Markdown tables (medians and 90th percentiles over the rounds).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proclens_cgroup::files::FileCache;
use proclens_cgroup::{Collector, Discovery, HostPaths, Parts};
use proclens_tests::cgbench::{ms, open_all, p50_p90, pread_rounds, raise_nofile, us, Population};
use proclens_tests::perf::{clock_ticks_per_sec, status_kb, user_system_ticks};

/// Command-line options.
struct Options {
    cgroups: Vec<usize>,
    rounds: usize,
    /// Threads of the floor and of the in-process collection (0: the host's available
    /// parallelism, as the exporter's default).
    threads: usize,
    exporter: PathBuf,
}

fn parse_args() -> Result<Options> {
    let beside = std::env::current_exe()
        .context("this binary's path")?
        .with_file_name("proclens-exporter");
    let mut options = Options {
        cgroups: vec![100, 1000, 5000],
        rounds: 30,
        threads: 0,
        exporter: beside,
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
            "--exporter" => options.exporter = value()?.into(),
            other => bail!(
                "unknown option {other:?} (options: --cgroups N[,N...] --rounds N --threads N \
                 --exporter PATH)"
            ),
        }
    }
    if options.rounds == 0 {
        bail!("--rounds: at least 1");
    }
    Ok(options)
}

/// A running `proclens-exporter`, killed and reaped on drop.
struct ExporterProcess {
    child: Child,
    url: String,
    stderr: PathBuf,
}

impl ExporterProcess {
    /// Starts `binary` with `config` on `port` and waits until `/healthz` answers.
    fn start(binary: &Path, config: &Path, port: u16, stderr: PathBuf) -> Result<Self> {
        let log = std::fs::File::create(&stderr).context("create the exporter's log")?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let mut process = ExporterProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
            stderr,
        };
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(1))
            .build();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = process.child.try_wait()? {
                bail!("the exporter exited ({status}): {}", process.log());
            }
            if agent
                .get(&format!("{}/healthz", process.url))
                .call()
                .is_ok()
            {
                return Ok(process);
            }
            if Instant::now() > deadline {
                bail!("the exporter did not answer in 30 s: {}", process.log());
            }
            // Polling /healthz: the exporter says nothing else when it is listening.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of the exporter's log, for errors.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ExporterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scrape's response.
struct Scrape {
    elapsed: Duration,
    body: Vec<u8>,
    gzip: bool,
}

/// One timed GET of `/metrics`, the whole body read.
fn scrape(agent: &ureq::Agent, url: &str, gzip: bool) -> Result<Scrape> {
    let mut request = agent.get(&format!("{url}/metrics"));
    if gzip {
        request = request.set("Accept-Encoding", "gzip");
    }
    let start = Instant::now();
    let response = request.call().context("GET /metrics")?;
    let encoded = response.header("Content-Encoding") == Some("gzip");
    let mut body = Vec::new();
    response.into_reader().read_to_end(&mut body)?;
    let elapsed = start.elapsed();
    if encoded != gzip {
        bail!("asked for gzip: {gzip}, Content-Encoding gzip: {encoded}");
    }
    Ok(Scrape {
        elapsed,
        body,
        gzip: encoded,
    })
}

impl Scrape {
    /// The exposition text (decompressed if need be).
    fn text(&self) -> Result<String> {
        if self.gzip {
            let mut text = String::new();
            flate2::read::GzDecoder::new(&self.body[..]).read_to_string(&mut text)?;
            Ok(text)
        } else {
            Ok(String::from_utf8(self.body.clone())?)
        }
    }
}

/// The value of the sample of family `name` without labels.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Series in an exposition: its lines that are neither comments nor empty.
fn series(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// What `rounds` scrapes of one kind measured.
struct Rounds {
    times: Vec<Duration>,
    /// `proclens_exporter_collect_seconds` of each scrape.
    collect: Vec<Duration>,
    /// Exporter CPU time over all rounds, divided by their number: user and system.
    cpu_per_scrape: (Duration, Duration),
    /// Body bytes of the last scrape (compressed when gzip).
    body: usize,
    /// Series of the last scrape.
    series: usize,
}

fn rounds(exporter: &ExporterProcess, n: usize, rounds: usize, gzip: bool) -> Result<Rounds> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    for _ in 0..2 {
        let warm = scrape(&agent, &exporter.url, gzip)?;
        let text = warm.text()?;
        let containers = gauge(&text, "proclens_exporter_containers");
        if containers != Some(n as f64) {
            bail!("the exporter found {containers:?} containers, created {n}");
        }
    }
    let mut times = Vec::with_capacity(rounds);
    let mut collect = Vec::with_capacity(rounds);
    let mut last = None;
    let before = user_system_ticks(exporter.pid())?;
    for _ in 0..rounds {
        let scrape = scrape(&agent, &exporter.url, gzip)?;
        times.push(scrape.elapsed);
        // Between scrapes, while the exporter waits: this does not count in its CPU time.
        let seconds = gauge(&scrape.text()?, "proclens_exporter_collect_seconds")
            .context("no proclens_exporter_collect_seconds")?;
        collect.push(Duration::from_secs_f64(seconds));
        last = Some(scrape);
    }
    let after = user_system_ticks(exporter.pid())?;
    let per_scrape = |ticks: u64| {
        Duration::from_secs_f64(ticks as f64 / clock_ticks_per_sec() as f64 / rounds as f64)
    };
    let cpu_per_scrape = (
        per_scrape(after.0 - before.0),
        per_scrape(after.1 - before.1),
    );
    let last = last.context("no round")?;
    let text = last.text()?;
    Ok(Rounds {
        times,
        collect,
        cpu_per_scrape,
        body: last.body.len(),
        series: series(&text),
    })
}

/// A port nobody listens on now (the exporter binds it next).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The descriptors the exporter keeps for cgroup files with the default `open_files`: 20,000,
/// at most half the open-file hard limit (which it raises its soft limit to).
fn exporter_kept_descriptors() -> Result<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    Ok(20_000.min(usize::try_from(limit.rlim_max / 2).unwrap_or(usize::MAX)))
}

/// CPU time as `total (user + system)`.
fn cpu((user, system): (Duration, Duration)) -> String {
    format!("{} ({} + {})", ms(user + system), ms(user), ms(system))
}

fn format_rss(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn run(n: usize, options: &Options, nofile: u64, threads: usize) -> Result<[String; 2]> {
    eprintln!("creating {n} cgroups with one sleeper each");
    let population = Population::create(n)?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("exporter.toml");
    let port = free_port()?;
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[discovery]\nroots = [\"/{}\"]\n[cri]\nendpoint = \"\"\n",
            population.top().name()
        ),
    )?;
    eprintln!(
        "scraping {} ({} rounds)",
        options.exporter.display(),
        options.rounds
    );
    let exporter = ExporterProcess::start(
        &options.exporter,
        &config,
        port,
        dir.path().join("exporter.log"),
    )?;
    let mut plain = rounds(&exporter, n, options.rounds, false)?;
    let rss = status_kb(exporter.pid(), "VmRSS:")?;
    let peak = status_kb(exporter.pid(), "VmHWM:")?;
    let mut gzip = rounds(&exporter, n, options.rounds, true)?;
    let peak_gzip = status_kb(exporter.pid(), "VmHWM:")?;
    drop(exporter);

    // The cgroup files alone, in this process, as the exporter reads them: through
    // `Collector::collect` with as many kept descriptors and on as many threads; then with as
    // many kept as this process's open-file limit holds (what keeping more would save).
    let discovery = Discovery {
        roots: vec![format!("/{}", population.top().name())],
        ..Discovery::default()
    };
    let kept_by_exporter = exporter_kept_descriptors()?;
    let most = usize::try_from(nofile)
        .unwrap_or(usize::MAX)
        .saturating_sub(512);
    let mut collect_alone = Vec::with_capacity(options.rounds);
    let mut collect_most = Vec::with_capacity(options.rounds);
    for (capacity, times) in [
        (kept_by_exporter, &mut collect_alone),
        (most, &mut collect_most),
    ] {
        let collector = Collector::discover(HostPaths::default(), FileCache::for_rounds(capacity))?;
        for round in 0..=options.rounds {
            let start = Instant::now();
            let collected = collector.collect(&discovery, Parts::ALL, threads)?;
            collector.files().close_idle();
            if round > 0 {
                times.push(start.elapsed());
            }
            if collected.len() != n {
                bail!("collected {} cgroups, created {n}", collected.len());
            }
        }
    }

    // The floor: one pread of a kept descriptor of each file, on `threads` threads. When the
    // open-file limit cannot hold them all, the first ones that fit are read and the time
    // scaled to all (each file costs the kernel about the same).
    let probe = Collector::discover(HostPaths::default(), FileCache::new(0))?;
    let files = population.snapshot_files(&probe);
    let fit = files.len().min(
        usize::try_from(nofile)
            .unwrap_or(usize::MAX)
            .saturating_sub(512),
    );
    let kept = open_all(&files[..fit])?;
    let scale = files.len() as f64 / fit.max(1) as f64;
    let mut floor = pread_rounds(&kept, threads, options.rounds)?;
    drop(kept);
    for time in &mut floor {
        *time = time.mul_f64(scale);
    }
    drop(population);

    let (p50, p90) = p50_p90(&mut plain.times).context("no round")?;
    let (floor50, _) = p50_p90(&mut floor).context("no round")?;
    let (collect50, collect90) = p50_p90(&mut plain.collect).context("no round")?;
    let (alone50, alone90) = p50_p90(&mut collect_alone).context("no round")?;
    let (most50, most90) = p50_p90(&mut collect_most).context("no round")?;
    let (gzip50, gzip90) = p50_p90(&mut gzip.times).context("no round")?;
    let floor_note = if fit < files.len() {
        format!(" (scaled from {fit} of {} files)", files.len())
    } else {
        format!(" ({} files)", files.len())
    };
    let main = format!(
        "| {n} | {} / {} | {} | {} | {} / {} | {} | {:.1} MB | {}{floor_note} | {:.1} |",
        ms(p50),
        ms(p90),
        us(p50, n),
        cpu(plain.cpu_per_scrape),
        format_rss(rss),
        format_rss(peak),
        plain.series,
        plain.body as f64 / 1e6,
        ms(floor50),
        p50.as_secs_f64() / floor50.as_secs_f64(),
    );
    let split = format!(
        "| {n} | {} / {} | {} / {} | {} / {} | {} | {} / {} | {} | {:.2} MB | {} |",
        ms(collect50),
        ms(collect90),
        ms(alone50),
        ms(alone90),
        ms(most50),
        ms(most90),
        ms(p50.saturating_sub(collect50)),
        ms(gzip50),
        ms(gzip90),
        cpu(gzip.cpu_per_scrape),
        gzip.body as f64 / 1e6,
        format_rss(peak_gzip),
    );
    Ok([main, split])
}

fn main() -> Result<()> {
    let options = parse_args()?;
    if !options.exporter.exists() {
        bail!(
            "no exporter at {} (cargo build --release -p proclens-exporter, or --exporter PATH)",
            options.exporter.display()
        );
    }
    let nofile = raise_nofile()?;
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let kept = exporter_kept_descriptors()?;
    let most = nofile.saturating_sub(512);
    let mut main_rows = vec![
        format!(
            "| cgroups | scrape p50 / p90 | per container (p50) | exporter CPU per scrape (user + system) | RSS / peak | series | body | floor p50: pread of kept descriptors on {threads} threads | scrape p50 / floor p50 |"
        ),
        "|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    let mut split_rows = vec![
        format!(
            "| cgroups | exporter's collect_seconds p50 / p90 | `Collector::collect` alone p50 / p90 ({kept} kept descriptors, {threads} threads) | the same, {most} kept descriptors | scrape p50 less collect_seconds p50 | gzip scrape p50 / p90 | gzip CPU per scrape (user + system) | gzip body | peak RSS after gzip |"
        ),
        "|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    for &n in &options.cgroups {
        let [main, split] = run(n, &options, nofile, threads)?;
        main_rows.push(main);
        split_rows.push(split);
    }
    println!("{}\n\n{}", main_rows.join("\n"), split_rows.join("\n"));
    Ok(())
}
