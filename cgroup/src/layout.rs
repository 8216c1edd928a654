//! Where the cgroup hierarchies are: discovered from mountinfo under injectable roots, never from
//! fixed paths (hosts mount `cpu,cpuacct` together or apart, v2 alone or beside v1).

use crate::error::{Error, Result};
use crate::parse::mountinfo::{parse_mountinfo, MountInfo};
use crate::parse::proc_pid::CgroupLine;
use std::path::{Path, PathBuf};

/// The host directories proclens reads from; tests and the v2 VM inject other roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// procfs root, normally "/proc".
    pub proc_root: PathBuf,
    /// sysfs root, normally "/sys".
    pub sys_root: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

/// cgroup version of a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Legacy hierarchy with its own controllers.
    V1,
    /// The unified hierarchy.
    V2,
}

/// A resource controller proclens reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// Memory limits and usage.
    Memory,
    /// CFS quota (v1 `cpu`, v2 `cpu`).
    Cpu,
    /// CPU usage accounting (v1 `cpuacct`; on v2 cpu.stat is always present).
    Cpuacct,
    /// Allowed CPUs.
    Cpuset,
    /// Block I/O (v1 `blkio`, v2 `io`).
    Io,
    /// Task counts.
    Pids,
}

impl Controller {
    fn v1_name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Io => "blkio",
            Controller::Pids => "pids",
        }
    }

    /// The v2 controller that must be listed in the root's cgroup.controllers, or `None` when the
    /// files are core cgroup v2 files (cpu.stat).
    fn v2_name(self) -> Option<&'static str> {
        match self {
            Controller::Memory => Some("memory"),
            Controller::Cpu => Some("cpu"),
            Controller::Cpuacct => None,
            Controller::Cpuset => Some("cpuset"),
            Controller::Io => Some("io"),
            Controller::Pids => Some("pids"),
        }
    }
}

/// Names of v1 controllers as they appear in mount options.
const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// v1 or v2.
    pub version: Version,
    /// v1: the controllers (and `name=` tag) bound to it, sorted; v2: the root's cgroup.controllers.
    pub controllers: Vec<String>,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The cgroup the mount shows at its mount point ("/" unless bind-mounted from inside).
    pub mount_root: String,
}

/// All hierarchies of the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// One entry per hierarchy; indices are stable and used by [`CgroupSet`].
    pub hierarchies: Vec<Hierarchy>,
}

impl Layout {
    /// Builds the layout from parsed mountinfo. `v2_controllers` is the text of the unified
    /// root's cgroup.controllers (empty on hybrid hosts). The first mount of each hierarchy wins.
    pub fn from_mounts(mounts: &[MountInfo], v2_controllers: &str) -> Layout {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for m in mounts {
            let hierarchy = match m.fs_type.as_str() {
                "cgroup" => {
                    let mut controllers: Vec<String> = m
                        .super_options
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                        .map(str::to_string)
                        .collect();
                    controllers.sort();
                    Hierarchy {
                        version: Version::V1,
                        controllers,
                        mount_point: PathBuf::from(&m.mount_point),
                        mount_root: m.root.clone(),
                    }
                }
                "cgroup2" => Hierarchy {
                    version: Version::V2,
                    controllers: v2_controllers
                        .split_whitespace()
                        .map(str::to_string)
                        .collect(),
                    mount_point: PathBuf::from(&m.mount_point),
                    mount_root: m.root.clone(),
                },
                _ => continue,
            };
            let duplicate = hierarchies
                .iter()
                .any(|h| h.version == hierarchy.version && h.controllers == hierarchy.controllers);
            if !duplicate {
                hierarchies.push(hierarchy);
            }
        }
        Layout { hierarchies }
    }

    /// Discovers the layout from `<proc_root>/self/mountinfo`.
    pub fn discover(paths: &HostPaths) -> Result<Layout> {
        let mountinfo = paths.proc_root.join("self/mountinfo");
        let text = std::fs::read_to_string(&mountinfo).map_err(|e| Error::io(&mountinfo, e))?;
        let mounts = parse_mountinfo(&text).map_err(|e| Error::parse(&mountinfo, e))?;
        let v2_controllers = mounts
            .iter()
            .find(|m| m.fs_type == "cgroup2")
            .and_then(|m| {
                std::fs::read_to_string(Path::new(&m.mount_point).join("cgroup.controllers")).ok()
            })
            .unwrap_or_default();
        Ok(Layout::from_mounts(&mounts, &v2_controllers))
    }

    /// The index of the hierarchy that provides `controller`: a v1 hierarchy with it bound, else
    /// the v2 hierarchy if it offers it.
    pub fn hierarchy_for(&self, controller: Controller) -> Option<usize> {
        let v1 = self.hierarchies.iter().position(|h| {
            h.version == Version::V1 && h.controllers.iter().any(|c| c == controller.v1_name())
        });
        v1.or_else(|| {
            self.hierarchies.iter().position(|h| {
                h.version == Version::V2
                    && controller
                        .v2_name()
                        .is_none_or(|name| h.controllers.iter().any(|c| c == name))
            })
        })
    }

    /// Version of the hierarchy at `index`.
    pub fn version(&self, index: usize) -> Option<Version> {
        self.hierarchies.get(index).map(|h| h.version)
    }

    /// The directory of `set`'s cgroup in the hierarchy providing `controller`, with that
    /// hierarchy's version; `None` when no hierarchy provides it or `set` has no path there.
    pub fn dir(&self, set: &CgroupSet, controller: Controller) -> Option<(Version, PathBuf)> {
        let index = self.hierarchy_for(controller)?;
        let hierarchy = &self.hierarchies[index];
        let path = set.path(index)?;
        Some((hierarchy.version, join_cgroup(&hierarchy.mount_point, path)))
    }

    /// The set naming cgroup `path` (absolute below each mount, "/" the root) in every
    /// hierarchy: how runtimes place a container, at one path in all of them. For reading a
    /// cgroup by path rather than by a process in it.
    pub fn set_at(&self, path: &str) -> CgroupSet {
        let normalized = format!("/{}", path.trim_matches('/'));
        CgroupSet {
            paths: vec![Some(normalized); self.hierarchies.len()],
        }
    }

    /// Maps a process's /proc/<pid>/cgroup lines onto this layout's hierarchies.
    pub fn cgroup_set(&self, lines: &[CgroupLine]) -> CgroupSet {
        let paths = self
            .hierarchies
            .iter()
            .map(|h| {
                let line = lines.iter().find(|l| match h.version {
                    Version::V2 => l.hierarchy_id == 0 && l.controllers.is_empty(),
                    Version::V1 => {
                        let mut cs = l.controllers.clone();
                        cs.sort();
                        l.hierarchy_id != 0 && cs == h.controllers
                    }
                })?;
                relative_to_mount(&line.path, &h.mount_root)
            })
            .collect();
        CgroupSet { paths }
    }
}

/// `mount_point` joined with an absolute cgroup path.
pub(crate) fn join_cgroup(mount_point: &Path, cgroup: &str) -> PathBuf {
    let relative = cgroup.trim_start_matches('/');
    if relative.is_empty() {
        mount_point.to_path_buf()
    } else {
        mount_point.join(relative)
    }
}

/// The cgroup path as seen below the mount point; `None` when the cgroup lies outside what the
/// mount shows (a bind mount of a subtree, or a path from another cgroup namespace).
fn relative_to_mount(path: &str, mount_root: &str) -> Option<String> {
    if path.split('/').any(|c| c == "..") {
        return None;
    }
    if mount_root == "/" {
        return Some(path.to_string());
    }
    let rest = path.strip_prefix(mount_root)?;
    match rest {
        "" => Some("/".to_string()),
        r if r.starts_with('/') => Some(r.to_string()),
        _ => None,
    }
}

/// A process's cgroup in every hierarchy of a [`Layout`], as paths relative to each mount
/// ("/" is the root). On v1 this tuple, not any one path, identifies a container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CgroupSet {
    /// One entry per hierarchy of the layout, same order; `None` if the process has no path there.
    pub paths: Vec<Option<String>>,
}

impl CgroupSet {
    /// Whether the process is at the root of every hierarchy it is in (a host process).
    pub fn is_root(&self) -> bool {
        self.paths.iter().flatten().all(|p| p == "/")
    }

    /// The path in hierarchy `index`.
    pub fn path(&self, index: usize) -> Option<&str> {
        self.paths.get(index).and_then(|p| p.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::proc_pid::parse_pid_cgroup;
    use crate::testutil::fixture;

    fn v1_layout() -> Layout {
        let mounts = parse_mountinfo(&fixture("v1/6.18/proc-self-mountinfo")).unwrap();
        Layout::from_mounts(&mounts, "")
    }

    #[test]
    fn hybrid_host_uses_v1_for_everything() {
        let layout = v1_layout();
        for c in [
            Controller::Memory,
            Controller::Cpu,
            Controller::Cpuacct,
            Controller::Cpuset,
        ] {
            let i = layout.hierarchy_for(c).unwrap();
            assert_eq!(layout.version(i), Some(Version::V1), "{c:?}");
        }
        let cpu = layout.hierarchy_for(Controller::Cpu).unwrap();
        let acct = layout.hierarchy_for(Controller::Cpuacct).unwrap();
        assert_ne!(cpu, acct, "this host mounts cpu and cpuacct apart");
        assert!(layout.hierarchies.iter().any(|h| h.version == Version::V2));
    }

    #[test]
    fn comounted_cpu_cpuacct() {
        let text = "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpuacct,cpu\n";
        let layout = Layout::from_mounts(&parse_mountinfo(text).unwrap(), "");
        assert_eq!(layout.hierarchy_for(Controller::Cpu), Some(0));
        assert_eq!(layout.hierarchy_for(Controller::Cpuacct), Some(0));
        let set = layout.cgroup_set(&parse_pid_cgroup("4:cpu,cpuacct:/a\n").unwrap());
        assert_eq!(set.path(0), Some("/a"));
    }

    #[test]
    fn unified_only() {
        let mounts = parse_mountinfo(&fixture("v2/6.1/proc-self-mountinfo")).unwrap();
        let layout = Layout::from_mounts(&mounts, &fixture("v2/6.1/cgroup.controllers"));
        for c in [
            Controller::Memory,
            Controller::Cpu,
            Controller::Cpuacct,
            Controller::Io,
        ] {
            assert_eq!(layout.hierarchy_for(c), Some(0), "{c:?}");
        }
        let set = layout.cgroup_set(&parse_pid_cgroup(&fixture("v2/6.1/proc-pid-cgroup")).unwrap());
        assert_eq!(set.path(0), Some("/fixture"));
        assert!(!set.is_root());
    }

    #[test]
    fn maps_pid_cgroup_onto_v1() {
        let layout = v1_layout();
        let set =
            layout.cgroup_set(&parse_pid_cgroup(&fixture("v1/6.18/proc-pid-cgroup")).unwrap());
        let memory = layout.hierarchy_for(Controller::Memory).unwrap();
        assert_ne!(set.path(memory), Some("/"));
        let root = layout.cgroup_set(&parse_pid_cgroup("4:memory:/\n1:cpu:/\n0::/\n").unwrap());
        assert!(root.is_root());
    }

    #[test]
    fn mount_roots_are_stripped() {
        assert_eq!(
            relative_to_mount("/docker/abc/x", "/docker/abc"),
            Some("/x".into())
        );
        assert_eq!(
            relative_to_mount("/docker/abc", "/docker/abc"),
            Some("/".into())
        );
        assert_eq!(relative_to_mount("/docker/abcd", "/docker/abc"), None);
        assert_eq!(relative_to_mount("/../x", "/"), None);
    }
}
