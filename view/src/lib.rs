//! Pure renderers: a container's [`proclens_cgroup::ContainerSnapshot`] plus the host's parsed
//! /proc files → the exact text of each file a container sees. No I/O, no clock: time comes in as
//! arguments, so every function is tested on fixture text.
//!
//! One module per file: [`meminfo`], [`cpuinfo`], [`stat`], [`uptime`], [`loadavg`], [`swaps`],
//! [`diskstats`], [`pressure`], [`sys_cpu`]; [`cpus`] decides which host CPUs a container sees.

pub mod cpuinfo;
pub mod cpus;
pub mod diskstats;
pub mod loadavg;
pub mod meminfo;
pub mod pressure;
pub mod stat;
pub mod swaps;
pub mod sys_cpu;
pub mod uptime;

#[cfg(test)]
mod testutil;

pub use cpus::{visible_cpus, CpuView};
