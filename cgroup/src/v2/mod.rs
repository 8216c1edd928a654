//! cgroup v2 (the unified hierarchy): one module per controller, each reading its files into a
//! raw struct at the edge and interpreting them with pure functions of the text.

pub mod cpu;
pub mod cpuset;
pub mod io;
pub mod memory;
pub mod psi;
