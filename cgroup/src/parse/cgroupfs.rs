//! Files inside a cgroup directory, v1 and v2: single values, limits, flat keyed files, cpu.max,
//! cpuacct.usage_all, io.stat, blkio.throttle.*, pressure (PSI).

use super::{number, ParseResult};
use crate::error::ParseError;
use crate::model::{CpuMax, IoDeviceStat, PerCpuUsage, Psi, PsiLine};
use std::collections::BTreeMap;

/// Parses a file holding one unsigned number (memory.current, memory.usage_in_bytes, ...).
pub fn parse_u64(text: &str) -> ParseResult<u64> {
    number(text.trim(), "value")
}

/// Parses a v2 limit: "max" is unlimited (`None`), otherwise a number of bytes or tasks.
pub fn parse_limit(text: &str) -> ParseResult<Option<u64>> {
    match text.trim() {
        "max" => Ok(None),
        other => number(other, "limit").map(Some),
    }
}

/// Parses a v1 signed value where -1 means unlimited (cpu.cfs_quota_us).
pub fn parse_v1_quota(text: &str) -> ParseResult<Option<u64>> {
    match text.trim() {
        "-1" => Ok(None),
        other => number(other, "cfs_quota_us").map(Some),
    }
}

/// Parses a flat keyed file ("key value" per line: memory.stat, cpu.stat, cpuacct.stat,
/// memory.events) into a map whose keys borrow from `text` (no allocation per key). Values must
/// be unsigned numbers; a key given twice keeps its last value.
pub fn parse_flat_keyed(text: &str) -> ParseResult<BTreeMap<&str, u64>> {
    flat_keyed_pairs(text).collect()
}

/// The pairs of a flat keyed file in file order, each checked as [`parse_flat_keyed`] checks
/// it, without collecting them: for hot paths that pick their keys in one pass (no allocation
/// per value).
pub fn flat_keyed_pairs(text: &str) -> impl Iterator<Item = ParseResult<(&str, u64)>> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|line| {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ParseError::new(format!("keyed: malformed line {line:?}")));
        };
        Ok((key, number(value, key)?))
    })
}

/// The values of `keys` in a flat keyed file (`None` for a key it does not have), every line
/// checked as [`parse_flat_keyed`] checks it, and a key given twice keeping its last value: in
/// one pass, no allocation.
pub fn flat_keyed_values<const N: usize>(
    text: &str,
    keys: [&str; N],
) -> ParseResult<[Option<u64>; N]> {
    let mut values = [None; N];
    for pair in flat_keyed_pairs(text) {
        let (key, value) = pair?;
        if let Some(at) = keys.iter().position(|k| *k == key) {
            values[at] = Some(value);
        }
    }
    Ok(values)
}

/// Parses v2 cpu.max ("max 100000" or "50000 100000").
pub fn parse_cpu_max(text: &str) -> ParseResult<CpuMax> {
    let mut parts = text.split_whitespace();
    let (Some(quota), Some(period), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ParseError::new(format!(
            "cpu.max: malformed {:?}",
            text.trim()
        )));
    };
    let quota_us = parse_limit(quota)?;
    let period_us = number(period, "cpu.max period")?;
    if period_us == 0 {
        return Err(ParseError::new("cpu.max: zero period"));
    }
    Ok(CpuMax {
        quota_us,
        period_us,
    })
}

/// Parses v1 cpuacct.usage_all ("cpu user system" header, then one row per possible CPU).
pub fn parse_usage_all(text: &str) -> ParseResult<Vec<PerCpuUsage>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    match lines
        .next()
        .map(|h| h.split_whitespace().collect::<Vec<_>>())
    {
        Some(h) if h == ["cpu", "user", "system"] => {}
        _ => {
            return Err(ParseError::new(
                "usage_all: missing 'cpu user system' header",
            ))
        }
    }
    lines
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 3 {
                return Err(ParseError::new(format!(
                    "usage_all: malformed row {line:?}"
                )));
            }
            let cpu = u32::try_from(number(f[0], "usage_all cpu")?)
                .map_err(|_| ParseError::new("usage_all: cpu out of range"))?;
            Ok(PerCpuUsage {
                cpu,
                user_ns: number(f[1], "usage_all user")?,
                system_ns: number(f[2], "usage_all system")?,
            })
        })
        .collect()
}

fn parse_dev(token: &str) -> ParseResult<(u32, u32)> {
    let (major, minor) = token
        .split_once(':')
        .ok_or_else(|| ParseError::new(format!("io: bad device {token:?}")))?;
    let to_u32 = |t: &str| {
        u32::try_from(number(t, "device number")?)
            .map_err(|_| ParseError::new(format!("io: device number out of range {token:?}")))
    };
    Ok((to_u32(major)?, to_u32(minor)?))
}

/// Parses v2 io.stat ("8:0 rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=.."). Unknown keys
/// (newer kernels add some) are ignored.
pub fn parse_io_stat(text: &str) -> ParseResult<Vec<IoDeviceStat>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.split_whitespace();
            let (major, minor) = parse_dev(parts.next().unwrap_or(""))?;
            let mut stat = IoDeviceStat {
                major,
                minor,
                ..Default::default()
            };
            for kv in parts {
                let (key, value) = kv
                    .split_once('=')
                    .ok_or_else(|| ParseError::new(format!("io.stat: bad field {kv:?}")))?;
                let value = number(value, key)?;
                match key {
                    "rbytes" => stat.read_bytes = value,
                    "wbytes" => stat.write_bytes = value,
                    "rios" => stat.read_ios = value,
                    "wios" => stat.write_ios = value,
                    "dbytes" => stat.discard_bytes = value,
                    "dios" => stat.discard_ios = value,
                    _ => {}
                }
            }
            Ok(stat)
        })
        .collect()
}

/// Parses v1 blkio.throttle.io_service_bytes and blkio.throttle.io_serviced together into
/// per-device totals. Rows are "MAJ:MIN Op value"; the final "Total value" row is skipped.
pub fn parse_blkio(service_bytes: &str, serviced: &str) -> ParseResult<Vec<IoDeviceStat>> {
    let mut devices: BTreeMap<(u32, u32), IoDeviceStat> = BTreeMap::new();
    for (text, is_bytes) in [(service_bytes, true), (serviced, false)] {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut fields = line.split_whitespace();
            let f = [fields.next(), fields.next(), fields.next(), fields.next()];
            match f {
                [Some("Total"), Some(value), None, None] => {
                    number(value, "blkio Total")?;
                }
                [Some(dev), Some(op), Some(value), None] => {
                    let (major, minor) = parse_dev(dev)?;
                    let value = number(value, op)?;
                    let stat = devices.entry((major, minor)).or_insert(IoDeviceStat {
                        major,
                        minor,
                        ..Default::default()
                    });
                    let field = match (op, is_bytes) {
                        ("Read", true) => &mut stat.read_bytes,
                        ("Write", true) => &mut stat.write_bytes,
                        ("Discard", true) => &mut stat.discard_bytes,
                        ("Read", false) => &mut stat.read_ios,
                        ("Write", false) => &mut stat.write_ios,
                        ("Discard", false) => &mut stat.discard_ios,
                        _ => continue,
                    };
                    *field = value;
                }
                _ => return Err(ParseError::new(format!("blkio: malformed line {line:?}"))),
            }
        }
    }
    Ok(devices.into_values().collect())
}

/// Parses a PSI file.
pub fn parse_psi(text: &str) -> ParseResult<Psi> {
    let mut some = None;
    let mut full = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        let kind = parts.next().unwrap_or("");
        let mut psi = PsiLine::default();
        let mut seen = 0;
        for kv in parts {
            let (key, value) = kv
                .split_once('=')
                .ok_or_else(|| ParseError::new(format!("psi: bad field {kv:?}")))?;
            let ratio = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| ParseError::new(format!("psi: bad {key} {value:?}")))
            };
            match key {
                "avg10" => psi.avg10 = ratio()?,
                "avg60" => psi.avg60 = ratio()?,
                "avg300" => psi.avg300 = ratio()?,
                "total" => psi.total_us = number(value, "psi total")?,
                _ => continue,
            }
            seen += 1;
        }
        if seen != 4 {
            return Err(ParseError::new(format!("psi: incomplete line {line:?}")));
        }
        match kind {
            "some" => some = Some(psi),
            "full" => full = Some(psi),
            _ => return Err(ParseError::new(format!("psi: unknown line kind {kind:?}"))),
        }
    }
    let some = some.ok_or_else(|| ParseError::new("psi: no 'some' line"))?;
    Ok(Psi { some, full })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{
        appears, check_fixture_mutants, check_mutants, fixture, fixture_mutations, non_blank_lines,
    };
    use proptest::prelude::*;

    #[test]
    fn v1_values() {
        assert_eq!(
            parse_u64(&fixture("v1/6.18/memory.limit_in_bytes")).unwrap(),
            268435456
        );
        assert!(parse_u64(&fixture("v1/6.18/memory.usage_in_bytes")).unwrap() > 0);
        assert_eq!(
            parse_v1_quota(&fixture("v1/6.18/cpu.cfs_quota_us")).unwrap(),
            Some(50000)
        );
        assert_eq!(
            parse_u64(&fixture("v1/6.18/cpu.cfs_period_us")).unwrap(),
            100000
        );
        assert_eq!(parse_v1_quota("-1\n").unwrap(), None);
        assert!(parse_u64("12 13").is_err());
        assert!(parse_u64("").is_err());
    }

    #[test]
    fn v2_values() {
        assert_eq!(
            parse_limit(&fixture("v2/6.1/memory.max")).unwrap(),
            Some(268435456)
        );
        assert_eq!(
            parse_limit(&fixture("v2/6.1/memory.swap.max")).unwrap(),
            Some(134217728)
        );
        assert_eq!(parse_limit("max\n").unwrap(), None);
        let max = parse_cpu_max(&fixture("v2/6.1/cpu.max")).unwrap();
        assert_eq!(
            max,
            CpuMax {
                quota_us: Some(50000),
                period_us: 100000
            }
        );
        assert_eq!(parse_cpu_max("max 100000\n").unwrap().quota_us, None);
        assert!(parse_cpu_max("max 0").is_err());
        assert!(parse_cpu_max("max").is_err());
    }

    #[test]
    fn keyed_fixtures() {
        let v1_text = fixture("v1/6.18/memory.stat");
        let v1 = parse_flat_keyed(&v1_text).unwrap();
        assert!(v1.contains_key("total_inactive_file"));
        assert!(v1.contains_key("total_cache"));
        let v2_text = fixture("v2/6.1/memory.stat");
        let v2 = parse_flat_keyed(&v2_text).unwrap();
        assert!(v2.contains_key("slab_reclaimable"));
        assert!(v2.contains_key("inactive_file"));
        let cpu_text = fixture("v2/6.1/cpu.stat");
        let cpu = parse_flat_keyed(&cpu_text).unwrap();
        assert!(cpu["usage_usec"] >= cpu["user_usec"]);
        let acct_text = fixture("v1/6.18/cpuacct.stat");
        let acct = parse_flat_keyed(&acct_text).unwrap();
        assert!(acct.contains_key("user") && acct.contains_key("system"));
        assert!(parse_flat_keyed("a 1 2\n").is_err());
        assert!(parse_flat_keyed("a -1\n").is_err());
    }

    #[test]
    fn usage_all_fixture() {
        let rows = parse_usage_all(&fixture("v1/6.18/cpuacct.usage_all")).unwrap();
        assert!(!rows.is_empty());
        assert_eq!(rows[0].cpu, 0);
        assert!(parse_usage_all("0 1 2\n").is_err());
        assert!(parse_usage_all("cpu user system\n0 1\n").is_err());
    }

    #[test]
    fn io_stat() {
        let rows =
            parse_io_stat("8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n").unwrap();
        assert_eq!(
            rows,
            vec![IoDeviceStat {
                major: 8,
                minor: 0,
                read_bytes: 4096,
                write_bytes: 8192,
                read_ios: 1,
                write_ios: 2,
                discard_bytes: 0,
                discard_ios: 0
            }]
        );
        let fixture_rows = parse_io_stat(&fixture("v2/6.1/io.stat")).unwrap();
        assert!(fixture_rows.iter().all(|r| r.major > 0));
        assert!(parse_io_stat("8:x rbytes=1\n").is_err());
        assert!(parse_io_stat("8:0 rbytes\n").is_err());
    }

    #[test]
    fn blkio() {
        let bytes = "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Async 4608\n8:0 Discard 0\n\
                     8:0 Total 4608\nTotal 4608\n";
        let ios = "8:0 Read 1\n8:0 Write 1\n8:0 Sync 0\n8:0 Async 2\n8:0 Discard 0\n\
                   8:0 Total 2\nTotal 2\n";
        let rows = parse_blkio(bytes, ios).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].read_bytes, rows[0].write_bytes), (4096, 512));
        assert_eq!((rows[0].read_ios, rows[0].write_ios), (1, 1));
        let fixture_rows = parse_blkio(
            &fixture("v1/6.18/blkio.throttle.io_service_bytes"),
            &fixture("v1/6.18/blkio.throttle.io_serviced"),
        )
        .unwrap();
        assert!(fixture_rows.iter().all(|r| r.major > 0));
        assert!(parse_blkio("8:0 Read\n", "").is_err());
    }

    #[test]
    fn psi() {
        for name in [
            "v2/6.1/memory.pressure",
            "v2/6.1/io.pressure",
            "v2/6.1/cpu.pressure",
        ] {
            let psi = parse_psi(&fixture(name)).unwrap();
            assert!(psi.full.is_some(), "{name}");
        }
        let p = parse_psi("some avg10=1.50 avg60=0.00 avg300=0.00 total=42\n").unwrap();
        assert_eq!(p.some.total_us, 42);
        assert_eq!(p.some.avg10, 1.5);
        assert!(p.full.is_none());
        assert!(parse_psi("some avg10=1.50\n").is_err());
        assert!(parse_psi("full avg10=0 avg60=0 avg300=0 total=0\n").is_err());
        assert!(parse_psi("some avg10=NaN avg60=0 avg300=0 total=0\n").is_err());
    }

    /// Files holding one unsigned number.
    const NUMBER_FILES: &[&str] = &[
        "v1/6.18/memory.limit_in_bytes",
        "v1/6.18/memory.usage_in_bytes",
        "v1/6.18/memory.failcnt",
        "v1/6.18/cpu.cfs_period_us",
        "v1/6.18/cpu.shares",
        "v1/6.18/cpuacct.usage",
        "v1/6.18/pids.current",
        "v2/6.1/memory.current",
        "v2/6.1/memory.swap.current",
        "v2/6.1/cpu.weight",
        "v2/6.1/pids.current",
    ];

    #[test]
    fn mutated_numbers() {
        check_fixture_mutants("parse_u64", NUMBER_FILES, |text| {
            let parsed = parse_u64(text);
            if let Ok(v) = &parsed {
                prop_assert!(appears(text, v), "{v} not in {text:?}");
            }
            Ok(parsed.map(drop))
        });
    }

    #[test]
    fn mutated_limits() {
        let files = [
            "v2/6.1/memory.max",
            "v2/6.1/memory.high",
            "v2/6.1/memory.swap.max",
            "v2/6.1/pids.max",
            "v1/6.18/pids.max",
        ];
        check_fixture_mutants("parse_limit", &files, |text| {
            let parsed = parse_limit(text);
            match &parsed {
                Ok(None) => prop_assert_eq!(text.trim(), "max"),
                Ok(Some(v)) => prop_assert!(appears(text, v), "{v} not in {text:?}"),
                Err(_) => {}
            }
            Ok(parsed.map(drop))
        });
    }

    #[test]
    fn mutated_v1_quota() {
        check_fixture_mutants("parse_v1_quota", &["v1/6.18/cpu.cfs_quota_us"], |text| {
            let parsed = parse_v1_quota(text);
            match &parsed {
                Ok(None) => prop_assert_eq!(text.trim(), "-1"),
                Ok(Some(v)) => prop_assert!(appears(text, v), "{v} not in {text:?}"),
                Err(_) => {}
            }
            Ok(parsed.map(drop))
        });
    }

    #[test]
    fn mutated_flat_keyed() {
        let files = [
            "v1/6.18/memory.stat",
            "v1/6.18/cpu.stat",
            "v1/6.18/cpuacct.stat",
            "v1/6.18/memory.oom_control",
            "v2/6.1/memory.stat",
            "v2/6.1/cpu.stat",
            "v2/6.1/memory.events",
            "v2/6.1/root-cpu.stat",
        ];
        check_fixture_mutants("parse_flat_keyed", &files, |text| {
            let parsed = parse_flat_keyed(text);
            if let Ok(map) = &parsed {
                // One entry per distinct key, each from a line "key value".
                let lines = non_blank_lines(text);
                let keys: std::collections::BTreeSet<&str> = lines
                    .iter()
                    .filter_map(|l| l.split_whitespace().next())
                    .collect();
                prop_assert_eq!(map.len(), keys.len());
                for (key, value) in map {
                    prop_assert!(
                        lines
                            .iter()
                            .any(|l| l.split_whitespace().next() == Some(key) && appears(l, value)),
                        "{key} {value} not in {text:?}"
                    );
                }
            }
            Ok(parsed.map(drop))
        });
        let events = fixture("v2/6.1/memory.events");
        let events = parse_flat_keyed(&events).unwrap();
        let expected = [
            ("high", 68),
            ("low", 0),
            ("max", 0),
            ("oom", 0),
            ("oom_group_kill", 0),
            ("oom_kill", 0),
        ];
        assert_eq!(events.into_iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn mutated_cpu_max() {
        check_fixture_mutants("parse_cpu_max", &["v2/6.1/cpu.max"], |text| {
            let parsed = parse_cpu_max(text);
            if let Ok(max) = &parsed {
                prop_assert!(max.period_us > 0);
                prop_assert!(appears(text, max.period_us));
                match max.quota_us {
                    None => prop_assert!(text.contains("max")),
                    Some(quota) => prop_assert!(appears(text, quota)),
                }
            }
            Ok(parsed.map(drop))
        });
    }

    #[test]
    fn mutated_usage_all() {
        check_fixture_mutants("parse_usage_all", &["v1/6.18/cpuacct.usage_all"], |text| {
            let parsed = parse_usage_all(text);
            if let Ok(rows) = &parsed {
                // One row per line after the header, with that line's numbers.
                let lines = non_blank_lines(text);
                prop_assert_eq!(rows.len() + 1, lines.len());
                for (row, line) in rows.iter().zip(&lines[1..]) {
                    prop_assert!(
                        appears(line, row.cpu)
                            && appears(line, row.user_ns)
                            && appears(line, row.system_ns),
                        "{row:?} from {line:?}"
                    );
                }
            }
            Ok(parsed.map(drop))
        });
        let rows = parse_usage_all(&fixture("v1/6.18/cpuacct.usage_all")).unwrap();
        assert_eq!(
            rows,
            [
                PerCpuUsage {
                    cpu: 0,
                    user_ns: 539825937,
                    system_ns: 159907407
                },
                PerCpuUsage {
                    cpu: 1,
                    user_ns: 0,
                    system_ns: 0
                }
            ]
        );
    }

    /// The fields of an `IoDeviceStat` with the io.stat key of each.
    fn io_fields(stat: &IoDeviceStat) -> [(&'static str, u64); 6] {
        [
            ("rbytes", stat.read_bytes),
            ("wbytes", stat.write_bytes),
            ("rios", stat.read_ios),
            ("wios", stat.write_ios),
            ("dbytes", stat.discard_bytes),
            ("dios", stat.discard_ios),
        ]
    }

    #[test]
    fn mutated_io_stat() {
        let files = ["v2/6.1/io.stat", "v2/6.1/root-io.stat"];
        check_fixture_mutants("parse_io_stat", &files, |text| {
            let parsed = parse_io_stat(text);
            if let Ok(rows) = &parsed {
                // One row per line; a field is 0 unless its "key=value" is on the line.
                let lines = non_blank_lines(text);
                prop_assert_eq!(rows.len(), lines.len());
                for (row, line) in rows.iter().zip(&lines) {
                    prop_assert!(appears(line, row.major) && appears(line, row.minor));
                    for (key, value) in io_fields(row) {
                        prop_assert!(
                            value == 0
                                || (line.contains(&format!("{key}=")) && appears(line, value)),
                            "{key} {value} from {line:?}"
                        );
                    }
                }
            }
            Ok(parsed.map(drop))
        });
        let rows = parse_io_stat(&fixture("v2/6.1/io.stat")).unwrap();
        assert_eq!(
            rows,
            [IoDeviceStat {
                major: 254,
                minor: 0,
                read_bytes: 16777216,
                write_bytes: 16777216,
                read_ios: 16,
                write_ios: 16,
                discard_bytes: 0,
                discard_ios: 0
            }]
        );
    }

    #[test]
    fn picked_keys_agree_with_the_keyed_map_on_mutated_text() {
        let names = [
            "v1/6.18/cpu.stat",
            "v1/6.18/memory.oom_control",
            "v1/6.18/cpuacct.stat",
            "v2/6.1/cpu.stat",
            "v2/6.1/memory.events",
        ];
        check_fixture_mutants("flat_keyed_values", &names, |text| {
            let keys = [
                "nr_periods",
                "oom_kill",
                "user",
                "usage_usec",
                "max",
                "absent",
            ];
            let (picked, keyed) = (flat_keyed_values(text, keys), parse_flat_keyed(text));
            prop_assert_eq!(picked.is_ok(), keyed.is_ok(), "both accept or both reject");
            if let (Ok(picked), Ok(map)) = (&picked, &keyed) {
                for (key, value) in keys.iter().zip(picked) {
                    prop_assert_eq!(*value, map.get(key).copied(), "{}", key);
                }
            }
            Ok(picked.map(|_| ()))
        });
    }

    #[test]
    fn mutated_blkio() {
        let bytes = "v1/6.18/blkio.throttle.io_service_bytes";
        let ios = "v1/6.18/blkio.throttle.io_serviced";
        let rows = parse_blkio(&fixture(bytes), &fixture(ios)).unwrap();
        assert_eq!(
            rows,
            [IoDeviceStat {
                major: 254,
                minor: 0,
                read_bytes: 20971520,
                write_bytes: 20975616,
                read_ios: 40,
                write_ios: 41,
                discard_bytes: 0,
                discard_ios: 0
            }]
        );
        let inputs = (fixture_mutations(&[bytes]), fixture_mutations(&[ios]));
        check_mutants("parse_blkio", inputs, |(bytes, ios)| {
            let parsed = parse_blkio(&bytes, &ios);
            if let Ok(rows) = &parsed {
                // Byte counts come from the first file, operation counts from the second.
                for row in rows {
                    let both = format!("{bytes}{ios}");
                    prop_assert!(appears(&both, row.major) && appears(&both, row.minor));
                    for (text, values) in [
                        (&bytes, [row.read_bytes, row.write_bytes, row.discard_bytes]),
                        (&ios, [row.read_ios, row.write_ios, row.discard_ios]),
                    ] {
                        for value in values {
                            prop_assert!(
                                value == 0 || appears(text, value),
                                "{value} not in {text:?}"
                            );
                        }
                    }
                }
            }
            Ok(parsed.map(drop))
        });
    }

    #[test]
    fn mutated_psi() {
        let files = [
            "v2/6.1/cpu.pressure",
            "v2/6.1/memory.pressure",
            "v2/6.1/io.pressure",
            "v2/6.1/proc-pressure-cpu",
            "v2/6.1/proc-pressure-memory",
            "v2/6.1/proc-pressure-io",
        ];
        check_fixture_mutants("parse_psi", &files, |text| {
            let parsed = parse_psi(text);
            if let Ok(psi) = &parsed {
                // "full" is there if and only if the text has a full line; totals come from
                // the lines of their kind, averages are finite percentages.
                let kind = |kind: &str| -> Vec<&str> {
                    non_blank_lines(text)
                        .into_iter()
                        .filter(|l| l.split_whitespace().next() == Some(kind))
                        .collect()
                };
                prop_assert_eq!(psi.full.is_some(), !kind("full").is_empty());
                for (line, lines) in [(Some(psi.some), kind("some")), (psi.full, kind("full"))] {
                    let Some(line) = line else { continue };
                    prop_assert!(lines.iter().any(|l| appears(l, line.total_us)));
                    for avg in [line.avg10, line.avg60, line.avg300] {
                        prop_assert!(avg.is_finite() && avg >= 0.0);
                    }
                }
            }
            Ok(parsed.map(drop))
        });
        let psi = parse_psi(&fixture("v2/6.1/cpu.pressure")).unwrap();
        let some = PsiLine {
            avg10: 30.34,
            avg60: 8.15,
            avg300: 1.82,
            total_us: 5607054,
        };
        let full = PsiLine {
            avg10: 29.17,
            avg60: 7.92,
            avg300: 1.77,
            total_us: 5460261,
        };
        assert_eq!(
            psi,
            Psi {
                some,
                full: Some(full)
            }
        );
    }
}
