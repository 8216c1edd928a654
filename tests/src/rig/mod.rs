//! RAII guards for the real parts a test needs, and the small helpers they share.
//!
//! Every guard takes a name from [`unique_name`] (test process pid + atomic counter), so tests
//! running in parallel, or two test processes, never touch each other's cgroups, mounts or
//! containers. Every guard undoes what it created in `Drop`.

mod cgroup;
mod containerd;
mod fused;
pub mod lxcfs;
pub mod mountinfo;
pub mod oci;
mod peers;
pub mod pki;
mod probe;
pub mod process;
pub mod prometheus;
mod runc;
pub mod vm;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use cgroup::{hierarchies, root_procs_files, Hierarchy, TempCgroup, TempCgroupBuilder};
pub use containerd::{
    shims_serving, unique_uid, ContainerSpec, ContainerdDaemon, PodSpec, BUSYBOX_IMAGE, PAUSE_IMAGE,
};
pub use fused::{FusedDaemon, MountDir};
pub use lxcfs::LxcfsDaemon;
pub use peers::{BindMount, FloorDaemon};
pub use pki::TestPki;
pub use probe::{Handle, LoopProgress, LoopReport, PidNs, Probe, ProbeError, ProbeOptions};
pub use prometheus::{ExporterDaemon, PrometheusOptions, PrometheusServer, Sample, WebAccess};
pub use runc::RuncContainer;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A name no other guard of any test process uses: `proclens-test-<pid>-<counter>`.
pub fn unique_name() -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("proclens-test-{}-{n}", std::process::id())
}

/// Fails with a clear message unless the machine can run real-parts tests at all: root, and
/// `/dev/fuse` present. Tests call it first so a missing prerequisite fails loudly.
pub fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the proclens integration tests need root (cgroups, FUSE mounts, pid namespaces)");
    }
    if !std::path::Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module (modprobe fuse)");
    }
    Ok(())
}

/// The cargo target profile directory holding this crate's binaries (`target/debug`), found
/// from the running test executable (`target/debug/deps/<test>`), else from the source tree.
pub fn target_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            if dir.file_name().is_some_and(|n| n == "deps") {
                if let Some(profile) = dir.parent() {
                    return profile.to_path_buf();
                }
            }
            return dir.to_path_buf();
        }
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug"))
}

/// Locates a binary: the path in env `var` if set, else `<target_dir>/<name>`, else
/// `<workspace>/target/debug/<name>`. Fails naming every place it looked.
pub fn find_binary(var: &str, name: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!("{var}={} does not name a file", path.display());
    }
    let candidates = [
        target_dir().join(name),
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug")).join(name),
    ];
    for path in &candidates {
        if path.is_file() {
            return Ok(path.clone());
        }
    }
    bail!(
        "{name} not found at {} or {}; build it (cargo build -p <its package>) or set {var}",
        candidates[0].display(),
        candidates[1].display()
    )
}

/// The CPUs the host has online, from `/sys/devices/system/cpu/online`.
pub fn host_cpus() -> Result<Vec<u32>> {
    let path = "/sys/devices/system/cpu/online";
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    proclens_cgroup::parse::cpulist::parse_cpulist(&text).with_context(|| format!("parse {path}"))
}

/// Calls `check` every 10 ms until it returns `Some`, or fails after `timeout` naming `what`.
pub fn poll<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
