//! v1 cpuset controller: cpuset.effective_cpus and cpuset.effective_mems (Linux 4.7+), or the
//! configured cpuset.cpus and cpuset.mems on older kernels.

use crate::error::Result;
use crate::parse::cpulist::parse_cpulist;
use crate::raw::{Edge, RawFile};
use std::path::Path;

/// Reads the effective list `effective` (e.g. "cpuset.effective_cpus"), or the configured one
/// `configured` where the kernel has no effective file.
pub(crate) fn read(
    edge: Edge<'_>,
    dir: &Path,
    effective: &str,
    configured: &str,
) -> Result<RawFile> {
    match edge.optional(dir, effective)? {
        Some(file) => Ok(file),
        None => edge.read(dir, configured),
    }
}

/// The CPUs or memory nodes of a cpuset list file.
pub fn list(file: &RawFile) -> Result<Vec<u32>> {
    file.parse(parse_cpulist)
}
