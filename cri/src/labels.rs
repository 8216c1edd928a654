//! The exporter's container labels, computed from CRI objects by pure functions: cAdvisor's and
//! the kubelet's conventions for `name`, `image`, `namespace`, `pod` and `container`.

use std::collections::HashMap;

use k8s_cri::v1::{Container, Image, PodSandbox, PodSandboxState};

/// Label keys the kubelet puts on every sandbox and container it asks CRI for.
pub mod keys {
    /// The pod's name.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// The pod's UID.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// The container's name in the pod spec (containers only).
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
}

/// The labels of one container's (or one pod sandbox's) series, as cAdvisor and the kubelet
/// name them. Empty strings mean "not known"; the exporter leaves such labels out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerLabels {
    /// `name`: the CRI container id (the sandbox id for a sandbox). cAdvisor's containerd
    /// handler gives a container the aliases `[id, cgroup name]` and its `name` label is the
    /// first alias, so on containerd this is the id.
    pub name: String,
    /// `image`: a readable image reference (`docker.io/library/nginx:1.25`), never an image id
    /// when CRI knows a name for it. Empty for a sandbox (CRI does not say its image).
    pub image: String,
    /// `namespace`: the pod's namespace.
    pub namespace: String,
    /// `pod`: the pod's name.
    pub pod: String,
    /// `container`: the container's name in its pod; empty for a sandbox (pod-level series).
    pub container: String,
    /// The id of the pod sandbox the container runs in (its own id for a sandbox).
    pub sandbox_id: String,
}

/// What is known of a pod from its sandbox: the labels of pod-level series, such as those of the
/// kubelet's pod cgroup `kubepods/<qos>/pod<uid>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodLabels {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's UID (the sandbox metadata's `uid`).
    pub uid: String,
    /// The id of the pod's sandbox.
    pub sandbox_id: String,
}

impl ContainerLabels {
    /// The labels of CRI container `c`, running in `sandbox` (`None` if its sandbox is not
    /// listed), with image ids resolved to names through `images`.
    ///
    /// `pod`, `namespace` and `container` come from the kubelet's `io.kubernetes.*` labels
    /// of the container, then of the sandbox, then from the CRI metadata names.
    pub fn from_container(
        c: &Container,
        sandbox: Option<&PodSandbox>,
        images: &ImageNames,
    ) -> Self {
        let sandbox_label = |key: &str| sandbox.and_then(|s| non_empty(s.labels.get(key)));
        let meta = sandbox.and_then(|s| s.metadata.as_ref());
        let pod = non_empty(c.labels.get(keys::POD_NAME))
            .or_else(|| sandbox_label(keys::POD_NAME))
            .or_else(|| meta.map(|m| m.name.as_str()))
            .unwrap_or_default();
        let namespace = non_empty(c.labels.get(keys::POD_NAMESPACE))
            .or_else(|| sandbox_label(keys::POD_NAMESPACE))
            .or_else(|| meta.map(|m| m.namespace.as_str()))
            .unwrap_or_default();
        let container = non_empty(c.labels.get(keys::CONTAINER_NAME))
            .or_else(|| c.metadata.as_ref().map(|m| m.name.as_str()))
            .unwrap_or_default();
        let spec = c.image.as_ref();
        ContainerLabels {
            name: c.id.clone(),
            image: images.readable(
                spec.map_or("", |s| s.image.as_str()),
                spec.map_or("", |s| s.user_specified_image.as_str()),
                &c.image_ref,
                &c.image_id,
            ),
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            container: container.to_string(),
            sandbox_id: c.pod_sandbox_id.clone(),
        }
    }

    /// The labels of the sandbox itself (its pause container's cgroup): `name` is its id,
    /// `container` and `image` are empty, pod and namespace as in [`PodLabels::from_sandbox`].
    pub fn from_sandbox(s: &PodSandbox) -> Self {
        let pod = PodLabels::from_sandbox(s);
        ContainerLabels {
            name: s.id.clone(),
            image: String::new(),
            namespace: pod.namespace,
            pod: pod.pod,
            container: String::new(),
            sandbox_id: s.id.clone(),
        }
    }
}

impl PodLabels {
    /// The pod of sandbox `s`: name, namespace and uid from the kubelet's `io.kubernetes.pod.*`
    /// labels, else from the sandbox metadata.
    pub fn from_sandbox(s: &PodSandbox) -> Self {
        let meta = s.metadata.as_ref();
        let pick = |key: &str, meta_value: Option<&str>| {
            non_empty(s.labels.get(key))
                .or(meta_value.filter(|v| !v.is_empty()))
                .unwrap_or_default()
                .to_string()
        };
        PodLabels {
            namespace: pick(keys::POD_NAMESPACE, meta.map(|m| m.namespace.as_str())),
            pod: pick(keys::POD_NAME, meta.map(|m| m.name.as_str())),
            // The metadata uid is the one RunPodSandbox was given; the label is a copy.
            uid: meta
                .map(|m| m.uid.as_str())
                .filter(|u| !u.is_empty())
                .or_else(|| non_empty(s.labels.get(keys::POD_UID)))
                .unwrap_or_default()
                .to_string(),
            sandbox_id: s.id.clone(),
        }
    }
}

/// Readable names of the runtime's images, by image id and by repo digest, built from one
/// `ListImages` answer: the kubelet creates containers with the image id (`sha256:…`) as their
/// image spec, and containerd 1.6 lists containers with that id as `image_ref`.
#[derive(Clone, Debug, Default)]
pub struct ImageNames {
    names: HashMap<String, String>,
}

impl ImageNames {
    /// Indexes `images`: each image's id and repo digests map to its first repo tag, or to its
    /// first repo digest if it has no tag.
    pub fn from_images(images: &[Image]) -> Self {
        let mut names = HashMap::new();
        for image in images {
            let Some(name) = image.repo_tags.first().or(image.repo_digests.first()) else {
                continue;
            };
            for key in std::iter::once(&image.id).chain(&image.repo_digests) {
                if !key.is_empty() {
                    names.insert(key.clone(), name.clone());
                }
            }
        }
        ImageNames { names }
    }

    /// The readable image of a container with image spec `spec`, the user's image reference
    /// `user_specified` (newer kubelets), `image_ref` and `image_id`: a tagged name if any of
    /// them is one or resolves to one, else a digest reference, else the id as given.
    pub fn readable(
        &self,
        spec: &str,
        user_specified: &str,
        image_ref: &str,
        image_id: &str,
    ) -> String {
        let given = [spec, user_specified, image_ref, image_id];
        if let Some(name) = given.iter().find(|s| is_tagged_name(s)) {
            return (*name).to_string();
        }
        if let Some(name) = given.iter().find_map(|s| self.names.get(*s)) {
            return name.clone();
        }
        given
            .iter()
            .find(|s| s.contains('@'))
            .or_else(|| given.iter().find(|s| !s.is_empty()))
            .map_or_else(String::new, |s| (*s).to_string())
    }
}

/// True for an image reference by name (`busybox`, `docker.io/library/nginx:1.25`), false for
/// an empty string, an image id (`sha256:…`, or 64 hex digits) or a digest reference
/// (`…@sha256:…`).
fn is_tagged_name(s: &str) -> bool {
    let is_hex_id = s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    !s.is_empty() && !s.contains('@') && !s.starts_with("sha256:") && !is_hex_id
}

/// `value` if present and not empty.
fn non_empty(value: Option<&String>) -> Option<&str> {
    value.map(String::as_str).filter(|v| !v.is_empty())
}

/// Among sandboxes of one pod uid, the one whose labels the pod gets: a ready sandbox before one
/// that is not, then the newest.
pub(crate) fn better_sandbox(candidate: &PodSandbox, current: &PodSandbox) -> bool {
    let ready = |s: &PodSandbox| s.state == PodSandboxState::SandboxReady as i32;
    (ready(candidate), candidate.created_at) > (ready(current), current.created_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{kubelet_container, kubelet_sandbox, nginx_image, NGINX_ID};

    #[test]
    fn kubelet_container_gets_cadvisor_labels_and_the_image_tag() {
        let sandbox = kubelet_sandbox();
        let images = ImageNames::from_images(&[nginx_image()]);
        let labels = ContainerLabels::from_container(&kubelet_container(), Some(&sandbox), &images);
        assert_eq!(
            labels,
            ContainerLabels {
                name: "5a0e2b4f0b1c9d3e".into(),
                image: "docker.io/library/nginx:1.25".into(),
                namespace: "shop".into(),
                pod: "web-7d9f8-x2x4q".into(),
                container: "nginx".into(),
                sandbox_id: "e1f3a0c2".into(),
            }
        );
    }

    #[test]
    fn names_fall_back_to_metadata_without_kubelet_labels() {
        let mut sandbox = kubelet_sandbox();
        sandbox.labels.clear();
        let mut c = kubelet_container();
        c.labels.clear();
        let labels = ContainerLabels::from_container(&c, Some(&sandbox), &ImageNames::default());
        assert_eq!(
            (
                labels.namespace.as_str(),
                labels.pod.as_str(),
                labels.container.as_str()
            ),
            ("shop-meta", "web-meta", "nginx-meta")
        );
        let orphan = ContainerLabels::from_container(&c, None, &ImageNames::default());
        assert_eq!((orphan.namespace.as_str(), orphan.pod.as_str()), ("", ""));
        assert_eq!(orphan.container, "nginx-meta");
    }

    #[test]
    fn sandbox_labels_are_pod_level() {
        let s = kubelet_sandbox();
        assert_eq!(
            ContainerLabels::from_sandbox(&s),
            ContainerLabels {
                name: "e1f3a0c2".into(),
                image: String::new(),
                namespace: "shop".into(),
                pod: "web-7d9f8-x2x4q".into(),
                container: String::new(),
                sandbox_id: "e1f3a0c2".into(),
            }
        );
        assert_eq!(
            PodLabels::from_sandbox(&s),
            PodLabels {
                namespace: "shop".into(),
                pod: "web-7d9f8-x2x4q".into(),
                uid: "0f6c5a9e-2b7d-4c1e-9a8b-3d2f1e0c9b8a".into(),
                sandbox_id: "e1f3a0c2".into(),
            }
        );
    }

    #[test]
    fn image_is_a_name_whenever_one_is_known() {
        let images = ImageNames::from_images(&[nginx_image()]);
        let digest = "docker.io/library/nginx@sha256:aaaa";
        // A tagged spec is used as is.
        assert_eq!(
            images.readable("busybox:1.36", "", NGINX_ID, ""),
            "busybox:1.36"
        );
        // An id resolves through ListImages: by id, bare hex id, or repo digest.
        assert_eq!(
            images.readable(NGINX_ID, "", NGINX_ID, ""),
            "docker.io/library/nginx:1.25"
        );
        assert_eq!(
            images.readable("", "", digest, ""),
            "docker.io/library/nginx:1.25"
        );
        // The user's reference (newer kubelets) beats an unresolvable id.
        assert_eq!(
            images.readable("sha256:0000", "nginx:latest", "", ""),
            "nginx:latest"
        );
        // Unknown image: a digest reference, else the id, else nothing.
        let none = ImageNames::default();
        assert_eq!(none.readable("sha256:0000", "", digest, ""), digest);
        assert_eq!(
            none.readable("sha256:0000", "", "sha256:0000", ""),
            "sha256:0000"
        );
        assert_eq!(none.readable("", "", "", ""), "");
        let bare = NGINX_ID.trim_start_matches("sha256:");
        assert!(!is_tagged_name(bare));
    }

    #[test]
    fn untagged_image_is_named_by_its_digest() {
        let mut image = nginx_image();
        image.repo_tags.clear();
        let images = ImageNames::from_images(&[image]);
        assert_eq!(
            images.readable(NGINX_ID, "", "", ""),
            "docker.io/library/nginx@sha256:aaaa"
        );
    }

    #[test]
    fn missing_metadata_and_image_spec_give_empty_labels() {
        let c = Container {
            id: "abc".into(),
            pod_sandbox_id: "sb".into(),
            metadata: None,
            image: None,
            ..Container::default()
        };
        let s = PodSandbox {
            id: "sb".into(),
            metadata: None,
            ..PodSandbox::default()
        };
        let labels = ContainerLabels::from_container(&c, Some(&s), &ImageNames::default());
        assert_eq!(
            labels,
            ContainerLabels {
                name: "abc".into(),
                sandbox_id: "sb".into(),
                ..ContainerLabels::default()
            }
        );
        assert_eq!(PodLabels::from_sandbox(&s).uid, "");
    }
}
