//! v2 pressure stall information: cpu.pressure, memory.pressure, io.pressure.

use crate::error::Result;
use crate::model::PressureSnapshot;
use crate::parse::cgroupfs::parse_psi;
use crate::raw::{parse_optional, RawFile};

/// The three pressure files of a cgroup, each absent where the kernel lacks it (PSI off).
#[derive(Debug, Clone, Default)]
pub struct PressureFiles {
    /// cpu.pressure.
    pub cpu: Option<RawFile>,
    /// memory.pressure.
    pub memory: Option<RawFile>,
    /// io.pressure.
    pub io: Option<RawFile>,
}

/// Parses the pressure files.
pub fn pressure(files: &PressureFiles) -> Result<PressureSnapshot> {
    Ok(PressureSnapshot {
        cpu: parse_optional(files.cpu.as_ref(), parse_psi)?,
        memory: parse_optional(files.memory.as_ref(), parse_psi)?,
        io: parse_optional(files.io.as_ref(), parse_psi)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    #[test]
    fn pressure_from_a_real_kernel() {
        let raw = |name: &str| Some(RawFile::new(name, fixture(&format!("v2/6.1/{name}"))));
        let snap = pressure(&PressureFiles {
            cpu: raw("cpu.pressure"),
            memory: raw("memory.pressure"),
            io: None,
        })
        .unwrap();
        assert!(snap.cpu.is_some() && snap.memory.unwrap().full.is_some());
        assert_eq!(snap.io, None);
    }
}
