//! v1 blkio controller: blkio.throttle.io_service_bytes_recursive and io_serviced_recursive
//! (the cgroup and its descendants, as v2 io.stat), or the non-recursive files on kernels
//! without them.
//!
//! These count a device only while throttling is active on its queue: on 6.18 (measured) from
//! the moment a throttle rule is first written for the device in any cgroup (counts start from
//! 0 then) until the device goes. A device without a row is therefore unknown, not idle
//! ([`IoCoverage::ListedDevices`]).

use crate::error::Result;
use crate::model::{IoCoverage, IoSnapshot};
use crate::parse::cgroupfs::parse_blkio;
use crate::raw::{Edge, RawFile};
use std::path::Path;

/// The two counting files of a cgroup.
#[derive(Debug, Clone)]
pub struct BlkioFiles {
    /// Bytes per device and operation.
    pub service_bytes: RawFile,
    /// Operations per device and operation.
    pub serviced: RawFile,
}

impl BlkioFiles {
    /// Reads the recursive files, or the cgroup's own where the kernel has no recursive ones;
    /// `None` when it has neither.
    pub(crate) fn read(edge: Edge<'_>, dir: &Path) -> Result<Option<Self>> {
        for suffix in ["_recursive", ""] {
            let bytes = format!("blkio.throttle.io_service_bytes{suffix}");
            if let Some(service_bytes) = edge.optional(dir, &bytes)? {
                let serviced = edge.read(dir, &format!("blkio.throttle.io_serviced{suffix}"))?;
                return Ok(Some(BlkioFiles {
                    service_bytes,
                    serviced,
                }));
            }
        }
        Ok(None)
    }
}

/// Per-device I/O of the devices the kernel counts.
pub fn io(files: Option<&BlkioFiles>) -> Result<IoSnapshot> {
    let devices = match files {
        Some(files) => files
            .service_bytes
            .parse(|bytes| parse_blkio(bytes, &files.serviced.text))?,
        None => Vec::new(),
    };
    Ok(IoSnapshot {
        devices,
        coverage: IoCoverage::ListedDevices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    #[test]
    fn listed_devices_from_a_real_kernel() {
        let raw = |name: &str| RawFile::new(name, fixture(&format!("v1/6.18/{name}")));
        let files = BlkioFiles {
            service_bytes: raw("blkio.throttle.io_service_bytes"),
            serviced: raw("blkio.throttle.io_serviced"),
        };
        let snap = io(Some(&files)).unwrap();
        assert_eq!(snap.coverage, IoCoverage::ListedDevices);
        assert!(snap
            .devices
            .iter()
            .any(|d| d.read_bytes > 0 && d.read_ios > 0));
        let uncounted = BlkioFiles {
            service_bytes: RawFile::new("b", "Total 0\n"),
            serviced: RawFile::new("s", "Total 0\n"),
        };
        assert_eq!(io(Some(&uncounted)).unwrap().devices, vec![]);
    }
}
