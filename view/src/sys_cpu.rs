//! /sys/devices/system/cpu/{online,possible,present}: the container's CPUs as a cpulist.

use proclens_cgroup::parse::cpulist::format_cpulist;

/// The cpulist of `count` CPUs numbered from 0 ("0", "0-3"), with a newline as sysfs prints it.
pub fn render_cpu_range(count: usize) -> String {
    let cpus: Vec<u32> = (0..u32::try_from(count).unwrap_or(u32::MAX)).collect();
    format!("{}\n", format_cpulist(&cpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(render_cpu_range(1), "0\n");
        assert_eq!(render_cpu_range(4), "0-3\n");
    }
}
