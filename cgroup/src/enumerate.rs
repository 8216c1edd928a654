//! Lists the containers on a host: every cgroup with processes of its own under configurable
//! roots, plus Kubernetes pod cgroups (which hold only their containers' cgroups), each
//! classified from its path (Docker, Kubernetes pod or container, containerd, systemd unit).
//!
//! The tree is walked once per hierarchy with directory listings (one `getdents` per cgroup,
//! no `stat`), so a cgroup missing from one v1 hierarchy (a systemd unit without CPU
//! accounting, say) gets no path there instead of a path that does not exist.

use crate::collector::Collector;
use crate::error::{Error, Result};
use crate::layout::{join_cgroup, CgroupSet, Controller};
use std::collections::HashSet;
use std::io::Read;
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
    fn identity_hierarchy(&self) -> Option<usize> {
        [Controller::Memory, Controller::Cpu, Controller::Cpuacct]
            .into_iter()
            .find_map(|c| self.layout().hierarchy_for(c))
    }

    /// Every cgroup under `discovery`'s roots that holds processes of its own, and every
    /// Kubernetes pod cgroup, sorted by path. Cgroups removed during the walk are skipped.
    pub fn list(&self, discovery: &Discovery) -> Result<Vec<FoundCgroup>> {
        let Some(identity) = self.identity_hierarchy() else {
            return Ok(Vec::new());
        };
        let hierarchies = &self.layout().hierarchies;
        let mut found = Vec::new();
        let mut in_hierarchy: Vec<Option<HashSet<String>>> = vec![None; hierarchies.len()];
        for root in &discovery.roots {
            let root = format!("/{}", root.trim_matches('/'));
            let mount = &hierarchies[identity].mount_point;
            let mut paths = Vec::new();
            walk(mount, &root, discovery, &mut paths)?;
            for path in paths {
                let kind = classify(&path);
                let listed = matches!(kind, CgroupKind::KubePod { .. })
                    || (path != "/" && has_processes(&join_cgroup(mount, &path)));
                if listed {
                    found.push((path, kind));
                }
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.dedup_by(|a, b| a.0 == b.0);
        // Which of those paths exist in each other hierarchy: one walk each, only if needed.
        for (index, hierarchy) in hierarchies.iter().enumerate() {
            if index == identity || hierarchy.controllers.iter().all(|c| c.starts_with("name=")) {
                continue;
            }
            let mut paths = Vec::new();
            for root in &discovery.roots {
                let root = format!("/{}", root.trim_matches('/'));
                walk(&hierarchy.mount_point, &root, discovery, &mut paths)?;
            }
            in_hierarchy[index] = Some(paths.into_iter().collect());
        }
        Ok(found
            .into_iter()
            .map(|(path, kind)| {
                let paths = (0..hierarchies.len())
                    .map(|index| {
                        let present = index == identity
                            || in_hierarchy[index]
                                .as_ref()
                                .is_some_and(|s| s.contains(&path));
                        present.then(|| path.clone())
                    })
                    .collect();
                FoundCgroup {
                    path,
                    set: CgroupSet { paths },
                    kind,
                }
            })
            .collect())
    }
}

/// Collects `root` and the cgroups below it (paths relative to `mount`), depth-first, up to the
/// discovery's depth and count bounds. A missing root yields nothing.
fn walk(mount: &Path, root: &str, discovery: &Discovery, out: &mut Vec<String>) -> Result<()> {
    let dir = join_cgroup(mount, root);
    if !dir.is_dir() {
        return Ok(());
    }
    let mut stack = vec![(root.to_string(), 0usize)];
    while let Some((path, depth)) = stack.pop() {
        if out.len() >= discovery.max_cgroups {
            break;
        }
        let dir = join_cgroup(mount, &path);
        out.push(path.clone());
        if depth >= discovery.max_depth {
            continue;
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
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
            let Some(name) = name.to_str() else { continue };
            let child = if path == "/" {
                format!("/{name}")
            } else {
                format!("{path}/{name}")
            };
            stack.push((child, depth + 1));
        }
    }
    Ok(())
}

/// Whether the cgroup at `dir` has processes of its own (`cgroup.procs` not empty). Read
/// through a fresh descriptor: v1 keeps a pid list per open file.
fn has_processes(dir: &Path) -> bool {
    let mut buf = [0u8; 16];
    std::fs::File::open(dir.join("cgroup.procs"))
        .and_then(|mut f| f.read(&mut buf))
        .is_ok_and(|n| n > 0)
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
