//! Real-parts test rig for proclens: real FUSE mounts, real cgroups, real pid namespaces and real
//! runc containers, each behind an RAII guard with a unique name so tests can run in parallel.
//!
//! Data flow of a typical test: [`rig::TempCgroup`] creates a limited cgroup, [`rig::FusedDaemon`]
//! mounts `proclens-fused` on a fresh directory, [`rig::Probe`] starts a reader inside the cgroup
//! and a fresh pid namespace and reads the mount's files on command, and [`parse`] turns the text
//! into the few numbers a test asserts on. [`rig::RuncContainer`] runs real tools (`free`, `top`,
//! `lscpu`, …) inside an OCI container whose `/proc` files are bind-mounted from the daemon.
//!
//! [`rig::ContainerdDaemon`] runs a real containerd with its CRI plugin (images built by
//! [`rig::oci`]) for the tests of `proclens-cri`: pods and containers are started through that
//! crate's client.
//!
//! The probe reader is the `proclens-probe` binary of this crate (`src/bin/proclens-probe.rs`).
//!
//! The benchmark (`perf/`, binary `proclens-bench`, run by `scripts/bench.sh`) uses the same
//! guards plus [`rig::LxcfsDaemon`], [`rig::FloorDaemon`] and [`rig::BindMount`], its own reader
//! `proclens-bench-reader` and the measurement helpers in [`perf`]. The collector's and the
//! exporter's benchmarks (`proclens-collect-bench`, `proclens-exporter-bench`) share their
//! cgroups, their kernel floor and their summaries through [`cgbench`].

#![warn(missing_docs, unreachable_pub)]

pub mod cgbench;
pub mod enter;
pub mod parse;
pub mod perf;
pub mod rig;
