//! /proc/cpuinfo: the host's blocks for the visible CPUs, renumbered from 0.

use proclens_cgroup::model::host::Cpuinfo;

/// Renders the host blocks of `visible` host CPUs, in that order, as processors 0..n, keeping every
/// other field of each block.
pub fn render_cpuinfo(host: &Cpuinfo, visible: &[u32]) -> String {
    let mut out = String::with_capacity(visible.len() * 1600);
    for (index, host_cpu) in visible.iter().enumerate() {
        let Some(block) = host.blocks.iter().find(|b| b.processor == *host_cpu) else {
            continue;
        };
        out.push_str(&format!("processor\t: {index}\n"));
        out.push_str(&block.rest);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;
    use proclens_cgroup::parse::host::parse_cpuinfo;

    #[test]
    fn all_cpus_reproduce_the_host_file() {
        for name in ["v1/6.18/proc-cpuinfo", "v2/6.1/proc-cpuinfo"] {
            let text = fixture(name);
            let host = parse_cpuinfo(&text).unwrap();
            let all: Vec<u32> = host.blocks.iter().map(|b| b.processor).collect();
            assert_eq!(render_cpuinfo(&host, &all), text, "{name}");
        }
    }

    #[test]
    fn subset_is_renumbered() {
        let host = parse_cpuinfo(&fixture("v1/6.18/proc-cpuinfo")).unwrap();
        let text = render_cpuinfo(&host, &[1]);
        assert!(text.starts_with("processor\t: 0\n"));
        assert_eq!(text.matches("processor\t:").count(), 1);
        assert!(text.ends_with("\n\n"));
    }
}
