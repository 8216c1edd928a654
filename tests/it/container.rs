use std::time::Instant;

use anyhow::{Context, Result};
use proclens_tests::parse;
use proclens_tests::rig::{self, FusedDaemon, RuncContainer};

use crate::util::{have_cpus, MIB};

/// Files of the daemon's mount bind-mounted over the container's own, lxcfs style.
const BINDS: [&str; 8] = [
    "proc/meminfo",
    "proc/cpuinfo",
    "proc/stat",
    "proc/uptime",
    "proc/loadavg",
    "proc/swaps",
    "proc/diskstats",
    "sys/devices/system/cpu/online",
];

/// A runc container limited to 256 MiB, CPU 0 and half a CPU of quota, with `daemon`'s files
/// bound over its `/proc` and `/sys` files.
fn container(daemon: &FusedDaemon) -> Result<RuncContainer> {
    let mut ctr = RuncContainer::new()?
        .memory_limit(256 * MIB)
        .cpus("0")
        .cfs_quota(50_000, 100_000);
    for rel in BINDS {
        ctr = ctr.bind(&daemon.path(rel), &format!("/{rel}"));
    }
    Ok(ctr)
}

/// Runs `script` with `sh -c` in a [`container`] of a fresh daemon; returns stdout.
fn run_in_container(script: &str) -> Result<String> {
    rig::preflight()?;
    let daemon = FusedDaemon::start(&[])?;
    let ctr = container(&daemon)?;
    ctr.run(script)
        .with_context(|| format!("daemon stderr:\n{}", daemon.stderr()))
}

/// The text after `label` on the first line of `out` that starts with it, trimmed.
fn field<'a>(out: &'a str, label: &str) -> Result<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
        .with_context(|| format!("no line starting with {label:?} in:\n{out}"))
}

#[test]
fn free_shows_the_memory_limit() -> Result<()> {
    let out = run_in_container("free -k")?;
    let total = field(&out, "Mem:")?
        .split_whitespace()
        .next()
        .context("free total")?;
    assert_eq!(total, "262144", "{out}");
    Ok(())
}

#[test]
fn top_shows_the_memory_limit() -> Result<()> {
    let out = run_in_container("top -bn1")?;
    let mem = field(&out, "MiB Mem")?;
    let mut words = mem.trim_start_matches(':').split_whitespace();
    assert_eq!(words.next(), Some("256.0"), "{out}");
    assert!(
        words.next().is_some_and(|w| w.starts_with("total")),
        "{out}"
    );
    Ok(())
}

#[test]
fn vmstat_shows_the_memory_limit() -> Result<()> {
    let out = run_in_container("vmstat -s")?;
    let line = out
        .lines()
        .find(|l| l.ends_with("K total memory"))
        .context(out.clone())?;
    assert_eq!(line.split_whitespace().next(), Some("262144"), "{out}");
    Ok(())
}

#[test]
fn getconf_sees_one_cpu() -> Result<()> {
    if !have_cpus(2, "getconf_sees_one_cpu")? {
        return Ok(());
    }
    let out = run_in_container("getconf _NPROCESSORS_ONLN")?;
    assert_eq!(out.trim(), "1");
    Ok(())
}

#[test]
fn python_sees_one_cpu() -> Result<()> {
    if !have_cpus(2, "python_sees_one_cpu")? {
        return Ok(());
    }
    let out = run_in_container("python3 -c 'import os; print(os.cpu_count())'")?;
    assert_eq!(out.trim(), "1");
    Ok(())
}

#[test]
fn node_sees_one_cpu_and_the_memory_limit() -> Result<()> {
    if !have_cpus(2, "node_sees_one_cpu_and_the_memory_limit")? {
        return Ok(());
    }
    let out = run_in_container(
        "node -e 'const os = require(\"os\"); console.log(os.cpus().length, os.totalmem())'",
    )?;
    assert_eq!(out.trim(), format!("1 {}", 256 * MIB));
    Ok(())
}

#[test]
fn lscpu_lists_cpu_0_online() -> Result<()> {
    if !have_cpus(2, "lscpu_lists_cpu_0_online")? {
        return Ok(());
    }
    let out = run_in_container("lscpu")?;
    assert_eq!(field(&out, "On-line CPU(s) list:")?, "0", "{out}");
    Ok(())
}

#[test]
fn uptime_starts_with_the_container() -> Result<()> {
    let started = Instant::now();
    let out = run_in_container("cat /proc/uptime")?;
    let (uptime, _) = parse::uptime(&out)?;
    let bound = started.elapsed().as_secs_f64() + 0.05;
    assert!(
        uptime <= bound,
        "container uptime {uptime} s, but it ran for at most {bound} s"
    );
    Ok(())
}

#[test]
fn runc_exec_sees_the_containers_uptime_and_memory() -> Result<()> {
    rig::preflight()?;
    let started = Instant::now();
    let daemon = FusedDaemon::start(&[])?;
    let ctr = container(&daemon)?;
    ctr.start("exec sleep 1000")?;
    let out = ctr.exec("cat /proc/uptime; free -k")?;
    let bound = started.elapsed().as_secs_f64() + 0.05;
    let (uptime, _) = parse::uptime(out.lines().next().unwrap_or_default())?;
    assert!(
        uptime <= bound,
        "container up for at most {bound} s, runc exec sees {uptime} s"
    );
    let total = field(&out, "Mem:")?
        .split_whitespace()
        .next()
        .context("free total")?;
    assert_eq!(total, "262144", "{out}");
    Ok(())
}
