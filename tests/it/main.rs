//! proclens integration tests against real parts: real FUSE mounts of `proclens-fused`, real
//! cgroups, readers in fresh pid namespaces, real runc containers. Run as root:
//! `cargo build -p proclens-fused && cargo test -p proclens-tests --test integration`.

// Checks of the rig itself, so a broken rig is never mistaken for a daemon bug.
mod rig;
// Helpers shared by the test modules.
mod util;
