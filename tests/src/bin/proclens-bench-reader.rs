//! `proclens-bench-reader`: the benchmark's reader, placed like a container's process. It writes
//! its pid to every `--join` file (joining those cgroups), `unshare`s a pid namespace and forks:
//! the child is pid 1 of a fresh namespace, dies with its parent (`PR_SET_PDEATHSIG`) and does
//! the reading; the parent only waits and exits with the child's status.
//!
//! Usage: `proclens-bench-reader MODE [OPTIONS] PATH...`
//!
//! | mode   | what the child does                                                 | stdout |
//! |--------|---------------------------------------------------------------------|--------|
//! | `loop` | `--threads` threads each open+read+close the one PATH in a loop:    | one summary line (below) |
//! |        | unmeasured for `--warmup-ms`, then measured for `--ms`              |        |
//! | `once` | one open+read+close of the one PATH (a new container's first read)  | `ns=N bytes=N` |
//! | `tick` | every `--interval-ms` (first after `--offset-ms`), open+read+close  | nothing; failures on stderr |
//! |        | the next PATH, round robin, until killed; with `--reads N`, stops   |        |
//! |        | reading after N reads and stays alive. `{pid}` in a PATH is the     |        |
//! |        | reader's host pid, and that PATH's directory is opened once (as a   |        |
//! |        | bind mount pins it): a per-container subtree file                   |        |
//!
//! A read is `open(2)`, `read(2)` of 64 KiB until it returns 0, `close(2)`: what `cat` does.
//! The `loop` summary is [`proclens_tests::perf::LatencySummary`]'s line: operations started in
//! the measured window, their latency percentiles in ns, failures, bytes of the last read, and
//! every operation including the warm-up's.
//!
//! Options: `--join FILE` (repeatable), `--threads N` (1), `--ms D` (3000), `--warmup-ms W`
//! (500), `--interval-ms I` (1000), `--offset-ms O` (0), `--reads N` (0: never stop).
//! Exit status 1 with one line on stderr for any start-up error or a failed `once` read.

use std::fs::File;
use std::io::{self, Read};
use std::process::ExitCode;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use proclens_tests::enter::{enter, Entered, PidNs};
use proclens_tests::perf::LatencySummary;

/// Size of each `read(2)`.
const CHUNK: usize = 64 * 1024;

/// What the child does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Loop,
    Once,
    Tick,
}

/// Parsed command line.
struct Options {
    mode: Mode,
    join: Vec<String>,
    paths: Vec<String>,
    threads: usize,
    ms: u64,
    warmup_ms: u64,
    interval_ms: u64,
    offset_ms: u64,
    reads: u64,
}

fn main() -> ExitCode {
    match start() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("proclens-bench-reader: {err}");
            ExitCode::from(1)
        }
    }
}

/// Parses the command line.
fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mode = match args.next().as_deref() {
        Some("loop") => Mode::Loop,
        Some("once") => Mode::Once,
        Some("tick") => Mode::Tick,
        other => return Err(format!("unknown mode {other:?}: loop, once or tick")),
    };
    let mut o = Options {
        mode,
        join: Vec::new(),
        paths: Vec::new(),
        threads: 1,
        ms: 3000,
        warmup_ms: 500,
        interval_ms: 1000,
        offset_ms: 0,
        reads: 0,
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match arg.as_str() {
            "--join" => o.join.push(value()?),
            "--threads" => o.threads = usize::try_from(number(value()?)?).unwrap_or(1).max(1),
            "--ms" => o.ms = number(value()?)?,
            "--warmup-ms" => o.warmup_ms = number(value()?)?,
            "--interval-ms" => o.interval_ms = number(value()?)?.max(1),
            "--offset-ms" => o.offset_ms = number(value()?)?,
            "--reads" => o.reads = number(value()?)?,
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            _ => o.paths.push(arg),
        }
    }
    if o.paths.is_empty() || (o.mode != Mode::Tick && o.paths.len() != 1) {
        return Err("loop and once take one PATH, tick one or more".into());
    }
    Ok(o)
}

/// Joins the cgroups, enters a fresh pid namespace, forks and runs the mode in the child.
fn start() -> Result<ExitCode, String> {
    let o = options()?;
    if let Entered::Parent(code) = enter(&o.join, PidNs::New)? {
        return Ok(ExitCode::from(code));
    }
    match o.mode {
        Mode::Loop => run_loop(&o),
        Mode::Once => run_once(&o),
        Mode::Tick => run_tick(&o),
    }
}

/// One open+read+close of `path` into `buf`; the bytes read.
fn read_file(path: &str, buf: &mut [u8]) -> io::Result<usize> {
    read_all(File::open(path)?, buf)
}

/// Reads `file` to its end into `buf` (overwriting); the bytes read.
fn read_all(mut file: File, buf: &mut [u8]) -> io::Result<usize> {
    let mut total = 0;
    loop {
        match file.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// What one `loop` thread measured.
#[derive(Default)]
struct ThreadResult {
    latencies_ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    bytes: usize,
    total_ops: u64,
}

/// `loop` mode: prints one [`LatencySummary`] line.
fn run_loop(o: &Options) -> Result<ExitCode, String> {
    let path = o.paths[0].as_str();
    let barrier = Barrier::new(o.threads);
    let results: Vec<ThreadResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..o.threads)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut buf = vec![0u8; CHUNK];
                    let mut r = ThreadResult {
                        latencies_ns: Vec::with_capacity(1 << 16),
                        ..ThreadResult::default()
                    };
                    barrier.wait();
                    let begin = Instant::now();
                    let measured = begin + Duration::from_millis(o.warmup_ms);
                    let end = measured + Duration::from_millis(o.ms);
                    loop {
                        let started = Instant::now();
                        if started >= end {
                            break;
                        }
                        let result = read_file(path, &mut buf);
                        let took = started.elapsed();
                        r.total_ops += 1;
                        if started < measured {
                            continue;
                        }
                        match result {
                            Ok(n) => {
                                r.bytes = n;
                                r.latencies_ns
                                    .push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                            }
                            Err(err) => {
                                r.errors += 1;
                                r.first_error.get_or_insert_with(|| err.to_string());
                            }
                        }
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut all = Vec::new();
    let (mut errors, mut bytes, mut total_ops) = (0, 0, 0);
    for r in results {
        all.extend(r.latencies_ns);
        total_ops += r.total_ops;
        errors += r.errors;
        bytes = bytes.max(r.bytes);
        if let Some(err) = r.first_error {
            eprintln!("proclens-bench-reader: {path}: {err}");
        }
    }
    let window = Duration::from_millis(o.ms);
    let summary = LatencySummary::from_samples(&mut all, window, errors, bytes, total_ops);
    println!("{}", summary.to_line());
    Ok(ExitCode::SUCCESS)
}

/// `once` mode: prints `ns=N bytes=N`.
fn run_once(o: &Options) -> Result<ExitCode, String> {
    let mut buf = vec![0u8; CHUNK];
    let started = Instant::now();
    let n = read_file(&o.paths[0], &mut buf).map_err(|e| format!("{}: {e}", o.paths[0]))?;
    let ns = started.elapsed().as_nanos();
    println!("ns={ns} bytes={n}");
    Ok(ExitCode::SUCCESS)
}

/// A file `tick` reads: a path, or a name in a directory kept open.
enum TickFile {
    Path(String),
    InDir(std::os::fd::OwnedFd, std::ffi::CString, String),
}

impl TickFile {
    /// `path`, with `{pid}` replaced by this process's host pid and its directory opened.
    fn new(path: &str) -> Result<TickFile, String> {
        use std::os::unix::fs::OpenOptionsExt;
        if !path.contains("{pid}") {
            return Ok(TickFile::Path(path.to_string()));
        }
        // /proc is the host's: its `self` is our pid there, whatever our own namespace.
        let pid = std::fs::read_link("/proc/self").map_err(|e| format!("/proc/self: {e}"))?;
        let path = path.replace("{pid}", &pid.to_string_lossy());
        let (dir, name) = path
            .rsplit_once('/')
            .ok_or_else(|| format!("{path}: no directory"))?;
        let dir_fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)
            .map_err(|e| format!("{dir}: {e}"))?;
        let name = std::ffi::CString::new(name).map_err(|e| format!("{path}: {e}"))?;
        Ok(TickFile::InDir(dir_fd.into(), name, path))
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::{AsRawFd, FromRawFd};
        match self {
            TickFile::Path(path) => read_file(path, buf),
            TickFile::InDir(dir, name, _) => {
                // SAFETY: a valid directory fd and NUL-terminated name; the result is checked.
                let fd = unsafe {
                    libc::openat(
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        libc::O_RDONLY | libc::O_CLOEXEC,
                    )
                };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `fd` was just opened and is owned by nobody else.
                read_all(unsafe { File::from_raw_fd(fd) }, buf)
            }
        }
    }

    fn name(&self) -> &str {
        match self {
            TickFile::Path(path) | TickFile::InDir(_, _, path) => path,
        }
    }
}

/// `tick` mode: reads forever (or `--reads` times, then idles forever); never returns normally.
fn run_tick(o: &Options) -> Result<ExitCode, String> {
    let mut buf = vec![0u8; CHUNK];
    let files = o
        .paths
        .iter()
        .map(|p| TickFile::new(p))
        .collect::<Result<Vec<_>, _>>()?;
    let interval = Duration::from_millis(o.interval_ms);
    let start = Instant::now() + Duration::from_millis(o.offset_ms);
    let (mut failures, mut next_logged) = (0u64, 1u64);
    for k in 0u64.. {
        if o.reads != 0 && k >= o.reads {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let due = start + interval * u32::try_from(k).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let file = &files[usize::try_from(k).unwrap_or(0) % files.len()];
        let result = file.read(&mut buf).and_then(|n| match n {
            0 => Err(io::Error::other("read returned no bytes")),
            n => Ok(n),
        });
        if let Err(err) = result {
            failures += 1;
            // A few lines, then one per thousand: the log shows a problem without flooding.
            if failures == next_logged {
                next_logged += if failures < 3 { 1 } else { 1000 };
                eprintln!("tick {}: failure {failures}: {err}", file.name());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
