//! [`Probe`]: drives a `proclens-probe` reader running inside given cgroups and a fresh pid
//! namespace (protocol in `src/bin/proclens-probe.rs`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::process::{self, Captured};

/// How long one command (one FUSE read, say) may take before the test fails instead of hanging.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// An `ERR` reply: the command failed inside the probe with `errno`.
#[derive(Debug)]
pub struct ProbeError {
    /// The errno the failing system call returned.
    pub errno: i32,
    /// The probe's description of the failure.
    pub message: String,
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "errno {}: {}", self.errno, self.message)
    }
}

impl std::error::Error for ProbeError {}

impl ProbeError {
    /// The errno of `err` if it is (or wraps) a [`ProbeError`].
    pub fn errno_of(err: &anyhow::Error) -> Option<i32> {
        err.chain()
            .find_map(|e| e.downcast_ref::<ProbeError>())
            .map(|e| e.errno)
    }
}

/// The pid namespace a probe's reader runs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PidNs {
    /// A fresh namespace with the reader as its pid 1 (a container's init).
    #[default]
    New,
    /// The host's (a hostPID pod).
    Host,
    /// The namespace of this host pid (a member of a pod sharing one pid namespace).
    Of(u32),
}

/// How to start a [`Probe`].
#[derive(Clone, Debug, Default)]
pub struct ProbeOptions {
    /// Drop to this uid (gid the same) after joining the cgroups.
    pub uid: Option<u32>,
    /// The reader's pid namespace.
    pub pid_ns: PidNs,
}

/// What a probe's read loop saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopReport {
    /// Reads attempted.
    pub reads: u64,
    /// Reads that failed.
    pub failed: u64,
    /// Reads that failed with ENOTCONN.
    pub enotconn: u64,
    /// /proc/stat samples with a counter lower than in the previous sample.
    pub backwards: u64,
    /// The slowest open+read+close, in µs.
    pub max_us: u64,
    /// Failures by errno, as `errno:count` pairs.
    pub errnos: String,
}

impl LoopReport {
    fn parse(reply: &str) -> Result<Self> {
        let mut report = LoopReport::default();
        for field in reply.split_whitespace() {
            let (key, value) = field
                .split_once('=')
                .with_context(|| format!("loop reply {reply:?}"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .with_context(|| format!("loop reply {reply:?}"))
            };
            match key {
                "reads" => report.reads = number()?,
                "failed" => report.failed = number()?,
                "enotconn" => report.enotconn = number()?,
                "backwards" => report.backwards = number()?,
                "max_us" => report.max_us = number()?,
                "errnos" => report.errnos = value.to_string(),
                _ => {}
            }
        }
        Ok(report)
    }
}

/// Where a probe's read loop ([`Probe::read_loop_with_progress`]) publishes how many reads it
/// completed, so a test can see it progress while it runs, and can end it. A temp file: bytes
/// 0-7 the count (u64 LE, written by the probe), byte 8 the stop flag (written by the test).
pub struct LoopProgress {
    file: std::fs::File,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopProgress {
    /// A new progress file: no reads, not stopped.
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("proclens-test-progress-")
            .tempdir()?;
        let path = dir.path().join("progress");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        file.write_all_at(&[0; 9], 0)?;
        Ok(Self {
            file,
            path,
            _dir: dir,
        })
    }

    /// The file's path, as the probe opens it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Successful reads the loop completed so far (as of its latest round).
    pub fn reads(&self) -> Result<u64> {
        // The probe may rewrite the count during a read, which could see part of each value:
        // the count only grows, so two equal reads in a row are one value.
        let read = || -> Result<u64> {
            let mut count = [0u8; 8];
            self.file.read_exact_at(&mut count, 0)?;
            Ok(u64::from_le_bytes(count))
        };
        loop {
            let first = read()?;
            if read()? == first {
                return Ok(first);
            }
        }
    }

    /// Ends the loop at the start of its next round.
    pub fn stop(&self) -> Result<()> {
        self.file.write_all_at(&[1], 8)?;
        Ok(())
    }
}

/// A file kept open inside the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle(u32);

/// A running `proclens-probe`. Its reader is in the cgroups it was given and (by default) is
/// pid 1 of a new pid namespace. `Drop` asks it to exit and kills it (and so its whole namespace) after 5 s.
pub struct Probe {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<String>,
    stderr: Captured,
    spawned: Instant,
}

impl Probe {
    /// The probe binary: env `PROCLENS_PROBE_BIN`, else `target/debug/proclens-probe`.
    pub fn binary() -> Result<PathBuf> {
        super::find_binary("PROCLENS_PROBE_BIN", "proclens-probe")
    }

    /// Starts a probe that joins the cgroups of the given `cgroup.procs` files, enters the pid
    /// namespace and drops privileges as `options` say; waits for its `READY`.
    pub fn spawn(join: &[PathBuf], options: &ProbeOptions) -> Result<Self> {
        let bin = Self::binary()?;
        let mut cmd = Command::new(&bin);
        if let Some(uid) = options.uid {
            cmd.arg("--uid").arg(uid.to_string());
        }
        match options.pid_ns {
            PidNs::New => cmd.args(["--pidns", "new"]),
            PidNs::Host => cmd.args(["--pidns", "host"]),
            PidNs::Of(pid) => cmd.arg("--pidns").arg(pid.to_string()),
        };
        let spawned = Instant::now();
        let mut child = cmd
            .args(join)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let stdin = child.stdin.take().context("probe stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("probe stdout")?);
        let (stderr, _) = Captured::drain(child.stderr.take().context("probe stderr")?);
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut probe = Self {
            child,
            stdin,
            replies,
            stderr,
            spawned,
        };
        let ready = probe.reply("start-up", REPLY_TIMEOUT)?;
        if ready != "READY" {
            bail!("probe said {ready:?} instead of READY");
        }
        Ok(probe)
    }

    /// Time since this probe was spawned: an upper bound of its pid namespace's age.
    pub fn age(&self) -> Duration {
        self.spawned.elapsed()
    }

    /// Opens `path`, reads it to EOF and closes it.
    pub fn read(&mut self, path: &Path) -> Result<Vec<u8>> {
        unhex(&self.request(&format!("read {}", path.display()))?)
    }

    /// [`Self::read`] as UTF-8 text.
    pub fn read_string(&mut self, path: &Path) -> Result<String> {
        text(self.read(path)?)
    }

    /// [`Self::read_string`] done by a new thread of the reader (FUSE then sees a thread id).
    pub fn read_string_in_thread(&mut self, path: &Path) -> Result<String> {
        text(unhex(&self.request(&format!("tread {}", path.display()))?)?)
    }

    /// Opens `path` read-only and keeps it open.
    pub fn open(&mut self, path: &Path) -> Result<Handle> {
        let reply = self.request(&format!("open {}", path.display()))?;
        Ok(Handle(
            reply.parse().with_context(|| format!("handle {reply:?}"))?,
        ))
    }

    /// `lseek(h, 0)` then reads to EOF: a fresh rendering of the same open file, as `top` does.
    pub fn reread(&mut self, h: Handle) -> Result<String> {
        text(unhex(&self.request(&format!("reread {}", h.0))?)?)
    }

    /// From the current offset, `read(h, chunk)` until EOF.
    pub fn read_in_chunks(&mut self, h: Handle, chunk: usize) -> Result<Vec<u8>> {
        unhex(&self.request(&format!("readall {} {chunk}", h.0))?)
    }

    /// One `pread(h, len, offset)`.
    pub fn pread(&mut self, h: Handle, offset: u64, len: usize) -> Result<Vec<u8>> {
        unhex(&self.request(&format!("pread {} {offset} {len}", h.0))?)
    }

    /// `lseek(h, offset, SEEK_SET)`.
    pub fn seek(&mut self, h: Handle, offset: u64) -> Result<()> {
        self.request(&format!("seek {} {offset}", h.0)).map(drop)
    }

    /// Closes `h`.
    pub fn close(&mut self, h: Handle) -> Result<()> {
        self.request(&format!("close {}", h.0)).map(drop)
    }

    /// Tries to open `path` for writing (and closes it at once).
    pub fn open_for_write(&mut self, path: &Path) -> Result<()> {
        self.request(&format!("openw {}", path.display())).map(drop)
    }

    /// `stat(path)`: `Some("dir" | "file" | "other")`, or `None` if it does not exist (ENOENT).
    pub fn stat(&mut self, path: &Path) -> Result<Option<String>> {
        match self.request(&format!("stat {}", path.display())) {
            Ok(kind) => Ok(Some(kind)),
            Err(err) if ProbeError::errno_of(&err) == Some(libc::ENOENT) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The entry names of directory `path`, sorted.
    pub fn list(&mut self, path: &Path) -> Result<Vec<String>> {
        let names = text(unhex(&self.request(&format!("ls {}", path.display()))?)?)?;
        Ok(names.lines().map(str::to_string).collect())
    }

    /// Allocates `mib` MiB inside the probe and writes every page, so its cgroup is charged.
    pub fn alloc_mib(&mut self, mib: u64) -> Result<()> {
        self.request(&format!("alloc {mib}")).map(drop)
    }

    /// Releases everything [`Self::alloc_mib`] allocated.
    pub fn free(&mut self) -> Result<()> {
        self.request("free").map(drop)
    }

    /// Reads `paths` round-robin (open+read+close each) for `duration`, inside the probe, and
    /// reports what happened.
    pub fn read_loop(&mut self, duration: Duration, paths: &[PathBuf]) -> Result<LoopReport> {
        self.loop_command(duration, "-", paths)
    }

    /// [`Self::read_loop`] that publishes its count of successful reads in `progress` while it
    /// runs, and ends early once [`LoopProgress::stop`] is called; `duration` is the longest run.
    pub fn read_loop_with_progress(
        &mut self,
        duration: Duration,
        progress: &LoopProgress,
        paths: &[PathBuf],
    ) -> Result<LoopReport> {
        let file = progress
            .path()
            .to_str()
            .context("progress path is not UTF-8")?;
        self.loop_command(duration, file, paths)
    }

    /// Sends `loop` with progress file `file` (`-` for none) and parses the report.
    fn loop_command(
        &mut self,
        duration: Duration,
        file: &str,
        paths: &[PathBuf],
    ) -> Result<LoopReport> {
        let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let reply = self.request_with_timeout(
            &format!("loop {} {file} {}", duration.as_millis(), list.join(" ")),
            duration + REPLY_TIMEOUT,
        )?;
        LoopReport::parse(&reply)
    }

    /// Burns CPU inside the probe for `ms` milliseconds of wall-clock time.
    pub fn spin_ms(&mut self, ms: u64) -> Result<()> {
        self.request(&format!("spin {ms}")).map(drop)
    }

    /// The reader's pid inside its namespace (1) and in the host's.
    pub fn pids(&mut self) -> Result<(u32, u32)> {
        let reply = self.request("pid")?;
        let parsed = reply
            .split_once(' ')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
        parsed.with_context(|| format!("pid reply {reply:?}"))
    }

    /// Forks the reader: the child joins the cgroups of the given `cgroup.procs` files and
    /// answers every later command, the parent stays behind as its parent (an init and one of
    /// its services). Memory the parent allocated stays charged where it was.
    pub fn fork_into(&mut self, join: &[PathBuf]) -> Result<()> {
        let files: Vec<String> = join.iter().map(|f| f.display().to_string()).collect();
        self.request(&format!("forkjoin {}", files.join(" ")))
            .map(drop)
    }

    /// Sends one command and returns the payload of its `OK` reply; an `ERR` reply becomes a
    /// [`ProbeError`].
    fn request(&mut self, command: &str) -> Result<String> {
        self.request_with_timeout(command, REPLY_TIMEOUT)
    }

    /// [`Self::request`] with its own reply timeout.
    fn request_with_timeout(&mut self, command: &str, timeout: Duration) -> Result<String> {
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .with_context(|| {
                format!(
                    "send {command:?} to the probe; stderr: {}",
                    self.stderr.text()
                )
            })?;
        let reply = self.reply(command, timeout)?;
        if reply == "OK" {
            return Ok(String::new());
        }
        if let Some(payload) = reply.strip_prefix("OK ") {
            return Ok(payload.to_string());
        }
        if let Some(rest) = reply.strip_prefix("ERR ") {
            let (errno, message) = rest.split_once(' ').unwrap_or((rest, ""));
            let err = ProbeError {
                errno: errno.parse().unwrap_or(0),
                message: message.into(),
            };
            return Err(anyhow!(err).context(format!("probe {command:?}")));
        }
        bail!("probe answered {command:?} with {reply:?}")
    }

    /// The next reply line, within `timeout`.
    fn reply(&mut self, command: &str, timeout: Duration) -> Result<String> {
        match self.replies.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => {
                bail!("probe did not answer {command:?} within {timeout:?} (a hung FUSE request?)")
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = process::wait_timeout(&mut self.child, Duration::from_secs(5))?;
                bail!(
                    "probe exited ({status:?}) instead of answering {command:?}; stderr:\n{}",
                    self.stderr.text()
                )
            }
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "exit").and_then(|()| self.stdin.flush());
        if !matches!(
            process::wait_timeout(&mut self.child, Duration::from_secs(5)),
            Ok(Some(_))
        ) {
            // The reader has PR_SET_PDEATHSIG, so killing the parent ends the whole namespace.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Decodes a lowercase hex payload.
fn unhex(hex: &str) -> Result<Vec<u8>> {
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).ok().filter(|p| p.len() == 2);
            let pair = pair.with_context(|| format!("bad hex payload {hex:?}"))?;
            u8::from_str_radix(pair, 16).with_context(|| format!("hex {pair:?}"))
        })
        .collect()
}

/// Bytes that must be UTF-8 text.
fn text(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| anyhow!("file content is not UTF-8: {e}"))
}
