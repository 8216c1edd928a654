//! Differential tests against lxcfs 5.0.3: one reader, in one limited cgroup and its own pid
//! namespace, reads the same file from `proclens-fused` and from lxcfs, alternating, and every
//! field both compute must agree. Values that move while the reader works are read as
//! proclens, lxcfs, proclens: lxcfs's value must lie between the two proclens values, widened by
//! a slack named at each comparison. Where the two differ by design the test asserts what each
//! shows instead; `docs/lxcfs-differences.md` lists those differences with the reasons.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use proclens_cgroup::parse::cpulist::parse_cpulist;
use proclens_tests::parse;
use proclens_tests::rig::{self, FusedDaemon, LxcfsDaemon, Probe, ProbeOptions, TempCgroup};

use crate::util::{have_cpus, host_meminfo_kb, read_1_mib_from_disk, MIB};

/// The container's memory limit.
const MEMORY_LIMIT: u64 = 256 * MIB;

/// The swap the rig allows on top of the memory limit (v1 `memsw` − `limit`, v2 `swap.max`).
const SWAP_LIMIT: u64 = 64 * MIB;

/// How many times a comparison is redone before its mismatches fail the test. Other processes
/// on the host change host-wide lines (and the kernel's lazily flushed cgroup statistics) at
/// any moment, so one mismatch can be a coincidence; a daemon that computes a field wrongly
/// mismatches on every attempt.
const ATTEMPTS: usize = 3;

/// One per-CPU memory charge batch, in kB (`MEMCG_CHARGE_BATCH`, 64 pages of 4 KiB). A cgroup's
/// usage includes up to one batch per CPU charged ahead for its tasks, which the kernel hands
/// back whenever another cgroup takes over that CPU's stock: MemFree can move by a batch per
/// CPU of the cpuset between two reads although the reader allocated nothing. The memory slack
/// is one batch per CPU the reader may run on.
const CHARGE_BATCH_KB: u64 = 64 * 4;

/// Slack for `/proc/stat` counters, in USER_HZ ticks: lxcfs converts ns to ticks through a
/// `double`, and an idle CPU's idle counter is extrapolated from the current idle period.
const TICK_SLACK: u64 = 2;

/// Slack for `/proc/uptime` values, in seconds: both print two decimals, proclens derives the
/// age from `/proc/uptime` (10 ms steps), lxcfs from CLOCK_BOOTTIME in ms.
const UPTIME_SLACK_SECS: f64 = 0.03;

/// meminfo keys both daemons compute from the container's memory cgroup with the same formula.
const MEMINFO_COMPUTED: [&str; 15] = [
    "MemFree",
    "Cached",
    "Active",
    "Inactive",
    "Active(anon)",
    "Inactive(anon)",
    "Active(file)",
    "Inactive(file)",
    "Unevictable",
    "Dirty",
    "Writeback",
    "AnonPages",
    "Mapped",
    "Shmem",
    "AnonHugePages",
];

/// meminfo keys both daemons print as 0 for every container.
const MEMINFO_ZERO: [&str; 2] = ["Buffers", "SwapCached"];

/// meminfo keys lxcfs always prints as 0 while proclens fills them from `memory.stat` (v2 has
/// slab statistics per cgroup; v1 has none, so proclens prints 0 there too).
const MEMINFO_SLAB: [&str; 3] = ["Slab", "SReclaimable", "SUnreclaim"];

/// meminfo keys lxcfs prints as 0 for every container.
const MEMINFO_LXCFS_ZEROES: [&str; 2] = ["ShmemHugePages", "ShmemPmdMapped"];

/// meminfo keys proclens takes from the cgroup where the host's line would be someone else's:
/// Mlocked is the container's unevictable memory, KReclaimable its reclaimable slab, and the
/// huge-page lines its `shmem_thp`/`file_thp` (v2) or 0. lxcfs passes the host's lines through
/// (except the zeroes above).
const MEMINFO_FROM_CGROUP: [&str; 6] = [
    "Mlocked",
    "KReclaimable",
    "ShmemHugePages",
    "FileHugePages",
    "ShmemPmdMapped",
    "FilePmdMapped",
];

/// Host meminfo lines that change whenever any process on the host forks, exits or touches
/// files: the reads move them too (lxcfs forks a helper to find the caller's pid-namespace
/// init, other tests run in parallel), and `Committed_AS` is a per-CPU batched counter that is
/// only approximate when read. Both daemons pass them through; each read is compared with the
/// host's within [`host_churn_slack_kb`].
const MEMINFO_HOST_VOLATILE: [&str; 11] = [
    "Committed_AS",
    "KernelStack",
    "PageTables",
    "SecPageTables",
    "VmallocUsed",
    "Percpu",
    "KReclaimable",
    "Mlocked",
    "FileHugePages",
    "Zswap",
    "Zswapped",
];

/// Slack for a volatile host meminfo line of `kb`: a tenth of it, at least one charge batch.
/// A daemon that zeroed the line or filled in the container's share would miss by far more.
fn host_churn_slack_kb(kb: u64) -> u64 {
    (kb / 10).max(CHARGE_BATCH_KB)
}

/// meminfo keys compared by their own rules (exact totals, formula, or swap used).
const MEMINFO_SPECIAL: [&str; 4] = ["MemTotal", "MemAvailable", "SwapTotal", "SwapFree"];

/// The cgroup layout the rig runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// cgroup v1 controllers (a legacy or hybrid host).
    V1,
    /// The unified cgroup v2 hierarchy only.
    V2,
}

/// The container, both daemons and one reader inside the container. Fields drop in order: the
/// reader first, the cgroup last.
struct Rig {
    probe: Probe,
    proclens: FusedDaemon,
    lxcfs: LxcfsDaemon,
    cg: TempCgroup,
    layout: Layout,
    cpus: Vec<u32>,
    swap_accounted: bool,
}

impl Rig {
    /// The container (256 MiB, CPUs 0-1 where the host has them, else CPU 0, quota 50000/100000,
    /// 64 MiB of swap where swap is accounted), proclens with `--cpu-view cpuset`, lxcfs with
    /// `lxcfs_flags`, and a reader in a fresh pid namespace inside the container.
    fn start(cpus: Option<&str>, lxcfs_flags: &[&str]) -> Result<Self> {
        rig::preflight()?;
        let host = rig::host_cpus()?;
        let cpulist = match cpus {
            Some(list) => list.to_string(),
            None if host.contains(&0) && host.contains(&1) => "0-1".to_string(),
            None => "0".to_string(),
        };
        let cg = TempCgroup::builder()
            .memory_limit(MEMORY_LIMIT)
            .cpus(&cpulist)
            .cfs_quota(50_000, 100_000)
            .create()?;
        let memory = cg.dir("memory").context("no memory cgroup")?;
        let layout = if memory.join("memory.limit_in_bytes").exists() {
            Layout::V1
        } else {
            Layout::V2
        };
        let swap_file = match layout {
            Layout::V1 => memory.join("memory.memsw.limit_in_bytes"),
            Layout::V2 => memory.join("memory.swap.max"),
        };
        let swap_accounted = swap_file.exists();
        if swap_accounted {
            let value = match layout {
                Layout::V1 => MEMORY_LIMIT + SWAP_LIMIT,
                Layout::V2 => SWAP_LIMIT,
            };
            std::fs::write(&swap_file, value.to_string())
                .with_context(|| format!("write {}", swap_file.display()))?;
        } else {
            eprintln!("!!! swap accounting is off: the swap comparisons use the host's swap");
        }
        let proclens = FusedDaemon::start(&["--cpu-view", "cpuset"])?;
        let lxcfs = LxcfsDaemon::start_with(lxcfs_flags)?;
        // Join the cpuset first, so that every nanosecond cpuacct charges is on allowed CPUs.
        let mut join = cg.procs_files();
        if let Some(cpuset) = cg.dir("cpuset") {
            let first = cpuset.join("cgroup.procs");
            join.retain(|f| *f != first);
            join.insert(0, first);
        }
        let probe = Probe::spawn(&join, &ProbeOptions::default())?;
        Ok(Self {
            probe,
            proclens,
            lxcfs,
            cg,
            layout,
            cpus: parse_cpulist(&cpulist)?,
            swap_accounted,
        })
    }

    /// The standard rig with lxcfs's default flags.
    fn new() -> Result<Self> {
        Self::start(None, &[])
    }

    /// Reads `rel` of proclens's mount through the reader.
    fn proclens(&mut self, rel: &str) -> Result<String> {
        let path = self.proclens.path(rel);
        self.probe
            .read_string(&path)
            .with_context(|| format!("proclens {rel}; its stderr:\n{}", self.proclens.stderr()))
    }

    /// Reads `rel` of lxcfs's mount through the reader.
    fn lxcfs(&mut self, rel: &str) -> Result<String> {
        let path = self.lxcfs.path(rel);
        self.probe
            .read_string(&path)
            .with_context(|| format!("lxcfs {rel}; its output:\n{}", self.lxcfs.output()))
    }

    /// The CPU time the container used so far, in ns (v1 `cpuacct.usage`, v2 `usage_usec`).
    fn busy_ns(&self) -> Result<u64> {
        match self.layout {
            Layout::V1 => {
                let dir = self.cg.dir("cpuacct").context("no cpuacct cgroup")?;
                Ok(read_trimmed(&dir.join("cpuacct.usage"))?.parse()?)
            }
            Layout::V2 => {
                let dir = self.cg.dir("cpu").context("no cgroup")?;
                let stat = std::fs::read_to_string(dir.join("cpu.stat"))?;
                let usec = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .with_context(|| format!("no usage_usec in cpu.stat:\n{stat}"))?;
                Ok(usec.trim().parse::<u64>()? * 1000)
            }
        }
    }

    /// The threads of the container's processes, by host tid.
    fn threads(&self) -> Result<Vec<u32>> {
        let mut tids = Vec::new();
        for pid in self.cg.pids()? {
            for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
                tids.push(entry?.file_name().to_string_lossy().parse()?);
            }
        }
        Ok(tids)
    }

    /// SwapTotal proclens shows, in kB: the swap limit capped at the host's swap, or the
    /// host's swap when swap is not accounted.
    fn proclens_swap_kb(&self, host_swap_kb: u64) -> u64 {
        if self.swap_accounted {
            (SWAP_LIMIT / 1024).min(host_swap_kb)
        } else {
            host_swap_kb
        }
    }

    /// True if lxcfs 5.0.3 shows swap at all. It looks for the swap files in the root memory
    /// cgroup: v1 has them where swap is accounted, a v2 root never has them.
    fn lxcfs_swap_on(&self) -> bool {
        self.layout == Layout::V1 && self.swap_accounted
    }

    /// The swap size lxcfs 5.0.3 shows, in kB, as SwapTotal in meminfo and as the size in
    /// swaps: the memory + swap limit (v1 memsw) capped at the host's swap; 0 where it shows no
    /// swap, or where the cgroup's swappiness is 0.
    fn lxcfs_swap_kb(&self, host_swap_kb: u64) -> Result<u64> {
        Ok(if !self.lxcfs_swap_on() || self.swappiness_is_0()? {
            0
        } else {
            ((MEMORY_LIMIT + SWAP_LIMIT) / 1024).min(host_swap_kb)
        })
    }

    /// True if v1 `memory.swappiness` of the container is 0 (lxcfs then hides swap).
    fn swappiness_is_0(&self) -> Result<bool> {
        if self.layout == Layout::V2 {
            return Ok(false);
        }
        let dir = self.cg.dir("memory").context("no memory cgroup")?;
        Ok(read_trimmed(&dir.join("memory.swappiness"))? == "0")
    }
}

/// Reads a one-value file without its trailing newline.
fn read_trimmed(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// Reads a host file outside both mounts.
fn host(path: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {path}"))
}

/// True if `mid`, read between `before` and `after`, lies in their range widened by `slack`.
fn within(before: u64, mid: u64, after: u64, slack: u64) -> bool {
    let (lo, hi) = (before.min(after), before.max(after));
    (lo.saturating_sub(slack)..=hi.saturating_add(slack)).contains(&mid)
}

/// Runs `attempt` up to [`ATTEMPTS`] times until it reports no mismatch; fails with the
/// mismatches of the last attempt.
fn until_agreed(what: &str, mut attempt: impl FnMut() -> Result<Vec<String>>) -> Result<()> {
    let mut mismatches = Vec::new();
    for n in 1..=ATTEMPTS {
        mismatches = attempt()?;
        if mismatches.is_empty() {
            return Ok(());
        }
        eprintln!("{what}: attempt {n} of {ATTEMPTS} found {mismatches:#?}");
    }
    bail!(
        "{what}: proclens and lxcfs disagree on every one of {ATTEMPTS} attempts; the last:\n{}",
        mismatches.join("\n")
    )
}

/// The value of `key` in parsed meminfo, or an error naming the daemon.
fn kb(map: &BTreeMap<String, u64>, key: &str, who: &str) -> Result<u64> {
    map.get(key)
        .copied()
        .with_context(|| format!("{who} meminfo has no {key}"))
}

/// The keys of meminfo text, in order.
fn meminfo_keys(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.split_once(':').map(|(k, _)| k))
        .collect()
}

#[test]
fn lxcfs_is_the_documented_version() -> Result<()> {
    let version = LxcfsDaemon::version()?;
    assert_eq!(
        version, "5.0.3",
        "docs/lxcfs-differences.md describes lxcfs 5.0.3; recheck it for {version}"
    );
    Ok(())
}

#[test]
fn meminfo_agrees_with_lxcfs() -> Result<()> {
    let mut r = Rig::new()?;
    let host_swap_kb = host_meminfo_kb("SwapTotal")?;
    until_agreed("meminfo", || {
        // The host's meminfo is read before and after each daemon's, to bracket its lines.
        let mut hosts = vec![host("/proc/meminfo")?];
        let p1_text = r.proclens("proc/meminfo")?;
        hosts.push(host("/proc/meminfo")?);
        let l_text = r.lxcfs("proc/meminfo")?;
        hosts.push(host("/proc/meminfo")?);
        let p2_text = r.proclens("proc/meminfo")?;
        hosts.push(host("/proc/meminfo")?);
        let (p1, l, p2) = (
            parse::meminfo(&p1_text)?,
            parse::meminfo(&l_text)?,
            parse::meminfo(&p2_text)?,
        );
        let h = hosts
            .iter()
            .map(|t| parse::meminfo(t))
            .collect::<Result<Vec<_>>>()?;
        let host_before = &hosts[0];
        let all = format!("proclens:\n{p1_text}\nlxcfs:\n{l_text}\nproclens:\n{p2_text}");

        // Exact: the kernel gives these limits exactly.
        assert_eq!(
            meminfo_keys(&l_text),
            meminfo_keys(host_before),
            "lxcfs keys"
        );
        assert_eq!(meminfo_keys(&p1_text), meminfo_keys(&l_text), "{all}");
        for (who, m) in [("proclens", &p1), ("lxcfs", &l), ("proclens", &p2)] {
            assert_eq!(
                kb(m, "MemTotal", who)?,
                MEMORY_LIMIT / 1024,
                "{who}:\n{all}"
            );
        }
        let swap = (
            r.proclens_swap_kb(host_swap_kb),
            r.lxcfs_swap_kb(host_swap_kb)?,
        );
        assert_eq!(
            (
                kb(&p1, "SwapTotal", "proclens")?,
                kb(&l, "SwapTotal", "lxcfs")?
            ),
            swap,
            "SwapTotal (proclens, lxcfs), host swap {host_swap_kb} kB:\n{all}"
        );
        if host_swap_kb == 0 {
            assert_eq!(
                swap.0, swap.1,
                "the formulas agree here, so must the values"
            );
        }

        let memory_slack_kb = CHARGE_BATCH_KB * r.cpus.len() as u64;
        let mut mismatches = Vec::new();
        let mut check = |key: &str, p1: u64, l: u64, p2: u64, slack: u64| {
            if !within(p1, l, p2, slack) {
                mismatches.push(format!(
                    "{key}: lxcfs {l} kB outside proclens {p1}..{p2} kB ± {slack}"
                ));
            }
        };
        for key in MEMINFO_COMPUTED {
            let v = |m: &BTreeMap<String, u64>, who| kb(m, key, who);
            check(
                key,
                v(&p1, "proclens")?,
                v(&l, "lxcfs")?,
                v(&p2, "proclens")?,
                memory_slack_kb,
            );
        }
        // lxcfs: MemFree + Cached; proclens: MemFree + file LRU (+ reclaimable slab on v2).
        // The reader has no shmem, so Cached is the file LRU and only the slab part differs.
        let avail = |m: &BTreeMap<String, u64>, who| -> Result<u64> {
            Ok(kb(m, "MemAvailable", who)?.saturating_sub(kb(m, "SReclaimable", who)?))
        };
        check(
            "MemAvailable (proclens without SReclaimable)",
            avail(&p1, "proclens")?,
            kb(&l, "MemAvailable", "lxcfs")?,
            avail(&p2, "proclens")?,
            memory_slack_kb,
        );
        // lxcfs subtracts two usages read at different times and can print SwapFree as a
        // wrapped negative; wrapping arithmetic recovers the swap use it computed.
        let used = |m: &BTreeMap<String, u64>, who| -> Result<u64> {
            Ok(kb(m, "SwapTotal", who)?.wrapping_sub(kb(m, "SwapFree", who)?))
        };
        check(
            "swap used (SwapTotal - SwapFree)",
            used(&p1, "proclens")?,
            used(&l, "lxcfs")?,
            used(&p2, "proclens")?,
            memory_slack_kb,
        );
        for key in MEMINFO_ZERO {
            assert_eq!(
                (kb(&p1, key, "proclens")?, kb(&l, key, "lxcfs")?),
                (0, 0),
                "{key}"
            );
        }
        for key in MEMINFO_SLAB {
            assert_eq!(kb(&l, key, "lxcfs")?, 0, "lxcfs {key}");
            if r.layout == Layout::V1 {
                assert_eq!(
                    kb(&p1, key, "proclens")?,
                    0,
                    "v1 has no slab statistics: {key}"
                );
            }
        }
        for key in MEMINFO_LXCFS_ZEROES {
            assert_eq!(kb(&l, key, "lxcfs")?, 0, "lxcfs {key}");
        }
        // proclens's cgroup-derived kernel lines: exact relations within one rendering; the
        // reader uses no huge pages.
        for p in [&p1, &p2] {
            assert_eq!(
                kb(p, "Mlocked", "proclens")?,
                kb(p, "Unevictable", "proclens")?
            );
            assert_eq!(
                kb(p, "KReclaimable", "proclens")?,
                kb(p, "SReclaimable", "proclens")?
            );
            for key in MEMINFO_FROM_CGROUP.iter().skip(2) {
                if p.contains_key(*key) {
                    assert_eq!(kb(p, key, "proclens")?, 0, "proclens {key}");
                }
            }
        }

        // Every other line is the host's in both (ShmemHugePages and ShmemPmdMapped only in
        // proclens): each daemon's value must lie between the host's just before and after it
        // (for volatile lines, within their slack).
        for key in h[0].keys() {
            let computed = MEMINFO_COMPUTED
                .iter()
                .chain(&MEMINFO_ZERO)
                .chain(&MEMINFO_SLAB)
                .chain(&MEMINFO_SPECIAL)
                .any(|k| k == key);
            if computed {
                continue;
            }
            let mut reads = Vec::new();
            if !MEMINFO_FROM_CGROUP.contains(&key.as_str()) {
                reads.extend([("proclens", 0, &p1), ("proclens", 2, &p2)]);
            }
            if !MEMINFO_LXCFS_ZEROES.contains(&key.as_str()) {
                reads.push(("lxcfs", 1, &l));
            }
            for (who, i, m) in reads {
                let (before, after) = (kb(&h[i], key, "host")?, kb(&h[i + 1], key, "host")?);
                let v = kb(m, key, who)?;
                let slack = if MEMINFO_HOST_VOLATILE.contains(&key.as_str()) {
                    host_churn_slack_kb(before.max(after))
                } else {
                    0
                };
                if !within(before, v, after, slack) {
                    mismatches.push(format!("{key}: {who} {v}, host {before}..{after}"));
                }
            }
        }
        Ok(mismatches)
    })
}

/// The processor blocks of cpuinfo text, each without its `cpu MHz` line (which follows the
/// CPU's current clock from one read to the next).
fn cpuinfo_blocks(text: &str) -> Vec<Vec<&str>> {
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| b.lines().filter(|l| !l.starts_with("cpu MHz")).collect())
        .collect()
}

#[test]
fn cpuinfo_and_online_agree_with_lxcfs() -> Result<()> {
    let mut r = Rig::new()?;
    let proclens = r.proclens("proc/cpuinfo")?;
    let lxcfs = r.lxcfs("proc/cpuinfo")?;
    let n = r.cpus.len();
    let numbers: Vec<u32> = (0..u32::try_from(n)?).collect();
    assert_eq!(
        parse::cpuinfo_processors(&proclens)?,
        numbers,
        "proclens:\n{proclens}"
    );
    assert_eq!(
        parse::cpuinfo_processors(&lxcfs)?,
        numbers,
        "lxcfs:\n{lxcfs}"
    );
    assert_eq!(cpuinfo_blocks(&proclens), cpuinfo_blocks(&lxcfs));
    // Both show the host's blocks of the cpuset's CPUs (here 0..n, so the numbers match too).
    let host_text = host("/proc/cpuinfo")?;
    let host_blocks = cpuinfo_blocks(&host_text);
    assert_eq!(
        cpuinfo_blocks(&lxcfs),
        host_blocks[..n],
        "lxcfs vs host CPUs {:?}",
        r.cpus
    );

    let want = rig_cpu_range(n);
    let online = "sys/devices/system/cpu/online";
    assert_eq!(r.proclens(online)?, want, "proclens {online}");
    assert_eq!(r.lxcfs(online)?, want, "lxcfs {online}");
    Ok(())
}

/// `0` or `0-(n-1)`, with a newline: how a cpu range file shows n CPUs numbered from 0.
fn rig_cpu_range(n: usize) -> String {
    if n == 1 {
        "0\n".into()
    } else {
        format!("0-{}\n", n - 1)
    }
}

#[test]
fn sys_cpu_lxcfs_computes_only_online() -> Result<()> {
    let mut r = Rig::new()?;
    let n = r.cpus.len();
    for file in ["possible", "present"] {
        let rel = format!("sys/devices/system/cpu/{file}");
        assert_eq!(r.proclens(&rel)?, rig_cpu_range(n), "proclens {rel}");
        assert_eq!(
            r.lxcfs(&rel)?,
            host(&format!("/sys/devices/system/cpu/{file}"))?,
            "lxcfs passes {rel} through from the host"
        );
    }
    let is_cpu_n = |name: &str| {
        name.strip_prefix("cpu")
            .is_some_and(|d| d.parse::<u32>().is_ok())
    };
    let cpu_dirs = |names: &[String]| -> Vec<String> {
        names.iter().filter(|n| is_cpu_n(n)).cloned().collect()
    };
    let proclens_dir = r.proclens.path("sys/devices/system/cpu");
    let lxcfs_dir = r.lxcfs.path("sys/devices/system/cpu");
    let proclens = r.probe.list(&proclens_dir)?;
    let lxcfs = r.probe.list(&lxcfs_dir)?;
    let visible: Vec<String> = (0..n).map(|i| format!("cpu{i}")).collect();
    assert_eq!(cpu_dirs(&proclens), visible, "proclens: {proclens:?}");
    let mut host_dirs = Vec::new();
    for entry in std::fs::read_dir("/sys/devices/system/cpu")? {
        host_dirs.push(entry?.file_name().to_string_lossy().into_owned());
    }
    host_dirs.sort();
    assert_eq!(
        cpu_dirs(&lxcfs),
        cpu_dirs(&host_dirs),
        "lxcfs lists the host's cpuN dirs"
    );
    let onlines = |names: &[String]| names.iter().filter(|n| *n == "online").count();
    assert_eq!(onlines(&proclens), 1, "proclens: {proclens:?}");
    assert_eq!(
        onlines(&lxcfs),
        2,
        "lxcfs 5.0.3 lists its computed online besides the host's"
    );
    Ok(())
}

#[test]
fn a_cpuset_of_cpu_1_lxcfs_renumbers_only_cpuinfo() -> Result<()> {
    if !have_cpus(2, "a_cpuset_of_cpu_1_lxcfs_renumbers_only_cpuinfo")? {
        return Ok(());
    }
    let mut r = Rig::start(Some("1"), &[])?;
    let proclens = r.proclens("proc/cpuinfo")?;
    let lxcfs = r.lxcfs("proc/cpuinfo")?;
    assert_eq!(parse::cpuinfo_processors(&proclens)?, [0], "{proclens}");
    assert_eq!(cpuinfo_blocks(&proclens), cpuinfo_blocks(&lxcfs));
    let online = "sys/devices/system/cpu/online";
    assert_eq!(r.proclens(online)?, "0\n", "proclens renumbers");
    assert_eq!(r.lxcfs(online)?, "1\n", "lxcfs shows the cpuset verbatim");
    let proclens = r.proclens("proc/stat")?;
    let lxcfs = r.lxcfs("proc/stat")?;
    assert_eq!(
        parse::stat_cpu_rows(&proclens),
        ["cpu", "cpu0"],
        "{proclens}"
    );
    assert_eq!(parse::stat_cpu_rows(&lxcfs), ["cpu", "cpu1"], "{lxcfs}");
    Ok(())
}

/// Counter names of a `/proc/stat` cpu row, in order.
const STAT_FIELDS: [&str; 10] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];

/// The value of the first `key` line of `/proc/stat` text (its first number).
fn stat_line(text: &str, key: &str) -> Result<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .and_then(|r| r.split_whitespace().next())
        .with_context(|| format!("no {key} line in:\n{text}"))?
        .parse()
        .with_context(|| format!("{key} line in:\n{text}"))
}

#[test]
fn stat_agrees_with_lxcfs() -> Result<()> {
    let mut r = Rig::new()?;
    r.probe.spin_ms(300)?;
    let n = r.cpus.len();
    until_agreed("stat", || {
        let p1_text = r.proclens("proc/stat")?;
        let host_before = host("/proc/stat")?;
        let l_text = r.lxcfs("proc/stat")?;
        let host_after = host("/proc/stat")?;
        let p2_text = r.proclens("proc/stat")?;
        let busy_ticks = r.busy_ns()? / 10_000_000;
        let all = format!("proclens:\n{p1_text}\nlxcfs:\n{l_text}\nproclens:\n{p2_text}");
        let (p1, l, p2) = (
            parse::stat_cpu_times(&p1_text)?,
            parse::stat_cpu_times(&l_text)?,
            parse::stat_cpu_times(&p2_text)?,
        );
        let (hb, ha) = (
            parse::stat_cpu_times(&host_before)?,
            parse::stat_cpu_times(&host_after)?,
        );
        let mut rows = vec!["cpu".to_string()];
        rows.extend((0..n).map(|i| format!("cpu{i}")));
        let names = |t: &[(String, Vec<u64>)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&p1), rows, "proclens rows:\n{all}");
        assert_eq!(
            names(&l),
            rows,
            "lxcfs rows (cpuset 0..n: its numbers are the host's):\n{all}"
        );

        let mut mismatches = Vec::new();
        // btime is the host's in both; ctxt and processes are host-wide counters in both.
        assert_eq!(stat_line(&p1_text, "btime")?, stat_line(&l_text, "btime")?);
        for key in ["ctxt", "processes"] {
            let (a, b, c) = (
                stat_line(&p1_text, key)?,
                stat_line(&l_text, key)?,
                stat_line(&p2_text, key)?,
            );
            if !(a <= b && b <= c) {
                mismatches.push(format!("{key}: host-wide counter read {a}, {b}, {c}"));
            }
        }
        match r.layout {
            Layout::V1 => {
                // Both: user and system from cpuacct.usage_all, idle = the CPU's elapsed time
                // minus the container's busy time, every other counter 0.
                for ((name, a), ((_, b), (_, c))) in p1.iter().zip(l.iter().zip(&p2)) {
                    for (i, field) in STAT_FIELDS.iter().enumerate() {
                        let (a, b, c) = (a[i], b[i], c[i]);
                        let ok = match *field {
                            "user" | "system" => within(a, b, c, TICK_SLACK),
                            // The aggregate row sums n rows, each with its own slack.
                            "idle" => within(a, b, c, TICK_SLACK * n as u64),
                            _ => a == 0 && b == 0 && c == 0,
                        };
                        if !ok {
                            mismatches.push(format!(
                                "{name} {field}: proclens {a}, lxcfs {b}, proclens {c}"
                            ));
                        }
                    }
                }
            }
            Layout::V2 => {
                // lxcfs shows the host's rows of the cpuset's CPUs; proclens the container's.
                for (((name, b), (_, before)), (_, after)) in
                    l.iter().zip(&hb).skip(1).zip(ha.iter().skip(1))
                {
                    for (i, field) in STAT_FIELDS.iter().enumerate() {
                        if !within(before[i], b[i], after[i], TICK_SLACK) {
                            mismatches.push(format!(
                                "lxcfs {name} {field} {} is not the host's {}..{}",
                                b[i], before[i], after[i]
                            ));
                        }
                    }
                }
                let busy = |row: &[u64]| row[0] + row[2];
                ensure!(
                    busy(&p2[0].1) <= busy_ticks + TICK_SLACK * n as u64,
                    "proclens cpu row busy {} > the container's {busy_ticks} ticks:\n{all}",
                    busy(&p2[0].1)
                );
            }
        }
        Ok(mismatches)
    })
}

#[test]
fn uptime_agrees_with_lxcfs() -> Result<()> {
    let mut r = Rig::new()?;
    let n = r.cpus.len() as f64;
    let h = r.probe.open(&r.proclens.path("proc/uptime"))?;
    rig::poll(
        Duration::from_secs(10),
        "the container's uptime to reach 1 s",
        || Ok((parse::uptime(&r.probe.reread(h)?)?.0 >= 1.0).then_some(())),
    )?;
    r.probe.close(h)?;
    until_agreed("uptime", || {
        let busy_before = r.busy_ns()? as f64 / 1e9;
        let (p1_text, l_text, p2_text) = (
            r.proclens("proc/uptime")?,
            r.lxcfs("proc/uptime")?,
            r.proclens("proc/uptime")?,
        );
        let busy_after = r.busy_ns()? as f64 / 1e9;
        let age = r.probe.age().as_secs_f64();
        let all = format!("proclens {p1_text:?}, lxcfs {l_text:?}, proclens {p2_text:?}");
        let (p1, l, p2) = (
            parse::uptime(&p1_text)?,
            parse::uptime(&l_text)?,
            parse::uptime(&p2_text)?,
        );
        let mut mismatches = Vec::new();
        let s = UPTIME_SLACK_SECS;
        if !(p1.0 - s <= l.0 && l.0 <= p2.0 + s) {
            mismatches.push(format!("uptime: {all}"));
        }
        ensure!(
            p2.0 <= age + s,
            "uptime beyond the reader's age {age} s: {all}"
        );
        // lxcfs: uptime − cpuacct.usage on v1 (one CPU's worth, whatever the cpuset), the
        // uptime itself on v2 (no cpuacct). proclens: uptime × visible CPUs − busy time.
        let lxcfs_busy = match r.layout {
            Layout::V1 => (busy_before, busy_after),
            Layout::V2 => (0.0, 0.0),
        };
        if !(l.0 - lxcfs_busy.1 - s <= l.1 && l.1 <= l.0 - lxcfs_busy.0 + s) {
            mismatches.push(format!(
                "lxcfs idle, busy {busy_before}..{busy_after} s: {all}"
            ));
        }
        for p in [p1, p2] {
            let want = (p.0 * n - busy_after - s * n, p.0 * n - busy_before + s * n);
            if !(want.0 <= p.1 && p.1 <= want.1) {
                mismatches.push(format!("proclens idle, {n} CPUs, want {want:?}: {all}"));
            }
        }
        Ok(mismatches)
    })
}

/// The fields of loadavg text: the three averages, running, total and the last pid.
fn loadavg(text: &str) -> Result<([f64; 3], u64, u64, u64)> {
    let f: Vec<&str> = text.split_whitespace().collect();
    ensure!(f.len() == 5, "loadavg {text:?}: want 5 fields");
    let (running, total) = f[3].split_once('/').context("no running/total")?;
    Ok((
        [f[0].parse()?, f[1].parse()?, f[2].parse()?],
        running.parse()?,
        total.parse()?,
        f[4].parse()?,
    ))
}

#[test]
fn loadavg_lxcfs_default_shows_the_hosts() -> Result<()> {
    let mut r = Rig::new()?;
    until_agreed("loadavg", || {
        let before = host("/proc/loadavg")?;
        let l_text = r.lxcfs("proc/loadavg")?;
        let after = host("/proc/loadavg")?;
        let p_text = r.proclens("proc/loadavg")?;
        let (hb, l, ha, p) = (
            loadavg(&before)?,
            loadavg(&l_text)?,
            loadavg(&after)?,
            loadavg(&p_text)?,
        );
        let mut mismatches = Vec::new();
        if l.0 != hb.0 && l.0 != ha.0 {
            mismatches.push(format!(
                "lxcfs averages {l_text:?} are not the host's {before:?}/{after:?}"
            ));
        }
        if ha.3 >= hb.3 && !(hb.3..=ha.3).contains(&l.3) {
            mismatches.push(format!(
                "lxcfs last pid {l_text:?} not the host's {before:?}/{after:?}"
            ));
        }
        let threads = r.threads()?.len() as u64;
        ensure!(
            p.2 == threads,
            "proclens total {p_text:?}, the container has {threads} threads"
        );
        ensure!(p.1 <= p.2, "proclens running > total: {p_text:?}");
        ensure!(
            p.3 == 1,
            "proclens last pid is the reader's pid in its namespace (1): {p_text:?}"
        );
        Ok(mismatches)
    })
}

#[test]
fn loadavg_with_lxcfs_l_counts_the_same_tasks() -> Result<()> {
    let mut r = Rig::start(None, &["-l"])?;
    let threads = r.threads()?;
    let total = threads.len() as u64;
    let last = u64::from(*threads.iter().max().context("no threads")?);
    // lxcfs -l answers "0/1 <init pid>" until its 5 s refresh thread has counted the tasks.
    let text = rig::poll(
        Duration::from_secs(15),
        "lxcfs -l to count the container's tasks",
        || {
            let text = r.lxcfs("proc/loadavg")?;
            Ok((loadavg(&text)?.2 == total).then_some(text))
        },
    )?;
    let l = loadavg(&text)?;
    let p_text = r.proclens("proc/loadavg")?;
    let p = loadavg(&p_text)?;
    assert_eq!(p.2, l.2, "total tasks: proclens {p_text:?}, lxcfs {text:?}");
    assert_eq!(
        l.3, last,
        "lxcfs: the highest host tid in the cgroup: {text:?}"
    );
    assert_eq!(
        p.3, 1,
        "proclens: the reader's pid in its namespace: {p_text:?}"
    );
    for (who, v) in [("proclens", p), ("lxcfs", l)] {
        assert!(v.1 <= v.2, "{who} running > total");
        assert!(
            v.0.iter().all(|a| (0.0..=v.2 as f64).contains(a)),
            "{who} averages {v:?}"
        );
    }
    Ok(())
}

/// The swap sizes of swaps text (third column of each line after the header).
fn swap_sizes(text: &str) -> Result<Vec<u64>> {
    text.lines()
        .skip(1)
        .map(|l| {
            l.split_whitespace()
                .nth(2)
                .with_context(|| format!("swaps line {l:?}"))?
                .parse()
                .with_context(|| format!("swaps line {l:?}"))
        })
        .collect()
}

#[test]
fn swaps_agrees_with_lxcfs() -> Result<()> {
    let mut r = Rig::new()?;
    let host_swap_kb = host_meminfo_kb("SwapTotal")?;
    let proclens = r.proclens("proc/swaps")?;
    let lxcfs = r.lxcfs("proc/swaps")?;
    let header = host("/proc/swaps")?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        proclens.lines().next(),
        Some(header.as_str()),
        "proclens: the kernel's header"
    );
    assert_eq!(
        lxcfs.lines().next(),
        Some("Filename\t\t\t\tType\t\tSize\tUsed\tPriority"),
        "lxcfs 5.0.3's own header"
    );
    let size = |kb: u64| if kb == 0 { vec![] } else { vec![kb] };
    let want = (
        r.proclens_swap_kb(host_swap_kb),
        r.lxcfs_swap_kb(host_swap_kb)?,
    );
    assert_eq!(
        (swap_sizes(&proclens)?, swap_sizes(&lxcfs)?),
        (size(want.0), size(want.1)),
        "swap sizes (proclens, lxcfs), host swap {host_swap_kb} kB:\n{proclens}\n{lxcfs}"
    );
    if host_swap_kb == 0 {
        assert_eq!(
            swap_sizes(&proclens)?,
            swap_sizes(&lxcfs)?,
            "no host swap: both header only"
        );
    }
    let meminfo = r.proclens("proc/meminfo")?;
    assert_eq!(
        swap_sizes(&proclens)?.iter().sum::<u64>(),
        parse::meminfo_kb(&meminfo, "SwapTotal")?,
        "proclens swaps agrees with its meminfo"
    );
    Ok(())
}

/// One `/proc/diskstats` row: device name and its counters.
fn diskstats(text: &str) -> Result<Vec<(String, Vec<u64>)>> {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            ensure!(f.len() >= 14, "diskstats line {l:?}");
            let counters = f[3..].iter().map(|v| v.parse()).collect::<Result<_, _>>()?;
            Ok((f[2].to_string(), counters))
        })
        .collect()
}

#[test]
fn diskstats_lxcfs_shows_the_hosts() -> Result<()> {
    let mut r = Rig::new()?;
    let blkio = r.cg.dir("blkio").context("no I/O cgroup")?;
    if blkio.join("blkio.io_serviced_recursive").exists() {
        eprintln!(
            "!!! this kernel has CFQ statistics: lxcfs computes diskstats here; not compared"
        );
    }
    let disk = read_1_mib_from_disk(&r.cg, &mut r.probe, "diskstats_lxcfs_shows_the_hosts")?;
    until_agreed("diskstats", || {
        let before = diskstats(&host("/proc/diskstats")?)?;
        let l_text = r.lxcfs("proc/diskstats")?;
        let after = diskstats(&host("/proc/diskstats")?)?;
        let p_text = r.proclens("proc/diskstats")?;
        let (l, p) = (diskstats(&l_text)?, diskstats(&p_text)?);
        let names =
            |rows: &[(String, Vec<u64>)]| rows.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        let mut mismatches = Vec::new();
        if names(&l) != names(&before) {
            mismatches.push(format!(
                "lxcfs devices {:?}, host {:?}",
                names(&l),
                names(&before)
            ));
            return Ok(mismatches);
        }
        // Field 9 of the counters (I/Os in flight) is a level, not a counter.
        for (((name, l), (_, b)), (_, a)) in l.iter().zip(&before).zip(&after) {
            for (i, ((l, b), a)) in l.iter().zip(b).zip(a).enumerate() {
                if i != 8 && !within(*b, *l, *a, 0) {
                    mismatches.push(format!("lxcfs {name} field {}: {l}, host {b}..{a}", i + 4));
                }
            }
        }
        for (name, _) in &p {
            ensure!(
                before.iter().any(|(n, _)| n == name),
                "proclens shows {name}, not a host disk"
            );
        }
        if let Some((_, disk)) = &disk {
            let row = p.iter().find(|(n, _)| n == disk).with_context(|| {
                format!("proclens has no {disk} row after the reader read 1 MiB from it:\n{p_text}")
            })?;
            ensure!(
                row.1[0] >= 1 && row.1[2] >= MIB / 512,
                "proclens {disk}: reads {}, sectors {}; the reader read 1 MiB:\n{p_text}",
                row.1[0],
                row.1[2]
            );
        }
        Ok(mismatches)
    })
}

#[test]
fn slabinfo_lxcfs_shows_the_hosts_where_the_cgroup_has_none() -> Result<()> {
    let mut r = Rig::new()?;
    let proclens = r.proclens("proc/slabinfo")?;
    let lxcfs = r.lxcfs("proc/slabinfo")?;
    let host_text = host("/proc/slabinfo")?;
    let header: String = host_text
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    // v1 keeps per-cgroup slab statistics, which recent kernels leave empty; v2 has none.
    let own =
        r.cg.dir("memory")
            .map(|d| d.join("memory.kmem.slabinfo"))
            .and_then(|f| std::fs::read_to_string(f).ok())
            .unwrap_or_default();
    if own.trim().is_empty() {
        // lxcfs falls back to the host's file, proclens shows the format header only.
        assert_eq!(proclens, header, "proclens: the header only");
        assert!(
            lxcfs.starts_with(&header),
            "lxcfs: the host's file:\n{lxcfs}"
        );
        assert!(
            lxcfs.lines().count() > 2,
            "lxcfs: the host's caches:\n{lxcfs}"
        );
    } else {
        for (who, text) in [("proclens", &proclens), ("lxcfs", &lxcfs)] {
            assert!(
                text.starts_with("slabinfo - version"),
                "{who}: the cgroup's:\n{text}"
            );
        }
    }
    Ok(())
}

#[test]
fn both_serve_the_lxcfs_proc_and_sys_files() -> Result<()> {
    let mut r = Rig::new()?;
    let (proclens_root, lxcfs_root) = (r.proclens.path(""), r.lxcfs.path(""));
    assert_eq!(r.probe.list(&lxcfs_root)?, ["cgroup", "proc", "sys"]);
    assert_eq!(
        r.probe.list(&proclens_root)?,
        ["containers", "proc", "sys"],
        "no legacy cgroup/ tree; the per-container subtree's link"
    );
    let lxcfs_proc = r.probe.list(&r.lxcfs.path("proc"))?;
    let mut proclens_proc = r.probe.list(&r.proclens.path("proc"))?;
    if r.layout == Layout::V2 {
        let pressure = proclens_proc.iter().position(|n| n == "pressure");
        proclens_proc.remove(pressure.context("proclens on v2 serves proc/pressure")?);
    }
    assert_eq!(proclens_proc, lxcfs_proc, "proc/ entries besides pressure/");
    Ok(())
}

#[test]
fn a_child_without_a_limit_gets_its_parents_limit() -> Result<()> {
    rig::preflight()?;
    let cg = TempCgroup::builder().memory_limit(MEMORY_LIMIT).create()?;
    let memory = cg.dir("memory").context("no memory cgroup")?;
    if !memory.join("memory.limit_in_bytes").exists() {
        // The child gets its own memory.max ("max") only with the controller enabled for it.
        let control = memory.join("cgroup.subtree_control");
        std::fs::write(&control, "+memory").with_context(|| format!("{}", control.display()))?;
    }
    let child = cg.child("app")?;
    let proclens = FusedDaemon::start(&["--cpu-view", "cpuset"])?;
    let lxcfs = LxcfsDaemon::start()?;
    let mut probe = Probe::spawn(&child.procs_files(), &ProbeOptions::default())?;
    for (who, path) in [
        ("proclens", proclens.path("proc/meminfo")),
        ("lxcfs", lxcfs.path("proc/meminfo")),
    ] {
        let text = probe.read_string(&path)?;
        assert_eq!(
            parse::meminfo_kb(&text, "MemTotal")?,
            MEMORY_LIMIT / 1024,
            "{who}: the limit of the parent, the lowest over the ancestors"
        );
    }
    Ok(())
}
