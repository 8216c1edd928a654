//! Bad kernel input: an unparsable cgroup file or a cgroup that vanishes fails only the read that
//! met it, with EIO and a warning, and the daemon goes on; a cgroup file that hangs holds only
//! the reads that need it. The kernel never produces malformed or hanging files on demand, so
//! these tests point the daemon (`--proc-root`) at a copy of /proc and a cgroup tree the test
//! controls; the mount, the FUSE traffic and the reader are real.

use anyhow::{Context, Result};
use proclens_tests::parse;
use proclens_tests::rig::{self, FusedDaemon, PidNs, Probe, ProbeError, ProbeOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::wait_for_log;

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
        self.create_container_named("ctr")
    }

    /// Creates cgroup `/<name>` from the v2 fixtures (memory.max = 256 MiB).
    fn create_container_named(&self, name: &str) -> Result<()> {
        let dir = self.cgroup_root().join(name);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(v2_fixtures())? {
            let entry = entry?;
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if !file.starts_with("proc-") && !file.starts_with("root-") {
                std::fs::copy(entry.path(), dir.join(&*file))?;
            }
        }
        Ok(())
    }

    /// Makes host pid `pid` (in the host pid namespace) a member of `/<cgroup>`.
    fn add_process_to(&self, pid: u32, cgroup: &str) -> Result<()> {
        let dir = self.proc_root().join(pid.to_string());
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cgroup"), format!("0::/{cgroup}\n"))?;
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

fn v2_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cgroup/fixtures/v2/6.1")
}

fn start(kernel: &FakeKernel) -> Result<(FusedDaemon, Probe)> {
    let proc_root = kernel.proc_root().display().to_string();
    let daemon = FusedDaemon::start(&["--proc-root", &proc_root])?;
    let probe = probe_in(kernel, "ctr")?;
    Ok((daemon, probe))
}

/// A reader in the host pid namespace that the fake kernel places in `/<cgroup>`.
fn probe_in(kernel: &FakeKernel, cgroup: &str) -> Result<Probe> {
    let options = ProbeOptions {
        pid_ns: PidNs::Host,
        ..Default::default()
    };
    let mut probe = Probe::spawn(&[], &options)?;
    let (_, host_pid) = probe.pids()?;
    kernel.add_process_to(host_pid, cgroup)?;
    Ok(probe)
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

/// A container whose memory.stat never answers (a FIFO nobody writes: opening it blocks, as a
/// hung kernel file would) holds the daemon's two serving threads with two reads. A spare thread
/// takes over, so another container's read is served while those two are still held; once the
/// file answers, the held reads end, and the idle spare stops again.
#[test]
fn hung_cgroup_file_holds_only_the_reads_that_need_it() -> Result<()> {
    let kernel = FakeKernel::new()?;
    kernel.create_container_named("slow")?;
    let stat = kernel.cgroup_root().join("slow/memory.stat");
    std::fs::remove_file(&stat)?;
    let fifo = std::ffi::CString::new(stat.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) } != 0 {
        return Err(std::io::Error::last_os_error()).context("mkfifo memory.stat");
    }
    let (daemon, mut other) = start(&kernel).context("start")?;
    let meminfo = daemon.path("proc/meminfo");

    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut probe = probe_in(&kernel, "slow").context("slow probe")?;
            let path = meminfo.clone();
            Ok(std::thread::spawn(move || probe.read_string(&path)))
        })
        .collect::<Result<_>>()?;
    wait_for_log(
        &daemon,
        "started a spare serving thread",
        Duration::from_secs(10),
    )?;
    assert_eq!(
        mem_total(&mut other, &daemon)?,
        262_144,
        "the other container's read, served while the slow one's are held"
    );
    assert!(
        held.iter().all(|reader| !reader.is_finished()),
        "the slow container's reads were still held"
    );

    // Let the file answer: opening the FIFO's other end completes every blocked open. The
    // daemon's read of it then fails (a FIFO cannot be read at an offset): EIO.
    drop(std::fs::OpenOptions::new().write(true).open(&stat)?);
    for reader in held {
        match reader.join().expect("reader thread") {
            Ok(text) => assert_eq!(parse::meminfo_kb(&text, "MemTotal")?, 262_144),
            Err(err) => assert_eq!(ProbeError::errno_of(&err), Some(libc::EIO), "{err:#}"),
        }
    }
    wait_for_log(
        &daemon,
        "spare serving thread stopped",
        Duration::from_secs(20),
    )?;
    assert_eq!(
        mem_total(&mut other, &daemon)?,
        262_144,
        "the daemon went on"
    );
    Ok(())
}
