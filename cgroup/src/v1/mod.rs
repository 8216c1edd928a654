//! cgroup v1 (one hierarchy per controller or group of controllers): one module per controller,
//! each reading its files into a raw struct at the edge and interpreting them with pure
//! functions of the text.

pub mod blkio;
pub mod cpu;
pub mod cpuacct;
pub mod cpuset;
pub mod memory;
