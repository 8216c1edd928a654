use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use proclens_tests::parse;
use proclens_tests::rig::{self, RuncContainer};

use crate::util::{container_cgroup, host_meminfo_kb, probe_in, probe_on_host, MIB};

#[test]
fn temp_cgroup_writes_limits_and_removes_itself() -> Result<()> {
    let cg = container_cgroup()?;
    let read = |controller: &str, file: &str| -> Result<String> {
        let dir = cg
            .dir(controller)
            .with_context(|| format!("no {controller} dir"))?;
        Ok(std::fs::read_to_string(dir.join(file))?.trim().to_string())
    };
    let dirs: Vec<_> = cg
        .procs_files()
        .iter()
        .map(|f| f.parent().unwrap().to_owned())
        .collect();
    if cg
        .dir("memory")
        .is_some_and(|d| d.join("memory.limit_in_bytes").exists())
    {
        assert_eq!(
            read("memory", "memory.limit_in_bytes")?,
            (256 * MIB).to_string()
        );
        assert_eq!(read("cpuset", "cpuset.cpus")?, "0");
        assert_eq!(read("cpu", "cpu.cfs_quota_us")?, "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us")?, "100000");
    } else {
        assert_eq!(read("memory", "memory.max")?, (256 * MIB).to_string());
        assert_eq!(read("cpuset", "cpuset.cpus")?, "0");
        assert_eq!(read("cpu", "cpu.max")?, "50000 100000");
    }
    let mut sleeper = Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()?;
    cg.add_pid(sleeper.id())?;
    assert_eq!(cg.pids()?, [sleeper.id()]);
    drop(cg);
    let status = sleeper.wait()?;
    assert_eq!(status.code(), None, "the sleeper should have been killed");
    for dir in dirs {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    Ok(())
}

#[test]
fn probe_is_pid_1_of_a_new_namespace_inside_the_cgroup() -> Result<()> {
    let cg = container_cgroup()?;
    let mut probe = probe_in(&cg)?;
    let (ns_pid, host_pid) = probe.pids()?;
    assert_eq!(ns_pid, 1);
    for procs in cg.procs_files() {
        let pids = std::fs::read_to_string(&procs)?;
        let found = pids.lines().any(|l| l == host_pid.to_string());
        assert!(found, "{host_pid} not in {}: {pids:?}", procs.display());
    }
    let meminfo = probe.read_string("/proc/meminfo".as_ref())?;
    assert_eq!(
        parse::meminfo_kb(&meminfo, "MemTotal")?,
        host_meminfo_kb("MemTotal")?
    );
    Ok(())
}

#[test]
fn probe_on_host_is_in_every_root_cgroup() -> Result<()> {
    rig::preflight()?;
    let mut probe = probe_on_host()?;
    let (_, host_pid) = probe.pids()?;
    let cgroups = std::fs::read_to_string(format!("/proc/{host_pid}/cgroup"))?;
    for line in cgroups.lines() {
        assert!(line.ends_with(":/"), "not a root cgroup: {line}");
    }
    Ok(())
}

#[test]
fn probe_reports_errno_and_keeps_open_files() -> Result<()> {
    let cg = container_cgroup()?;
    let mut probe = probe_in(&cg)?;
    let err = probe.read("/nonexistent".as_ref()).unwrap_err();
    assert_eq!(
        rig::ProbeError::errno_of(&err),
        Some(libc::ENOENT),
        "{err:#}"
    );
    assert_eq!(probe.stat("/proc".as_ref())?.as_deref(), Some("dir"));
    assert_eq!(probe.stat("/nonexistent".as_ref())?, None);
    let h = probe.open("/proc/self/cmdline".as_ref())?;
    let first = probe.reread(h)?;
    ensure!(first.contains("proclens-probe\0"), "own cmdline: {first:?}");
    let tail = probe.pread(h, 1, 1 << 16)?;
    assert_eq!(&tail[..], &first.as_bytes()[1..]);
    probe.seek(h, 0)?;
    assert_eq!(probe.read_in_chunks(h, 1)?, first.as_bytes());
    probe.alloc_mib(8)?;
    probe.free()?;
    probe.close(h)?;
    Ok(())
}

#[test]
fn bare_runc_container_boots_and_sees_the_kernel_meminfo() -> Result<()> {
    rig::preflight()?;
    let ctr = RuncContainer::new()?
        .memory_limit(256 * MIB)
        .cpus("0")
        .cfs_quota(50_000, 100_000);
    let out = ctr.run("free -k; cat /proc/self/cgroup")?;
    let mem = out
        .lines()
        .find(|l| l.starts_with("Mem:"))
        .context(out.clone())?;
    let total: u64 = mem
        .split_whitespace()
        .nth(1)
        .context("free total")?
        .parse()?;
    assert_eq!(total, host_meminfo_kb("MemTotal")?, "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(":memory:") && l.ends_with(ctr.id())),
        "{out}"
    );
    Ok(())
}

#[test]
fn containerd_rig_cleans_up_after_containerd_dies() -> Result<()> {
    rig::preflight()?;
    let mut daemon = rig::ContainerdDaemon::start()?;
    let pod = rig::PodSpec::kubelet("rig", "orphan", &[]);
    let sandbox = daemon.run_pod(&pod)?;
    let ctr = daemon.start_container(
        &sandbox,
        &rig::ContainerSpec {
            name: "sleeper".into(),
            image: rig::BUSYBOX_IMAGE.into(),
            labels: Default::default(),
            command: vec!["sleep".into(), "3600".into()],
        },
    )?;
    let cgroup = daemon
        .container_cgroup("memory", &pod, &ctr)
        .context("no memory hierarchy")?;
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs"))?;
    let pids: Vec<u32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
    ensure!(!pids.is_empty(), "no task in {}", cgroup.display());
    let netns = daemon.netns_paths();
    ensure!(netns.len() == 1, "netns of the pod: {netns:?}");
    let (dir, bridge) = (daemon.dir().to_path_buf(), daemon.bridge().to_string());
    let socket = daemon.socket().to_path_buf();
    ensure!(!rig::shims_serving(&socket).is_empty(), "no shim found");
    ensure!(
        std::path::Path::new("/sys/class/net")
            .join(&bridge)
            .exists(),
        "no bridge {bridge}"
    );
    // containerd dies: CRI can no longer clean up, the rig must.
    daemon.kill_containerd()?;
    drop(daemon);
    for pid in pids {
        ensure!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))?.contains(") Z "),
            "container process {pid} survived"
        );
    }
    let shims = rig::shims_serving(&socket);
    ensure!(shims.is_empty(), "shims left running: {shims:?}");
    ensure!(!cgroup.exists(), "{} left behind", cgroup.display());
    ensure!(!netns[0].exists(), "{} left behind", netns[0].display());
    ensure!(
        !std::path::Path::new("/sys/class/net")
            .join(&bridge)
            .exists(),
        "bridge {bridge} left behind"
    );
    let mounts = rig::mountinfo::mounts()?;
    let left: Vec<_> = mounts
        .iter()
        .filter(|m| m.mountpoint.starts_with(&dir))
        .map(|m| m.mountpoint.display().to_string())
        .collect();
    ensure!(left.is_empty(), "mounts left behind: {left:?}");
    ensure!(!dir.exists(), "{} left behind", dir.display());
    Ok(())
}
