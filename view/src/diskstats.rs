//! /proc/diskstats from the container's block I/O counters (v1 blkio, v2 io.stat).

use proclens_cgroup::model::host::DiskName;
use proclens_cgroup::model::IoDeviceStat;
use std::fmt::Write;

/// Renders one kernel-format line (20 fields) per device the container did I/O on and the host
/// names; counters a cgroup does not keep (merges, times, in-flight) are 0.
pub fn render_diskstats(io: &[IoDeviceStat], names: &[DiskName]) -> String {
    let mut out = String::new();
    for d in io {
        let Some(name) = names
            .iter()
            .find(|n| n.major == d.major && n.minor == d.minor)
        else {
            continue;
        };
        let _ = writeln!(
            out,
            "{:>4} {:>7} {} {} 0 {} 0 {} 0 {} 0 0 0 0 {} 0 {} 0 0 0",
            d.major,
            d.minor,
            name.name,
            d.read_ios,
            d.read_bytes / 512,
            d.write_ios,
            d.write_bytes / 512,
            d.discard_ios,
            d.discard_bytes / 512,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_layout() {
        let io = [IoDeviceStat {
            major: 254,
            minor: 0,
            read_bytes: 4096,
            write_bytes: 1024,
            read_ios: 2,
            write_ios: 1,
            ..Default::default()
        }];
        let names = [DiskName {
            major: 254,
            minor: 0,
            name: "vda".into(),
        }];
        let text = render_diskstats(&io, &names);
        assert_eq!(text, " 254       0 vda 2 0 8 0 1 0 2 0 0 0 0 0 0 0 0 0 0\n");
        assert_eq!(text.split_whitespace().count(), 3 + 17);
        assert_eq!(render_diskstats(&io, &[]), "");
    }
}
