//! A container's tasks: thread ids over its cgroup and sub-cgroups, counts by scheduler state
//! (for loadavg and /proc/stat procs_*), and the CPU time of the threads counted.

use crate::collector::{Collector, ContainerId};
use crate::error::{Error, ParseError, Result};
use crate::files::read_file;
use crate::layout::{join_cgroup, CgroupSet, Controller, Version};
use crate::model::TaskCounts;
use crate::parse::cgroupfs;
use crate::parse::proc_pid::parse_proc_stat;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

impl Collector {
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
            let index = self.layout().hierarchy_for(c)?;
            let path = set.path(index).filter(|p| *p != "/")?;
            let hierarchy = &self.layout().hierarchies[index];
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

    /// CPU time (ns) used so far by the threads [`Collector::task_counts`] counts, when one
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
                let text = self.read(&path)?;
                let keys = cgroupfs::parse_flat_keyed(&text).map_err(|e| Error::parse(&path, e))?;
                Ok(keys.get("usage_usec").map(|usec| usec.saturating_mul(1000)))
            }
            Version::V1 => {
                let Some(acct) = self.layout().hierarchy_for(Controller::Cpuacct) else {
                    return Ok(None);
                };
                let hierarchy = &self.layout().hierarchies[acct];
                match (id.set.path(acct), id.set.path(index)) {
                    (Some(acct_path), Some(task_path))
                        if acct_path == task_path && hierarchy.version == Version::V1 =>
                    {
                        let usage = join_cgroup(&hierarchy.mount_point, acct_path);
                        let path = usage.join("cpuacct.usage");
                        let text = self.read(&path)?;
                        cgroupfs::parse_u64(&text)
                            .map(Some)
                            .map_err(|e| Error::parse(&path, e))
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
            let path = self
                .host_paths()
                .proc_root
                .join(format!("{tid}/task/{tid}/stat"));
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
