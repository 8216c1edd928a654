//! Command line: raw arguments (clap) → validated [`Config`].

use clap::{Parser, ValueEnum};
use proclens_view::CpuView;
use std::path::PathBuf;

/// Default of `--open-files`: cgroup, /proc and /sys value files kept open between reads (the
/// daemon's descriptor-cache policy; each costs the kernel about 4.5 KiB).
pub const DEFAULT_OPEN_FILES: usize = 2048;

/// Default mountpoint, where bind-mount manifests point (`<mnt>/proc/meminfo`, ...).
pub const DEFAULT_MOUNTPOINT: &str = "/var/lib/proclens";

/// Default of `--stats-file`, where the exporter looks for fused's numbers.
pub const DEFAULT_STATS_FILE: &str = "/run/proclens/fused.stats";

/// How many CPUs a container is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CpuViewArg {
    /// The CPUs of the container's cpuset (lxcfs's default).
    Cpuset,
    /// The cpuset, capped at ceil(CFS quota / period) (lxcfs --enable-cfs).
    Quota,
}

/// proclens-fused: serves every container its own /proc and /sys/devices/system/cpu files,
/// computed from its cgroups, in the lxcfs layout (<MOUNTPOINT>/proc/meminfo, ...).
#[derive(Debug, Parser)]
#[command(name = "proclens-fused", version, about, long_about = None)]
pub struct Args {
    /// Where to mount the filesystem; created if missing. A dead proclens mount left there by a
    /// crash is cleared; a live FUSE mount there is an error.
    #[arg(default_value = DEFAULT_MOUNTPOINT)]
    pub mountpoint: PathBuf,

    /// How the CPU count shown to a container is chosen: `cpuset` shows the CPUs it may run on;
    /// `quota` also caps the count at ceil(quota/period).
    #[arg(long, value_enum, default_value_t = CpuViewArg::Cpuset)]
    pub cpu_view: CpuViewArg,

    /// Request-serving threads, each on its own cloned /dev/fuse fd (1-64).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,

    /// Extra serving threads started only while every serving thread has held one request for
    /// over 100 ms (a slow or hung cgroup or /proc file), so other containers' reads go on; each
    /// stops after 5 s without a request (0-64; 0: none).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub spare_threads: u16,

    /// Most cgroup, /proc and /sys value files kept open between reads and re-read with pread
    /// (0: open every file for every read). Each costs the kernel about 4.5 KiB.
    #[arg(long, default_value_t = DEFAULT_OPEN_FILES)]
    pub open_files: usize,

    /// How long the kernel may serve a `containers/<pid>/proc/` file from its page cache before
    /// asking whether it changed (milliseconds, 1-3600000).
    #[arg(long, default_value_t = 100, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub subtree_max_age: u64,

    /// Where the per-container subtree is mounted; `<MOUNTPOINT>/containers` links there.
    /// Default: `.<name>-containers` beside the mountpoint (`/var/lib/.proclens-containers`).
    #[arg(long, value_name = "PATH")]
    pub subtree_mountpoint: Option<PathBuf>,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive such as
    /// `proclens_fused=debug`); overrides RUST_LOG.
    #[arg(long)]
    pub log_level: Option<String>,

    /// Where fused publishes its own numbers (reads, errors and read latency per file, worker
    /// restarts) for the exporter, in the Prometheus text format, replaced atomically every
    /// `--stats-interval`; the directory is created if missing. An empty path turns it off.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATS_FILE,
          value_parser = clap::value_parser!(std::ffi::OsString))]
    pub stats_file: std::ffi::OsString,

    /// How often the stats file is written (seconds, 1-3600).
    #[arg(long, value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stats_interval: u64,

    /// Root of the procfs to read host and process files from (for tests and nested setups).
    #[arg(long, default_value = "/proc")]
    pub proc_root: PathBuf,

    /// Root of the sysfs to read host CPU files from.
    #[arg(long, default_value = "/sys")]
    pub sys_root: PathBuf,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute mountpoint.
    pub mountpoint: PathBuf,
    /// CPU view.
    pub cpu_view: CpuView,
    /// Serving threads.
    pub threads: usize,
    /// Spare serving threads, started while slow requests hold all the others.
    pub spare_threads: usize,
    /// Value files kept open between reads.
    pub open_files: usize,
    /// Longest a subtree file's rendering is served from the page cache.
    pub subtree_max_age: std::time::Duration,
    /// Absolute mountpoint of the per-container subtree.
    pub subtree_mountpoint: PathBuf,
    /// Absolute path of the stats file (`None`: not written).
    pub stats_file: Option<PathBuf>,
    /// How often the stats file is written.
    pub stats_interval: std::time::Duration,
    /// Host roots.
    pub host: proclens_cgroup::HostPaths,
}

impl Args {
    /// Validates the arguments.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mountpoint = crate::fuse::mount::absolute_mountpoint(&self.mountpoint)
            .map_err(|e| anyhow::anyhow!("mountpoint {}: {e}", self.mountpoint.display()))?;
        let subtree = match self.subtree_mountpoint {
            Some(path) => path,
            None => default_subtree_mountpoint(&mountpoint)?,
        };
        let subtree_mountpoint = crate::fuse::mount::absolute_mountpoint(&subtree)
            .map_err(|e| anyhow::anyhow!("subtree mountpoint {}: {e}", subtree.display()))?;
        anyhow::ensure!(
            !subtree_mountpoint.starts_with(&mountpoint)
                && !mountpoint.starts_with(&subtree_mountpoint),
            "the subtree mountpoint {} must lie outside the mountpoint {} (and not contain it)",
            subtree_mountpoint.display(),
            mountpoint.display()
        );
        let stats_file = if self.stats_file.is_empty() {
            None
        } else {
            let path = PathBuf::from(&self.stats_file);
            Some(
                std::path::absolute(&path)
                    .map_err(|e| anyhow::anyhow!("stats file {}: {e}", path.display()))?,
            )
        };
        Ok(Config {
            mountpoint,
            cpu_view: match self.cpu_view {
                CpuViewArg::Cpuset => CpuView::Cpuset,
                CpuViewArg::Quota => CpuView::Quota,
            },
            threads: usize::from(self.threads),
            spare_threads: usize::from(self.spare_threads),
            open_files: self.open_files,
            subtree_max_age: std::time::Duration::from_millis(self.subtree_max_age),
            subtree_mountpoint,
            stats_file,
            stats_interval: std::time::Duration::from_secs(self.stats_interval),
            host: proclens_cgroup::HostPaths {
                proc_root: self.proc_root,
                sys_root: self.sys_root,
            },
        })
    }
}

/// `.<name>-containers` beside `mountpoint`.
fn default_subtree_mountpoint(mountpoint: &std::path::Path) -> anyhow::Result<PathBuf> {
    let (Some(parent), Some(name)) = (mountpoint.parent(), mountpoint.file_name()) else {
        anyhow::bail!(
            "mountpoint {} has no parent for the subtree mountpoint: give --subtree-mountpoint",
            mountpoint.display()
        );
    };
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    hidden.push("-containers");
    Ok(parent.join(hidden))
}
