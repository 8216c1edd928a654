//! What the collector benchmark (`proclens-collect-bench`) and the exporter benchmark
//! (`proclens-exporter-bench`) share: a population of live cgroups with one sleeping process
//! each, the files a full snapshot reads for each, the kernel floor of reading those files
//! (one pread of a kept descriptor each), the open-file limit raised as far as allowed, and
//! the median and 90th percentile of timed rounds.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use proclens_cgroup::{Collector, Version};

use crate::rig::TempCgroup;

/// Sleeping processes, killed and reaped on drop.
pub struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// `n` cgroups under one parent (a 64 GiB memory limit and a 4-CPU quota, controllers enabled
/// for the children), each with one sleeping process. On drop the processes are killed first,
/// then the children removed, then the parent.
pub struct Population {
    sleepers: Sleepers,
    children: Vec<TempCgroup>,
    top: TempCgroup,
}

impl Population {
    /// Creates the parent, `n` children and a sleeper in each.
    pub fn create(n: usize) -> Result<Self> {
        let top = TempCgroup::builder()
            .memory_limit(64 << 30)
            .cfs_quota(400_000, 100_000)
            .create()?;
        top.enable_controllers_for_children()?;
        let mut population = Population {
            sleepers: Sleepers(Vec::with_capacity(n)),
            children: Vec::with_capacity(n),
            top,
        };
        for i in 0..n {
            let child = population.top.child(&format!("c{i}"))?;
            // Pushed before joining, so that a failure still cleans both up.
            population.children.push(child);
            let sleeper = Command::new("sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .spawn()
                .context("spawn sleep")?;
            let pid = sleeper.id();
            population.sleepers.0.push(sleeper);
            population.children[i].add_pid(pid)?;
        }
        Ok(population)
    }

    /// The parent cgroup (its path relative to each hierarchy's root is its name).
    pub fn top(&self) -> &TempCgroup {
        &self.top
    }

    /// The children, one sleeper in each.
    pub fn children(&self) -> &[TempCgroup] {
        &self.children
    }

    /// Every file a full snapshot reads of every child (their own directories only).
    pub fn snapshot_files(&self, collector: &Collector) -> Vec<PathBuf> {
        self.children
            .iter()
            .flat_map(|c| snapshot_files(collector, &format!("/{}", c.name())))
            .collect()
    }
}

/// The files a full snapshot reads for one cgroup (its own directory only; ancestors' limit
/// files come on top), by hierarchy version: the floor reads these.
pub fn snapshot_files(collector: &Collector, path: &str) -> Vec<PathBuf> {
    let v1 = [
        "memory.stat",
        "memory.usage_in_bytes",
        "memory.limit_in_bytes",
        "memory.memsw.usage_in_bytes",
        "memory.memsw.limit_in_bytes",
        "memory.max_usage_in_bytes",
        "memory.failcnt",
        "memory.oom_control",
        "cpuset.effective_cpus",
        "cpuset.effective_mems",
        "cpu.cfs_quota_us",
        "cpu.cfs_period_us",
        "cpu.shares",
        "cpu.stat",
        "cpuacct.usage_all",
        "blkio.throttle.io_service_bytes_recursive",
        "blkio.throttle.io_serviced_recursive",
        "pids.current",
        "pids.max",
    ];
    let v2 = [
        "memory.max",
        "memory.current",
        "memory.swap.current",
        "memory.swap.max",
        "memory.stat",
        "memory.high",
        "memory.events",
        "cpuset.cpus.effective",
        "cpuset.mems.effective",
        "cpu.max",
        "cpu.weight",
        "cpu.stat",
        "io.stat",
        "cpu.pressure",
        "memory.pressure",
        "io.pressure",
        "pids.current",
        "pids.max",
    ];
    let mut files = Vec::new();
    for h in &collector.layout().hierarchies {
        let dir = h.mount_point.join(path.trim_start_matches('/'));
        let names: &[&str] = match h.version {
            Version::V1 => &v1,
            Version::V2 => &v2,
        };
        for name in names {
            let file = dir.join(name);
            if file.exists() {
                files.push(file);
            }
        }
    }
    files
}

/// Opens every file of `files` for [`pread_rounds`].
pub fn open_all(files: &[PathBuf]) -> Result<Vec<File>> {
    files
        .iter()
        .map(|f| File::open(f).with_context(|| format!("open {}", f.display())))
        .collect()
}

/// The kernel floor: `rounds` timed rounds (after one untimed) of one pread at offset 0 of each
/// kept descriptor into a reused buffer, on this thread when `threads` is 1, else on `threads`
/// threads each reading its share. Returns each round's time.
pub fn pread_rounds(kept: &[File], threads: usize, rounds: usize) -> Result<Vec<Duration>> {
    use std::os::unix::fs::FileExt;
    let mut times = Vec::with_capacity(rounds);
    let mut buf = vec![0u8; 1 << 16];
    let share = kept.len().div_ceil(threads.max(1)).max(1);
    for round in 0..=rounds {
        let start = Instant::now();
        if threads <= 1 {
            for file in kept {
                file.read_at(&mut buf, 0)?;
            }
        } else {
            std::thread::scope(|scope| -> Result<()> {
                let readers: Vec<_> = kept
                    .chunks(share)
                    .map(|files| {
                        scope.spawn(move || -> std::io::Result<()> {
                            let mut buf = vec![0u8; 1 << 16];
                            for file in files {
                                file.read_at(&mut buf, 0)?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for reader in readers {
                    reader.join().expect("reader panicked")?;
                }
                Ok(())
            })?;
        }
        if round > 0 {
            times.push(start.elapsed());
        }
    }
    Ok(times)
}

/// Median and 90th percentile of `samples`; `None` when there are none.
pub fn p50_p90(samples: &mut [Duration]) -> Option<(Duration, Duration)> {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (!samples.is_empty()).then(|| (at(0.5), at(0.9)))
}

/// `d` in milliseconds, one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// `d` divided by `n`, in microseconds, one decimal.
pub fn us(d: Duration, n: usize) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6 / n.max(1) as f64)
}

/// Raises this process's open-file limit to the kernel's per-process maximum where allowed
/// (CAP_SYS_RESOURCE), else to the hard limit; returns the soft limit now in force.
pub fn raise_nofile() -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        // 5,000 cgroups keep ~100,000 files.
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|t| t.trim().parse::<libc::rlim_t>().ok())
            .unwrap_or(limit.rlim_max);
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max.max(nr_open),
            rlim_max: limit.rlim_max.max(nr_open),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return Ok(raised.rlim_cur);
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}
