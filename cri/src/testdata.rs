//! CRI objects as containerd 1.6 lists them for a pod the kubelet created: the kubelet labels
//! sandboxes and containers with `io.kubernetes.*`, creates containers by image id, and
//! containerd lists that id as the container's image and `image_ref`. The metadata names differ
//! from the labels here (`-meta`) only so tests can tell which one was used.

use std::collections::HashMap;

use k8s_cri::v1::{
    Container, ContainerMetadata, ContainerState, Image, ImageSpec, PodSandbox, PodSandboxMetadata,
    PodSandboxState,
};

/// The nginx image's id.
pub(crate) const NGINX_ID: &str =
    "sha256:a8758716bb6aa4d90071160d27028fe4eaee7ce8166221a97d30440c8eac2be6";

/// A ready sandbox `shop/web-7d9f8-x2x4q`.
pub(crate) fn kubelet_sandbox() -> PodSandbox {
    PodSandbox {
        id: "e1f3a0c2".into(),
        metadata: Some(PodSandboxMetadata {
            name: "web-meta".into(),
            uid: "0f6c5a9e-2b7d-4c1e-9a8b-3d2f1e0c9b8a".into(),
            namespace: "shop-meta".into(),
            attempt: 0,
        }),
        state: PodSandboxState::SandboxReady as i32,
        created_at: 1_764_800_000_000_000_000,
        labels: labels(&[
            ("app", "web"),
            ("io.kubernetes.pod.name", "web-7d9f8-x2x4q"),
            ("io.kubernetes.pod.namespace", "shop"),
            (
                "io.kubernetes.pod.uid",
                "0f6c5a9e-2b7d-4c1e-9a8b-3d2f1e0c9b8a",
            ),
        ]),
        annotations: HashMap::new(),
        runtime_handler: String::new(),
    }
}

/// Container `nginx` of [`kubelet_sandbox`], running.
pub(crate) fn kubelet_container() -> Container {
    Container {
        id: "5a0e2b4f0b1c9d3e".into(),
        pod_sandbox_id: "e1f3a0c2".into(),
        metadata: Some(ContainerMetadata {
            name: "nginx-meta".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: NGINX_ID.into(),
            ..ImageSpec::default()
        }),
        image_ref: NGINX_ID.into(),
        state: ContainerState::ContainerRunning as i32,
        created_at: 1_764_800_001_000_000_000,
        labels: labels(&[
            ("io.kubernetes.container.name", "nginx"),
            ("io.kubernetes.pod.name", "web-7d9f8-x2x4q"),
            ("io.kubernetes.pod.namespace", "shop"),
            (
                "io.kubernetes.pod.uid",
                "0f6c5a9e-2b7d-4c1e-9a8b-3d2f1e0c9b8a",
            ),
        ]),
        annotations: HashMap::new(),
        image_id: String::new(),
    }
}

/// The nginx image as `ListImages` shows it.
pub(crate) fn nginx_image() -> Image {
    Image {
        id: NGINX_ID.into(),
        repo_tags: vec!["docker.io/library/nginx:1.25".into()],
        repo_digests: vec!["docker.io/library/nginx@sha256:aaaa".into()],
        size: 70_000_000,
        ..Image::default()
    }
}

/// A label map.
pub(crate) fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}
