//! Lists the containers on a host: every cgroup with processes of its own under configurable
//! roots, plus Kubernetes pod cgroups (which hold only their containers' cgroups), each
//! classified from its path (Docker, Kubernetes pod or container, containerd, systemd unit).
//!
//! The tree is walked once per hierarchy with directory listings (one `getdents` per cgroup,
//! no `stat`), so a cgroup missing from one v1 hierarchy (a systemd unit without CPU
//! accounting, say) gets no path there instead of a path that does not exist.

use crate::collector::{in_parallel, Collector, CGROUPS_PER_BLOCK};
use crate::error::{Error, Result};
use crate::layout::{join_cgroup, CgroupSet, Controller, Version};
use crate::model::{ContainerSnapshot, Parts};
use crate::raw::{RawFile, Shared};
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Where and how deep to look for containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// Cgroup paths whose subtrees are walked ("/" for the whole host). The roots themselves
    /// are listed too when they hold processes, except "/" (the host).
    pub roots: Vec<String>,
    /// Levels below a root walked at most (Kubernetes' systemd driver nests containers 4 deep).
    pub max_depth: usize,
    /// Cgroups listed at most; the walk stops there (a pathological tree costs bounded work).
    pub max_cgroups: usize,
}

impl Default for Discovery {
    /// The whole host, 8 levels deep: finds Docker, containerd, Kubernetes (cgroupfs and
    /// systemd drivers) and systemd units wherever their managers put them.
    fn default() -> Self {
        Discovery {
            roots: vec!["/".to_string()],
            max_depth: 8,
            max_cgroups: 100_000,
        }
    }
}

/// What a cgroup's path says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupKind {
    /// A Docker container (`/docker/<id>`, `system.slice/docker-<id>.scope`).
    Docker {
        /// The container id.
        id: String,
    },
    /// A Kubernetes pod (`kubepods[/<qos>]/pod<uid>`, `kubepods[-<qos>]-pod<uid>.slice`).
    KubePod {
        /// The pod UID, with dashes.
        uid: String,
    },
    /// A container of a Kubernetes pod (the child of a pod cgroup).
    KubeContainer {
        /// The pod UID, with dashes.
        pod_uid: String,
        /// The container id (runtime prefix and `.scope` removed).
        id: String,
    },
    /// A systemd unit: a service, scope or slice (`system.slice/cron.service`).
    SystemdUnit {
        /// The unit name.
        unit: String,
    },
    /// Anything else with processes (containerd without Kubernetes: `/<namespace>/<id>`).
    Other,
}

/// One cgroup found by [`Collector::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCgroup {
    /// Its path in the identity hierarchy (v1 memory, else the first v1 hierarchy with a
    /// resource controller, else v2): the `id` the exporter shows.
    pub path: String,
    /// Its path in each hierarchy where the same path exists (how runtimes place containers).
    pub set: CgroupSet,
    /// What its path says it is.
    pub kind: CgroupKind,
}

/// Runtime prefixes of a container scope under the systemd driver.
const SCOPE_PREFIXES: &[&str] = &["cri-containerd-", "crio-", "docker-", "containerd-"];

/// Classifies a cgroup by its path.
pub fn classify(path: &str) -> CgroupKind {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let Some(&last) = components.last() else {
        return CgroupKind::Other;
    };
    let pod_uid = |component: &str| -> Option<String> {
        // cgroupfs driver: pod<uid>; systemd driver: kubepods[-<qos>]-pod<uid_with_underscores>.slice.
        let rest = match component.strip_suffix(".slice") {
            Some(slice) => slice.rsplit_once("-pod")?.1.replace('_', "-"),
            None => component.strip_prefix("pod")?.to_string(),
        };
        (rest.len() >= 8 && rest.chars().all(|c| c.is_ascii_hexdigit() || c == '-')).then_some(rest)
    };
    // Usually at the top; below it under nested runtimes (kind, a test's own cgroup).
    let in_kubepods = components
        .iter()
        .any(|c| *c == "kubepods" || *c == "kubepods.slice");
    if in_kubepods {
        if let Some(uid) = pod_uid(last) {
            return CgroupKind::KubePod { uid };
        }
        if let Some(uid) = components
            .len()
            .checked_sub(2)
            .and_then(|i| pod_uid(components[i]))
        {
            return CgroupKind::KubeContainer {
                pod_uid: uid,
                id: strip_scope(last).to_string(),
            };
        }
    }
    if let Some(id) = last
        .strip_prefix("docker-")
        .and_then(|s| s.strip_suffix(".scope"))
    {
        return CgroupKind::Docker { id: id.to_string() };
    }
    if components.len() == 2 && components[0] == "docker" {
        return CgroupKind::Docker {
            id: last.to_string(),
        };
    }
    if [".service", ".scope", ".slice"]
        .iter()
        .any(|s| last.ends_with(s))
    {
        return CgroupKind::SystemdUnit {
            unit: last.to_string(),
        };
    }
    CgroupKind::Other
}

/// A container id from a systemd-driver scope name (`cri-containerd-<id>.scope`), or the
/// component itself (cgroupfs driver).
fn strip_scope(component: &str) -> &str {
    let Some(scope) = component.strip_suffix(".scope") else {
        return component;
    };
    SCOPE_PREFIXES
        .iter()
        .find_map(|p| scope.strip_prefix(p))
        .unwrap_or(scope)
}

impl Collector {
    /// The identity hierarchy: v1 memory, else the cpu or cpuacct hierarchy, else the one v2.
    pub(crate) fn identity_hierarchy(&self) -> Option<usize> {
        [Controller::Memory, Controller::Cpu, Controller::Cpuacct]
            .into_iter()
            .find_map(|c| self.layout().hierarchy_for(c))
    }

    /// Whether cgroup `path` has processes of its own. A v1 leaf with a pids hierarchy: its
    /// pids.current, a value file read through a kept descriptor (a leaf's count is its own).
    /// v2: cgroup.procs through a kept descriptor (a read at offset 0 lists the cgroup afresh).
    /// Otherwise v1 cgroup.procs through a fresh descriptor: v1 keeps a pid list per open file
    /// and hands it out again for a second. With the answer, the pids.current read for it (a
    /// snapshot in the same collection takes it instead of reading it again).
    fn has_processes(&self, identity: usize, path: &str, leaf: bool) -> (bool, Option<RawFile>) {
        let hierarchies = &self.layout().hierarchies;
        let pids = self.layout().hierarchy_for(Controller::Pids);
        if let Some(pids) = pids.filter(|&i| leaf && hierarchies[i].version == Version::V1) {
            let file = join_cgroup(&hierarchies[pids].mount_point, path).join("pids.current");
            if let Ok(text) = self.read(&file) {
                let processes = text.trim() != "0";
                return (processes, Some(RawFile::new(file, text)));
            }
        }
        let procs = join_cgroup(&hierarchies[identity].mount_point, path).join("cgroup.procs");
        if hierarchies[identity].version == Version::V2 {
            let processes = self.read(&procs).is_ok_and(|text| !text.trim().is_empty());
            return (processes, None);
        }
        let mut buf = [0u8; 16];
        let processes = File::open(procs)
            .and_then(|mut f| f.read(&mut buf))
            .is_ok_and(|n| n > 0);
        (processes, None)
    }

    /// Every cgroup under `discovery`'s roots that holds processes of its own, and every
    /// Kubernetes pod cgroup, sorted by path. Cgroups removed during the walk are skipped.
    pub fn list(&self, discovery: &Discovery) -> Result<Vec<FoundCgroup>> {
        Ok(self
            .find(discovery, 1)?
            .into_iter()
            .map(|(found, _)| found)
            .collect())
    }

    /// One collection: [`Collector::list`] and the `parts` of each cgroup found, as
    /// [`Collector::snapshot_many`] reads them, on up to `threads` threads (0: the host's
    /// available parallelism). Each file is read once: a v1 leaf's pids.current, read to tell
    /// whether it has processes, is the one its snapshot shows. A cgroup that vanishes between
    /// the list and its snapshot has its `Vanished` error beside it.
    pub fn collect(
        &self,
        discovery: &Discovery,
        parts: Parts,
        threads: usize,
    ) -> Result<Vec<(FoundCgroup, Result<ContainerSnapshot>)>> {
        let found = self.find(discovery, threads)?;
        let shared = Shared::default();
        let snapshots = in_parallel(&found, threads, CGROUPS_PER_BLOCK, |(found, pids)| {
            self.snapshot_with(&found.set, parts, Some(&shared), pids.clone())
        });
        Ok(found
            .into_iter()
            .map(|(found, _)| found)
            .zip(snapshots)
            .collect())
    }

    /// [`Collector::list`], telling cgroups with processes on up to `threads` threads, each
    /// cgroup with the pids.current read for that (see [`Collector::has_processes`]).
    fn find(
        &self,
        discovery: &Discovery,
        threads: usize,
    ) -> Result<Vec<(FoundCgroup, Option<RawFile>)>> {
        let Some(identity) = self.identity_hierarchy() else {
            return Ok(Vec::new());
        };
        let hierarchies = &self.layout().hierarchies;
        let mut walked = Vec::new();
        for root in &discovery.roots {
            let root = format!("/{}", root.trim_matches('/'));
            walk(
                &hierarchies[identity].mount_point,
                &root,
                discovery,
                &mut walked,
            )?;
        }
        let listed = in_parallel(
            &walked,
            threads,
            CGROUPS_PER_BLOCK,
            |Walked { path, leaf }| {
                let kind = classify(path);
                if matches!(kind, CgroupKind::KubePod { .. }) {
                    return Some((kind, None));
                }
                if path == "/" {
                    return None;
                }
                match self.has_processes(identity, path, *leaf) {
                    (true, pids) => Some((kind, pids)),
                    (false, _) => None,
                }
            },
        );
        let mut found: Vec<(String, CgroupKind, Option<RawFile>)> = walked
            .into_iter()
            .zip(listed)
            .filter_map(|(walked, listed)| listed.map(|(kind, pids)| (walked.path, kind, pids)))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.dedup_by(|a, b| a.0 == b.0);
        // Which of those paths exist in each other hierarchy the collector reads: one listing
        // of each distinct parent directory (runtimes keep their containers side by side).
        let mut parents: Vec<&str> = found.iter().map(|(path, ..)| parent_of(path)).collect();
        parents.sort_unstable();
        parents.dedup();
        let readable = [
            Controller::Memory,
            Controller::Cpu,
            Controller::Cpuacct,
            Controller::Cpuset,
            Controller::Io,
            Controller::Pids,
        ];
        let mut listed: Vec<usize> = readable
            .into_iter()
            .filter_map(|controller| self.layout().hierarchy_for(controller))
            .filter(|&index| index != identity)
            .collect();
        listed.sort_unstable();
        listed.dedup();
        // One hierarchy per thread at a time: each is a listing of every parent directory.
        let listings = in_parallel(&listed, threads, 1, |&index| {
            let mut present = HashSet::new();
            for parent in &parents {
                children(&hierarchies[index].mount_point, parent, &mut present)?;
            }
            Ok(present)
        });
        let mut in_hierarchy: Vec<Option<HashSet<String>>> = vec![None; hierarchies.len()];
        for (index, present) in listed.into_iter().zip(listings) {
            in_hierarchy[index] = Some(present?);
        }
        Ok(found
            .into_iter()
            .map(|(path, kind, pids)| {
                let paths = (0..hierarchies.len())
                    .map(|index| {
                        let present = index == identity
                            || in_hierarchy[index]
                                .as_ref()
                                .is_some_and(|s| s.contains(&path));
                        present.then(|| path.clone())
                    })
                    .collect();
                let found = FoundCgroup {
                    path,
                    set: CgroupSet { paths },
                    kind,
                };
                (found, pids)
            })
            .collect())
    }
}

/// The path of cgroup `name` below cgroup `parent`.
fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The parent of cgroup path `path` ("/" for a top-level cgroup).
fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Adds the paths of the cgroups directly below `parent` in the hierarchy at `mount` to `out`.
/// A missing parent adds nothing.
fn children(mount: &Path, parent: &str, out: &mut HashSet<String>) -> Result<()> {
    let dir = join_cgroup(mount, parent);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            return match Error::io(&dir, e) {
                Error::Vanished { .. } => Ok(()),
                other => Err(other),
            }
        }
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            out.insert(child_path(parent, name));
        }
    }
    Ok(())
}

/// A cgroup found by [`walk`].
struct Walked {
    /// Its path below the mount.
    path: String,
    /// Whether it has no sub-cgroups (kernfs counts a directory's links as 2 + its
    /// subdirectories): a leaf is not listed, which saves the walk its largest cost.
    leaf: bool,
}

/// Collects `root` and the cgroups below it (paths relative to `mount`), depth-first, up to the
/// discovery's depth and count bounds. A missing root yields nothing.
fn walk(mount: &Path, root: &str, discovery: &Discovery, out: &mut Vec<Walked>) -> Result<()> {
    let Ok(meta) = std::fs::metadata(join_cgroup(mount, root)) else {
        return Ok(());
    };
    if !meta.is_dir() {
        return Ok(());
    }
    let mut stack = vec![(root.to_string(), 0usize, meta.nlink() == 2)];
    while let Some((path, depth, leaf)) = stack.pop() {
        if out.len() >= discovery.max_cgroups {
            break;
        }
        let listed = !leaf && depth < discovery.max_depth;
        out.push(Walked {
            path: path.clone(),
            leaf,
        });
        if !listed {
            continue;
        }
        let dir = join_cgroup(mount, &path);
        let opened = std::fs::read_dir(&dir).and_then(|entries| Ok((entries, File::open(&dir)?)));
        let (entries, handle) = match opened {
            Ok(opened) => opened,
            Err(e) => match Error::io(&dir, e) {
                Error::Vanished { .. } => continue,
                other => return Err(other),
            },
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name();
            let Some(links) = links_of(&handle, &name) else {
                continue;
            };
            let Some(name) = name.to_str() else { continue };
            stack.push((child_path(&path, name), depth + 1, links == 2));
        }
    }
    Ok(())
}

/// The link count of directory entry `name` of the open directory `dir` (one path component
/// looked up, not the whole path); `None` when it is gone.
fn links_of(dir: &File, name: &OsStr) -> Option<u64> {
    let name = CString::new(name.as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `dir` is an open descriptor, `name` a NUL-terminated string and `stat` writable
    // memory of the right size, which fstatat fills when it returns 0.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            stat.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    // nlink_t is u64 on x86_64, u32 elsewhere: the conversion is for the others.
    #[allow(clippy::useless_conversion)]
    // SAFETY: filled by the successful fstatat above.
    (rc == 0).then(|| u64::from(unsafe { stat.assume_init() }.st_nlink))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_every_runtime_are_classified() {
        let docker = CgroupKind::Docker {
            id: "4f1c".to_string(),
        };
        assert_eq!(classify("/docker/4f1c"), docker);
        assert_eq!(classify("/system.slice/docker-4f1c.scope"), docker);
        let uid = "0b5e6a3c-1d2e-4f00-9a7b-3c2d1e0f9a8b";
        let pod = CgroupKind::KubePod {
            uid: uid.to_string(),
        };
        assert_eq!(classify(&format!("/kubepods/burstable/pod{uid}")), pod);
        assert_eq!(classify(&format!("/kubepods/pod{uid}")), pod);
        let underscored = uid.replace('-', "_");
        assert_eq!(
            classify(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{underscored}.slice"
            )),
            pod
        );
        assert_eq!(
            classify(&format!("/kubepods.slice/kubepods-pod{underscored}.slice")),
            pod
        );
        let container = CgroupKind::KubeContainer {
            pod_uid: uid.to_string(),
            id: "9c8d".to_string(),
        };
        assert_eq!(
            classify(&format!("/kubepods/burstable/pod{uid}/9c8d")),
            container
        );
        assert_eq!(
            classify(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored}.slice/cri-containerd-9c8d.scope"
            )),
            container
        );
        assert_eq!(
            classify("/system.slice/cron.service"),
            CgroupKind::SystemdUnit {
                unit: "cron.service".to_string()
            }
        );
        assert_eq!(classify("/k8s.io/9c8d"), CgroupKind::Other);
        assert_eq!(classify("/"), CgroupKind::Other);
        // A burstable QoS slice is not a pod, nor a "pod" without a UID.
        assert_eq!(
            classify("/kubepods.slice/kubepods-burstable.slice"),
            CgroupKind::SystemdUnit {
                unit: "kubepods-burstable.slice".to_string()
            }
        );
        assert_eq!(classify("/kubepods/podcast"), CgroupKind::Other);
        assert_eq!(
            classify(&format!("/pod{uid}")),
            CgroupKind::Other,
            "outside kubepods"
        );
        assert_eq!(classify(&format!("/test/kubepods/pod{uid}")), pod);
    }
}
