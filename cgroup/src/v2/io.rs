//! v2 io controller: io.stat, which lists every device the cgroup (or a descendant) did I/O on.

use crate::error::Result;
use crate::model::{IoCoverage, IoSnapshot};
use crate::parse::cgroupfs::parse_io_stat;
use crate::raw::RawFile;

/// Per-device I/O from io.stat (absent: no I/O counted for any device).
pub fn io(io_stat: Option<&RawFile>) -> Result<IoSnapshot> {
    let mut devices = match io_stat {
        Some(file) => file.parse(parse_io_stat)?,
        None => Vec::new(),
    };
    devices.sort_by_key(|d| (d.major, d.minor));
    Ok(IoSnapshot {
        devices,
        coverage: IoCoverage::AllDevices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    #[test]
    fn devices_from_a_real_kernel() {
        let snap = io(Some(&RawFile::new("io.stat", fixture("v2/6.1/io.stat")))).unwrap();
        assert_eq!(snap.coverage, IoCoverage::AllDevices);
        assert_eq!(snap.devices.len(), 1);
        assert!(snap.devices[0].read_bytes > 0);
        assert_eq!(io(None).unwrap().devices, vec![]);
    }
}
