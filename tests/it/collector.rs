//! The collector library (proclens-cgroup) on real cgroups: which cgroups it lists as
//! containers, and what it reads from one named by path, exactly as the kernel holds it. Runs
//! on the v1 host and again in the v2 VM.

use anyhow::{Context, Result};
use proclens_cgroup::files::FileCache;
use proclens_cgroup::{
    CgroupKind, Collector, Controller, CpuMax, CpuQuota, CpuWeight, Discovery, Error, HostPaths,
    Parts, Version,
};

use crate::util::{container_cgroup, Sleeper, MIB};

/// A Kubernetes pod UID, as the kubelet names pod cgroups after it.
const POD_UID: &str = "0b5e6a3c-1d2e-4f00-9a7b-3c2d1e0f9a8b";

/// What the v1 kernel shows as "no limit" in memory.limit_in_bytes (PAGE_COUNTER_MAX pages).
const V1_UNLIMITED_BYTES: u64 = 0x7fff_ffff_ffff_f000;

fn memory_version(collector: &Collector, path: &str) -> Result<Version> {
    let set = collector.cgroup_at(path)?;
    let (version, _) = collector
        .dir(&set, Controller::Memory)
        .context("no memory hierarchy")?;
    Ok(version)
}

#[test]
fn lists_the_cgroups_with_processes_and_kubernetes_pods() -> Result<()> {
    let top = container_cgroup()?;
    top.enable_controllers_for_children()?;
    let app = top.child("app")?;
    let idle = top.child("idle")?;
    let kubepods = top.child("kubepods")?;
    kubepods.enable_controllers_for_children()?;
    let burstable = kubepods.child("burstable")?;
    burstable.enable_controllers_for_children()?;
    let pod = burstable.child(&format!("pod{POD_UID}"))?;
    pod.enable_controllers_for_children()?;
    let ctr = pod.child("c0ffee")?;
    let (_in_app, _in_ctr) = (Sleeper::start_in(&app)?, Sleeper::start_in(&ctr)?);

    let collector = Collector::discover(HostPaths::default(), FileCache::new(64))?;
    let discovery = Discovery {
        roots: vec![top.name().to_string()],
        ..Discovery::default()
    };
    let found = collector.list(&discovery)?;
    let listed: Vec<(&str, &CgroupKind)> =
        found.iter().map(|f| (f.path.as_str(), &f.kind)).collect();
    let (app_path, pod_path, ctr_path) = (
        format!("/{}", app.name()),
        format!("/{}", pod.name()),
        format!("/{}", ctr.name()),
    );
    assert_eq!(
        listed,
        [
            (app_path.as_str(), &CgroupKind::Other),
            (
                pod_path.as_str(),
                &CgroupKind::KubePod {
                    uid: POD_UID.to_string()
                }
            ),
            (
                ctr_path.as_str(),
                &CgroupKind::KubeContainer {
                    pod_uid: POD_UID.to_string(),
                    id: "c0ffee".to_string()
                }
            ),
        ],
        "the cgroups with processes and the pod, not {} nor the empty ones",
        idle.name()
    );
    // Each listed set names the cgroup in every hierarchy that has it, and only those.
    for f in &found {
        assert_eq!(f.set, collector.cgroup_at(&f.path)?, "{}", f.path);
        let snap = collector.snapshot(&f.set, Parts::PIDS)?;
        let tasks = snap.pids.context("no pids controller")?.current;
        // pids.current counts descendants: the pod's one task is its container's sleeper.
        assert_eq!(tasks, 1, "{}", f.path);
    }
    drop((_in_app, _in_ctr));
    Ok(())
}

#[test]
fn reads_a_cgroup_by_path_exactly() -> Result<()> {
    let top = container_cgroup()?;
    top.enable_controllers_for_children()?;
    let app = top.child("app")?;
    let _sleeper = Sleeper::start_in(&app)?;
    let collector = Collector::discover(HostPaths::default(), FileCache::new(64))?;
    let path = format!("/{}", app.name());
    let set = collector.cgroup_at(&path)?;
    let snap = collector.snapshot(&set, Parts::ALL)?;
    let v2 = memory_version(&collector, &path)? == Version::V2;

    let memory = snap.memory.context("memory")?;
    assert_eq!(
        memory.limit_bytes,
        Some(256 * MIB),
        "the parent's limit is effective"
    );
    // The sleeper's pages were charged before it moved in (v1 does not move charges).
    assert!(memory.working_set_bytes() <= memory.usage_bytes);
    let detail = snap.memory_detail.context("memory detail")?;
    let own_unlimited = if v2 { None } else { Some(V1_UNLIMITED_BYTES) };
    assert_eq!(detail.own_limit_bytes, own_unlimited, "no limit of its own");
    assert_eq!(detail.events.oom_kill, Some(0));
    assert_eq!(snap.cpuset, Some(vec![0]));
    assert_eq!(
        snap.cpu_quota,
        Some(CpuQuota {
            quota_us: 50_000,
            period_us: 100_000
        })
    );
    let cpu = snap.cpu_detail.context("cpu detail")?;
    assert_eq!(
        cpu.own_max,
        Some(CpuMax {
            quota_us: None,
            period_us: 100_000
        })
    );
    let default_weight = if v2 {
        CpuWeight::Weight(100)
    } else {
        CpuWeight::Shares(1024)
    };
    assert_eq!(cpu.weight, Some(default_weight));
    assert_eq!(cpu.cpuset_mems, Some(vec![0]));
    let pids = snap.pids.context("pids")?;
    assert_eq!((pids.current, pids.limit), (1, None));
    assert!(snap.cpu_usage.is_some() && snap.io.is_some());
    assert_eq!(snap.pressure.is_some(), v2, "PSI per cgroup on v2 only");

    // The parent, read by its own path, shows its own limits.
    let parent = collector.snapshot(&collector.cgroup_at(top.name())?, Parts::MEMORY_DETAIL)?;
    let own = parent.memory_detail.context("parent memory detail")?;
    assert_eq!(own.own_limit_bytes, Some(256 * MIB));
    Ok(())
}

#[test]
fn a_cgroup_that_does_not_exist_is_vanished() -> Result<()> {
    let collector = Collector::discover(HostPaths::default(), FileCache::new(8))?;
    let err = collector
        .cgroup_at("/proclens-test-no-such-cgroup")
        .expect_err("no such cgroup");
    assert!(matches!(err, Error::Vanished { .. }), "{err}");
    let top = container_cgroup()?;
    let set = collector.cgroup_at(top.name())?;
    collector.snapshot(&set, Parts::ALL)?;
    drop(top);
    let err = collector
        .snapshot(&set, Parts::ALL)
        .expect_err("a removed cgroup");
    assert!(matches!(err, Error::Vanished { .. }), "{err}");
    Ok(())
}
