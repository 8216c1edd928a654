//! Container labels from containerd's CRI: the [`LabelSource`] the exporter uses when a CRI
//! socket is configured. Answers from the [`Inventory`]'s memory (refreshed in the background and
//! on a miss), never with a CRI call per container or per scrape.

use crate::scrape::{LabelSource, RuntimeLabels};
use proclens_cgroup::{CgroupKind, FoundCgroup};
use proclens_cri::Inventory;
use std::sync::Arc;

/// Labels of CRI containers and pod sandboxes, by the id or pod UID a cgroup's path names.
#[derive(Debug, Clone)]
pub struct CriLabels {
    inventory: Inventory,
}

impl CriLabels {
    /// Labels from `inventory`.
    pub fn new(inventory: Inventory) -> Self {
        CriLabels { inventory }
    }
}

/// The container id a cgroup path ends in when the runtime named the cgroup after it:
/// Kubernetes' container cgroups, `docker-<id>.scope`, and containerd's
/// `<cgroup_parent>/<id>` (64 hex digits) without Kubernetes. `None` for anything else, so
/// systemd units and other cgroups never cost the inventory a lookup.
pub fn container_id(cgroup: &FoundCgroup) -> Option<&str> {
    match &cgroup.kind {
        CgroupKind::KubeContainer { id, .. } | CgroupKind::Docker { id } => Some(id),
        CgroupKind::KubePod { .. } | CgroupKind::SystemdUnit { .. } => None,
        CgroupKind::Other => {
            let last = cgroup.path.rsplit('/').next()?;
            (last.len() == 64 && last.bytes().all(|b| b.is_ascii_hexdigit())).then_some(last)
        }
    }
}

impl LabelSource for CriLabels {
    fn labels(&self, cgroup: &FoundCgroup) -> Option<Arc<RuntimeLabels>> {
        if let CgroupKind::KubePod { uid } = &cgroup.kind {
            let pod = self.inventory.lookup_pod(uid)?;
            return Some(Arc::new(RuntimeLabels {
                name: pod.sandbox_id.clone(),
                namespace: pod.namespace.clone(),
                pod: pod.pod.clone(),
                ..RuntimeLabels::default()
            }));
        }
        let found = self.inventory.lookup(container_id(cgroup)?)?;
        Some(Arc::new(RuntimeLabels {
            name: found.name.clone(),
            image: found.image.clone(),
            namespace: found.namespace.clone(),
            pod: found.pod.clone(),
            container: found.container.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proclens_cgroup::{classify, CgroupSet};

    fn found(path: &str) -> FoundCgroup {
        FoundCgroup {
            path: path.to_string(),
            set: CgroupSet::default(),
            kind: classify(path),
        }
    }

    #[test]
    fn ids_from_runtime_cgroup_names() {
        let id = "4f3c0e5d9b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";
        assert_eq!(container_id(&found(&format!("/k8s.io/{id}"))), Some(id));
        assert_eq!(
            container_id(&found(&format!(
                "/kubepods/besteffort/pod0b5e6a3c-1d2e-4f00-9a7b-3c2d1e0f9a8b/{id}"
            ))),
            Some(id)
        );
        assert_eq!(
            container_id(&found(&format!("/system.slice/docker-{id}.scope"))),
            Some(id)
        );
        assert_eq!(container_id(&found("/system.slice/cron.service")), None);
        assert_eq!(container_id(&found("/user.slice/not-an-id")), None);
        assert_eq!(
            container_id(&found(&format!("/x/{}", &id[1..]))),
            None,
            "63 digits"
        );
    }
}
