use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use proclens_tests::parse;
use proclens_tests::rig::{
    self, mountinfo, process, FusedDaemon, MountDir, Probe, ProbeOptions, TempCgroup,
};

use crate::util::{
    container_cgroup, have_cpus, host_meminfo_kb, probe_in, probe_on_host, set_memory_limit,
    wait_for_log, MIB,
};

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
    for word in [
        "--cpu-view",
        "cpuset",
        "quota",
        "--threads",
        "--log-level",
        "--stats-file",
        "--stats-interval",
    ] {
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

/// MemTotal, in kB, of the fake `/proc/meminfo` that [`fake_roots`] makes.
const FAKE_MEM_TOTAL_KB: u64 = 123_456_789;

/// `present` of the fake `/sys/devices/system/cpu` that [`fake_roots`] makes.
const FAKE_PRESENT: &str = "0-63";

/// A procfs root and a sysfs root (`<dir>/proc`, `<dir>/sys`) that show the host's files
/// through symlinks, except host `meminfo` (MemTotal [`FAKE_MEM_TOTAL_KB`]) and
/// `devices/system/cpu/present` ([`FAKE_PRESENT`]). Processes started later are missing.
fn fake_roots(dir: &Path) -> Result<()> {
    use std::os::unix::fs::symlink;
    let (proc, cpu) = (dir.join("proc"), dir.join("sys/devices/system/cpu"));
    for (fake, real, own) in [
        (&proc, "/proc", "meminfo"),
        (&cpu, "/sys/devices/system/cpu", "present"),
    ] {
        std::fs::create_dir_all(fake)?;
        for entry in std::fs::read_dir(real)? {
            let name = entry?.file_name();
            if name != own {
                symlink(Path::new(real).join(&name), fake.join(&name))?;
            }
        }
    }
    let meminfo: String = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .map(|l| match l.starts_with("MemTotal:") {
            true => format!("MemTotal:       {FAKE_MEM_TOTAL_KB} kB\n"),
            false => format!("{l}\n"),
        })
        .collect();
    std::fs::write(proc.join("meminfo"), meminfo)?;
    std::fs::write(cpu.join("present"), format!("{FAKE_PRESENT}\n"))?;
    Ok(())
}

/// Where each fd of process `pid` points.
fn fd_targets(pid: u32) -> Result<Vec<PathBuf>> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .map(|e| Ok(std::fs::read_link(e?.path())?))
        .collect()
}

/// The names of the threads of process `pid`.
fn thread_names(pid: u32) -> Result<Vec<String>> {
    std::fs::read_dir(format!("/proc/{pid}/task"))?
        .map(|e| {
            Ok(std::fs::read_to_string(e?.path().join("comm"))?
                .trim()
                .to_string())
        })
        .collect()
}

/// The daemon's one serving worker.
fn worker(daemon: &FusedDaemon) -> Result<u32> {
    match daemon.worker_pids()?.as_slice() {
        [pid] => Ok(*pid),
        pids => anyhow::bail!("want one worker, found {pids:?}"),
    }
}

/// `proclens-fused` started with every option of `--help` at once (none at its default), next to
/// one started with none: each option shows in what the first does and the second does not.
#[test]
fn every_option_takes_effect() -> Result<()> {
    rig::preflight()?;
    let two_cpus = have_cpus(2, "the --cpu-view part of every_option_takes_effect")?;
    let cg = TempCgroup::builder()
        .memory_limit(256 * MIB)
        .cpus(if two_cpus { "0-1" } else { "0" })
        .cfs_quota(50_000, 100_000)
        .create()?;
    let mut in_cg = probe_in(&cg)?;
    let mut on_host = probe_on_host()?;
    let cg_pid = in_cg.pids()?.1;
    // The fake procfs links only processes that exist now: the probes do.
    let roots = tempfile::Builder::new()
        .prefix("proclens-test-roots-")
        .tempdir()?;
    fake_roots(roots.path())?;
    let subtree = MountDir::new()?;
    let (proc_root, sys_root) = (roots.path().join("proc"), roots.path().join("sys"));
    let stats_file = roots.path().join("run/fused.stats");
    let utf8 = |p: &Path| p.to_str().context("utf-8 path").map(str::to_string);
    let args = [
        "--cpu-view".to_string(),
        "quota".to_string(),
        "--threads".to_string(),
        "3".to_string(),
        "--spare-threads".to_string(),
        "1".to_string(),
        "--open-files".to_string(),
        "0".to_string(),
        "--subtree-max-age".to_string(),
        "3600000".to_string(),
        "--subtree-mountpoint".to_string(),
        utf8(subtree.path())?,
        "--log-level".to_string(),
        "debug".to_string(),
        "--proc-root".to_string(),
        utf8(&proc_root)?,
        "--sys-root".to_string(),
        utf8(&sys_root)?,
        "--stats-file".to_string(),
        utf8(&stats_file)?,
        "--stats-interval".to_string(),
        "1".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let set = FusedDaemon::start(&args)?;
    let plain = FusedDaemon::start(&[])?;

    // The mountpoint (the positional argument).
    let m = set.mount()?.context("nothing mounted at the mountpoint")?;
    assert_eq!(m.fstype, "fuse.proclens", "{m:?}");

    // --subtree-mountpoint: the subtree is mounted there, and `containers` links there.
    let sub = mountinfo::mount_at(subtree.path())?.context("no subtree at --subtree-mountpoint")?;
    assert!(sub.fstype.starts_with("fuse"), "{sub:?}");
    assert_eq!(std::fs::read_link(set.path("containers"))?, subtree.path());

    // --cpu-view quota: half a CPU of quota on two allowed CPUs shows one CPU, not two.
    if two_cpus {
        let online = |d: &FusedDaemon, p: &mut Probe| -> Result<String> {
            Ok(p.read_string(&d.path("sys/devices/system/cpu/online"))?
                .trim()
                .to_string())
        };
        assert_eq!(online(&set, &mut in_cg)?, "0", "--cpu-view quota");
        assert_eq!(
            online(&plain, &mut in_cg)?,
            "0-1",
            "the default --cpu-view cpuset"
        );
    }

    // --proc-root and --sys-root: the host's view passes the fake roots' files through.
    let host_meminfo = on_host.read_string(&set.path("proc/meminfo"))?;
    assert_eq!(
        parse::meminfo_kb(&host_meminfo, "MemTotal")?,
        FAKE_MEM_TOTAL_KB
    );
    let present = on_host.read_string(&set.path("sys/devices/system/cpu/present"))?;
    assert_eq!(present.trim(), FAKE_PRESENT);
    let real = on_host.read_string(&plain.path("proc/meminfo"))?;
    assert_eq!(
        parse::meminfo_kb(&real, "MemTotal")?,
        host_meminfo_kb("MemTotal")?
    );

    // --threads 3: three serving threads (fuse-0..2). --spare-threads 1: one connection fd per
    // serving and spare thread, so 3 + 1 against the default 2 + 6: 4 fewer /dev/fuse fds.
    let serving = |pid| -> Result<usize> {
        Ok(thread_names(pid)?
            .iter()
            .filter(|n| {
                n.strip_prefix("fuse-")
                    .is_some_and(|k| k.parse::<u32>().is_ok())
            })
            .count())
    };
    let (set_worker, plain_worker) = (worker(&set)?, worker(&plain)?);
    assert_eq!(serving(set_worker)?, 3, "{:?}", thread_names(set_worker)?);
    assert_eq!(
        serving(plain_worker)?,
        2,
        "{:?}",
        thread_names(plain_worker)?
    );
    let fuse_fds = |pid| -> Result<usize> {
        Ok(fd_targets(pid)?
            .iter()
            .filter(|t| *t == Path::new("/dev/fuse"))
            .count())
    };
    assert_eq!(
        fuse_fds(set_worker)? + (2 + 6),
        fuse_fds(plain_worker)? + (3 + 1),
        "/dev/fuse fds of the worker with --threads 3 --spare-threads 1 and of the default"
    );

    // --open-files 0: after the reads above no cgroup file is kept open; by default some are.
    let cgroup_fds = |pid| -> Result<usize> {
        Ok(fd_targets(pid)?
            .iter()
            .filter(|t| t.starts_with("/sys/fs/cgroup"))
            .count())
    };
    in_cg.read_string(&set.path("proc/meminfo"))?;
    in_cg.read_string(&plain.path("proc/meminfo"))?;
    assert_eq!(
        cgroup_fds(set_worker)?,
        0,
        "--open-files 0: {:?}",
        fd_targets(set_worker)?
    );
    assert!(
        cgroup_fds(plain_worker)? > 0,
        "default: {:?}",
        fd_targets(plain_worker)?
    );

    // --subtree-max-age 3600000: once the default's 100 ms have passed (it shows a new limit),
    // the page cache still serves the old one within the hour.
    let total = |d: &FusedDaemon| -> Result<u64> {
        let path = d.path(&format!("containers/{cg_pid}/proc/meminfo"));
        parse::meminfo_kb(&std::fs::read_to_string(path)?, "MemTotal")
    };
    assert_eq!(total(&set)?, 262_144);
    assert_eq!(total(&plain)?, 262_144);
    set_memory_limit(&cg, 192 * MIB)?;
    rig::poll(
        Duration::from_secs(10),
        "the new limit in the default's subtree",
        || Ok((total(&plain)? == 196_608).then_some(())),
    )?;
    assert_eq!(total(&set)?, 262_144, "--subtree-max-age 3600000");

    // --stats-file and --stats-interval 1: fused's numbers are written there (its directory
    // made), saying they are rewritten every second; the default says every 5 s.
    let interval = |path: &Path| -> Result<Option<String>> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(None);
        };
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("proclens_fused_stats_interval_seconds "))
            .map(str::to_string))
    };
    rig::poll(
        Duration::from_secs(10),
        "the stats file at --stats-file",
        || Ok(interval(&stats_file)?.filter(|v| v == "1")),
    )?;
    let plain_stats = plain.stats_file().context("the rig's default stats file")?;
    rig::poll(Duration::from_secs(10), "the default's stats file", || {
        Ok(interval(plain_stats)?.filter(|v| v == "5"))
    })?;

    // --log-level debug: debug lines, which the default (info) does not write.
    wait_for_log(&set, " DEBUG ", Duration::from_secs(10))?;
    if std::env::var_os("RUST_LOG").is_none() {
        assert!(!plain.stderr().contains(" DEBUG "), "{}", plain.stderr());
    }
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
