//! Bad kernel input: an unparsable cgroup file or a cgroup that vanishes fails only the read that
//! met it, with EIO and a warning, and the daemon goes on. The kernel never produces malformed
//! files on demand, so these tests point the daemon (`--proc-root`) at a copy of /proc and a
//! cgroup tree the test controls; the mount, the FUSE traffic and the reader are real.

use anyhow::{Context, Result};
use proclens_tests::parse;
use proclens_tests::rig::{self, FusedDaemon, PidNs, Probe, ProbeError, ProbeOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A fake /proc plus a fake cgroup2 tree, with one container cgroup `/ctr` copied from the v2
/// fixtures (memory.max = 256 MiB).
struct FakeKernel {
    dir: tempfile::TempDir,
}

impl FakeKernel {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("proclens-test-fake-")
            .tempdir()?;
        let kernel = FakeKernel { dir };
        let cg = kernel.cgroup_root();
        std::fs::create_dir_all(kernel.proc_root().join("self"))?;
        std::fs::write(
            kernel.proc_root().join("self/mountinfo"),
            format!("30 1 0:99 / {} rw - cgroup2 cgroup2 rw\n", cg.display()),
        )?;
        std::fs::create_dir_all(&cg)?;
        std::fs::write(cg.join("cgroup.controllers"), "cpuset cpu io memory pids\n")?;
        kernel.create_container()?;
        for name in ["meminfo", "stat", "cpuinfo", "uptime", "diskstats"] {
            // procfs files report size 0: read and write, never copy.
            let text = std::fs::read(Path::new("/proc").join(name))?;
            std::fs::write(kernel.proc_root().join(name), text)?;
        }
        Ok(kernel)
    }

    fn proc_root(&self) -> PathBuf {
        self.dir.path().join("proc")
    }

    fn cgroup_root(&self) -> PathBuf {
        self.dir.path().join("cg")
    }

    fn container(&self) -> PathBuf {
        self.cgroup_root().join("ctr")
    }

    fn create_container(&self) -> Result<()> {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cgroup/fixtures/v2/6.1");
        std::fs::create_dir_all(self.container())?;
        for entry in std::fs::read_dir(&fixtures)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with("proc-") && !name.starts_with("root-") {
                std::fs::copy(entry.path(), self.container().join(&*name))?;
            }
        }
        Ok(())
    }

    /// Makes host pid `pid` (in the host pid namespace) a member of `/ctr`.
    fn add_process(&self, pid: u32) -> Result<()> {
        let dir = self.proc_root().join(pid.to_string());
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cgroup"), "0::/ctr\n")?;
        std::fs::write(dir.join("status"), format!("Name:\tprobe\nNSpid:\t{pid}\n"))?;
        std::fs::write(
            dir.join("stat"),
            std::fs::read(format!("/proc/{pid}/stat"))?,
        )?;
        std::fs::create_dir_all(dir.join("ns"))?;
        std::os::unix::fs::symlink(format!("/proc/{pid}/ns/pid"), dir.join("ns/pid"))?;
        Ok(())
    }
}

fn start(kernel: &FakeKernel) -> Result<(FusedDaemon, Probe)> {
    let proc_root = kernel.proc_root().display().to_string();
    let daemon = FusedDaemon::start(&["--proc-root", &proc_root])?;
    let options = ProbeOptions {
        pid_ns: PidNs::Host,
        ..Default::default()
    };
    let mut probe = Probe::spawn(&[], &options)?;
    let (_, host_pid) = probe.pids()?;
    kernel.add_process(host_pid)?;
    Ok((daemon, probe))
}

fn mem_total(probe: &mut Probe, daemon: &FusedDaemon) -> Result<u64> {
    let text = probe.read_string(&daemon.path("proc/meminfo"))?;
    parse::meminfo_kb(&text, "MemTotal")
}

fn expect_eio(result: Result<String>, what: &str) {
    match result {
        Ok(text) => panic!("{what}: read succeeded with {text:?}"),
        Err(err) => assert_eq!(
            ProbeError::errno_of(&err),
            Some(libc::EIO),
            "{what}: {err:#}"
        ),
    }
}

#[test]
fn unparsable_cgroup_file_fails_only_that_read() -> Result<()> {
    let kernel = FakeKernel::new()?;
    let (daemon, mut probe) = start(&kernel)?;
    assert_eq!(mem_total(&mut probe, &daemon)?, 262_144);

    let current = kernel.container().join("memory.current");
    let good = std::fs::read(&current)?;
    std::fs::write(&current, "lots\n")?;
    expect_eio(
        probe.read_string(&daemon.path("proc/meminfo")),
        "malformed memory.current",
    );
    // Other files of the same container do not depend on memory.current and still work.
    let cpus = probe.read_string(&daemon.path("sys/devices/system/cpu/online"))?;
    assert_eq!(cpus.trim(), "0");

    std::fs::write(&current, good)?;
    assert_eq!(
        mem_total(&mut probe, &daemon)?,
        262_144,
        "the daemon went on"
    );
    // The log reaches the test through a pipe drained by another thread: wait for the line.
    let named = rig::poll(
        Duration::from_secs(10),
        "the warning naming the file",
        || {
            let log = daemon.stderr();
            Ok((log.contains("WARN") && log.contains("memory.current")).then_some(()))
        },
    );
    named.with_context(|| format!("daemon log: {}", daemon.stderr()))
}

#[test]
fn vanished_cgroup_fails_only_that_read() -> Result<()> {
    let kernel = FakeKernel::new()?;
    let (daemon, mut probe) = start(&kernel)?;
    let handle = probe.open(&daemon.path("proc/meminfo"))?;
    let before = probe.reread(handle)?;
    assert_eq!(parse::meminfo_kb(&before, "MemTotal")?, 262_144);

    std::fs::remove_dir_all(kernel.container())?;
    expect_eio(
        probe.reread(handle),
        "vanished cgroup, offset-0 read on an open file",
    );
    expect_eio(
        probe.read_string(&daemon.path("proc/stat")),
        "vanished cgroup, new open",
    );

    kernel.create_container()?;
    let after = probe
        .reread(handle)
        .context("read after the cgroup came back")?;
    assert_eq!(parse::meminfo_kb(&after, "MemTotal")?, 262_144);
    rig::poll(Duration::from_secs(10), "a warning in the log", || {
        Ok(daemon.stderr().contains("WARN").then_some(()))
    })?;
    Ok(())
}
