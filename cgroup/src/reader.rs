//! I/O at the edge: reads a container's cgroup files through a [`Layout`] into a
//! [`ContainerSnapshot`]. All interpretation is done by the pure parsers.

use crate::error::{Error, ParseError, Result};
use crate::layout::{join_cgroup, CgroupSet, Controller, HostPaths, Layout, Version};
use crate::model::{
    ContainerSnapshot, CpuQuota, CpuSnapshot, CpuUsage, MemorySnapshot, MemoryStat,
    PressureSnapshot, TaskCounts,
};
use crate::parse::cgroupfs::{self, IoDeviceStat, Psi};
use crate::parse::cpulist::parse_cpulist;
use crate::parse::proc_pid::{parse_pid_cgroup, parse_proc_stat};
use crate::parse::ParseResult;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::files::read_file;
use crate::files::{FileCache, DEFAULT_CAPACITY};

/// Deepest sub-cgroup level whose tasks count toward a container.
const MAX_SUBTREE_DEPTH: usize = 16;
/// Most sub-cgroups walked per container (bounds the work for pathological trees).
const MAX_SUBTREE_CGROUPS: usize = 4096;

/// Reads a list of thread ids (`tasks`, `cgroup.threads`).
fn parse_ids(path: &Path) -> Result<Vec<u32>> {
    read_file(path)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.trim()
                .parse::<u32>()
                .map_err(|_| Error::parse(path, ParseError::new(format!("bad thread id {l:?}"))))
        })
        .collect()
}

/// Kernel USER_HZ: the unit of cpuacct.stat and /proc/<pid>/stat times.
pub const USER_HZ: u64 = 100;

/// Identifies one container instance: its cgroup set plus the inode of every cgroup directory,
/// so a cgroup removed and recreated under the same path is a different container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerId {
    /// Paths in every hierarchy (shared with the caller that asked for the identity).
    pub set: Arc<CgroupSet>,
    /// Inode of each directory (0 where the set has no path), same order as `set.paths`.
    pub inodes: Vec<u64>,
}

/// Reads cgroup state for any process or cgroup set on the host.
#[derive(Debug, Clone)]
pub struct CgroupReader {
    layout: Layout,
    paths: HostPaths,
    files: Arc<FileCache>,
}

/// Reads a file that may legitimately be absent (a controller feature the kernel lacks).
fn read_optional(files: &FileCache, path: &Path) -> Result<Option<String>> {
    match files.read(path) {
        Ok(text) => Ok(Some(text)),
        Err(Error::Vanished { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn parsed<T>(path: &Path, result: ParseResult<T>) -> Result<T> {
    result.map_err(|e| Error::parse(path, e))
}

impl CgroupReader {
    /// A reader over an explicit layout, keeping up to [`DEFAULT_CAPACITY`] descriptors open.
    pub fn new(layout: Layout, paths: HostPaths) -> Self {
        CgroupReader {
            layout,
            paths,
            files: Arc::new(FileCache::new(DEFAULT_CAPACITY)),
        }
    }

    /// Closes the kept descriptors not read since the previous call (see
    /// [`FileCache::close_idle`]); returns how many were closed.
    pub fn close_idle_files(&self) -> usize {
        self.files.close_idle()
    }

    /// The same reader keeping at most `capacity` descriptors of value files open (0: none).
    pub fn with_open_files(self, capacity: usize) -> Self {
        CgroupReader {
            files: Arc::new(FileCache::new(capacity)),
            ..self
        }
    }

    /// Reads a cgroupfs, procfs or sysfs value file through the reader's kept descriptors (not
    /// for thread lists: see [`crate::files`]).
    pub fn read(&self, path: &Path) -> Result<String> {
        self.files.read(path)
    }

    /// Discovers the layout under `paths` and builds a reader.
    pub fn discover(paths: HostPaths) -> Result<Self> {
        Ok(CgroupReader::new(Layout::discover(&paths)?, paths))
    }

    /// The layout in use.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The host roots in use.
    pub fn host_paths(&self) -> &HostPaths {
        &self.paths
    }

    /// The cgroups of process or thread `pid` (a host pid).
    pub fn cgroups_of(&self, pid: u32) -> Result<CgroupSet> {
        let path = self.paths.proc_root.join(format!("{pid}/cgroup"));
        let text = read_file(&path)?;
        let lines = parsed(&path, parse_pid_cgroup(&text))?;
        Ok(self.layout.cgroup_set(&lines))
    }

    /// The directory of `set`'s cgroup in the hierarchy providing `controller`.
    pub fn dir(&self, set: &CgroupSet, controller: Controller) -> Option<(Version, PathBuf)> {
        self.layout.dir(set, controller)
    }

    /// The container's identity: its set plus directory inodes. Fails with `Vanished` when a
    /// directory is gone.
    pub fn identity(&self, set: &Arc<CgroupSet>) -> Result<ContainerId> {
        Ok(ContainerId {
            set: Arc::clone(set),
            inodes: self.inodes(set)?,
        })
    }

    /// The inode of each of `set`'s directories (0 where it has none).
    fn inodes(&self, set: &CgroupSet) -> Result<Vec<u64>> {
        self.layout
            .hierarchies
            .iter()
            .zip(&set.paths)
            .map(|(h, path)| match path {
                None => Ok(0),
                Some(p) => {
                    let dir = join_cgroup(&h.mount_point, p);
                    std::fs::metadata(&dir)
                        .map(|m| m.ino())
                        .map_err(|e| Error::io(&dir, e))
                }
            })
            .collect()
    }

    /// Reads everything the views need. A cgroup that vanishes during the read is `Vanished`.
    pub fn snapshot(&self, set: &CgroupSet) -> Result<ContainerSnapshot> {
        let snapshot = ContainerSnapshot {
            memory: self.memory(set)?,
            cpu: self.cpu(set)?,
            io: self.io(set)?,
            pressure: self.pressure(set)?,
        };
        // Optional files read as absent could mean the cgroup went away mid-read: confirm.
        self.inodes(set)?;
        Ok(snapshot)
    }

    /// Memory limits and usage; `None` without a memory controller.
    pub fn memory(&self, set: &CgroupSet) -> Result<Option<MemorySnapshot>> {
        let Some((version, dir)) = self.dir(set, Controller::Memory) else {
            return Ok(None);
        };
        let ancestors = ancestors(&dir, set, &self.layout, Controller::Memory);
        let snapshot = match version {
            Version::V2 => {
                let limit_bytes =
                    min_limit(&self.files, &ancestors, "memory.max", cgroupfs::parse_limit)?;
                let usage_bytes = read_u64(&self.files, &dir.join("memory.current"))?;
                let swap_file = dir.join("memory.swap.current");
                let swap_current = read_optional(&self.files, &swap_file)?;
                let swap_accounted = swap_current.is_some();
                let swap_usage_bytes = match swap_current {
                    Some(text) => parsed(&swap_file, cgroupfs::parse_u64(&text))?,
                    None => 0,
                };
                let swap_limit_bytes = if swap_accounted {
                    min_limit(
                        &self.files,
                        &ancestors,
                        "memory.swap.max",
                        cgroupfs::parse_limit,
                    )?
                } else {
                    None
                };
                let stat_path = dir.join("memory.stat");
                let stat_text = self.files.read(&stat_path)?;
                let keys = parsed(&stat_path, cgroupfs::parse_flat_keyed(&stat_text))?;
                MemorySnapshot {
                    limit_bytes,
                    usage_bytes,
                    swap_limit_bytes,
                    swap_usage_bytes,
                    swap_accounted,
                    stat: MemoryStat::from_v2(&keys),
                }
            }
            Version::V1 => {
                // memory.stat carries the kernel's own minimum over the ancestors
                // (`hierarchical_memory_limit`, and `hierarchical_memsw_limit` with swap
                // accounting), so the ancestors' limit files are walked only without it.
                let stat_path = dir.join("memory.stat");
                let stat_text = self.files.read(&stat_path)?;
                let keys = parsed(&stat_path, cgroupfs::parse_flat_keyed(&stat_text))?;
                let limit_bytes = match keys.get("hierarchical_memory_limit") {
                    Some(&limit) => Some(limit),
                    None => min_limit(&self.files, &ancestors, "memory.limit_in_bytes", v1_limit)?,
                };
                let usage_bytes = read_u64(&self.files, &dir.join("memory.usage_in_bytes"))?;
                let memsw_usage_path = dir.join("memory.memsw.usage_in_bytes");
                let memsw_usage = read_optional(&self.files, &memsw_usage_path)?;
                let swap_accounted = memsw_usage.is_some();
                let (swap_limit_bytes, swap_usage_bytes) = match memsw_usage {
                    Some(text) => {
                        let memsw_usage = parsed(&memsw_usage_path, cgroupfs::parse_u64(&text))?;
                        let memsw_limit = match keys.get("hierarchical_memsw_limit") {
                            Some(&limit) => Some(limit),
                            None => min_limit(
                                &self.files,
                                &ancestors,
                                "memory.memsw.limit_in_bytes",
                                v1_limit,
                            )?,
                        };
                        let swap_limit = match (memsw_limit, limit_bytes) {
                            (Some(sw), Some(mem)) => Some(sw.saturating_sub(mem)),
                            _ => None,
                        };
                        (swap_limit, memsw_usage.saturating_sub(usage_bytes))
                    }
                    None => (None, 0),
                };
                MemorySnapshot {
                    limit_bytes,
                    usage_bytes,
                    swap_limit_bytes,
                    swap_usage_bytes,
                    swap_accounted,
                    stat: MemoryStat::from_v1(&keys),
                }
            }
        };
        Ok(Some(snapshot))
    }

    /// The CPUs the container may run on and its tightest quota, without its usage (what the
    /// CPU count of a view depends on).
    pub fn cpu_limits(&self, set: &CgroupSet) -> Result<(Option<Vec<u32>>, Option<CpuQuota>)> {
        let cpuset = match self.dir(set, Controller::Cpuset) {
            Some((version, dir)) => {
                let effective = match version {
                    Version::V2 => dir.join("cpuset.cpus.effective"),
                    Version::V1 => dir.join("cpuset.effective_cpus"),
                };
                let (file, text) = match read_optional(&self.files, &effective)? {
                    Some(text) => (effective, text),
                    // v1 kernels before effective_cpus: the configured set.
                    None if version == Version::V1 => {
                        let file = dir.join("cpuset.cpus");
                        let text = self.files.read(&file)?;
                        (file, text)
                    }
                    None => return Err(Error::Vanished { path: effective }),
                };
                Some(parsed(&file, parse_cpulist(&text))?)
            }
            None => None,
        };
        let quota = match self.dir(set, Controller::Cpu) {
            Some((version, dir)) => {
                let ancestors = ancestors(&dir, set, &self.layout, Controller::Cpu);
                min_quota(&self.files, &ancestors, version)?
            }
            None => None,
        };
        Ok((cpuset, quota))
    }

    /// CPU set, quota and usage.
    pub fn cpu(&self, set: &CgroupSet) -> Result<CpuSnapshot> {
        let (cpuset, quota) = self.cpu_limits(set)?;
        let usage = match self.dir(set, Controller::Cpuacct) {
            Some((Version::V2, dir)) => {
                let path = dir.join("cpu.stat");
                let text = self.files.read(&path)?;
                let keys = parsed(&path, cgroupfs::parse_flat_keyed(&text))?;
                let get = |k: &str| {
                    keys.get(k).copied().ok_or_else(|| {
                        Error::parse(&path, ParseError::new(format!("cpu.stat: no {k}")))
                    })
                };
                CpuUsage {
                    user_ns: get("user_usec")?.saturating_mul(1000),
                    system_ns: get("system_usec")?.saturating_mul(1000),
                    per_cpu: None,
                }
            }
            Some((Version::V1, dir)) => {
                let path = dir.join("cpuacct.usage_all");
                match read_optional(&self.files, &path)? {
                    Some(text) => {
                        let rows = parsed(&path, cgroupfs::parse_usage_all(&text))?;
                        CpuUsage {
                            user_ns: rows.iter().map(|r| r.user_ns).sum(),
                            system_ns: rows.iter().map(|r| r.system_ns).sum(),
                            per_cpu: Some(rows),
                        }
                    }
                    None => {
                        let path = dir.join("cpuacct.stat");
                        let text = self.files.read(&path)?;
                        let keys = parsed(&path, cgroupfs::parse_flat_keyed(&text))?;
                        let ns = |k: &str| {
                            keys.get(k)
                                .copied()
                                .unwrap_or(0)
                                .saturating_mul(1_000_000_000 / USER_HZ)
                        };
                        CpuUsage {
                            user_ns: ns("user"),
                            system_ns: ns("system"),
                            per_cpu: None,
                        }
                    }
                }
            }
            None => CpuUsage::default(),
        };
        Ok(CpuSnapshot {
            cpuset,
            quota,
            usage,
        })
    }

    /// Block I/O per device.
    pub fn io(&self, set: &CgroupSet) -> Result<Vec<IoDeviceStat>> {
        match self.dir(set, Controller::Io) {
            Some((Version::V2, dir)) => {
                let path = dir.join("io.stat");
                match read_optional(&self.files, &path)? {
                    Some(text) => parsed(&path, cgroupfs::parse_io_stat(&text)),
                    None => Ok(Vec::new()),
                }
            }
            Some((Version::V1, dir)) => {
                let bytes_path = dir.join("blkio.throttle.io_service_bytes");
                let ios_path = dir.join("blkio.throttle.io_serviced");
                let (Some(bytes), Some(ios)) = (
                    read_optional(&self.files, &bytes_path)?,
                    read_optional(&self.files, &ios_path)?,
                ) else {
                    return Ok(Vec::new());
                };
                parsed(&bytes_path, cgroupfs::parse_blkio(&bytes, &ios))
            }
            None => Ok(Vec::new()),
        }
    }

    /// Pressure files of the container's v2 cgroup; `None` on v1-only containers.
    pub fn pressure(&self, set: &CgroupSet) -> Result<Option<PressureSnapshot>> {
        let Some(index) = self
            .layout
            .hierarchies
            .iter()
            .position(|h| h.version == Version::V2)
        else {
            return Ok(None);
        };
        // On hybrid hosts the unified hierarchy carries no controllers: its PSI is not the
        // container's (it is wherever systemd put the process), so report none.
        if self.layout.hierarchy_for(Controller::Memory) != Some(index) {
            return Ok(None);
        }
        let Some(path) = set.path(index) else {
            return Ok(None);
        };
        let dir = join_cgroup(&self.layout.hierarchies[index].mount_point, path);
        let psi = |name: &str| -> Result<Option<Psi>> {
            let file = dir.join(name);
            match read_optional(&self.files, &file)? {
                Some(text) => Ok(Some(parsed(&file, cgroupfs::parse_psi(&text))?)),
                None => Ok(None),
            }
        };
        Ok(Some(PressureSnapshot {
            cpu: psi("cpu.pressure")?,
            memory: psi("memory.pressure")?,
            io: psi("io.pressure")?,
        }))
    }

    /// The directory whose thread list counts as the container's, with its hierarchy index and
    /// version: the first of the pids, cpu, cpuacct and memory hierarchies where the container
    /// has its own cgroup (a root path would list every task of the host).
    fn task_dir(&self, set: &CgroupSet) -> Option<(usize, Version, PathBuf)> {
        [
            Controller::Pids,
            Controller::Cpu,
            Controller::Cpuacct,
            Controller::Memory,
        ]
        .into_iter()
        .find_map(|c| {
            let index = self.layout.hierarchy_for(c)?;
            let path = set.path(index).filter(|p| *p != "/")?;
            let hierarchy = &self.layout.hierarchies[index];
            Some((
                index,
                hierarchy.version,
                join_cgroup(&hierarchy.mount_point, path),
            ))
        })
    }

    /// Thread ids of the container and its sub-cgroups (v2 cgroup.threads, v1 `tasks` of the
    /// pids, cpu or memory hierarchy).
    pub fn thread_ids(&self, set: &CgroupSet) -> Result<Vec<u32>> {
        let Some((_, version, dir)) = self.task_dir(set) else {
            return Ok(Vec::new());
        };
        subtree_thread_ids(&dir, version, true)
    }

    /// CPU time (ns) used so far by the threads [`CgroupReader::task_counts`] counts, when one
    /// accounting cgroup covers exactly those: on v2 the task cgroup's own `cpu.stat`, on v1 the
    /// `cpuacct.usage` of the cpuacct cgroup at the same path as the task cgroup (runtimes put a
    /// container at one path in every hierarchy). `None` when there is no such cgroup. Both
    /// include sub-cgroups. While the value stands still no thread of the container has run, so
    /// none has changed state by itself. Read through the kept descriptors (a value file).
    pub fn task_cpu_usage_ns(&self, id: &ContainerId) -> Result<Option<u64>> {
        let Some((index, version, dir)) = self.task_dir(&id.set) else {
            return Ok(None);
        };
        match version {
            Version::V2 => {
                let path = dir.join("cpu.stat");
                let text = self.files.read(&path)?;
                let keys = parsed(&path, cgroupfs::parse_flat_keyed(&text))?;
                Ok(keys.get("usage_usec").map(|usec| usec.saturating_mul(1000)))
            }
            Version::V1 => {
                let Some(acct) = self.layout.hierarchy_for(Controller::Cpuacct) else {
                    return Ok(None);
                };
                let hierarchy = &self.layout.hierarchies[acct];
                match (id.set.path(acct), id.set.path(index)) {
                    (Some(acct_path), Some(task_path))
                        if acct_path == task_path && hierarchy.version == Version::V1 =>
                    {
                        let usage = join_cgroup(&hierarchy.mount_point, acct_path);
                        read_u64(&self.files, &usage.join("cpuacct.usage")).map(Some)
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    /// Counts the threads of container `id` by state. Threads exiting during the count are
    /// skipped. Fails with `Vanished` when the cgroup the threads are listed in is gone or was
    /// replaced by a new one under the same path (its inode is not `id`'s).
    pub fn task_counts(&self, id: &ContainerId) -> Result<TaskCounts> {
        let Some((index, version, dir)) = self.task_dir(&id.set) else {
            return Ok(TaskCounts::default());
        };
        let meta = std::fs::metadata(&dir).map_err(|e| Error::io(&dir, e))?;
        if id.inodes.get(index) != Some(&meta.ino()) {
            return Err(Error::Vanished { path: dir });
        }
        // kernfs gives a directory 2 + its number of subdirectories as link count, so 2 means no
        // sub-cgroup to walk (other file systems may say 1 for "unknown": those are walked).
        let walk = meta.nlink() != 2;
        let mut counts = TaskCounts::default();
        let mut buf = vec![0u8; 4096];
        for tid in subtree_thread_ids(&dir, version, walk)? {
            // The thread's own stat (task/<tid>): /proc/<tid>/stat would sum over its whole
            // thread group, which makes a count quadratic in the number of threads.
            let path = self.paths.proc_root.join(format!("{tid}/task/{tid}/stat"));
            let Ok(len) = read_into(&path, &mut buf) else {
                continue;
            };
            let Ok(stat) = parse_proc_stat(&String::from_utf8_lossy(&buf[..len])) else {
                continue;
            };
            counts.total += 1;
            match stat.state {
                'R' => counts.running += 1,
                'D' => counts.blocked += 1,
                _ => {}
            }
        }
        Ok(counts)
    }
}

/// Thread ids listed in `dir` and, if `walk`, in every cgroup below it (services of a system
/// container live in sub-cgroups). Sub-cgroups removed during the walk are skipped.
fn subtree_thread_ids(dir: &Path, version: Version, walk: bool) -> Result<Vec<u32>> {
    let file = match version {
        Version::V2 => "cgroup.threads",
        Version::V1 => "tasks",
    };
    let mut ids = parse_ids(&dir.join(file))?;
    if !walk {
        return Ok(ids);
    }
    let mut stack: Vec<(PathBuf, usize)> = vec![(dir.to_path_buf(), 0)];
    let mut walked = 0usize;
    while let Some((current, depth)) = stack.pop() {
        if depth >= MAX_SUBTREE_DEPTH || walked >= MAX_SUBTREE_CGROUPS {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            walked += 1;
            if let Ok(child_ids) = parse_ids(&entry.path().join(file)) {
                ids.extend(child_ids);
            }
            stack.push((entry.path(), depth + 1));
        }
    }
    Ok(ids)
}

/// Reads a small kernel file into `buf` with one open and one read (procfs hands out a whole
/// stat line at once, as [`read_file`] relies on); returns the length read.
fn read_into(path: &Path, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// The cgroup directory and its non-root ancestors within the same mount, innermost first.
fn ancestors(dir: &Path, set: &CgroupSet, layout: &Layout, controller: Controller) -> Vec<PathBuf> {
    let depth = layout
        .hierarchy_for(controller)
        .and_then(|i| set.path(i))
        .map(|p| p.split('/').filter(|c| !c.is_empty()).count())
        .unwrap_or(0);
    let mut dirs = Vec::with_capacity(depth);
    let mut current = Some(dir);
    for _ in 0..depth {
        let Some(d) = current else { break };
        dirs.push(d.to_path_buf());
        current = d.parent();
    }
    dirs
}

fn read_u64(files: &FileCache, path: &Path) -> Result<u64> {
    parsed(path, cgroupfs::parse_u64(&files.read(path)?))
}

/// v1 memory limits are numbers; the kernel's "unlimited" is a huge page-aligned value, kept as is
/// (it is capped by the host's memory when rendered).
fn v1_limit(text: &str) -> ParseResult<Option<u64>> {
    cgroupfs::parse_u64(text).map(Some)
}

/// The minimum of a limit file over `dirs`; a missing file at an ancestor means no limit there.
fn min_limit(
    files: &FileCache,
    dirs: &[PathBuf],
    file: &str,
    parse: fn(&str) -> ParseResult<Option<u64>>,
) -> Result<Option<u64>> {
    let mut min: Option<u64> = None;
    for (i, dir) in dirs.iter().enumerate() {
        let path = dir.join(file);
        let text = if i == 0 {
            Some(files.read(&path)?)
        } else {
            read_optional(files, &path)?
        };
        if let Some(limit) = text
            .map(|t| parsed(&path, parse(&t)))
            .transpose()?
            .flatten()
        {
            min = Some(min.map_or(limit, |m| m.min(limit)));
        }
    }
    Ok(min)
}

/// The tightest quota (smallest quota/period ratio) over `dirs`.
fn min_quota(files: &FileCache, dirs: &[PathBuf], version: Version) -> Result<Option<CpuQuota>> {
    let mut best: Option<CpuQuota> = None;
    for dir in dirs {
        let quota = match version {
            Version::V2 => {
                let path = dir.join("cpu.max");
                let Some(text) = read_optional(files, &path)? else {
                    continue;
                };
                let max = parsed(&path, cgroupfs::parse_cpu_max(&text))?;
                max.quota_us.map(|q| CpuQuota {
                    quota_us: q,
                    period_us: max.period_us,
                })
            }
            Version::V1 => {
                let quota_path = dir.join("cpu.cfs_quota_us");
                let Some(text) = read_optional(files, &quota_path)? else {
                    continue;
                };
                match parsed(&quota_path, cgroupfs::parse_v1_quota(&text))? {
                    Some(q) => {
                        let period_us = read_u64(files, &dir.join("cpu.cfs_period_us"))?;
                        (period_us > 0).then_some(CpuQuota {
                            quota_us: q,
                            period_us,
                        })
                    }
                    None => None,
                }
            }
        };
        if let Some(q) = quota {
            let tighter = best.is_none_or(|b| {
                u128::from(q.quota_us) * u128::from(b.period_us)
                    < u128::from(b.quota_us) * u128::from(q.period_us)
            });
            if tighter {
                best = Some(q);
            }
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::mountinfo::parse_mountinfo;
    use crate::testutil::{copy_fixture_dir, fixture, FakeTree};

    /// Mountinfo lines of one v1 hierarchy per controller, mounted at `<tree>/cg/<controller>`.
    fn v1_mountinfo(tree: &FakeTree, controllers: &[&str]) -> String {
        controllers
            .iter()
            .enumerate()
            .map(|(i, m)| {
                format!(
                    "{} 1 0:{} / {} rw - cgroup cgroup rw,{m}\n",
                    30 + i,
                    40 + i,
                    tree.path(&format!("cg/{m}")).display()
                )
            })
            .collect()
    }

    /// A v1 tree with the fixture cgroup at /fixture-capture, and a parent with a tighter limit.
    #[test]
    fn v1_snapshot_from_fixtures() {
        let tree = FakeTree::new();
        let mounts = ["memory", "cpu", "cpuacct", "cpuset", "blkio", "pids"];
        for m in mounts {
            copy_fixture_dir(
                "v1/6.18",
                &tree.path(&format!("cg/{m}/parent/fixture-capture")),
            );
        }
        let mountinfo = v1_mountinfo(&tree, &mounts);
        tree.write("cg/memory/parent/memory.limit_in_bytes", "134217728\n");
        // What the kernel shows below that parent: its limit as the hierarchical minimum.
        let stat_path = "cg/memory/parent/fixture-capture/memory.stat";
        let stat = std::fs::read_to_string(tree.path(stat_path)).unwrap();
        tree.write(
            stat_path,
            &stat.replace(
                "hierarchical_memory_limit 268435456",
                "hierarchical_memory_limit 134217728",
            ),
        );
        tree.write("cg/cpu/parent/cpu.cfs_quota_us", "-1\n");
        tree.write("cg/cpu/parent/cpu.cfs_period_us", "100000\n");
        let layout = Layout::from_mounts(&parse_mountinfo(&mountinfo).unwrap(), "");
        let reader = CgroupReader::new(layout, HostPaths::default());
        let lines = parse_pid_cgroup(
            "8:pids:/parent/fixture-capture\n7:blkio:/parent/fixture-capture\n\
             4:memory:/parent/fixture-capture\n3:cpuset:/parent/fixture-capture\n\
             2:cpuacct:/parent/fixture-capture\n1:cpu:/parent/fixture-capture\n",
        )
        .unwrap();
        let set = reader.layout().cgroup_set(&lines);
        let snap = reader.snapshot(&set).unwrap();
        let memory = snap.memory.unwrap();
        assert_eq!(
            memory.limit_bytes,
            Some(134217728),
            "minimum over ancestors"
        );
        assert!(memory.swap_accounted);
        assert_eq!(memory.swap_limit_bytes, Some(536870912 - 134217728));
        assert!(memory.usage_bytes > 0);
        assert_eq!(snap.cpu.cpuset, Some(vec![0]));
        assert_eq!(
            snap.cpu.quota,
            Some(CpuQuota {
                quota_us: 50000,
                period_us: 100000
            })
        );
        assert!(snap.cpu.usage.per_cpu.is_some());
        assert!(snap.io.iter().any(|d| d.read_bytes > 0));
        assert!(snap.pressure.is_none());

        // Without the kernel's hierarchical minimum, the ancestors' files give the same limits.
        let stat = std::fs::read_to_string(tree.path(stat_path)).unwrap();
        let flat: String = stat
            .lines()
            .filter(|l| !l.starts_with("hierarchical_"))
            .map(|l| format!("{l}\n"))
            .collect();
        tree.write(stat_path, &flat);
        let walked = reader.memory(&set).unwrap().unwrap();
        assert_eq!(walked.limit_bytes, Some(134217728));
        assert_eq!(walked.swap_limit_bytes, Some(536870912 - 134217728));
    }

    #[test]
    fn v2_snapshot_from_fixtures() {
        let tree = FakeTree::new();
        copy_fixture_dir("v2/6.1", &tree.path("cg/fixture"));
        tree.write("cg/cgroup.controllers", "cpuset cpu io memory pids\n");
        let mountinfo = format!(
            "25 1 0:23 / {} rw - cgroup2 cgroup2 rw\n",
            tree.path("cg").display()
        );
        let layout = Layout::from_mounts(
            &parse_mountinfo(&mountinfo).unwrap(),
            "cpuset cpu io memory pids",
        );
        let reader = CgroupReader::new(layout, HostPaths::default());
        let set = reader
            .layout()
            .cgroup_set(&parse_pid_cgroup("0::/fixture\n").unwrap());
        let snap = reader.snapshot(&set).unwrap();
        let memory = snap.memory.unwrap();
        assert_eq!(memory.limit_bytes, Some(268435456));
        assert_eq!(memory.swap_limit_bytes, Some(134217728));
        assert!(memory.swap_usage_bytes > 0);
        assert_eq!(snap.cpu.cpuset, Some(vec![0]));
        assert_eq!(
            snap.cpu.quota,
            Some(CpuQuota {
                quota_us: 50000,
                period_us: 100000
            })
        );
        assert!(snap.cpu.usage.user_ns > 0 && snap.cpu.usage.per_cpu.is_none());
        assert!(snap.pressure.unwrap().memory.is_some());
        assert_eq!(snap.io.len(), 1);
    }

    #[test]
    fn vanished_cgroup_is_reported() {
        let tree = FakeTree::new();
        copy_fixture_dir("v2/6.1", &tree.path("cg/fixture"));
        let mountinfo = format!(
            "25 1 0:23 / {} rw - cgroup2 cgroup2 rw\n",
            tree.path("cg").display()
        );
        let layout = Layout::from_mounts(&parse_mountinfo(&mountinfo).unwrap(), "memory cpu");
        let reader = CgroupReader::new(layout, HostPaths::default());
        let set = reader
            .layout()
            .cgroup_set(&parse_pid_cgroup("0::/gone\n").unwrap());
        let err = reader.snapshot(&set).unwrap_err();
        assert!(matches!(err, Error::Vanished { .. }), "{err}");
        assert_eq!(err.errno(), libc::ENOENT);
    }

    #[test]
    fn thread_ids_include_sub_cgroups() {
        let tree = FakeTree::new();
        tree.write("cg/ctr/cgroup.threads", "10\n11\n");
        tree.write("cg/ctr/init.scope/cgroup.threads", "12\n");
        tree.write("cg/ctr/svc/a/cgroup.threads", "13\n14\n");
        let mountinfo = format!(
            "25 1 0:23 / {} rw - cgroup2 cgroup2 rw\n",
            tree.path("cg").display()
        );
        let layout = Layout::from_mounts(&parse_mountinfo(&mountinfo).unwrap(), "pids");
        let reader = CgroupReader::new(layout, HostPaths::default());
        let set = reader
            .layout()
            .cgroup_set(&parse_pid_cgroup("0::/ctr\n").unwrap());
        let mut ids = reader.thread_ids(&set).unwrap();
        ids.sort_unstable();
        assert_eq!(ids, vec![10, 11, 12, 13, 14]);
    }

    /// A v2 tree with container /ctr (threads 10, 11), its sub-cgroup init.scope (12) and
    /// svc/a (13), and a fake /proc giving each thread a state; returns the reader and the set.
    fn tree_with_threads(tree: &FakeTree) -> (CgroupReader, CgroupSet) {
        tree.write("cg/ctr/cgroup.threads", "10\n11\n");
        tree.write("cg/ctr/init.scope/cgroup.threads", "12\n");
        tree.write("cg/ctr/svc/a/cgroup.threads", "13\n");
        let stat = fixture("v2/6.1/proc-pid-stat");
        for (tid, state) in [(10, "R"), (11, "S"), (12, "D"), (13, "R")] {
            let line = stat.replacen(" S ", &format!(" {state} "), 1);
            // A command name that is not UTF-8 must not hide the thread.
            let mut bytes = line.replacen("(sleep)", "(sl\u{1}p)", 1).into_bytes();
            if let Some(b) = bytes.iter_mut().find(|b| **b == 1) {
                *b = 0xff;
            }
            let path = tree.path(&format!("proc/{tid}/task/{tid}/stat"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        let mountinfo = format!(
            "25 1 0:23 / {} rw - cgroup2 cgroup2 rw\n",
            tree.path("cg").display()
        );
        let layout = Layout::from_mounts(&parse_mountinfo(&mountinfo).unwrap(), "pids");
        let paths = HostPaths {
            proc_root: tree.path("proc"),
            sys_root: tree.path("sys"),
        };
        let reader = CgroupReader::new(layout, paths);
        let set = reader
            .layout()
            .cgroup_set(&parse_pid_cgroup("0::/ctr\n").unwrap());
        (reader, set)
    }

    #[test]
    fn task_counts_cover_sub_cgroups_by_state() {
        let tree = FakeTree::new();
        let (reader, set) = tree_with_threads(&tree);
        let id = reader.identity(&Arc::new(set.clone())).unwrap();
        assert_eq!(
            reader.task_counts(&id).unwrap(),
            TaskCounts {
                running: 2,
                blocked: 1,
                total: 4
            }
        );
        // A thread that exited between the list and its stat is not counted.
        std::fs::remove_dir_all(tree.path("proc/13")).unwrap();
        assert_eq!(reader.task_counts(&id).unwrap().total, 3);
    }

    #[test]
    fn task_counts_of_a_removed_or_replaced_cgroup_vanish() {
        let tree = FakeTree::new();
        let (reader, set) = tree_with_threads(&tree);
        let id = reader.identity(&Arc::new(set.clone())).unwrap();
        let replaced = ContainerId {
            inodes: id.inodes.iter().map(|i| i + 1).collect(),
            ..id.clone()
        };
        let err = reader.task_counts(&replaced).unwrap_err();
        assert!(matches!(err, Error::Vanished { .. }), "{err}");
        std::fs::remove_dir_all(tree.path("cg/ctr")).unwrap();
        let err = reader.task_counts(&id).unwrap_err();
        assert!(matches!(err, Error::Vanished { .. }), "{err}");
    }

    #[test]
    fn task_cpu_usage_is_the_task_cgroups_own() {
        let tree = FakeTree::new();
        let (reader, set) = tree_with_threads(&tree);
        let id = reader.identity(&Arc::new(set.clone())).unwrap();
        tree.write("cg/ctr/cpu.stat", "usage_usec 1500\nuser_usec 1000\n");
        assert_eq!(reader.task_cpu_usage_ns(&id).unwrap(), Some(1_500_000));

        // v1: cpuacct.usage of the cgroup at the task cgroup's path, and only that one.
        let tree = FakeTree::new();
        let mounts = ["pids", "cpuacct"];
        for m in mounts {
            tree.write(&format!("cg/{m}/ctr/tasks"), "10\n");
        }
        let mountinfo = v1_mountinfo(&tree, &mounts);
        tree.write("cg/cpuacct/ctr/cpuacct.usage", "123456\n");
        let reader = CgroupReader::new(
            Layout::from_mounts(&parse_mountinfo(&mountinfo).unwrap(), ""),
            HostPaths::default(),
        );
        let cgroups = |pids: &str, acct: &str| {
            let text = format!("2:pids:{pids}\n1:cpuacct:{acct}\n");
            let set = reader
                .layout()
                .cgroup_set(&parse_pid_cgroup(&text).unwrap());
            reader.identity(&Arc::new(set)).unwrap()
        };
        let id = cgroups("/ctr", "/ctr");
        assert_eq!(reader.task_cpu_usage_ns(&id).unwrap(), Some(123456));
        let id = cgroups("/ctr", "/");
        assert_eq!(reader.task_cpu_usage_ns(&id).unwrap(), None);
    }

    #[test]
    fn malformed_file_is_a_parse_error() {
        let tree = FakeTree::new();
        copy_fixture_dir("v2/6.1", &tree.path("cg/fixture"));
        tree.write("cg/fixture/memory.current", "lots\n");
        let mountinfo = format!(
            "25 1 0:23 / {} rw - cgroup2 cgroup2 rw\n",
            tree.path("cg").display()
        );
        let layout = Layout::from_mounts(&parse_mountinfo(&mountinfo).unwrap(), "memory");
        let reader = CgroupReader::new(layout, HostPaths::default());
        let set = reader
            .layout()
            .cgroup_set(&parse_pid_cgroup("0::/fixture\n").unwrap());
        let err = reader.memory(&set).unwrap_err();
        assert!(matches!(err, Error::Parse { .. }));
        assert!(err.to_string().contains("memory.current"), "{err}");
    }
}
