//! v2 cpuset controller: the effective CPUs and memory nodes.

use crate::error::Result;
use crate::parse::cpulist::parse_cpulist;
use crate::raw::RawFile;

/// The CPUs of cpuset.cpus.effective.
pub fn cpus(effective_cpus: &RawFile) -> Result<Vec<u32>> {
    effective_cpus.parse(parse_cpulist)
}

/// The memory nodes of cpuset.mems.effective.
pub fn mems(effective_mems: &RawFile) -> Result<Vec<u32>> {
    effective_mems.parse(parse_cpulist)
}

/// The file of the effective CPUs.
pub(crate) const CPUS_FILE: &str = "cpuset.cpus.effective";
/// The file of the effective memory nodes.
pub(crate) const MEMS_FILE: &str = "cpuset.mems.effective";
