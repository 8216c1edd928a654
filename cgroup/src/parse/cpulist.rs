//! The kernel's cpulist format ("0", "0-3", "0,2-3,8"), as in cpuset.cpus and
//! /sys/devices/system/cpu/online.

use super::{number, ParseResult};
use crate::error::ParseError;

/// Highest CPU number accepted; the kernel's own NR_CPUS ceiling is 8192.
pub const MAX_CPU: u32 = 8191;

/// Parses a cpulist into sorted, de-duplicated CPU numbers. Empty text is the empty set.
pub fn parse_cpulist(text: &str) -> ParseResult<Vec<u32>> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Ok(cpus);
    }
    for part in text.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (cpu_number(lo)?, cpu_number(hi)?),
            None => {
                let cpu = cpu_number(part)?;
                (cpu, cpu)
            }
        };
        if lo > hi {
            return Err(ParseError::new(format!(
                "cpulist: descending range {part:?}"
            )));
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn cpu_number(token: &str) -> ParseResult<u32> {
    let n = number(token.trim(), "cpulist")?;
    u32::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_CPU)
        .ok_or_else(|| ParseError::new(format!("cpulist: cpu {n} above {MAX_CPU}")))
}

/// Formats sorted CPU numbers as the kernel does: ranges of consecutive numbers joined by commas.
pub fn format_cpulist(cpus: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{appears, check_mutants, fixture, mutations_of};
    use proptest::prelude::*;

    #[test]
    fn parses_kernel_forms() {
        assert_eq!(parse_cpulist("0\n").unwrap(), vec![0]);
        assert_eq!(parse_cpulist("0-1").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpulist("0,2-3,8").unwrap(), vec![0, 2, 3, 8]);
        assert_eq!(parse_cpulist("\n").unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_cpulist("3-1").is_err());
        assert!(parse_cpulist("a").is_err());
        assert!(parse_cpulist("0-99999999").is_err());
        assert!(parse_cpulist("1,,2").is_err());
    }

    #[test]
    fn formats_ranges() {
        assert_eq!(format_cpulist(&[0]), "0");
        assert_eq!(format_cpulist(&[0, 1]), "0-1");
        assert_eq!(format_cpulist(&[0, 2, 3, 8]), "0,2-3,8");
        assert_eq!(format_cpulist(&[]), "");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(mut cpus in proptest::collection::vec(0u32..300, 0..40)) {
            cpus.sort_unstable();
            cpus.dedup();
            prop_assert_eq!(parse_cpulist(&format_cpulist(&cpus)).unwrap(), cpus);
        }
    }

    #[test]
    fn mutated_fixtures_and_formatted_lists() {
        let fixtures: Vec<String> = [
            "v1/6.18/cpuset.cpus",
            "v1/6.18/cpuset.effective_cpus",
            "v1/6.18/cpuset.mems",
            "v2/6.1/cpuset.cpus",
            "v2/6.1/cpuset.cpus.effective",
            "v2/6.1/cpuset.mems.effective",
        ]
        .iter()
        .map(|name| fixture(name))
        .collect();
        for text in &fixtures {
            assert_eq!(parse_cpulist(text).unwrap(), [0]);
        }
        // The fixtures are all "0\n"; lists the kernel would print add ranges and commas
        // (mostly of low CPUs, so that ranges are frequent).
        let cpu = prop_oneof![4 => 0u32..32, 1 => 0u32..=MAX_CPU];
        let formatted = proptest::collection::vec(cpu, 0..16).prop_map(|mut cpus| {
            cpus.sort_unstable();
            cpus.dedup();
            format_cpulist(&cpus) + "\n"
        });
        let seeds = prop_oneof![proptest::sample::select(fixtures), formatted];
        check_mutants("parse_cpulist", mutations_of(seeds), |text| {
            let parsed = parse_cpulist(&text);
            if let Ok(cpus) = &parsed {
                // Sorted, distinct, in range, formatted back to the same set, and the lowest
                // and highest CPU are written in the text (each ends a range or stands alone).
                prop_assert!(cpus.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(cpus.iter().all(|&c| c <= MAX_CPU));
                prop_assert_eq!(&parse_cpulist(&format_cpulist(cpus)).unwrap(), cpus);
                if let (Some(lo), Some(hi)) = (cpus.first(), cpus.last()) {
                    prop_assert!(appears(&text, lo) && appears(&text, hi));
                }
            }
            Ok(parsed.map(drop))
        });
    }
}
