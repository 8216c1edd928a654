//! The filesystems proclens is measured against, each a running process serving a FUSE mount:
//! [`LxcfsDaemon`] (Debian's lxcfs 5.0.3) and [`FloorDaemon`] (`proclens-floor`, a filesystem
//! that does no work, on a FUSE loop written like proclens's own). And [`BindMount`]: one file
//! of a mount bind-mounted onto a path, as a container runtime mounts `<mount>/proc/meminfo` over
//! a container's `/proc/meminfo`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::fused::{lazy_unmount, MountDir};
use super::mountinfo;
use super::process::{self, Captured};

/// How long a daemon may take from spawn to a mount that answers.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a daemon may take to exit after SIGTERM before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A FUSE daemon process serving a mount on its own [`MountDir`]. `Drop` sends SIGTERM, waits
/// (SIGKILL after 10 s) and lazily unmounts whatever is left at the mount point.
struct MountedProcess {
    name: &'static str,
    child: Child,
    stderr: Captured,
    mount: MountDir,
}

impl MountedProcess {
    /// Spawns `cmd` (whose last argument must be the mount point of `mount`) and waits until a
    /// FUSE mount is on the mount point and `probe` (a path inside it) can be stat'ed.
    fn spawn(name: &'static str, mut cmd: Command, mount: MountDir, probe: &str) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {cmd:?}"))?;
        let (stderr, _) = Captured::drain(child.stderr.take().context("stderr")?);
        let mut daemon = Self {
            name,
            child,
            stderr,
            mount,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mounted = mountinfo::mount_at(daemon.mount.path())?
                .is_some_and(|m| m.fstype.starts_with("fuse"));
            if mounted && daemon.mount.path().join(probe).metadata().is_ok() {
                return Ok(daemon);
            }
            if let Some(status) = daemon.child.try_wait()? {
                bail!(
                    "{name} exited with {status} before serving; stderr:\n{}",
                    daemon.stderr.text()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{name} did not serve {probe} within {READY_TIMEOUT:?}; stderr:\n{}",
                    daemon.stderr.text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Fails (with its stderr) if the process has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited with {status}; stderr:\n{}",
                self.name,
                self.stderr.text()
            );
        }
        Ok(())
    }
}

impl Drop for MountedProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = process::signal(self.child.id(), libc::SIGTERM);
            if !matches!(
                process::wait_timeout(&mut self.child, EXIT_TIMEOUT),
                Ok(Some(_))
            ) {
                eprintln!(
                    "!!! {} ignored SIGTERM for {EXIT_TIMEOUT:?}; killing it",
                    self.name
                );
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        // MountDir's own drop unmounts leftovers lazily too; this names the culprit.
        if let Ok(Some(m)) = mountinfo::mount_at(self.mount.path()) {
            eprintln!(
                "!!! {} left a {} mount on {}; unmounting it lazily",
                self.name,
                m.fstype,
                self.mount.path().display()
            );
            let _ = lazy_unmount(self.mount.path());
        }
    }
}

/// `proclens-floor` serving a fresh mount point: `proc/{meminfo,stat,cpuinfo,uptime,loadavg}`,
/// each the same fixed text, answered with no work (see `src/bin/proclens-floor.rs`).
pub struct FloorDaemon {
    process: MountedProcess,
}

impl FloorDaemon {
    /// The floor binary: env `PROCLENS_FLOOR_BIN`, else `<target dir>/proclens-floor`.
    pub fn binary() -> Result<PathBuf> {
        super::find_binary("PROCLENS_FLOOR_BIN", "proclens-floor")
    }

    /// Starts the floor with `threads` serving threads, files of `size` bytes, and entries and
    /// attributes valid for `attr_timeout_secs` (0: a GETATTR on every open, as in proclens).
    pub fn start(threads: usize, size: usize, attr_timeout_secs: u64) -> Result<Self> {
        let mount = MountDir::new()?;
        let mut cmd = Command::new(Self::binary()?);
        cmd.arg("--threads")
            .arg(threads.to_string())
            .arg("--size")
            .arg(size.to_string())
            .arg("--attr-timeout")
            .arg(attr_timeout_secs.to_string())
            .arg(mount.path());
        Ok(Self {
            process: MountedProcess::spawn("proclens-floor", cmd, mount, "proc/meminfo")?,
        })
    }

    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        self.process.mount.path()
    }

    /// The path of `rel` (e.g. `"proc/meminfo"`) inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint().join(rel)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Fails, with the floor's stderr, if it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.process.check_alive()
    }
}

/// `source` (a file) bind-mounted onto `target`, which is created empty if missing. `Drop`
/// unmounts it (lazily) and removes `target` if it created it.
pub struct BindMount {
    target: PathBuf,
    created: bool,
}

impl BindMount {
    /// Bind-mounts file `source` onto `target`.
    pub fn new(source: &Path, target: &Path) -> Result<Self> {
        let created = !target.exists();
        if created {
            std::fs::write(target, b"").with_context(|| format!("create {}", target.display()))?;
        }
        let bind = Self {
            target: target.to_path_buf(),
            created,
        };
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).context("path with NUL");
        let (src, dst) = (c(source)?, c(target)?);
        // SAFETY: valid NUL-terminated strings; a bind mount takes no type or data.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!("bind-mount {} on {}", source.display(), target.display())
            });
        }
        Ok(bind)
    }

    /// The mounted path.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        while let Ok(Some(_)) = mountinfo::mount_at(&self.target) {
            if let Err(err) = lazy_unmount(&self.target) {
                eprintln!("!!! BindMount: {err:#}");
                break;
            }
        }
        if self.created {
            let _ = std::fs::remove_file(&self.target);
        }
    }
}
