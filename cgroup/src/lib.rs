//! proclens's collector: everything that knows cgroup and /proc file formats, and nothing about
//! its consumers (FUSE views, Prometheus metrics, the control plane).
//!
//! Data flow: [`HostPaths`] (injected roots) → [`Layout`] (hierarchies from mountinfo) →
//! [`CgroupSet`] (a container's cgroup in each hierarchy: from a process with
//! [`Collector::cgroups_of`], from a path with [`Layout::set_at`], or from
//! [`Collector::list`]) → [`Collector::snapshot`] (one call, the [`Parts`] asked for) →
//! [`ContainerSnapshot`] (plain values, units in field names).
//!
//! Inside the snapshot call each controller goes to the module of its hierarchy's version,
//! [`v1`] or [`v2`], which reads its files into [`raw::RawFile`]s at the edge and interprets
//! them with pure functions; every kernel file format is parsed by a pure function in
//! [`parse`], tested on text captured from real kernels.

pub mod collector;
pub mod enumerate;
pub mod error;
pub mod files;
pub mod layout;
pub mod model;
pub mod network;
pub mod parse;
pub mod pids;
pub mod raw;
pub mod tasks;
#[cfg(test)]
mod testutil;
pub mod v1;
pub mod v2;
pub mod write;

pub use collector::{Collector, ContainerId};
pub use enumerate::{classify, CgroupKind, Discovery, FoundCgroup};
pub use error::{Error, ParseError, Result};
pub use layout::{CgroupSet, Controller, HostPaths, Layout, Version};
pub use model::*;

/// Kernel USER_HZ: the unit of cpuacct.stat and /proc/<pid>/stat times.
pub const USER_HZ: u64 = 100;
