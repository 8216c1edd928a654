//! proclens's cgroup model: everything that knows cgroup and /proc file formats, and nothing about
//! FUSE, HTTP or async.
//!
//! Data flow: [`layout::HostPaths`] (injected roots) → [`layout::Layout`] (hierarchies from
//! mountinfo) → [`layout::CgroupSet`] (a process's cgroup in each hierarchy) →
//! [`reader::CgroupReader::snapshot`] → [`model::ContainerSnapshot`] (plain structs, units in field
//! names). Every kernel file is parsed by a pure function in [`parse`].

pub mod error;
pub mod files;
pub mod layout;
pub mod model;
pub mod parse;
pub mod reader;
#[cfg(test)]
mod testutil;
pub mod write;

pub use error::{Error, ParseError, Result};
pub use layout::{CgroupSet, Controller, HostPaths, Layout, Version};
pub use model::*;
pub use reader::{CgroupReader, ContainerId};
