//! proclens integration tests against real parts: real FUSE mounts of `proclens-fused`, real
//! cgroups, readers in fresh pid namespaces, real runc containers. Run as root after building
//! the daemon: `cargo build -p proclens-fused && cargo test -p proclens-tests --test integration`.
//! Set `PROCLENS_FUSED_BIN` to test another daemon binary.

// Whose view a caller gets: threads, hostPID pods, shared pid namespaces, nested cgroups.
mod callers;
// The collector library on real cgroups: enumeration, reading by path, exact values.
mod collector;
// The Grafana dashboard: every metric its PromQL uses is one the exporter emits.
mod dashboard;
// Cgroups destroyed and recreated under the same paths while readers read.
mod churn;
// The daemon's command line, start-up, mount options and shutdown.
mod cli;
// The CRI client and inventory against a real containerd (tests/src/rig/containerd.rs).
mod cri;
// Real tools (free, top, vmstat, getconf, python, node, lscpu) inside runc containers.
mod container;
// proclens-exporter scraped by a real Prometheus: memory, CPU, throttling, formats.
mod exporter;
// proclens-fused's own numbers: counted, kept across worker kills, published, exported.
mod fused_stats;
// Bad kernel input (unparsable or vanished cgroup files): EIO for that read only.
mod errors;
// Differential tests: the same reader reads proclens and lxcfs 5.0.3, every shared field compared.
mod lxcfs;
// The systemd unit.
mod packaging;
// proclens-exporter's remote write: into a real Prometheus, and against failing endpoints.
mod remote_write;
// seq_file read semantics: offsets, EOF, lseek, many opens, long-held opens.
mod reads;
// Zero downtime: worker kills and upgrades under load.
mod restart;
// Checks of the rig itself, so a broken rig is never mistaken for a daemon bug.
mod rig;
// The per-container subtree (containers/<pid>/proc): page-cached, never another container's.
mod subtree;
// Helpers shared by the test modules.
mod util;
// The cgroup v2 stage: this suite again inside a cgroup v2 VM (tests/src/rig/vm.rs).
mod vm;
// What a reader in a limited cgroup and its own pid namespace sees in each file.
mod views;
// proclens-exporter's web config: TLS, basic auth and headers, scraped by a real Prometheus.
mod web;
// The cgroup write path (proclens_cgroup::write) on real v1 and v2 cgroups.
mod write;
