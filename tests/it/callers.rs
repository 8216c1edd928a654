use anyhow::{Context, Result};
use proclens_tests::parse;
use proclens_tests::rig::{self, FusedDaemon, PidNs, Probe, ProbeOptions, TempCgroup};

use crate::util::{container_cgroup, probe_in, MIB};

/// A probe in `cg` whose reader runs in pid namespace `pid_ns`.
fn probe_in_ns(cg: &TempCgroup, pid_ns: PidNs) -> Result<Probe> {
    Probe::spawn(
        &cg.procs_files(),
        &ProbeOptions {
            pid_ns,
            ..ProbeOptions::default()
        },
    )
}

/// MemTotal in kB of `daemon`'s meminfo as `probe` reads it.
fn mem_total(probe: &mut Probe, daemon: &FusedDaemon) -> Result<u64> {
    parse::meminfo_kb(
        &probe.read_string(&daemon.path("proc/meminfo"))?,
        "MemTotal",
    )
}

#[test]
fn a_readers_thread_gets_its_processes_view() -> Result<()> {
    let cg = container_cgroup()?;
    let daemon = FusedDaemon::start(&[])?;
    let mut probe = probe_in(&cg)?;
    let meminfo = probe.read_string_in_thread(&daemon.path("proc/meminfo"))?;
    assert_eq!(parse::meminfo_kb(&meminfo, "MemTotal")?, 262144);
    Ok(())
}

#[test]
fn a_reader_moved_to_another_cgroup_gets_the_new_view_at_once() -> Result<()> {
    // The daemon remembers each reading thread's view; moving the thread must not leave it
    // with the old container's.
    let first = container_cgroup()?;
    let second = TempCgroup::builder()
        .memory_limit(128 * MIB)
        .cpus("0")
        .create()?;
    let daemon = FusedDaemon::start(&[])?;
    let mut probe = probe_in(&first)?;
    assert_eq!(mem_total(&mut probe, &daemon)?, 262144);
    assert_eq!(mem_total(&mut probe, &daemon)?, 262144, "a remembered view");
    let (_, host_pid) = probe.pids()?;
    second.add_pid(host_pid)?;
    assert_eq!(
        mem_total(&mut probe, &daemon)?,
        131072,
        "the first read after the move"
    );
    first.add_pid(host_pid)?;
    assert_eq!(mem_total(&mut probe, &daemon)?, 262144, "and back");
    Ok(())
}

#[test]
fn host_pid_namespace_reader_gets_its_cgroups_view() -> Result<()> {
    let cg = container_cgroup()?;
    let daemon = FusedDaemon::start(&[])?;
    let mut probe = probe_in_ns(&cg, PidNs::Host)?;
    assert_ne!(
        probe.pids()?.0,
        1,
        "rig: reader should be in the host pid namespace"
    );
    assert_eq!(
        mem_total(&mut probe, &daemon)?,
        262144,
        "a hostPID pod's container"
    );
    Ok(())
}

#[test]
fn exec_process_sees_the_containers_uptime() -> Result<()> {
    let cg = container_cgroup()?;
    let daemon = FusedDaemon::start(&[])?;
    let mut init = probe_in(&cg)?;
    let (_, init_pid) = init.pids()?;
    // docker exec / runc exec style: same cgroup, setns into the pid namespace, parent outside.
    let mut exec = probe_in_ns(&cg, PidNs::Of(init_pid))?;
    let uptime = exec.read_string(&daemon.path("proc/uptime"))?;
    let age = init.age().as_secs_f64();
    let (uptime, _) = parse::uptime(&uptime)?;
    assert!(
        uptime <= age + 0.05,
        "the container's init is at most {age} s old, an exec'd process sees uptime {uptime} s"
    );
    // What an exec'd process read must not change what the container's own processes see.
    let uptime = init.read_string(&daemon.path("proc/uptime"))?;
    let (uptime, _) = parse::uptime(&uptime)?;
    let age = init.age().as_secs_f64();
    assert!(
        uptime <= age + 0.05,
        "after an exec'd process read, the init (at most {age} s old) sees uptime {uptime} s"
    );
    Ok(())
}

#[test]
fn pod_member_gets_its_own_cgroup_not_the_shared_inits() -> Result<()> {
    rig::preflight()?;
    let pause = TempCgroup::builder().memory_limit(64 * MIB).create()?;
    let app = TempCgroup::builder().memory_limit(256 * MIB).create()?;
    let daemon = FusedDaemon::start(&[])?;
    let mut init = probe_in(&pause)?;
    let (_, init_pid) = init.pids()?;
    let mut member = probe_in_ns(&app, PidNs::Of(init_pid))?;
    assert_ne!(
        member.pids()?.0,
        1,
        "rig: member should share the init's pid namespace"
    );
    assert_eq!(mem_total(&mut init, &daemon)?, 65536, "the pause container");
    assert_eq!(
        mem_total(&mut member, &daemon)?,
        262144,
        "the app container, not the pause"
    );
    Ok(())
}

#[test]
fn system_container_service_in_a_sub_cgroup_gets_the_containers_view() -> Result<()> {
    rig::preflight()?;
    let container = TempCgroup::builder().memory_limit(256 * MIB).create()?;
    let init_scope = container.child("init.scope")?;
    let service = container.child("service")?;
    let daemon = FusedDaemon::start(&[])?;
    // systemd style: pid 1 in <container>/init.scope, a service it forked in <container>/service.
    let mut probe = probe_in(&init_scope)?;
    probe.alloc_mib(64)?;
    probe.fork_into(&service.procs_files())?;
    assert_ne!(probe.pids()?.0, 1, "rig: the service is not the init");
    let meminfo = probe.read_string(&daemon.path("proc/meminfo"))?;
    assert_eq!(
        parse::meminfo_kb(&meminfo, "MemTotal")?,
        262144,
        "{meminfo}"
    );
    let free = parse::meminfo_kb(&meminfo, "MemFree")?;
    assert!(
        free <= (256 - 48) * 1024,
        "the init holds 64 MiB of the container's 256 MiB, but the service sees MemFree {free} kB: \
         usage is not the container's"
    );
    Ok(())
}

#[test]
fn attached_process_in_a_sub_cgroup_gets_the_containers_view() -> Result<()> {
    rig::preflight()?;
    let container = TempCgroup::builder().memory_limit(256 * MIB).create()?;
    let attached = container.child(".lxc")?;
    let daemon = FusedDaemon::start(&[])?;
    let mut init = probe_in(&container)?;
    let (_, init_pid) = init.pids()?;
    // lxc-attach style: setns into the container's pid namespace, cgroup <container>/.lxc; its
    // parent is outside the container.
    let mut caller = probe_in_ns(&attached, PidNs::Of(init_pid))?;
    let h = caller.open(&daemon.path("proc/meminfo"))?;
    let before = caller.reread(h)?;
    assert_eq!(parse::meminfo_kb(&before, "MemTotal")?, 262144, "{before}");
    init.alloc_mib(64)?;
    let after = caller.reread(h)?;
    let (before, after) = (
        parse::meminfo_kb(&before, "MemFree")?,
        parse::meminfo_kb(&after, "MemFree")?,
    );
    assert!(
        before.saturating_sub(after) >= 48 * 1024,
        "the init allocated 64 MiB, but the attached caller's MemFree went {before} -> {after} \
         kB: usage is not the container's"
    );
    Ok(())
}

/// Threads listed in the `tasks` (v1) or `cgroup.threads` (v2) file of `cg`'s pids hierarchy.
fn threads_in(cg: &TempCgroup) -> Result<usize> {
    let dir = cg.dir("pids").context("no pids hierarchy")?;
    let file = if dir.join("tasks").exists() {
        "tasks"
    } else {
        "cgroup.threads"
    };
    Ok(std::fs::read_to_string(dir.join(file))?.lines().count())
}

#[test]
fn system_container_loadavg_counts_tasks_in_sub_cgroups() -> Result<()> {
    rig::preflight()?;
    let container = TempCgroup::builder().memory_limit(256 * MIB).create()?;
    let init_scope = container.child("init.scope")?;
    let service = container.child("service")?;
    let daemon = FusedDaemon::start(&[])?;
    let mut probe = probe_in(&init_scope)?;
    probe.fork_into(&service.procs_files())?;
    let loadavg = probe.read_string(&daemon.path("proc/loadavg"))?;
    let (_, total) = loadavg
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split_once('/'))
        .with_context(|| format!("loadavg {loadavg:?}"))?;
    let expected = threads_in(&container)? + threads_in(&init_scope)? + threads_in(&service)?;
    assert!(
        threads_in(&service)? > 0,
        "rig: the service runs in its sub-cgroup"
    );
    assert_eq!(total.parse::<usize>()?, expected, "{loadavg}");
    Ok(())
}
