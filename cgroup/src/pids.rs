//! The pids controller, the same files in v1 and v2: pids.current and pids.max ("max" when
//! unlimited).

use crate::error::Result;
use crate::model::PidsSnapshot;
use crate::parse::cgroupfs::{parse_limit, parse_u64};
use crate::raw::{parse_optional, RawFile};

/// Task count and limit; the root cgroup has no pids.max.
pub fn pids(current: &RawFile, max: Option<&RawFile>) -> Result<PidsSnapshot> {
    Ok(PidsSnapshot {
        current: current.parse(parse_u64)?,
        limit: parse_optional(max, parse_limit)?.flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    #[test]
    fn pids_from_real_kernels() {
        for version in ["v1/6.18", "v2/6.1"] {
            let raw = |name: &str| RawFile::new(name, fixture(&format!("{version}/{name}")));
            let snap = pids(&raw("pids.current"), Some(&raw("pids.max"))).unwrap();
            let text = fixture(&format!("{version}/pids.current"));
            assert_eq!(
                snap.current,
                text.trim().parse::<u64>().unwrap(),
                "{version}"
            );
        }
        let unlimited = pids(&RawFile::new("c", "3\n"), Some(&RawFile::new("m", "max\n")));
        assert_eq!(unlimited.unwrap().limit, None);
    }
}
