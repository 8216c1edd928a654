//! [`FusedDaemon`]: a running `proclens-fused` mounted on its own directory.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use super::mountinfo::{self, MountEntry};
use super::process::{self, Captured};

/// How long the daemon may take from spawn to `READY=1`: a bound on a hang, not a speed check.
/// Milliseconds on a host; in the v2 VM under TCG on a loaded machine a debug build's worker
/// took over 10 s to start (the supervisor then starts another from its own image), so 60 s.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the daemon may take to exit after a signal.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A `proclens-fused` process serving a mount. It is started with its own `NOTIFY_SOCKET` and
/// counts as started once it sent `READY=1` and its mount shows in mountinfo.
///
/// `Drop` sends SIGTERM and waits for the exit (SIGKILL after 10 s); a mount left behind is
/// reported on stderr and lazily unmounted, so later tests never trip over it.
pub struct FusedDaemon {
    child: Child,
    mountpoint: PathBuf,
    stderr: Captured,
    stopped: bool,
    leave_mount: bool,
    stats_file: Option<PathBuf>,
    _notify_dir: TempDir,
    _mount_dir: Option<MountDir>,
}

impl FusedDaemon {
    /// The daemon binary: env `PROCLENS_FUSED_BIN`, else `target/debug/proclens-fused`.
    pub fn binary() -> Result<PathBuf> {
        super::find_binary("PROCLENS_FUSED_BIN", "proclens-fused")
    }

    /// Starts the daemon with `args` on a fresh mount point, removed on drop.
    pub fn start(args: &[&str]) -> Result<Self> {
        Self::start_binary(&Self::binary()?, args)
    }

    /// Starts the daemon from binary `bin` (e.g. a copy the test later replaces, as an upgrade
    /// does) on a fresh mount point.
    pub fn start_binary(bin: &Path, args: &[&str]) -> Result<Self> {
        let dir = MountDir::new()?;
        let mountpoint = dir.path().to_path_buf();
        Self::spawn(bin, &mountpoint, args, Some(dir))
    }

    /// Starts the daemon with `args` on `mountpoint`, which the caller owns, e.g. as a
    /// [`MountDir`] (it may be missing or hold a stale mount: the daemon must handle both).
    pub fn start_at(mountpoint: &Path, args: &[&str]) -> Result<Self> {
        Self::spawn(&Self::binary()?, mountpoint, args, None)
    }

    /// Spawns the daemon and waits until it is ready.
    fn spawn(
        bin: &Path,
        mountpoint: &Path,
        args: &[&str],
        mount_dir: Option<MountDir>,
    ) -> Result<Self> {
        let notify_dir = tempfile::Builder::new()
            .prefix("proclens-test-notify-")
            .tempdir()?;
        // Each daemon publishes its numbers in its own directory unless the test says where:
        // daemons running at once must not share the default stats file.
        let stats_file = match args.iter().position(|a| *a == "--stats-file") {
            Some(at) => args.get(at + 1).map(PathBuf::from),
            None => Some(notify_dir.path().join("fused.stats")),
        };
        let own_stats: Vec<std::ffi::OsString> = match &stats_file {
            Some(path) if !args.contains(&"--stats-file") && publishes_stats(bin)? => {
                vec!["--stats-file".into(), path.clone().into_os_string()]
            }
            _ => Vec::new(),
        };
        let socket_path = notify_dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path)
            .with_context(|| format!("bind {}", socket_path.display()))?;
        let mut child = Command::new(bin)
            .args(&own_stats)
            .args(args)
            .arg(mountpoint)
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let (stderr, _) = Captured::drain(child.stderr.take().context("daemon stderr")?);
        let mut daemon = Self {
            child,
            mountpoint: mountpoint.to_path_buf(),
            stderr,
            stopped: false,
            leave_mount: false,
            stats_file: stats_file
                .filter(|p| !p.as_os_str().is_empty())
                .filter(|_| !own_stats.is_empty() || args.contains(&"--stats-file")),
            _notify_dir: notify_dir,
            _mount_dir: mount_dir,
        };
        daemon.wait_ready(&socket).with_context(|| {
            format!(
                "proclens-fused {args:?} on {} did not become ready; its stderr:\n{}",
                mountpoint.display(),
                non_empty(&daemon.stderr())
            )
        })?;
        Ok(daemon)
    }

    /// Waits for a datagram with a `READY=1` line, then checks the mount exists.
    fn wait_ready(&mut self, socket: &UnixDatagram) -> Result<()> {
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut buf = vec![0; 4096];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    if String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .any(|l| l == "READY=1")
                    {
                        break;
                    }
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(err) => return Err(err).context("recv on NOTIFY_SOCKET"),
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("it exited with {status} before sending READY=1");
            }
            if Instant::now() >= deadline {
                bail!("no READY=1 on NOTIFY_SOCKET within {READY_TIMEOUT:?}");
            }
        }
        match self.mount()? {
            Some(m) if m.fstype.starts_with("fuse") => Ok(()),
            Some(m) => bail!(
                "sent READY=1 but the mount there is {:?}, not FUSE",
                m.fstype
            ),
            None => bail!("sent READY=1 before its mount appeared in /proc/self/mountinfo"),
        }
    }

    /// Where the daemon publishes its own numbers (`--stats-file`): in a directory of its own
    /// unless the test's arguments name one; `None` when they turn it off or the binary
    /// predates `--stats-file`.
    pub fn stats_file(&self) -> Option<&Path> {
        self.stats_file.as_deref()
    }

    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The path of `rel` (e.g. `"proc/meminfo"`) inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// The topmost mount at the mount point, if any.
    pub fn mount(&self) -> Result<Option<MountEntry>> {
        mountinfo::mount_at(&self.mountpoint)
    }

    /// Sends `signal`, waits for the exit and returns its status. Fails if the daemon does not
    /// exit within 10 s or leaves a mount behind (`Drop` then cleans up).
    pub fn stop_with(mut self, signal: libc::c_int) -> Result<ExitStatus> {
        self.stopped = true;
        process::signal(self.pid(), signal)?;
        let status = process::wait_timeout(&mut self.child, EXIT_TIMEOUT)?.with_context(|| {
            format!(
                "still running {EXIT_TIMEOUT:?} after signal {signal}; stderr:\n{}",
                non_empty(&self.stderr())
            )
        })?;
        if let Some(m) = self.mount()? {
            bail!(
                "exited with {status} but left a {} mount; stderr:\n{}",
                m.fstype,
                non_empty(&self.stderr())
            );
        }
        Ok(status)
    }

    /// Kills the daemon with SIGKILL and leaves its mount behind, dead (`ENOTCONN`), the way a
    /// crashed daemon does. The mount point must outlive this call: use [`Self::start_at`].
    pub fn kill_leaving_mount(mut self) -> Result<()> {
        self.stopped = true;
        // The whole daemon crashes: its serving workers too, not only the supervisor.
        let workers = self.worker_pids()?;
        self.child.kill().context("SIGKILL proclens-fused")?;
        self.child.wait()?;
        for pid in workers {
            let _ = process::signal(pid, libc::SIGKILL);
        }
        self.leave_mount = true;
        let proc_dir = self.mountpoint.join("proc");
        super::poll(
            EXIT_TIMEOUT,
            "the killed daemon's mount to go stale",
            || {
                let gone = std::fs::metadata(&proc_dir)
                    .err()
                    .and_then(|e| e.raw_os_error());
                Ok((gone == Some(libc::ENOTCONN)).then_some(()))
            },
        )
    }

    /// Pids of the daemon's serving workers (children of the supervisor).
    pub fn worker_pids(&self) -> Result<Vec<u32>> {
        let pid = self.child.id();
        let mut pids = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let children = std::fs::read_to_string(task?.path().join("children"))?;
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        Ok(pids)
    }
}

impl Drop for FusedDaemon {
    fn drop(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            if !self.stopped {
                eprintln!(
                    "!!! proclens-fused on {} died during the test ({status}); stderr:\n{}",
                    self.mountpoint.display(),
                    non_empty(&self.stderr())
                );
            }
        } else {
            process::terminate(&mut self.child, "proclens-fused", EXIT_TIMEOUT);
        }
        if self.leave_mount {
            return;
        }
        while let Ok(Some(m)) = self.mount() {
            eprintln!(
                "!!! proclens-fused left a {} mount on {}; unmounting it lazily",
                m.fstype,
                self.mountpoint.display()
            );
            if lazy_unmount(&self.mountpoint).is_err() {
                break;
            }
        }
    }
}

/// `text`, or `(empty)` if it is empty.
fn non_empty(text: &str) -> &str {
    if text.trim().is_empty() {
        "(empty)"
    } else {
        text
    }
}

/// Whether the daemon binary `bin` has `--stats-file` (binaries from before it, such as a
/// benchmark's baseline, refuse it); asked once per binary through `--help`.
fn publishes_stats(bin: &Path) -> Result<bool> {
    static KNOWN: std::sync::Mutex<Vec<(PathBuf, bool)>> = std::sync::Mutex::new(Vec::new());
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, has)) = known.iter().find(|(path, _)| path == bin) {
        return Ok(*has);
    }
    let help = Command::new(bin)
        .arg("--help")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("{} --help", bin.display()))?;
    let has = String::from_utf8_lossy(&help.stdout).contains("--stats-file");
    known.push((bin.to_path_buf(), has));
    Ok(has)
}

/// A mount point in a fresh temp dir. `Drop` lazily unmounts whatever is still mounted there
/// (a stale mount of a killed daemon, say), and at the daemon's default subtree mountpoint
/// beside it (`.mnt-containers`), then removes the directory.
pub struct MountDir {
    path: PathBuf,
    _dir: TempDir,
}

impl MountDir {
    /// A new, empty mount point directory.
    pub fn new() -> Result<Self> {
        let dir = Self::missing()?;
        std::fs::create_dir(&dir.path).with_context(|| format!("mkdir {}", dir.path.display()))?;
        Ok(dir)
    }

    /// A mount point path whose directory does not exist yet (its parent does).
    pub fn missing() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("proclens-test-mnt-")
            .tempdir()?;
        let path = dir.path().canonicalize()?.join("mnt");
        Ok(Self { path, _dir: dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where `proclens-fused` mounts its per-container subtree by default for this mount point.
    pub fn subtree_path(&self) -> PathBuf {
        self.path.with_file_name(".mnt-containers")
    }
}

impl Drop for MountDir {
    fn drop(&mut self) {
        for path in [self.path.clone(), self.subtree_path()] {
            while let Ok(Some(_)) = mountinfo::mount_at(&path) {
                if lazy_unmount(&path).is_err() {
                    break;
                }
            }
        }
    }
}

/// `umount2(path, MNT_DETACH)`.
pub(super) fn lazy_unmount(path: &Path) -> Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c_path` is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("umount -l {}", path.display()));
    }
    Ok(())
}
