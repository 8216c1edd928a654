//! The per-container subtree, `<mnt>/containers/<pid>/proc/<file>` (a symlink into its own
//! mount): the files of the container of `<pid>`, whoever reads them, kept in the page cache
//! between changes, and never another container's, across worker restarts too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use proclens_tests::parse;
use proclens_tests::rig::{self, BindMount, FusedDaemon, Probe, ProbeError, TempCgroup};

use crate::util::{container_cgroup, new_worker, probe_in, set_memory_limit, MIB, PROC_FILES};

/// A second container: 128 MiB, CPU 0.
fn small_cgroup() -> Result<TempCgroup> {
    TempCgroup::builder()
        .memory_limit(128 * MIB)
        .cpus("0")
        .create()
}

/// The host pid of the probe's reader.
fn host_pid(probe: &mut Probe) -> Result<u32> {
    Ok(probe.pids()?.1)
}

/// `containers/<pid>/proc/<file>` of the daemon's mount.
fn subtree_path(daemon: &FusedDaemon, pid: u32, file: &str) -> PathBuf {
    daemon.path(&format!("containers/{pid}/proc/{file}"))
}

fn mem_total(text: &str) -> Result<u64> {
    parse::meminfo_kb(text, "MemTotal")
}

/// Reads `path` from the test process (a host process).
fn read_on_host(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

#[test]
fn subtree_files_show_the_named_container_to_any_reader() -> Result<()> {
    let (big, small) = (container_cgroup()?, small_cgroup()?);
    let daemon = FusedDaemon::start(&[])?;
    let (mut in_big, mut in_small) = (probe_in(&big)?, probe_in(&small)?);
    let (big_pid, small_pid) = (host_pid(&mut in_big)?, host_pid(&mut in_small)?);

    let big_meminfo = subtree_path(&daemon, big_pid, "meminfo");
    assert_eq!(mem_total(&read_on_host(&big_meminfo)?)?, 262_144);
    assert_eq!(
        mem_total(&read_on_host(&subtree_path(&daemon, small_pid, "meminfo"))?)?,
        131_072
    );
    assert_eq!(
        mem_total(&in_small.read_string(&big_meminfo)?)?,
        262_144,
        "a reader in another container still gets the named container's file"
    );
    let cpuinfo = read_on_host(&subtree_path(&daemon, big_pid, "cpuinfo"))?;
    assert_eq!(parse::cpuinfo_processors(&cpuinfo)?, vec![0], "{cpuinfo}");

    for file in PROC_FILES {
        let path = subtree_path(&daemon, big_pid, file);
        let text = read_on_host(&path)?;
        // A container that has done no disk I/O has no diskstats lines.
        assert!(!text.is_empty() || file == "diskstats", "{file} is empty");
        assert_eq!(
            std::fs::metadata(&path)?.len(),
            text.len() as u64,
            "{file}: the size is the content's"
        );
    }
    let mut listed: Vec<String> =
        std::fs::read_dir(daemon.path(&format!("containers/{big_pid}/proc")))?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
    listed.sort();
    assert_eq!(listed, PROC_FILES);

    for name in ["999999999", "1", "self", "0"] {
        let err = std::fs::metadata(daemon.path(&format!("containers/{name}")))
            .expect_err("no subtree for a missing pid, the host's pid 1 or a name");
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ENOENT),
            "containers/{name}: {err}"
        );
    }
    Ok(())
}

#[test]
fn subtree_content_stays_cached_until_its_maximum_age() -> Result<()> {
    let cg = container_cgroup()?;
    let cached = FusedDaemon::start(&["--subtree-max-age", "3600000"])?;
    let fresh = FusedDaemon::start(&[])?;
    let mut probe = probe_in(&cg)?;
    let pid = host_pid(&mut probe)?;
    let binds = tempfile::Builder::new()
        .prefix("proclens-test-subtree-")
        .tempdir()?;
    // The container reads through bind mounts, as a runtime would set them up.
    let cached_bind = BindMount::new(
        &subtree_path(&cached, pid, "meminfo"),
        &binds.path().join("cached"),
    )?;
    let fresh_bind = BindMount::new(
        &subtree_path(&fresh, pid, "meminfo"),
        &binds.path().join("fresh"),
    )?;
    assert_eq!(mem_total(&probe.read_string(cached_bind.path())?)?, 262_144);
    assert_eq!(mem_total(&probe.read_string(fresh_bind.path())?)?, 262_144);

    set_memory_limit(&cg, 192 * MIB)?;
    assert_eq!(
        mem_total(&probe.read_string(cached_bind.path())?)?,
        262_144,
        "within an hour's maximum age the page cache's content is served"
    );
    rig::poll(Duration::from_secs(5), "the new limit in the file", || {
        let total = mem_total(&probe.read_string(fresh_bind.path())?)?;
        Ok((total == 196_608).then_some(()))
    })?;
    Ok(())
}

/// Sleeps until attributes the kernel was given before this call, with a validity of 1 ms,
/// have expired, so the next use of the file asks the daemon. The kernel counts the validity in
/// clock ticks, rounded up, and trusts it through the tick it ends in: up to two ticks, 20 ms at
/// the slowest clock (HZ=100).
fn outlive_1ms_attributes() {
    std::thread::sleep(Duration::from_millis(50));
}

#[test]
fn subtree_never_serves_another_container_after_a_worker_restart() -> Result<()> {
    let (big, small) = (container_cgroup()?, small_cgroup()?);
    // A 1 ms maximum age, so that past it (see outlive_1ms_attributes) every read asks the
    // worker; within it the page cache serves what is there, whoever reads.
    let daemon = FusedDaemon::start(&["--subtree-max-age", "1"])?;
    let (mut in_big, mut in_small) = (probe_in(&big)?, probe_in(&small)?);
    let big_pid = host_pid(&mut in_big)?;
    let binds = tempfile::Builder::new()
        .prefix("proclens-test-subtree-")
        .tempdir()?;
    let bind = BindMount::new(
        &subtree_path(&daemon, big_pid, "meminfo"),
        &binds.path().join("meminfo"),
    )?;
    assert_eq!(mem_total(&in_big.read_string(bind.path())?)?, 262_144);

    let old = daemon.worker_pids()?[0];
    rig::process::signal(old, libc::SIGKILL)?;
    new_worker(&daemon, old)?;
    // Within the maximum age of the old worker's last answer the kernel may still serve the
    // page cache without asking (a new worker can do nothing about it): that content is the
    // named container's, rendered for it. Whether this read comes that soon is up to the
    // scheduler; either way it is never the reader's own file.
    match in_small.read_string(bind.path()) {
        Ok(text) => assert_eq!(
            mem_total(&text)?,
            262_144,
            "a read from the page cache right after the restart: the named container's content"
        ),
        Err(err) => assert_eq!(ProbeError::errno_of(&err), Some(libc::EIO), "{err:#}"),
    }
    // Past it the kernel asks the new worker, which never saw the lookup: only a reader inside
    // the container can tell it whose file this is. Another container's reader gets EIO, not
    // its own values.
    outlive_1ms_attributes();
    let err = in_small
        .read_string(bind.path())
        .expect_err("another container's read of an unknown subtree file");
    assert_eq!(ProbeError::errno_of(&err), Some(libc::EIO), "{err:#}");
    assert_eq!(mem_total(&in_big.read_string(bind.path())?)?, 262_144);
    outlive_1ms_attributes();
    assert_eq!(
        mem_total(&in_small.read_string(bind.path())?)?,
        262_144,
        "once known again, the file is the named container's for every reader"
    );

    // A reload (SIGHUP) hands the subtree's connection to the next worker as well.
    let old = daemon.worker_pids()?[0];
    rig::process::signal(daemon.pid(), libc::SIGHUP)?;
    new_worker(&daemon, old)?;
    outlive_1ms_attributes();
    assert_eq!(mem_total(&in_big.read_string(bind.path())?)?, 262_144);
    Ok(())
}
