//! proclens's CRI edge: a client for the Kubernetes CRI v1 API of a container runtime
//! (containerd's CRI plugin) on its unix socket, and the container labels the exporter puts on
//! its series.
//!
//! Data flow: [`CriClient::connect`] (unix socket → tonic channel) → list calls
//! ([`CriClient::list_containers`], [`CriClient::list_sandboxes`], [`CriClient::list_images`])
//! → [`Snapshot::build`] (pure: CRI objects → [`ContainerLabels`] by container id,
//! [`PodLabels`] by pod uid, image ids → names via [`ImageNames`]) → [`Inventory`] (a snapshot
//! kept fresh by a tokio task; [`Inventory::lookup`] is a map read). The control plane uses
//! [`CriClient::runtime`] and [`CriClient::image`] for the calls this crate has no method for.
//!
//! The CRI types and the generated tonic clients come from the `k8s-cri` crate (re-exported as
//! [`api`]) rather than protos vendored here: it compiles cri-api's `api.proto` with
//! tonic-prost-build, which is the same code a vendored copy would generate, and leaves no copy
//! of the proto to keep in step with upstream. It also compiles the old v1alpha2 API, which
//! costs build time but nothing at run time.

#![warn(missing_docs, unreachable_pub)]

mod client;
mod error;
mod inventory;
pub mod labels;
#[cfg(test)]
mod testdata;

/// The CRI v1 API types and generated clients (`k8s_cri::v1`).
pub use k8s_cri::v1 as api;

pub use client::CriClient;
pub use error::CriError;
pub use inventory::{Inventory, Snapshot};
pub use labels::{ContainerLabels, ImageNames, PodLabels};
