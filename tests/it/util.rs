//! Helpers shared by the test modules.

use std::time::Duration;

use anyhow::{Context, Result};
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
