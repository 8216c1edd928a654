//! [`CriClient`]: the CRI v1 runtime and image services of one runtime, over its unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    Container, ContainerStatus, ContainerStatusRequest, Image, ListContainersRequest,
    ListImagesRequest, ListPodSandboxRequest, PodSandbox, VersionRequest, VersionResponse,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{innermost, CriError};

/// How long establishing the connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one CRI call may take before it fails with `DeadlineExceeded`.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest CRI answer accepted, in bytes (the kubelet's limit too: a node's full container list
/// can pass tonic's 4 MiB default).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The CRI API version this client speaks, sent in `Version`.
const API_VERSION: &str = "v1";

/// A connection to a CRI runtime (containerd's CRI plugin, CRI-O) on a unix socket, with the
/// calls the exporter needs as methods and the raw tonic clients for everything else.
///
/// Cheap to clone: clones share one HTTP/2 connection, which reconnects on its own after the
/// runtime restarts.
#[derive(Clone, Debug)]
pub struct CriClient {
    socket: PathBuf,
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
}

impl CriClient {
    /// Connects to the CRI runtime listening on unix socket `socket` (e.g.
    /// `/run/containerd/containerd.sock`). Fails with [`CriError::SocketMissing`] if the path
    /// does not exist and [`CriError::Connect`] if nothing accepts on it. Does not call the
    /// runtime: use [`Self::version`] to check it speaks CRI v1.
    pub async fn connect(socket: &Path) -> Result<CriClient, CriError> {
        if !socket.exists() {
            return Err(CriError::SocketMissing {
                path: socket.to_path_buf(),
            });
        }
        let path = socket.to_path_buf();
        // The URI is required by tonic but unused: every connection goes to the socket.
        let channel =
            Endpoint::from_static("http://cri.invalid")
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(CALL_TIMEOUT)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|source| CriError::Connect {
                    path: socket.to_path_buf(),
                    reason: innermost(&source),
                    source,
                })?;
        Ok(CriClient {
            socket: socket.to_path_buf(),
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            image: ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The raw CRI runtime service client (a clone sharing this connection), for calls this
    /// type has no method for: `UpdateContainerResources`, `ExecSync`, `RunPodSandbox`,
    /// `CreateContainer`, `StartContainer`, `StopContainer`, `RemoveContainer`, …
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// The raw CRI image service client (a clone sharing this connection): `ImageStatus`,
    /// `PullImage`, `RemoveImage`, …
    pub fn image(&self) -> ImageServiceClient<Channel> {
        self.image.clone()
    }

    /// Wraps a failed call's status with the call name and socket.
    pub fn call_error(&self, call: &'static str, status: tonic::Status) -> CriError {
        CriError::Call {
            call,
            path: self.socket.clone(),
            status: Box::new(status),
        }
    }

    /// The runtime's name and versions (`Version`), asking for API version v1.
    pub async fn version(&self) -> Result<VersionResponse, CriError> {
        let request = VersionRequest {
            version: API_VERSION.to_string(),
        };
        self.runtime()
            .version(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.call_error("Version", s))
    }

    /// Every container the runtime knows, in any state (`ListContainers`, no filter).
    pub async fn list_containers(&self) -> Result<Vec<Container>, CriError> {
        self.runtime()
            .list_containers(ListContainersRequest { filter: None })
            .await
            .map(|r| r.into_inner().containers)
            .map_err(|s| self.call_error("ListContainers", s))
    }

    /// Every pod sandbox the runtime knows, ready or not (`ListPodSandbox`, no filter).
    pub async fn list_sandboxes(&self) -> Result<Vec<PodSandbox>, CriError> {
        self.runtime()
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .map(|r| r.into_inner().items)
            .map_err(|s| self.call_error("ListPodSandbox", s))
    }

    /// Every image the runtime has (`ListImages`, no filter).
    pub async fn list_images(&self) -> Result<Vec<Image>, CriError> {
        self.image()
            .list_images(ListImagesRequest { filter: None })
            .await
            .map(|r| r.into_inner().images)
            .map_err(|s| self.call_error("ListImages", s))
    }

    /// The status of container `id` (`ContainerStatus`, not verbose). A container the runtime
    /// does not know fails with a [`CriError::Call`] whose status code is `NotFound`.
    pub async fn container_status(&self, id: &str) -> Result<ContainerStatus, CriError> {
        let request = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        self.runtime()
            .container_status(request)
            .await
            .map_err(|s| self.call_error("ContainerStatus", s))?
            .into_inner()
            .status
            .ok_or_else(|| CriError::MissingField {
                call: "ContainerStatus",
                path: self.socket.clone(),
                field: "status",
            })
    }
}
