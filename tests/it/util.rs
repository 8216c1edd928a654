//! Helpers shared by the test modules.

use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use proclens_cgroup::write::{apply, Limit, LimitUpdate};
use proclens_cgroup::{HostPaths, Layout};
use proclens_tests::parse;
use proclens_tests::rig::{self, FusedDaemon, Probe, ProbeOptions, TempCgroup};

/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// Every file of the lxcfs layout under `proc/` (and of a subtree's `proc/`).
pub const PROC_FILES: [&str; 8] = [
    "cpuinfo",
    "diskstats",
    "loadavg",
    "meminfo",
    "slabinfo",
    "stat",
    "swaps",
    "uptime",
];

/// Waits until the daemon's single worker is no longer `old`; returns the new one.
pub fn new_worker(daemon: &FusedDaemon, old: u32) -> Result<u32> {
    rig::poll(Duration::from_secs(20), "a new worker", || {
        Ok(match daemon.worker_pids()?.as_slice() {
            [pid] if *pid != old => Some(*pid),
            _ => None,
        })
    })
}

/// Waits until the daemon's log (read through a pipe drained by another thread) contains
/// `text`; fails with the log after `timeout`.
pub fn wait_for_log(daemon: &FusedDaemon, text: &str, timeout: Duration) -> Result<()> {
    rig::poll(timeout, text, || {
        Ok(daemon.stderr().contains(text).then_some(()))
    })
    .with_context(|| format!("daemon log: {}", daemon.stderr()))
}

/// The host's own `/proc/meminfo` value of `key`, in kB.
pub fn host_meminfo_kb(key: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    parse::meminfo_kb(&text, key)
}

/// The container-like cgroup most view tests use: 256 MiB, CPU 0, half a CPU of CFS quota.
pub fn container_cgroup() -> Result<TempCgroup> {
    rig::preflight()?;
    TempCgroup::builder()
        .memory_limit(256 * MIB)
        .cpus("0")
        .cfs_quota(50_000, 100_000)
        .create()
}

/// A probe inside `cg`, in a fresh pid namespace.
pub fn probe_in(cg: &TempCgroup) -> Result<Probe> {
    Probe::spawn(&cg.procs_files(), &ProbeOptions::default())
}

/// A probe in the root cgroup of every hierarchy (a host process as far as cgroups go), in a
/// fresh pid namespace.
pub fn probe_on_host() -> Result<Probe> {
    Probe::spawn(&rig::root_procs_files()?, &ProbeOptions::default())
}

/// True if the host has at least `n` CPUs online; otherwise says loudly that `test` is skipped.
pub fn have_cpus(n: usize, test: &str) -> Result<bool> {
    let cpus = rig::host_cpus()?;
    if cpus.len() >= n {
        return Ok(true);
    }
    eprintln!("!!! SKIPPED {test}: needs {n} CPUs online, host has {cpus:?}");
    Ok(false)
}

/// Sets the memory limit of `cg` (v1 `memory.limit_in_bytes`, v2 `memory.max`) with
/// `proclens_cgroup`'s write path. On v2 the memory controller is first enabled in the parent's
/// `cgroup.subtree_control` if `cg` lacks memory files.
pub fn set_memory_limit(cg: &TempCgroup, bytes: u64) -> Result<()> {
    let dir = cg.dir("memory").context("no memory hierarchy")?;
    if !dir.join("memory.limit_in_bytes").exists() && !dir.join("memory.max").exists() {
        let parent = dir.parent().context("cgroup without parent")?;
        std::fs::write(parent.join("cgroup.subtree_control"), "+memory")
            .with_context(|| format!("enable memory below {}", parent.display()))?;
    }
    let layout = Layout::discover(&HostPaths::default())?;
    let update = LimitUpdate {
        memory_max: Some(Limit::Bytes(bytes)),
        ..LimitUpdate::default()
    };
    apply(&layout, &layout.set_at(cg.name()), &update)
        .with_context(|| format!("set the memory limit of {}", cg.name()))?;
    Ok(())
}

/// Has `probe`, a reader inside `cg`, read 1 MiB from a block device, the way a container's
/// disk I/O shows in its diskstats: the data is written to a temp dir (`TMPDIR`), dropped from
/// the page cache, and the kernel is made to count `cg`'s I/O on its disk
/// ([`TempCgroup::count_io_on`]). Fails unless the kernel's own statistics of `cg` then show
/// the 1 MiB read, so a rig that did no counted I/O is never blamed on a daemon. Returns the
/// disk as (major:minor, name); `None`, said loudly as a skip of `test`'s I/O part, where the
/// temp dir is not on a block device (tmpfs, say).
pub fn read_1_mib_from_disk(
    cg: &TempCgroup,
    probe: &mut Probe,
    test: &str,
) -> Result<Option<(String, String)>> {
    let dir = tempfile::Builder::new()
        .prefix("proclens-test-io-")
        .tempdir()?;
    let Some((dev, name)) = disk_of(dir.path())? else {
        eprintln!(
            "!!! SKIPPED the I/O part of {test}: {} is not on a block device",
            dir.path().display()
        );
        return Ok(None);
    };
    cg.count_io_on(&dev)?;
    let file = uncached_file(dir.path(), MIB as usize)?;
    let before = cg.io_read_bytes(&dev)?;
    probe.read(&file)?;
    let counted = cg.io_read_bytes(&dev)? - before;
    ensure!(
        counted >= MIB,
        "rig: the reader read 1 MiB from {name} ({dev}), but the kernel counted {counted} bytes \
         read for its cgroup"
    );
    Ok(Some((dev, name)))
}

/// The whole-disk device behind the filesystem of `path`, as (major:minor, name), if it is a
/// block device (not tmpfs, say). The cgroup I/O statistics count the disk, not a partition.
pub fn disk_of(path: &Path) -> Result<Option<(String, String)>> {
    let dev = std::fs::metadata(path)?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let Ok(mut dir) = sys.canonicalize() else {
        return Ok(None);
    };
    if dir.join("partition").exists() {
        dir = dir
            .parent()
            .context("partition without a disk")?
            .to_path_buf();
    }
    let dev = std::fs::read_to_string(dir.join("dev"))?.trim().to_string();
    let name = dir
        .file_name()
        .context("disk dir name")?
        .to_string_lossy()
        .into_owned();
    Ok(Some((dev, name)))
}

/// Writes `bytes` of data to a new file in `dir`, syncs it and drops it from the page cache,
/// so that reading it goes to the disk.
pub fn uncached_file(dir: &Path, bytes: usize) -> Result<PathBuf> {
    let path = dir.join("data");
    let mut file = std::fs::File::create(&path)?;
    file.write_all(&vec![0x5a; bytes])?;
    file.sync_all()?;
    // SAFETY: plain syscall on an open fd; no pointers.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    ensure!(rc == 0, "posix_fadvise(DONTNEED): errno {rc}");
    Ok(path)
}

/// A `sleep` moved into a cgroup (a cgroup is listed as a container only while it holds a
/// process), killed on drop.
pub struct Sleeper(std::process::Child);

impl Sleeper {
    /// Starts `sleep infinity` and moves it into `cg`.
    pub fn start_in(cg: &TempCgroup) -> Result<Self> {
        let child = std::process::Command::new("sleep")
            .arg("infinity")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("spawn sleep")?;
        let sleeper = Sleeper(child);
        cg.add_pid(sleeper.0.id())?;
        Ok(sleeper)
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `promtool check metrics` says about `text`, but for cAdvisor's documented
/// `container_memory_failcnt` (a counter without `_total`).
pub fn promtool_complaints(text: &str) -> Result<Vec<String>> {
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("spawn promtool (apt-get install prometheus)")?;
    promtool
        .stdin
        .take()
        .context("no stdin")?
        .write_all(text.as_bytes())?;
    let out = promtool.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(said
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("container_memory_failcnt "))
        .map(str::to_string)
        .collect())
}
