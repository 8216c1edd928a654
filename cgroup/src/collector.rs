//! The collector: reads any container's cgroup state, by a process in it or by its cgroup
//! path, into a [`ContainerSnapshot`] with one call. It dispatches each controller to the
//! module of its hierarchy's version ([`crate::v1`], [`crate::v2`]), which read the files at the
//! edge and interpret them with pure functions.

use crate::error::{Error, Result};
use crate::files::FileCache;
use crate::layout::{join_cgroup, CgroupSet, Controller, HostPaths, Layout, Version};
use crate::model::{ContainerSnapshot, CpuDetail, Parts};
use crate::parse::proc_pid::parse_pid_cgroup;
use crate::raw::{Edge, RawFile, Shared};
use crate::{pids, v1, v2};
use std::borrow::Borrow;
use std::cell::{Cell, RefCell};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Identifies one container instance: its cgroup set plus the inode of every cgroup directory,
/// so a cgroup removed and recreated under the same path is a different container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerId {
    /// Paths in every hierarchy (shared with the caller that asked for the identity).
    pub set: Arc<CgroupSet>,
    /// Inode of each directory (0 where the set has no path), same order as `set.paths`.
    pub inodes: Vec<u64>,
}

/// Reads cgroup state for any process or cgroup on the host.
#[derive(Debug, Clone)]
pub struct Collector {
    layout: Layout,
    paths: HostPaths,
    files: Arc<FileCache>,
    /// The hierarchy providing each controller (by [`Controller`] order), looked up once.
    providers: [Option<usize>; CONTROLLERS.len()],
}

/// Every controller, in declaration order (the index of [`Collector`]'s providers).
const CONTROLLERS: [Controller; 6] = [
    Controller::Memory,
    Controller::Cpu,
    Controller::Cpuacct,
    Controller::Cpuset,
    Controller::Io,
    Controller::Pids,
];

/// One set's cgroup directory in each controller's hierarchy, joined once for a snapshot.
struct Located<'s> {
    set: &'s CgroupSet,
    /// By [`CONTROLLERS`] order: the hierarchy's version, its index and the directory.
    dirs: [Option<(Version, usize, PathBuf)>; CONTROLLERS.len()],
}

impl Located<'_> {
    /// The directory in the hierarchy providing `controller`, with that hierarchy's version.
    fn dir(&self, controller: Controller) -> Option<(Version, &Path)> {
        let (version, _, dir) = self.dirs[controller as usize].as_ref()?;
        Some((*version, dir))
    }

    /// The cgroup directory and its non-root ancestors in `controller`'s hierarchy, innermost
    /// first (empty for the root cgroup).
    fn chain(&self, controller: Controller) -> Vec<PathBuf> {
        let Some((_, index, dir)) = self.dirs[controller as usize].as_ref() else {
            return Vec::new();
        };
        let depth = self
            .set
            .path(*index)
            .map(|p| p.split('/').filter(|c| !c.is_empty()).count())
            .unwrap_or(0);
        dir.ancestors().take(depth).map(Path::to_path_buf).collect()
    }
}

impl Collector {
    /// A collector over an explicit layout, reading value files through `files` (its capacity
    /// and idle policy are the consumer's choice).
    pub fn new(layout: Layout, paths: HostPaths, files: FileCache) -> Self {
        Collector {
            providers: CONTROLLERS.map(|controller| layout.hierarchy_for(controller)),
            layout,
            paths,
            files: Arc::new(files),
        }
    }

    /// `set`'s directories for a snapshot.
    fn locate<'s>(&self, set: &'s CgroupSet) -> Located<'s> {
        let dirs = CONTROLLERS.map(|controller| {
            let index = self.providers[controller as usize]?;
            let hierarchy = &self.layout.hierarchies[index];
            let dir = join_cgroup(&hierarchy.mount_point, set.path(index)?);
            Some((hierarchy.version, index, dir))
        });
        Located { set, dirs }
    }

    /// Discovers the layout under `paths` and builds a collector.
    pub fn discover(paths: HostPaths, files: FileCache) -> Result<Self> {
        Ok(Collector::new(Layout::discover(&paths)?, paths, files))
    }

    /// The kept descriptors.
    pub fn files(&self) -> &FileCache {
        &self.files
    }

    /// Reads a cgroupfs, procfs or sysfs value file through the kept descriptors (not for
    /// thread lists: see [`crate::files`]).
    pub fn read(&self, path: &Path) -> Result<String> {
        self.files.read(path)
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
        let text = crate::files::read_file(&path)?;
        let lines = parse_pid_cgroup(&text).map_err(|e| Error::parse(&path, e))?;
        Ok(self.layout.cgroup_set(&lines))
    }

    /// The cgroup at `path` (absolute, "/" the root) in every hierarchy that has a directory
    /// there: a container named by its path rather than by a process in it. Fails with
    /// `Vanished` when no hierarchy has it.
    pub fn cgroup_at(&self, path: &str) -> Result<CgroupSet> {
        let mut set = self.layout.set_at(path);
        for (hierarchy, entry) in self.layout.hierarchies.iter().zip(&mut set.paths) {
            if let Some(p) = entry.as_deref() {
                if !join_cgroup(&hierarchy.mount_point, p).is_dir() {
                    *entry = None;
                }
            }
        }
        if set.paths.iter().all(Option::is_none) {
            let dir = self
                .layout
                .hierarchies
                .first()
                .map(|h| join_cgroup(&h.mount_point, path))
                .unwrap_or_else(|| PathBuf::from(path));
            return Err(Error::Vanished { path: dir });
        }
        Ok(set)
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
    pub(crate) fn inodes(&self, set: &CgroupSet) -> Result<Vec<u64>> {
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

    /// Reads the `parts` of `set`'s state, each kernel file once. A cgroup that vanishes during
    /// the read is `Vanished`, never a snapshot mixing absent files with present ones.
    pub fn snapshot(&self, set: &CgroupSet, parts: Parts) -> Result<ContainerSnapshot> {
        self.snapshot_with(set, parts, None, None)
    }

    /// [`Collector::snapshot`], reading ancestors' files through `shared` when given (one
    /// collection's, see [`Shared`]), and taking `given` (a file of the cgroup this collection
    /// read already) instead of reading it again.
    pub(crate) fn snapshot_with(
        &self,
        set: &CgroupSet,
        parts: Parts,
        shared: Option<&Shared>,
        given: Option<RawFile>,
    ) -> Result<ContainerSnapshot> {
        let absent = Cell::new(false);
        let given = RefCell::new(given);
        let mut edge = Edge::new(&self.files, &absent).given(&given);
        if let Some(shared) = shared {
            edge = edge.sharing(shared);
        }
        let set = &self.locate(set);
        let mut snap = ContainerSnapshot::default();
        if parts.contains(Parts::MEMORY) || parts.contains(Parts::MEMORY_DETAIL) {
            self.read_memory(edge, set, parts, &mut snap)?;
        }
        if parts.contains(Parts::CPU_LIMITS) || parts.contains(Parts::CPU_DETAIL) {
            self.read_cpuset(edge, set, parts, &mut snap)?;
        }
        if parts.contains(Parts::CPU_LIMITS)
            || parts.contains(Parts::CPU_USAGE)
            || parts.contains(Parts::CPU_DETAIL)
        {
            self.read_cpu(edge, set, parts, &mut snap)?;
        }
        if parts.contains(Parts::IO) {
            snap.io = match set.dir(Controller::Io) {
                Some((Version::V2, dir)) => {
                    Some(v2::io::io(edge.optional(dir, "io.stat")?.as_ref())?)
                }
                Some((Version::V1, dir)) => Some(v1::blkio::io(
                    v1::blkio::BlkioFiles::read(edge, dir)?.as_ref(),
                )?),
                None => None,
            };
        }
        if parts.contains(Parts::PRESSURE) {
            snap.pressure = self.read_pressure(edge, set)?;
        }
        if parts.contains(Parts::PIDS) {
            if let Some((_, dir)) = set.dir(Controller::Pids) {
                // v2: absent where the parent does not enable pids for its children.
                if let Some(current) = edge.optional(dir, "pids.current")? {
                    let max = edge.optional(dir, "pids.max")?;
                    snap.pids = Some(pids::pids(&current, max.as_ref())?);
                }
            }
        }
        // A file that may be absent and was could mean the cgroup went away mid-read: confirm
        // (only then: the check costs a path lookup per hierarchy).
        if absent.get() {
            self.inodes(set.set)?;
        }
        Ok(snap)
    }

    /// Snapshots of many cgroups (one collection, an exporter's scrape), in `sets`' order, read
    /// on up to `threads` threads (0: the host's available parallelism; 1: this thread only).
    /// Each result is what [`Collector::snapshot`] gives for that set: one cgroup vanishing or
    /// failing does not fail the others. Threads take blocks of neighbouring sets in turn, so a
    /// thread slowed by other work on the host takes fewer. The ancestors' limit files, the
    /// same for all the children of a parent, are read once in the call (never kept for the
    /// next call).
    pub fn snapshot_many<S>(
        &self,
        sets: &[S],
        parts: Parts,
        threads: usize,
    ) -> Vec<Result<ContainerSnapshot>>
    where
        S: Borrow<CgroupSet> + Sync,
    {
        let shared = Shared::default();
        in_parallel(sets, threads, CGROUPS_PER_BLOCK, |set| {
            self.snapshot_with(set.borrow(), parts, Some(&shared), None)
        })
    }

    fn read_memory(
        &self,
        edge: Edge<'_>,
        set: &Located<'_>,
        parts: Parts,
        snap: &mut ContainerSnapshot,
    ) -> Result<()> {
        let Some((version, _)) = set.dir(Controller::Memory) else {
            return Ok(());
        };
        let chain = set.chain(Controller::Memory);
        match version {
            Version::V2 => {
                let Some(files) = v2::memory::MemoryFiles::read(edge, &chain, parts)? else {
                    return Ok(());
                };
                if parts.contains(Parts::MEMORY) {
                    snap.memory = Some(v2::memory::memory(&files)?);
                }
                if parts.contains(Parts::MEMORY_DETAIL) && files.own {
                    snap.memory_detail = Some(v2::memory::detail(&files)?);
                }
            }
            Version::V1 => {
                let files = v1::memory::MemoryFiles::read(edge, &chain, parts)?;
                if parts.contains(Parts::MEMORY) {
                    snap.memory = Some(v1::memory::memory(&files)?);
                }
                if parts.contains(Parts::MEMORY_DETAIL) {
                    snap.memory_detail = Some(v1::memory::detail(&files)?);
                }
            }
        }
        Ok(())
    }

    fn read_cpuset(
        &self,
        edge: Edge<'_>,
        set: &Located<'_>,
        parts: Parts,
        snap: &mut ContainerSnapshot,
    ) -> Result<()> {
        let Some((version, dir)) = set.dir(Controller::Cpuset) else {
            return Ok(());
        };
        if parts.contains(Parts::CPU_LIMITS) {
            snap.cpuset = match version {
                // Absent where the parent does not enable cpuset for its children.
                Version::V2 => edge
                    .optional(dir, v2::cpuset::CPUS_FILE)?
                    .map(|file| v2::cpuset::cpus(&file))
                    .transpose()?,
                Version::V1 => Some(v1::cpuset::list(&v1::cpuset::read(
                    edge,
                    dir,
                    "cpuset.effective_cpus",
                    "cpuset.cpus",
                )?)?),
            };
        }
        if parts.contains(Parts::CPU_DETAIL) {
            let mems = match version {
                Version::V2 => edge
                    .optional(dir, v2::cpuset::MEMS_FILE)?
                    .map(|file| v2::cpuset::mems(&file))
                    .transpose()?,
                Version::V1 => Some(v1::cpuset::list(&v1::cpuset::read(
                    edge,
                    dir,
                    "cpuset.effective_mems",
                    "cpuset.mems",
                )?)?),
            };
            snap.cpu_detail
                .get_or_insert_with(CpuDetail::default)
                .cpuset_mems = mems;
        }
        Ok(())
    }

    fn read_cpu(
        &self,
        edge: Edge<'_>,
        set: &Located<'_>,
        parts: Parts,
        snap: &mut ContainerSnapshot,
    ) -> Result<()> {
        let cpu = set.dir(Controller::Cpu);
        let acct = set.dir(Controller::Cpuacct);
        // v2: cpu.stat is a core file of every cgroup; read once for usage and throttling.
        let v2_stat = match &acct {
            Some((Version::V2, dir))
                if parts.contains(Parts::CPU_USAGE) || parts.contains(Parts::CPU_DETAIL) =>
            {
                Some(edge.read(dir, "cpu.stat")?)
            }
            _ => None,
        };
        // The CFS files of the cgroup and its ancestors (limits), or of the cgroup alone
        // (detail): each read once, the cgroup's own shared by both.
        let detail = parts.contains(Parts::CPU_DETAIL);
        let chain = match (parts.contains(Parts::CPU_LIMITS), &cpu) {
            (true, _) => set.chain(Controller::Cpu),
            (false, Some((_, dir))) if detail => vec![dir.to_path_buf()],
            _ => Vec::new(),
        };
        let (mut v1_cfs, mut v2_max) = (Vec::new(), Vec::new());
        match cpu.as_ref().map(|(v, _)| *v) {
            Some(Version::V2) => v2_max = edge.chain(&chain, "cpu.max")?,
            Some(Version::V1) => {
                for (i, dir) in chain.iter().enumerate() {
                    v1_cfs.push(v1::cpu::CfsFiles::read(edge, dir, i == 0 && detail, i > 0)?);
                }
            }
            None => {}
        }
        if parts.contains(Parts::CPU_LIMITS) {
            snap.cpu_quota = match cpu.as_ref().map(|(v, _)| *v) {
                Some(Version::V2) => v2::cpu::effective_quota(&v2_max)?,
                Some(Version::V1) => v1::cpu::effective_quota(&v1_cfs)?,
                None => None,
            };
        }
        if parts.contains(Parts::CPU_USAGE) {
            snap.cpu_usage = match (&v2_stat, &acct) {
                (Some(stat), _) => Some(v2::cpu::usage(stat)?),
                (None, Some((Version::V1, dir))) => Some(v1::cpuacct::usage(
                    &v1::cpuacct::UsageFiles::read(edge, dir)?,
                )?),
                _ => None,
            };
        }
        if detail {
            let detail = snap.cpu_detail.get_or_insert_with(CpuDetail::default);
            match cpu {
                Some((Version::V2, dir)) => {
                    detail.own_max = v2::cpu::own_max(v2_max.first().and_then(Option::as_ref))?;
                    detail.weight = v2::cpu::weight(edge.optional(dir, "cpu.weight")?.as_ref())?;
                    detail.throttling = match &v2_stat {
                        Some(stat) => v2::cpu::throttling(stat)?,
                        None => None,
                    };
                }
                Some((Version::V1, dir)) => {
                    detail.own_max = match v1_cfs.first().and_then(Option::as_ref) {
                        Some(files) => v1::cpu::own_max(files)?,
                        None => None,
                    };
                    detail.weight = v1::cpu::weight(edge.optional(dir, "cpu.shares")?.as_ref())?;
                    detail.throttling = edge
                        .optional(dir, "cpu.stat")?
                        .map(|stat| v1::cpu::throttling(&stat))
                        .transpose()?;
                }
                None => {}
            }
        }
        Ok(())
    }

    /// PSI of the container's v2 cgroup; `None` on v1 and hybrid hosts (the unified hierarchy
    /// of a hybrid host carries no controllers: its PSI is wherever systemd put the process,
    /// not the container's).
    fn read_pressure(
        &self,
        edge: Edge<'_>,
        set: &Located<'_>,
    ) -> Result<Option<crate::model::PressureSnapshot>> {
        let Some((Version::V2, dir)) = set.dir(Controller::Memory) else {
            return Ok(None);
        };
        let read = |name: &str| -> Result<Option<RawFile>> { edge.optional(dir, name) };
        let files = v2::psi::PressureFiles {
            cpu: read("cpu.pressure")?,
            memory: read("memory.pressure")?,
            io: read("io.pressure")?,
        };
        Ok(Some(v2::psi::pressure(&files)?))
    }
}

/// Items a thread takes at a time from a collection's cgroups: enough to amortize the shared
/// counter, few enough to even out the threads' shares.
pub const CGROUPS_PER_BLOCK: usize = 16;

/// `each(item)` for every item, in `items`' order, on up to `threads` threads (0: the host's
/// available parallelism; 1: this thread only), no more than there are blocks of `block`
/// items. Threads take blocks of neighbouring items in turn, so a thread slowed by other work
/// on the host takes fewer; a panic in one is resumed on the caller's.
pub fn in_parallel<T, R>(
    items: &[T],
    threads: usize,
    block: usize,
    each: impl Fn(&T) -> R + Sync,
) -> Vec<R>
where
    T: Sync,
    R: Send,
{
    let block = block.max(1);
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(items.len().div_ceil(block));
    if threads <= 1 {
        return items.iter().map(&each).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let start = next.fetch_add(block, Ordering::Relaxed);
            if start >= items.len() {
                return done;
            }
            let taken = &items[start..items.len().min(start + block)];
            done.push((start, taken.iter().map(&each).collect::<Vec<R>>()));
        }
    };
    let mut blocks = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut blocks = work();
        for helper in helpers {
            match helper.join() {
                Ok(done) => blocks.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        blocks
    });
    blocks.sort_unstable_by_key(|(start, _)| *start);
    blocks.into_iter().flat_map(|(_, block)| block).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CpuQuota, CpuWeight, TaskCounts};
    use crate::parse::mountinfo::parse_mountinfo;
    use crate::parse::proc_pid::parse_pid_cgroup;
    use crate::testutil::{copy_fixture_dir, fixture, FakeTree};

    /// A collector over a v2 hierarchy mounted at `<tree>/cg` offering `controllers`, and the
    /// set of a process whose /proc/<pid>/cgroup text is `pid_cgroup`.
    fn v2_tree(
        tree: &FakeTree,
        controllers: &str,
        pid_cgroup: &str,
        paths: HostPaths,
    ) -> (Collector, CgroupSet) {
        let mountinfo = format!(
            "25 1 0:23 / {} rw - cgroup2 cgroup2 rw\n",
            tree.path("cg").display()
        );
        let layout = Layout::from_mounts(&parse_mountinfo(&mountinfo).unwrap(), controllers);
        let reader = Collector::new(layout, paths, FileCache::new(0));
        let set = reader
            .layout()
            .cgroup_set(&parse_pid_cgroup(pid_cgroup).unwrap());
        (reader, set)
    }

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
        let reader = Collector::new(layout, HostPaths::default(), FileCache::new(0));
        let lines = parse_pid_cgroup(
            "8:pids:/parent/fixture-capture\n7:blkio:/parent/fixture-capture\n\
             4:memory:/parent/fixture-capture\n3:cpuset:/parent/fixture-capture\n\
             2:cpuacct:/parent/fixture-capture\n1:cpu:/parent/fixture-capture\n",
        )
        .unwrap();
        let set = reader.layout().cgroup_set(&lines);
        let snap = reader.snapshot(&set, Parts::ALL).unwrap();
        let memory = snap.memory.unwrap();
        assert_eq!(
            memory.limit_bytes,
            Some(134217728),
            "minimum over ancestors"
        );
        assert!(memory.swap_accounted);
        assert_eq!(memory.swap_limit_bytes, Some(536870912 - 134217728));
        assert!(memory.usage_bytes > 0);
        assert_eq!(snap.cpuset, Some(vec![0]));
        assert_eq!(
            snap.cpu_quota,
            Some(CpuQuota {
                quota_us: 50000,
                period_us: 100000
            })
        );
        assert!(snap.cpu_usage.unwrap().per_cpu.is_some());
        assert!(snap.io.unwrap().devices.iter().any(|d| d.read_bytes > 0));
        assert!(snap.pressure.is_none());

        // Without the kernel's hierarchical minimum, the ancestors' files give the same limits.
        let stat = std::fs::read_to_string(tree.path(stat_path)).unwrap();
        let flat: String = stat
            .lines()
            .filter(|l| !l.starts_with("hierarchical_"))
            .map(|l| format!("{l}\n"))
            .collect();
        tree.write(stat_path, &flat);
        let walked = reader
            .snapshot(&set, Parts::MEMORY)
            .unwrap()
            .memory
            .unwrap();
        assert_eq!(walked.limit_bytes, Some(134217728));
        assert_eq!(walked.swap_limit_bytes, Some(536870912 - 134217728));
    }

    #[test]
    fn v2_snapshot_from_fixtures() {
        let tree = FakeTree::new();
        copy_fixture_dir("v2/6.1", &tree.path("cg/fixture"));
        tree.write("cg/cgroup.controllers", "cpuset cpu io memory pids\n");
        let controllers = "cpuset cpu io memory pids";
        let (reader, set) = v2_tree(&tree, controllers, "0::/fixture\n", HostPaths::default());
        let snap = reader.snapshot(&set, Parts::ALL).unwrap();
        let detail = snap.memory_detail.unwrap();
        assert_eq!(detail.own_limit_bytes, Some(268435456));
        assert_eq!(detail.high_bytes, Some(201326592));
        assert_eq!(detail.events.high, Some(68));
        let cpu = snap.cpu_detail.clone().unwrap();
        assert_eq!(cpu.weight, Some(CpuWeight::Weight(100)));
        assert_eq!(cpu.throttling.unwrap().throttled_periods, 110);
        assert_eq!(cpu.cpuset_mems, Some(vec![0]));
        assert_eq!(snap.pids.unwrap().current, 1);
        // Only the parts asked for are read.
        let memory_only = reader.snapshot(&set, Parts::MEMORY).unwrap();
        assert!(memory_only.memory.is_some());
        assert_eq!(
            (memory_only.cpu_usage, memory_only.io, memory_only.pids),
            (None, None, None)
        );
        let memory = snap.memory.unwrap();
        assert_eq!(memory.limit_bytes, Some(268435456));
        assert_eq!(memory.swap_limit_bytes, Some(134217728));
        assert!(memory.swap_usage_bytes > 0);
        assert_eq!(snap.cpuset, Some(vec![0]));
        assert_eq!(
            snap.cpu_quota,
            Some(CpuQuota {
                quota_us: 50000,
                period_us: 100000
            })
        );
        let usage = snap.cpu_usage.unwrap();
        assert!(usage.user_ns > 0 && usage.per_cpu.is_none());
        assert!(snap.pressure.unwrap().memory.is_some());
        assert_eq!(snap.io.unwrap().devices.len(), 1);
    }

    #[test]
    fn many_snapshots_on_threads_are_the_single_ones_in_order() {
        let tree = FakeTree::new();
        let names: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            copy_fixture_dir("v2/6.1", &tree.path(&format!("cg/{name}")));
            tree.write(&format!("cg/{name}/pids.current"), &format!("{i}\n"));
        }
        let controllers = "cpuset cpu io memory pids";
        tree.write("cg/cgroup.controllers", &format!("{controllers}\n"));
        let (reader, _) = v2_tree(&tree, controllers, "0::/c0\n", HostPaths::default());
        let mut sets: Vec<CgroupSet> = names.iter().map(|n| reader.layout().set_at(n)).collect();
        sets.insert(17, reader.layout().set_at("gone"));
        let single: Vec<Option<ContainerSnapshot>> = sets
            .iter()
            .map(|set| reader.snapshot(set, Parts::ALL).ok())
            .collect();
        for threads in [0, 1, 3] {
            let many = reader.snapshot_many(&sets, Parts::ALL, threads);
            assert_eq!(many.len(), sets.len());
            for (i, (many, single)) in many.into_iter().zip(&single).enumerate() {
                match many {
                    Ok(snap) => assert_eq!(Some(&snap), single.as_ref(), "set {i}"),
                    Err(e) => {
                        assert!(matches!(e, Error::Vanished { .. }), "{e}");
                        assert_eq!(i, 17);
                    }
                }
            }
        }
        let pids: Vec<u64> = reader
            .snapshot_many(&sets[..3], Parts::PIDS, 2)
            .into_iter()
            .map(|snap| snap.unwrap().pids.unwrap().current)
            .collect();
        assert_eq!(pids, [0, 1, 2]);
    }

    /// Siblings under one v1 parent whose quota is the tightest: one collection reads the
    /// parent's files once and gives each child what a single snapshot gives; the next
    /// collection reads them afresh.
    #[test]
    fn ancestors_files_are_shared_within_one_collection_only() {
        let tree = FakeTree::new();
        let mounts = ["memory", "cpu", "cpuacct"];
        let children: Vec<String> = (0..20).map(|i| format!("parent/c{i}")).collect();
        for m in mounts {
            for child in &children {
                copy_fixture_dir("v1/6.18", &tree.path(&format!("cg/{m}/{child}")));
            }
        }
        tree.write("cg/cpu/parent/cpu.cfs_quota_us", "20000\n");
        tree.write("cg/cpu/parent/cpu.cfs_period_us", "100000\n");
        let mountinfo = v1_mountinfo(&tree, &mounts);
        let layout = Layout::from_mounts(&parse_mountinfo(&mountinfo).unwrap(), "");
        let reader = Collector::new(layout, HostPaths::default(), FileCache::new(0));
        let sets: Vec<CgroupSet> = children.iter().map(|c| reader.layout().set_at(c)).collect();
        let quotas = |threads| -> Vec<Option<u64>> {
            reader
                .snapshot_many(&sets, Parts::ALL, threads)
                .into_iter()
                .map(|snap| snap.unwrap().cpu_quota.map(|q| q.quota_us))
                .collect()
        };
        let single = reader.snapshot(&sets[3], Parts::ALL).unwrap();
        assert_eq!(single.cpu_quota.map(|q| q.quota_us), Some(20000));
        for threads in [1, 2] {
            let many = reader.snapshot_many(&sets, Parts::ALL, threads);
            assert_eq!(many[3].as_ref().unwrap(), &single);
            assert_eq!(quotas(threads), vec![Some(20000); 20]);
        }
        tree.write("cg/cpu/parent/cpu.cfs_quota_us", "-1\n");
        assert_eq!(
            quotas(2),
            vec![Some(50000); 20],
            "the children's own, now the tightest"
        );
    }

    /// One collection gives what the list and a snapshot of each cgroup found give.
    #[test]
    fn a_collection_is_the_list_and_its_snapshots() {
        let tree = FakeTree::new();
        let mounts = ["memory", "cpu", "cpuacct", "pids"];
        for m in mounts {
            for i in 0..40 {
                copy_fixture_dir("v1/6.18", &tree.path(&format!("cg/{m}/parent/c{i}")));
            }
        }
        tree.write("cg/pids/parent/c5/pids.current", "0\n");
        tree.write("cg/pids/parent/c6/pids.current", "3\n");
        let mountinfo = v1_mountinfo(&tree, &mounts);
        let layout = Layout::from_mounts(&parse_mountinfo(&mountinfo).unwrap(), "");
        let reader = Collector::new(layout, HostPaths::default(), FileCache::new(0));
        let discovery = crate::Discovery {
            roots: vec!["/parent".to_string()],
            ..crate::Discovery::default()
        };
        let listed = reader.list(&discovery).unwrap();
        assert_eq!(listed.len(), 39, "c5 has no processes");
        for threads in [1, 2] {
            let collected = reader.collect(&discovery, Parts::ALL, threads).unwrap();
            let found: Vec<&crate::FoundCgroup> = collected.iter().map(|(f, _)| f).collect();
            assert_eq!(found, listed.iter().collect::<Vec<_>>());
            for (found, snap) in &collected {
                let single = reader.snapshot(&found.set, Parts::ALL).unwrap();
                assert_eq!(snap.as_ref().unwrap(), &single, "{}", found.path);
            }
            let c6 = collected.iter().find(|(f, _)| f.path == "/parent/c6");
            let pids = c6.and_then(|(_, snap)| snap.as_ref().unwrap().pids);
            assert_eq!(pids.map(|p| p.current), Some(3));
        }
    }

    #[test]
    fn controllers_are_listed_in_declaration_order() {
        for (i, controller) in CONTROLLERS.into_iter().enumerate() {
            assert_eq!(controller as usize, i, "{controller:?}");
        }
    }

    #[test]
    fn a_v2_cgroup_without_memory_files_shows_its_nearest_ancestors() {
        let tree = FakeTree::new();
        copy_fixture_dir("v2/6.1", &tree.path("cg/parent"));
        // The parent does not enable memory for its children: the child has only core files.
        tree.write("cg/parent/child/cgroup.procs", "7\n");
        let (reader, set) = v2_tree(&tree, "memory", "0::/parent/child\n", HostPaths::default());
        let snap = reader
            .snapshot(&set, Parts::MEMORY | Parts::MEMORY_DETAIL)
            .unwrap();
        let memory = snap.memory.unwrap();
        assert_eq!(memory.limit_bytes, Some(268435456), "the parent's limit");
        assert_eq!(snap.memory_detail, None, "no limits of its own to report");
    }

    #[test]
    fn vanished_cgroup_is_reported() {
        let tree = FakeTree::new();
        copy_fixture_dir("v2/6.1", &tree.path("cg/fixture"));
        let (reader, set) = v2_tree(&tree, "memory cpu", "0::/gone\n", HostPaths::default());
        let err = reader.snapshot(&set, Parts::ALL).unwrap_err();
        assert!(matches!(err, Error::Vanished { .. }), "{err}");
    }

    #[test]
    fn thread_ids_include_sub_cgroups() {
        let tree = FakeTree::new();
        tree.write("cg/ctr/cgroup.threads", "10\n11\n");
        tree.write("cg/ctr/init.scope/cgroup.threads", "12\n");
        tree.write("cg/ctr/svc/a/cgroup.threads", "13\n14\n");
        let (reader, set) = v2_tree(&tree, "pids", "0::/ctr\n", HostPaths::default());
        let mut ids = reader.thread_ids(&set).unwrap();
        ids.sort_unstable();
        assert_eq!(ids, vec![10, 11, 12, 13, 14]);
    }

    /// A v2 tree with container /ctr (threads 10, 11), its sub-cgroup init.scope (12) and
    /// svc/a (13), and a fake /proc giving each thread a state; returns the reader and the set.
    fn tree_with_threads(tree: &FakeTree) -> (Collector, CgroupSet) {
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
        let paths = HostPaths {
            proc_root: tree.path("proc"),
            sys_root: tree.path("sys"),
        };
        v2_tree(tree, "pids", "0::/ctr\n", paths)
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
        let reader = Collector::new(
            Layout::from_mounts(&parse_mountinfo(&mountinfo).unwrap(), ""),
            HostPaths::default(),
            FileCache::new(0),
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
        let (reader, set) = v2_tree(&tree, "memory", "0::/fixture\n", HostPaths::default());
        let err = reader.snapshot(&set, Parts::MEMORY).unwrap_err();
        assert!(matches!(err, Error::Parse { .. }));
        assert!(err.to_string().contains("memory.current"), "{err}");
    }
}
