//! /proc/pressure/{cpu,memory,io} from the container's PSI files.

use proclens_cgroup::model::{Psi, PsiLine};
use std::fmt::Write;

fn push(out: &mut String, kind: &str, l: &PsiLine) {
    let _ = writeln!(
        out,
        "{kind} avg10={:.2} avg60={:.2} avg300={:.2} total={}",
        l.avg10, l.avg60, l.avg300, l.total_us
    );
}

/// Renders a pressure file in the kernel's format.
pub fn render_pressure(psi: &Psi) -> String {
    let mut out = String::with_capacity(128);
    push(&mut out, "some", &psi.some);
    if let Some(full) = &psi.full {
        push(&mut out, "full", full);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;
    use proclens_cgroup::parse::cgroupfs::parse_psi;

    #[test]
    fn round_trips_kernel_text() {
        for name in [
            "v2/6.1/memory.pressure",
            "v2/6.1/io.pressure",
            "v2/6.1/cpu.pressure",
        ] {
            let text = fixture(name);
            assert_eq!(render_pressure(&parse_psi(&text).unwrap()), text, "{name}");
        }
    }
}
