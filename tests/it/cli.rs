use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use proclens_tests::parse;
use proclens_tests::rig::{self, mountinfo, process, FusedDaemon, MountDir, Probe, ProbeOptions};

use crate::util::{container_cgroup, probe_in};

/// Runs `proclens-fused args…` to completion (20 s at most) with no `NOTIFY_SOCKET`.
fn run_fused(args: &[&str]) -> Result<Output> {
    rig::preflight()?;
    let mut cmd = Command::new(FusedDaemon::binary()?);
    cmd.args(args).env_remove("NOTIFY_SOCKET");
    process::run(&mut cmd, Duration::from_secs(20))
}

/// Asserts `out` is a failed start whose stderr is exactly one non-empty line, which mentions
/// `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit status {}; stderr:\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want a one-line error, stderr:\n{stderr}");
    assert!(
        lines[0].contains(needle),
        "error does not mention {needle:?}:\n{stderr}"
    );
}

/// The mounts stacked on `path`.
fn mounts_at(path: &std::path::Path) -> Result<Vec<mountinfo::MountEntry>> {
    Ok(mountinfo::mounts()?
        .into_iter()
        .filter(|m| m.mountpoint == path)
        .collect())
}

#[test]
fn help_lists_every_option() -> Result<()> {
    let out = run_fused(&["--help"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "--help exited {}:\n{stdout}",
        out.status
    );
    for word in ["--cpu-view", "cpuset", "quota", "--threads", "--log-level"] {
        assert!(
            stdout.contains(word),
            "--help does not mention {word}:\n{stdout}"
        );
    }
    assert!(
        stdout.to_ascii_uppercase().contains("MOUNTPOINT"),
        "no MOUNTPOINT:\n{stdout}"
    );
    Ok(())
}

#[test]
fn unknown_flag_fails_before_mounting() -> Result<()> {
    let dir = MountDir::new()?;
    let out = run_fused(&["--no-such-flag", dir.path().to_str().context("utf-8")?])?;
    assert_one_line_error(&out, "--no-such-flag");
    assert!(
        mounts_at(dir.path())?.is_empty(),
        "mounted despite the bad flag"
    );
    Ok(())
}

#[test]
fn bad_cpu_view_fails_before_mounting() -> Result<()> {
    let dir = MountDir::new()?;
    let out = run_fused(&["--cpu-view", "bogus", dir.path().to_str().context("utf-8")?])?;
    assert_one_line_error(&out, "bogus");
    assert!(
        mounts_at(dir.path())?.is_empty(),
        "mounted despite the bad --cpu-view"
    );
    Ok(())
}

#[test]
fn every_option_is_accepted() -> Result<()> {
    rig::preflight()?;
    let daemon = FusedDaemon::start(&[
        "--cpu-view",
        "quota",
        "--threads",
        "2",
        "--log-level",
        "debug",
    ])?;
    let meminfo = std::fs::read_to_string(daemon.path("proc/meminfo"))?;
    parse::meminfo_kb(&meminfo, "MemTotal")?;
    Ok(())
}

#[test]
fn mount_is_read_only_fuse_proclens_with_allow_other() -> Result<()> {
    let cg = container_cgroup()?;
    let daemon = FusedDaemon::start(&[])?;
    let m = daemon.mount()?.context("no mount")?;
    assert_eq!(m.fstype, "fuse.proclens");
    assert!(
        m.mount_options.iter().any(|o| o == "ro"),
        "not read-only: {m:?}"
    );
    assert!(
        m.super_options.iter().any(|o| o == "allow_other"),
        "no allow_other: {m:?}"
    );
    // Another user (containers run as any uid) can read; nobody can write.
    let as_nobody = ProbeOptions {
        uid: Some(65534),
        ..ProbeOptions::default()
    };
    let mut nobody = Probe::spawn(&cg.procs_files(), &as_nobody)?;
    let meminfo = nobody.read_string(&daemon.path("proc/meminfo"))?;
    assert_eq!(parse::meminfo_kb(&meminfo, "MemTotal")?, 262144);
    let mut root = probe_in(&cg)?;
    let err = root
        .open_for_write(&daemon.path("proc/meminfo"))
        .unwrap_err();
    assert_eq!(
        rig::ProbeError::errno_of(&err),
        Some(libc::EROFS),
        "{err:#}"
    );
    Ok(())
}

#[test]
fn second_daemon_on_a_live_mount_fails_clearly() -> Result<()> {
    rig::preflight()?;
    let first = FusedDaemon::start(&[])?;
    let mountpoint = first.mountpoint().to_str().context("utf-8")?.to_string();
    let out = run_fused(&[&mountpoint])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "second daemon exited {}:\n{stderr}",
        out.status
    );
    let line = stderr
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        line.contains(&mountpoint) || line.to_ascii_lowercase().contains("mount"),
        "error does not say what is wrong:\n{stderr}"
    );
    assert_eq!(
        mounts_at(first.mountpoint())?.len(),
        1,
        "mounts stacked on {mountpoint}"
    );
    let meminfo = std::fs::read_to_string(first.path("proc/meminfo"))
        .context("the first daemon must keep serving")?;
    parse::meminfo_kb(&meminfo, "MemTotal")?;
    Ok(())
}

#[test]
fn stale_mount_of_a_killed_daemon_is_replaced() -> Result<()> {
    rig::preflight()?;
    let dir = MountDir::new()?;
    FusedDaemon::start_at(dir.path(), &[])?.kill_leaving_mount()?;
    let stale = std::fs::metadata(dir.path().join("proc")).map(drop);
    let errno = stale.as_ref().err().and_then(std::io::Error::raw_os_error);
    ensure!(
        errno == Some(libc::ENOTCONN),
        "rig: killed daemon's mount not stale: {stale:?}"
    );

    let daemon = FusedDaemon::start_at(dir.path(), &[])?;
    assert_eq!(
        mounts_at(dir.path())?.len(),
        1,
        "new mount stacked on the stale one"
    );
    let meminfo = std::fs::read_to_string(daemon.path("proc/meminfo"))?;
    parse::meminfo_kb(&meminfo, "MemTotal")?;
    let status = daemon.stop_with(libc::SIGTERM)?;
    assert_eq!(status.code(), Some(0), "{status}");
    Ok(())
}

#[test]
fn sigterm_unmounts_and_exits_0() -> Result<()> {
    rig::preflight()?;
    let daemon = FusedDaemon::start(&[])?;
    let mountpoint = daemon.mountpoint().to_path_buf();
    let status = daemon.stop_with(libc::SIGTERM)?;
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(mounts_at(&mountpoint)?.is_empty());
    Ok(())
}

#[test]
fn sigint_unmounts_and_exits_0() -> Result<()> {
    rig::preflight()?;
    let daemon = FusedDaemon::start(&[])?;
    let mountpoint = daemon.mountpoint().to_path_buf();
    let status = daemon.stop_with(libc::SIGINT)?;
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(mounts_at(&mountpoint)?.is_empty());
    Ok(())
}

#[test]
fn missing_mountpoint_is_created() -> Result<()> {
    rig::preflight()?;
    let dir = MountDir::missing()?;
    assert!(!dir.path().exists());
    let daemon = FusedDaemon::start_at(dir.path(), &[])?;
    assert!(daemon.path("proc").is_dir());
    Ok(())
}
