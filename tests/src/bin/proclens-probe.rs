//! `proclens-probe`: a scripted reader that the integration tests place inside a container-like
//! context and drive one command at a time.
//!
//! Usage: `proclens-probe [--uid UID] [--pidns new|host|PID] [CGROUP_PROCS_FILE]...`
//!
//! Start-up, in this order: write the probe's pid to every given `cgroup.procs` file (joining
//! those cgroups), then enter the reader's pid namespace and fork: `new` (the default)
//! `unshare(CLONE_NEWPID)`s, so the child is pid 1 of a fresh namespace; `PID` `setns`es into
//! the pid namespace of process PID (a member of a shared-namespace pod); `host` stays in the
//! probe's own. The child inherits the cgroups, dies with the parent (`PR_SET_PDEATHSIG`),
//! optionally drops to `UID` (gid the same, no supplementary groups), prints `READY`, then reads
//! one command per stdin line and answers with one stdout line: `OK[ payload]` or
//! `ERR <errno> <message>`. The parent only waits for the child and exits with its status.
//! Start-up failures go to stderr with exit status 1, before `READY`.
//!
//! Byte payloads are lowercase hex, so any content survives the line protocol. Commands:
//!
//! | command                  | effect                                              | payload |
//! |--------------------------|-----------------------------------------------------|---------|
//! | `read PATH`              | open, read to EOF (64 KiB reads), close             | hex     |
//! | `tread PATH`             | `read PATH` on a new thread of the reader           | hex     |
//! | `open PATH`              | open read-only, keep the fd                         | handle  |
//! | `reread H`               | `lseek(0)` then read to EOF (64 KiB reads)          | hex     |
//! | `readall H N`            | from the current offset, `read(N)` until EOF        | hex     |
//! | `pread H OFF LEN`        | one `pread(LEN, OFF)`                               | hex     |
//! | `seek H OFF`             | `lseek(OFF, SEEK_SET)`                              |         |
//! | `close H`                | close the fd                                        |         |
//! | `openw PATH`             | try to open for writing, close at once              |         |
//! | `stat PATH`              | `stat`: `dir`, `file` or `other`                    | kind    |
//! | `ls PATH`                | directory entry names, sorted, joined by `\n`       | hex     |
//! | `alloc MIB`              | allocate MIB MiB and write every byte; keep it      |         |
//! | `free`                   | release everything `alloc` kept                     |         |
//! | `spin MS`                | burn CPU for MS ms of wall-clock time               |         |
//! | `pid`                    | pid in its namespace and in the host's              | `N M`   |
//! | `forkjoin FILE...`       | fork; the child writes its pid to each FILE (joins  |         |
//! |                          | those cgroups) and serves all later commands, the   |         |
//! |                          | parent waits for it (a service under an init)       |         |
//! | `loop MS FILE PATH...`   | for MS ms, open+read+close each PATH in turn; count | report  |
//! |                          | reads, failures by errno, `stat` counters going     |         |
//! |                          | backwards, and the slowest read. FILE is `-` or a   |         |
//! |                          | progress file: before each round its bytes 0-7 get  |         |
//! |                          | the count of successful reads (u64 LE); a nonzero   |         |
//! |                          | byte 8 (set by the test) ends the loop              |         |
//! | `exit`                   | exit 0                                              |         |

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use proclens_tests::enter::{enter, wait_for, Entered, PidNs};

fn main() -> ExitCode {
    match start() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("proclens-probe: {err}");
            ExitCode::from(1)
        }
    }
}

/// Joins the cgroups, enters the pid namespace, forks and runs the command loop in the child.
fn start() -> Result<ExitCode, String> {
    let mut uid = None;
    let mut pid_ns = PidNs::New;
    let mut procs_files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--uid" => {
                let v = value()?;
                uid = Some(v.parse::<u32>().map_err(|e| format!("--uid {v}: {e}"))?);
            }
            "--pidns" => {
                pid_ns = match value()?.as_str() {
                    "new" => PidNs::New,
                    "host" => PidNs::Host,
                    v => PidNs::Of(v.parse().map_err(|e| format!("--pidns {v}: {e}"))?),
                };
            }
            _ => procs_files.push(arg),
        }
    }
    if let Entered::Parent(code) = enter(&procs_files, pid_ns)? {
        return Ok(ExitCode::from(code));
    }
    if let Some(uid) = uid {
        drop_privileges(uid)?;
    }
    serve().map_err(|e| format!("command loop: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// Drops to `uid`/`uid` with no supplementary groups.
fn drop_privileges(uid: u32) -> Result<(), String> {
    // SAFETY: a zero-length group list with a null pointer is valid for setgroups.
    let ok = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(uid) == 0
            && libc::setuid(uid) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(format!("drop to uid {uid}: {}", io::Error::last_os_error()))
    }
}

/// The command loop: one reply line per command line, until `exit` or end of input.
fn serve() -> io::Result<()> {
    let mut state = State::default();
    let stdin = io::stdin();
    let mut out = io::stdout().lock();
    writeln!(out, "READY")?;
    out.flush()?;
    for line in stdin.lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split(' ').collect();
        if words.first() == Some(&"exit") {
            writeln!(out, "OK")?;
            out.flush()?;
            return Ok(());
        }
        if words.first() == Some(&"forkjoin") {
            // SAFETY: the reader is single-threaded between commands (`tread` joins its thread).
            let child = unsafe { libc::fork() };
            if child < 0 {
                let err = io::Error::last_os_error();
                writeln!(out, "ERR {} fork: {err}", err.raw_os_error().unwrap_or(0))?;
                out.flush()?;
                continue;
            }
            if child > 0 {
                // The child serves from now on; this process only keeps the namespace alive.
                std::process::exit(i32::from(wait_for(child)));
            }
            let pid = std::process::id().to_string();
            match words[1..].iter().try_for_each(|file| fs::write(file, &pid)) {
                Ok(()) => writeln!(out, "OK")?,
                Err(err) => writeln!(out, "ERR {} join: {err}", err.raw_os_error().unwrap_or(0))?,
            }
            out.flush()?;
            continue;
        }
        match state.run(&words) {
            Ok(payload) if payload.is_empty() => writeln!(out, "OK")?,
            Ok(payload) => writeln!(out, "OK {payload}")?,
            Err(err) => {
                let errno = err.raw_os_error().unwrap_or(libc::EINVAL);
                let msg = err.to_string().replace('\n', " ");
                writeln!(out, "ERR {errno} {msg}")?;
            }
        }
        out.flush()?;
    }
    Ok(())
}

/// Open handles and memory kept between commands.
#[derive(Default)]
struct State {
    files: HashMap<u32, File>,
    next_handle: u32,
    memory: Vec<Vec<u8>>,
}

impl State {
    /// Runs one command; the `Ok` string is the reply payload.
    fn run(&mut self, words: &[&str]) -> io::Result<String> {
        match words {
            ["read", path] => {
                let mut file = File::open(path)?;
                Ok(hex(&read_to_eof(&mut file, 65536)?))
            }
            ["tread", path] => {
                let path = path.to_string();
                let reader = std::thread::spawn(move || read_to_eof(&mut File::open(path)?, 65536));
                let bytes = reader
                    .join()
                    .map_err(|_| invalid("reader thread panicked"))??;
                Ok(hex(&bytes))
            }
            ["open", path] => {
                let file = File::open(path)?;
                self.next_handle += 1;
                self.files.insert(self.next_handle, file);
                Ok(self.next_handle.to_string())
            }
            ["reread", h] => {
                let file = self.file(h)?;
                file.seek(SeekFrom::Start(0))?;
                Ok(hex(&read_to_eof(file, 65536)?))
            }
            ["readall", h, chunk] => {
                let chunk = number(chunk)?;
                Ok(hex(&read_to_eof(
                    self.file(h)?,
                    usize::try_from(chunk).map_err(invalid)?,
                )?))
            }
            ["pread", h, off, len] => {
                let (off, len) = (number(off)?, number(len)?);
                let mut buf = vec![0; usize::try_from(len).map_err(invalid)?];
                let n = self.file(h)?.read_at(&mut buf, off)?;
                Ok(hex(&buf[..n]))
            }
            ["seek", h, off] => {
                let off = number(off)?;
                self.file(h)?.seek(SeekFrom::Start(off))?;
                Ok(String::new())
            }
            ["close", h] => {
                let h = u32::try_from(number(h)?).map_err(invalid)?;
                self.files
                    .remove(&h)
                    .ok_or_else(|| invalid("no such handle"))?;
                Ok(String::new())
            }
            ["openw", path] => {
                OpenOptions::new().write(true).open(path)?;
                Ok(String::new())
            }
            ["stat", path] => {
                let kind = fs::metadata(path)?.file_type();
                Ok(if kind.is_dir() {
                    "dir"
                } else if kind.is_file() {
                    "file"
                } else {
                    "other"
                }
                .to_string())
            }
            ["ls", path] => {
                let mut names = Vec::new();
                for entry in fs::read_dir(path)? {
                    names.push(entry?.file_name().to_string_lossy().into_owned());
                }
                names.sort();
                Ok(hex(names.join("\n").as_bytes()))
            }
            ["alloc", mib] => {
                let bytes = number(mib)? << 20;
                // A non-zero fill writes every page, so the memory is charged at once.
                self.memory
                    .push(vec![0xa5; usize::try_from(bytes).map_err(invalid)?]);
                Ok(String::new())
            }
            ["spin", ms] => {
                let until = Instant::now() + Duration::from_millis(number(ms)?);
                let mut x = 0u64;
                while Instant::now() < until {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
                Ok(String::new())
            }
            ["loop", ms, progress, paths @ ..] => {
                let ms: u64 = ms.parse().map_err(|_| invalid("bad loop duration"))?;
                let progress = match *progress {
                    "-" => None,
                    path => Some(OpenOptions::new().read(true).write(true).open(path)?),
                };
                read_loop(Duration::from_millis(ms), progress.as_ref(), paths)
            }
            ["free"] => {
                self.memory = Vec::new();
                Ok(String::new())
            }
            ["pid"] => {
                let host = fs::read_link("/proc/self")?;
                Ok(format!("{} {}", std::process::id(), host.display()))
            }
            _ => Err(invalid(format!("unknown command {:?}", words.join(" ")))),
        }
    }

    /// The open file behind handle `h`.
    fn file(&mut self, h: &str) -> io::Result<&mut File> {
        let h = u32::try_from(number(h)?).map_err(invalid)?;
        self.files
            .get_mut(&h)
            .ok_or_else(|| invalid("no such handle"))
    }
}

/// Reads from the current offset until a read returns 0, `chunk` bytes per `read(2)`.
fn read_to_eof(file: &mut File, chunk: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0; chunk.max(1)];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Parses a decimal command argument.
fn number(word: &str) -> io::Result<u64> {
    word.parse().map_err(|e| invalid(format!("{word:?}: {e}")))
}

/// An `EINVAL` error carrying `msg`.
fn invalid(msg: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Numbers of every `cpu*` row of /proc/stat text, in order.
fn stat_rows(text: &str) -> Vec<Vec<u64>> {
    text.lines()
        .filter(|l| l.starts_with("cpu"))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .collect()
}

/// The `loop` command: reads `paths` round-robin for `duration`, or until byte 8 of `progress`
/// is set, publishing the count of successful reads in `progress` before each round; returns
/// `reads=N failed=N enotconn=N backwards=N max_us=N errnos=E:N,...`.
fn read_loop(duration: Duration, progress: Option<&File>, paths: &[&str]) -> io::Result<String> {
    let deadline = Instant::now() + duration;
    let (mut reads, mut failed, mut enotconn, mut backwards, mut max_us) =
        (0u64, 0u64, 0u64, 0u64, 0u128);
    let mut errnos: std::collections::BTreeMap<i32, u64> = std::collections::BTreeMap::new();
    let mut last_stat: HashMap<&str, Vec<Vec<u64>>> = HashMap::new();
    let mut stop = [0u8];
    while Instant::now() < deadline {
        if let Some(file) = progress {
            file.write_all_at(&(reads - failed).to_le_bytes(), 0)?;
            if file.read_at(&mut stop, 8)? == 1 && stop[0] != 0 {
                break;
            }
        }
        for path in paths {
            let started = Instant::now();
            let result = File::open(path).and_then(|mut f| read_to_eof(&mut f, 65536));
            max_us = max_us.max(started.elapsed().as_micros());
            reads += 1;
            match result {
                Ok(bytes) if path.ends_with("/stat") => {
                    let rows = stat_rows(&String::from_utf8_lossy(&bytes));
                    if let Some(previous) = last_stat.get(path) {
                        let went_back = previous
                            .iter()
                            .zip(&rows)
                            .any(|(p, r)| p.iter().zip(r).any(|(p, r)| r < p));
                        backwards += u64::from(went_back);
                    }
                    last_stat.insert(path, rows);
                }
                Ok(_) => {}
                Err(err) => {
                    failed += 1;
                    let errno = err.raw_os_error().unwrap_or(0);
                    enotconn += u64::from(errno == libc::ENOTCONN);
                    *errnos.entry(errno).or_default() += 1;
                }
            }
        }
    }
    let errnos: Vec<String> = errnos.iter().map(|(e, n)| format!("{e}:{n}")).collect();
    Ok(format!(
        "reads={reads} failed={failed} enotconn={enotconn} backwards={backwards} max_us={max_us} errnos={}",
        errnos.join(",")
    ))
}
