//! [`LxcfsDaemon`]: a running lxcfs on its own mount point, the oracle of the differential tests
//! (`tests/it/lxcfs.rs`) that read the same files from lxcfs and from `proclens-fused`.
//!
//! The daemon runs in the foreground (`-f`) with a pid file of its own and, unless a test asks
//! for more, lxcfs's default flags. It never touches `/var/lib/lxcfs`, where a distribution's own
//! lxcfs service may be mounted.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use super::fused::MountDir;
use super::mountinfo;
use super::process::{self, Captured};

/// How long lxcfs may take from spawn to a mount that answers a read of `proc/meminfo`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long lxcfs may take to exit after SIGTERM before it gets SIGKILL.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The FUSE filesystem type lxcfs mounts (`fuse.` + its `fsname`).
const FSTYPE: &str = "fuse.lxcfs";

/// A running `lxcfs -f -p <pid file> [flags] <mount point>`, on a fresh mount point.
///
/// It counts as started once mountinfo shows a `fuse.lxcfs` mount at the mount point and a read
/// of `proc/meminfo` there succeeds. `Drop` sends SIGTERM, waits for the exit (SIGKILL after
/// 10 s) and lazily unmounts anything left at the mount point.
pub struct LxcfsDaemon {
    child: Child,
    flags: Vec<String>,
    stdout: Captured,
    stderr: Captured,
    mount_dir: MountDir,
    _pid_dir: TempDir,
}

impl LxcfsDaemon {
    /// The lxcfs binary: env `PROCLENS_LXCFS_BIN`, else `/usr/bin/lxcfs`. It loads its library
    /// from the path it was built with (`/usr/lib/x86_64-linux-gnu/lxcfs/liblxcfs.so` on Debian).
    pub fn binary() -> Result<PathBuf> {
        let path = std::env::var_os("PROCLENS_LXCFS_BIN")
            .map_or_else(|| PathBuf::from("/usr/bin/lxcfs"), PathBuf::from);
        if !path.is_file() {
            bail!(
                "lxcfs not found at {}: the differential tests need lxcfs 5.0.3 \
                 (apt-get install lxcfs) or PROCLENS_LXCFS_BIN",
                path.display()
            );
        }
        Ok(path)
    }

    /// The version lxcfs reports (`lxcfs -v`), without quotes or whitespace, e.g. `5.0.3`.
    pub fn version() -> Result<String> {
        let bin = Self::binary()?;
        let out = process::run(Command::new(&bin).arg("-v"), Duration::from_secs(10))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let version = text.trim().trim_matches('"').to_string();
        if !out.status.success() || version.is_empty() {
            bail!(
                "{} -v exited with {} and printed {text:?}",
                bin.display(),
                out.status
            );
        }
        Ok(version)
    }

    /// Starts lxcfs with its default flags (swap and CPU-view defaults, no loadavg thread).
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// Starts lxcfs with `flags` added to `-f -p <pid file>` (e.g. `["-l"]` for its per-container
    /// loadavg) on a fresh mount point, and waits until the mount answers reads.
    pub fn start_with(flags: &[&str]) -> Result<Self> {
        let bin = Self::binary()?;
        let mount_dir = MountDir::new()?;
        let pid_dir = tempfile::Builder::new()
            .prefix("proclens-test-lxcfs-")
            .tempdir()?;
        let mut child = Command::new(&bin)
            .arg("-f")
            .arg("-p")
            .arg(pid_dir.path().join("lxcfs.pid"))
            .args(flags)
            .arg(mount_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let (stdout, _) = Captured::drain(child.stdout.take().context("lxcfs stdout")?);
        let (stderr, _) = Captured::drain(child.stderr.take().context("lxcfs stderr")?);
        let mut daemon = Self {
            child,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            stdout,
            stderr,
            mount_dir,
            _pid_dir: pid_dir,
        };
        daemon.wait_ready().with_context(|| {
            format!(
                "lxcfs {:?} on {} did not become ready; its output:\n{}",
                daemon.flags,
                daemon.mountpoint().display(),
                daemon.output()
            )
        })?;
        Ok(daemon)
    }

    /// Polls until the `fuse.lxcfs` mount is in mountinfo and a read of `proc/meminfo` there
    /// returns meminfo text, or lxcfs exits, or [`READY_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        super::poll(READY_TIMEOUT, "a fuse.lxcfs mount in mountinfo", || {
            if let Some(status) = self.child.try_wait()? {
                bail!("it exited with {status} before mounting");
            }
            Ok(mountinfo::mount_at(self.mountpoint())?
                .filter(|m| m.fstype == FSTYPE)
                .map(drop))
        })?;
        let meminfo = self.path("proc/meminfo");
        let mut last = String::from("no read finished");
        super::poll(
            deadline.saturating_duration_since(Instant::now()),
            "a read of proc/meminfo on the lxcfs mount",
            || {
                if let Some(status) = self.child.try_wait()? {
                    bail!("it exited with {status} after mounting");
                }
                let remaining = deadline.saturating_duration_since(Instant::now());
                match read_with_timeout(&meminfo, remaining)? {
                    Some(Ok(text)) if text.starts_with("MemTotal:") => Ok(Some(())),
                    Some(Ok(text)) => {
                        last = format!("read {text:?}");
                        Ok(None)
                    }
                    Some(Err(err)) => {
                        last = format!("read failed: {err}");
                        Ok(None)
                    }
                    None => {
                        last = format!("read still blocked after {remaining:?}");
                        Ok(None)
                    }
                }
            },
        )
        .with_context(|| format!("last attempt: {last}"))
    }

    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        self.mount_dir.path()
    }

    /// The path of `rel` (e.g. `"proc/meminfo"`) inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint().join(rel)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with lxcfs's output, if it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("lxcfs exited ({status}); output:\n{}", self.output());
        }
        Ok(())
    }

    /// The flags the daemon was started with, beyond `-f -p <pid file>`.
    pub fn flags(&self) -> &[String] {
        &self.flags
    }

    /// Everything lxcfs printed so far: stdout, then stderr.
    pub fn output(&self) -> String {
        let (out, err) = (self.stdout.text(), self.stderr.text());
        if out.trim().is_empty() && err.trim().is_empty() {
            return "(nothing)".into();
        }
        format!("{out}{err}")
    }
}

impl Drop for LxcfsDaemon {
    fn drop(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            eprintln!(
                "!!! lxcfs on {} died during the test ({status}); output:\n{}",
                self.mountpoint().display(),
                self.output()
            );
        } else {
            process::terminate(&mut self.child, "lxcfs", EXIT_TIMEOUT);
        }
        while let Ok(Some(m)) = mountinfo::mount_at(self.mountpoint()) {
            eprintln!(
                "!!! lxcfs left a {} mount on {}; unmounting it lazily",
                m.fstype,
                self.mountpoint().display()
            );
            if lazy_unmount(self.mountpoint()).is_err() {
                break;
            }
        }
    }
}

/// Reads `path` to a string on a helper thread: `None` if the read takes longer than `timeout`.
/// A hung FUSE request must not hang the caller; the thread stays blocked until the daemon is
/// stopped, which aborts the request.
fn read_with_timeout(path: &Path, timeout: Duration) -> Result<Option<std::io::Result<String>>> {
    let (tx, rx) = mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read_to_string(path));
    });
    match rx.recv_timeout(timeout) {
        Ok(result) => Ok(Some(result)),
        Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
        Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the reader thread died"),
    }
}

/// `umount2(path, MNT_DETACH)`.
fn lazy_unmount(path: &Path) -> Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c_path` is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("umount -l {}", path.display()));
    }
    Ok(())
}
