//! /proc/meminfo from the container's memory cgroup (DESIGN §2).

use proclens_cgroup::model::host::Meminfo;
use proclens_cgroup::MemorySnapshot;

/// The container's swap size and use in kB, or `None` when the host's swap lines apply unchanged
/// (swap not accounted for this cgroup).
pub fn container_swap_kb(host: &Meminfo<'_>, memory: &MemorySnapshot) -> Option<(u64, u64)> {
    if !memory.swap_accounted {
        return None;
    }
    let host_total = host.get("SwapTotal").unwrap_or(0);
    let total = memory
        .swap_limit_bytes
        .map_or(host_total, |b| (b / 1024).min(host_total));
    let used = (memory.swap_usage_bytes / 1024).min(total);
    Some((total, used))
}

/// Renders meminfo: the fields a cgroup knows are computed, every other host line is passed
/// through unchanged, in the kernel's order and column widths (`%-16s%8lu kB`).
pub fn render_meminfo(host: &Meminfo<'_>, memory: &MemorySnapshot) -> String {
    let host_total = host.get("MemTotal").unwrap_or(0);
    let total = memory
        .limit_bytes
        .map_or(host_total, |b| (b / 1024).min(host_total));
    let kb = |bytes: u64| (bytes / 1024).min(total);
    let s = &memory.stat;
    let free = total.saturating_sub(memory.usage_bytes / 1024);
    let reclaimable_file = s.active_file_bytes + s.inactive_file_bytes + s.slab_reclaimable_bytes;
    let available = (free + reclaimable_file / 1024).min(total);
    let swap = container_swap_kb(host, memory);

    let mut out = String::with_capacity(1600);
    for line in &host.lines {
        let value = match line.key {
            "MemTotal" => total,
            "MemFree" => free,
            "MemAvailable" => available,
            "Buffers" => 0,
            "Cached" => kb(s.file_bytes),
            "SwapCached" => 0,
            "Active" => kb(s.active_anon_bytes + s.active_file_bytes),
            "Inactive" => kb(s.inactive_anon_bytes + s.inactive_file_bytes),
            "Active(anon)" => kb(s.active_anon_bytes),
            "Inactive(anon)" => kb(s.inactive_anon_bytes),
            "Active(file)" => kb(s.active_file_bytes),
            "Inactive(file)" => kb(s.inactive_file_bytes),
            "Unevictable" => kb(s.unevictable_bytes),
            "Dirty" => kb(s.dirty_bytes),
            "Writeback" => kb(s.writeback_bytes),
            "AnonPages" => kb(s.anon_bytes),
            "Mapped" => kb(s.mapped_file_bytes),
            "Shmem" => kb(s.shmem_bytes),
            "Slab" => kb(s.slab_reclaimable_bytes + s.slab_unreclaimable_bytes),
            "SReclaimable" => kb(s.slab_reclaimable_bytes),
            "SUnreclaim" => kb(s.slab_unreclaimable_bytes),
            "AnonHugePages" => kb(s.anon_thp_bytes),
            "ShmemHugePages" => kb(s.shmem_thp_bytes),
            "FileHugePages" => kb(s.file_thp_bytes),
            // PMD-mapped counts are not kept per cgroup: the host's would be someone else's.
            "ShmemPmdMapped" | "FilePmdMapped" => 0,
            // Mlocked pages are a subset of the unevictable ones, which the cgroup does count.
            "Mlocked" => kb(s.unevictable_bytes),
            "KReclaimable" => kb(s.slab_reclaimable_bytes),
            "SwapTotal" => swap.map_or(line.value, |(t, _)| t),
            "SwapFree" => swap.map_or(line.value, |(t, u)| t - u),
            _ => line.value,
        };
        push_line(&mut out, line.key, value, line.in_kb);
    }
    out
}

/// Appends one line in the kernel's meminfo format: `key:` left-aligned in 16 columns, the
/// value right-aligned in 8 (both grow when longer), then ` kB` for sizes. Written by hand: this
/// runs ~55 times per read, and `format!` would allocate a label each time.
fn push_line(out: &mut String, key: &str, value: u64, in_kb: bool) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = value;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let digits = &digits[start..];
    out.push_str(key);
    out.push(':');
    for _ in key.len() + 1..16 {
        out.push(' ');
    }
    for _ in digits.len()..8 {
        out.push(' ');
    }
    // ASCII digits only.
    out.push_str(std::str::from_utf8(digits).unwrap_or("0"));
    out.push_str(if in_kb { " kB\n" } else { "\n" });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_padded_like_the_kernels() {
        for (key, value, in_kb) in [
            ("MemTotal", 24684092, true),
            ("HugePages_Total", 0, false),
            ("DirectMap4k", 123, true),
            ("AVeryLongFieldName", 1, true),
            ("Zswap", u64::MAX, true),
            ("X", 123456789, false),
        ] {
            let mut out = String::new();
            push_line(&mut out, key, value, in_kb);
            let label = format!("{key}:");
            let unit = if in_kb { " kB" } else { "" };
            assert_eq!(out, format!("{label:<16}{value:>8}{unit}\n"));
        }
    }
    use crate::testutil::fixture;
    use proclens_cgroup::parse::host::parse_meminfo;
    use proclens_cgroup::MemoryStat;

    fn limited(limit: u64, usage: u64) -> MemorySnapshot {
        MemorySnapshot {
            limit_bytes: Some(limit),
            usage_bytes: usage,
            swap_limit_bytes: Some(0),
            swap_usage_bytes: 0,
            swap_accounted: true,
            stat: MemoryStat {
                active_file_bytes: 8 << 20,
                inactive_file_bytes: 4 << 20,
                file_bytes: 12 << 20,
                ..Default::default()
            },
        }
    }

    #[test]
    fn host_text_round_trips_unlimited() {
        for name in ["v1/6.18/proc-meminfo", "v2/6.1/proc-meminfo"] {
            let text = fixture(name);
            let host = parse_meminfo(&text).unwrap();
            let rendered = render_meminfo(&host, &MemorySnapshot::default());
            let keys = |t: &str| {
                t.lines()
                    .map(|l| l.split(':').next().unwrap().to_string())
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                keys(&rendered),
                keys(&text),
                "{name}: same fields, same order"
            );
            // Pass-through lines are byte-identical to the kernel's.
            let host_line = text
                .lines()
                .find(|l| l.starts_with("VmallocTotal"))
                .unwrap();
            assert!(
                rendered.lines().any(|l| l == host_line),
                "{name}: {host_line}"
            );
            let huge = text
                .lines()
                .find(|l| l.starts_with("HugePages_Total"))
                .unwrap();
            assert!(rendered.lines().any(|l| l == huge), "{name}");
        }
    }

    #[test]
    fn limit_becomes_memtotal() {
        let text = fixture("v1/6.18/proc-meminfo");
        let host = parse_meminfo(&text).unwrap();
        let text = render_meminfo(&host, &limited(256 << 20, 100 << 20));
        assert!(text.starts_with("MemTotal:         262144 kB\n"), "{text}");
        assert!(text.contains("\nMemFree:          159744 kB\n"), "{text}");
        assert!(text.contains("\nMemAvailable:     172032 kB\n"), "{text}");
        assert!(text.contains("\nBuffers:               0 kB\n"));
        assert!(text.contains("\nCached:            12288 kB\n"));
        assert!(text.contains("\nSwapTotal:             0 kB\n"));
    }

    #[test]
    fn kernel_fields_come_from_the_cgroup_not_the_host() {
        let text = fixture("v2/6.1/proc-meminfo");
        let host = parse_meminfo(&text).unwrap();
        let mut m = limited(256 << 20, 100 << 20);
        m.stat.unevictable_bytes = 4 << 20;
        m.stat.slab_reclaimable_bytes = 2 << 20;
        m.stat.shmem_thp_bytes = 2 << 20;
        let text = render_meminfo(&host, &m);
        for line in [
            "Mlocked:            4096 kB",
            "KReclaimable:       2048 kB",
            "ShmemHugePages:     2048 kB",
            "FileHugePages:         0 kB",
            "ShmemPmdMapped:        0 kB",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn usage_above_limit_clamps() {
        let text = fixture("v2/6.1/proc-meminfo");
        let host = parse_meminfo(&text).unwrap();
        let text = render_meminfo(&host, &limited(64 << 20, 80 << 20));
        assert!(text.contains("\nMemFree:               0 kB\n"), "{text}");
        assert!(text.contains("\nMemAvailable:      12288 kB\n"), "{text}");
    }

    #[test]
    fn limit_above_host_is_host() {
        let text = fixture("v2/6.1/proc-meminfo");
        let host = parse_meminfo(&text).unwrap();
        let text = render_meminfo(&host, &limited(u64::MAX, 0));
        let total = host.get("MemTotal").unwrap();
        assert!(text.starts_with(&format!("MemTotal:       {total:>8} kB\n")));
    }

    #[test]
    fn swap_limited_by_cgroup_and_host() {
        let text = fixture("v2/6.1/proc-meminfo");
        let host = parse_meminfo(&text).unwrap();
        let host_swap = host.get("SwapTotal").unwrap();
        assert!(host_swap > 0, "the v2 fixture has zram swap");
        let mut m = limited(256 << 20, 0);
        m.swap_limit_bytes = Some(16 << 20);
        m.swap_usage_bytes = 4 << 20;
        assert_eq!(container_swap_kb(&host, &m), Some((16384, 4096)));
        m.swap_limit_bytes = None;
        assert_eq!(container_swap_kb(&host, &m), Some((host_swap, 4096)));
        m.swap_accounted = false;
        assert_eq!(container_swap_kb(&host, &m), None);
    }
}
