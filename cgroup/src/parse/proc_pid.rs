//! Per-process /proc files: `/proc/<pid>/cgroup`, `/proc/<pid>/stat`, `/proc/<pid>/status`.

use super::{number, ParseResult};
use crate::error::ParseError;

/// One line of /proc/<pid>/cgroup: `hierarchy-ID:controller-list:cgroup-path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    /// Hierarchy id; 0 for the cgroup v2 unified hierarchy.
    pub hierarchy_id: u32,
    /// Controllers bound to the hierarchy (v1), e.g. ["cpu", "cpuacct"] or ["name=systemd"];
    /// empty for v2.
    pub controllers: Vec<String>,
    /// The process's cgroup path in that hierarchy, absolute ("/", "/a/b").
    pub path: String,
}

/// Parses /proc/<pid>/cgroup.
pub fn parse_pid_cgroup(text: &str) -> ParseResult<Vec<CgroupLine>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(ParseError::new(format!("cgroup: malformed line {line:?}")));
            };
            let hierarchy_id = u32::try_from(number(id, "cgroup hierarchy id")?)
                .map_err(|_| ParseError::new("cgroup: hierarchy id out of range"))?;
            if !path.starts_with('/') {
                return Err(ParseError::new(format!(
                    "cgroup: path not absolute in {line:?}"
                )));
            }
            let controllers = if controllers.is_empty() {
                Vec::new()
            } else {
                controllers.split(',').map(str::to_string).collect()
            };
            Ok(CgroupLine {
                hierarchy_id,
                controllers,
                path: path.to_string(),
            })
        })
        .collect()
}

/// The fields of /proc/<pid>/stat that proclens uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Scheduler state letter: R running, D uninterruptible, S sleeping, ...
    pub state: char,
    /// Parent pid, in the reader's pid namespace.
    pub ppid: u32,
    /// Start time after boot, in clock ticks (USER_HZ).
    pub start_time_ticks: u64,
}

/// Parses /proc/<pid>/stat. The command name may contain spaces and parentheses, so fields are
/// counted after the last ')'.
pub fn parse_proc_stat(text: &str) -> ParseResult<ProcStat> {
    let close = text
        .rfind(')')
        .ok_or_else(|| ParseError::new("stat: no ')' after comm"))?;
    let rest = text.get(close + 1..).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); starttime is field 22.
    if fields.len() < 20 {
        return Err(ParseError::new(format!(
            "stat: {} fields after comm, need 20",
            fields.len()
        )));
    }
    let state = fields[0]
        .chars()
        .next()
        .filter(|_| fields[0].len() == 1)
        .ok_or_else(|| ParseError::new(format!("stat: bad state {:?}", fields[0])))?;
    let ppid = u32::try_from(number(fields[1], "stat ppid")?)
        .map_err(|_| ParseError::new("stat: ppid out of range"))?;
    let start_time_ticks = number(fields[19], "stat starttime")?;
    Ok(ProcStat {
        state,
        ppid,
        start_time_ticks,
    })
}

/// The fields of /proc/<pid>/status that proclens uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStatus {
    /// `NSpid`: the pid in each nested pid namespace, outermost (the reader's) first.
    pub ns_pids: Vec<u32>,
}

/// Parses the `NSpid:` line of /proc/<pid>/status (present since Linux 4.1).
pub fn parse_proc_status(text: &str) -> ParseResult<ProcStatus> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .ok_or_else(|| ParseError::new("status: no NSpid line"))?;
    let ns_pids = line
        .split_whitespace()
        .map(|t| {
            u32::try_from(number(t, "status NSpid")?)
                .map_err(|_| ParseError::new("status: NSpid out of range"))
        })
        .collect::<ParseResult<Vec<u32>>>()?;
    if ns_pids.is_empty() {
        return Err(ParseError::new("status: empty NSpid line"));
    }
    Ok(ProcStatus { ns_pids })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{appears, check_fixture_mutants, fixture};
    use proptest::prelude::*;

    #[test]
    fn cgroup_v1_hybrid() {
        let lines = parse_pid_cgroup(&fixture("v1/6.18/proc-pid-cgroup")).unwrap();
        let memory = lines.iter().find(|l| l.controllers == ["memory"]).unwrap();
        assert!(memory.path.starts_with('/'));
        let unified = lines.iter().find(|l| l.hierarchy_id == 0).unwrap();
        assert!(unified.controllers.is_empty());
        assert!(lines.iter().any(|l| l.controllers == ["name=systemd"]));
    }

    #[test]
    fn cgroup_v2() {
        let lines = parse_pid_cgroup(&fixture("v2/6.1/proc-pid-cgroup")).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].hierarchy_id, 0);
        assert_eq!(lines[0].path, "/fixture");
    }

    #[test]
    fn cgroup_path_with_colon() {
        let lines = parse_pid_cgroup("0::/a:b\n").unwrap();
        assert_eq!(lines[0].path, "/a:b");
        assert!(parse_pid_cgroup("0:/x\n").is_err());
        assert!(parse_pid_cgroup("x::/\n").is_err());
    }

    #[test]
    fn stat_fixtures() {
        for name in ["v1/6.18/proc-pid-stat", "v2/6.1/proc-pid-stat"] {
            let stat = parse_proc_stat(&fixture(name)).unwrap();
            assert!(stat.start_time_ticks > 0, "{name}");
        }
    }

    #[test]
    fn stat_comm_with_parens_and_spaces() {
        let text = "42 (a) b) (c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 0 0";
        let stat = parse_proc_stat(text).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                state: 'S',
                ppid: 1,
                start_time_ticks: 777
            }
        );
        assert!(parse_proc_stat("42 (x) S 1").is_err());
    }

    #[test]
    fn status_nspid() {
        let status = parse_proc_status("Name:\tx\nNSpid:\t1234\t1\n").unwrap();
        assert_eq!(status.ns_pids, vec![1234, 1]);
        for name in ["v1/6.18/proc-pid-status", "v2/6.1/proc-pid-status"] {
            assert!(
                !parse_proc_status(&fixture(name))
                    .unwrap()
                    .ns_pids
                    .is_empty(),
                "{name}"
            );
        }
        assert!(parse_proc_status("Name:\tx\n").is_err());
        assert!(parse_proc_status("NSpid:\n").is_err());
        assert!(parse_proc_status("NSpid:\t1\tx\n").is_err());
    }

    #[test]
    fn mutated_pid_cgroup() {
        let files = ["v1/6.18/proc-pid-cgroup", "v2/6.1/proc-pid-cgroup"];
        check_fixture_mutants("parse_pid_cgroup", &files, |text| {
            let parsed = parse_pid_cgroup(text);
            if let Ok(lines) = &parsed {
                // One entry per line, which ends in ":controllers:path".
                let text_lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
                prop_assert_eq!(lines.len(), text_lines.len());
                for (entry, line) in lines.iter().zip(&text_lines) {
                    let tail = format!(":{}:{}", entry.controllers.join(","), entry.path);
                    prop_assert!(line.ends_with(&tail), "{entry:?} from {line:?}");
                    prop_assert!(entry.path.starts_with('/'));
                    prop_assert!(appears(line, entry.hierarchy_id));
                }
            }
            Ok(parsed.map(drop))
        });
    }

    #[test]
    fn mutated_proc_stat() {
        let files = ["v1/6.18/proc-pid-stat", "v2/6.1/proc-pid-stat"];
        check_fixture_mutants("parse_proc_stat", &files, |text| {
            let parsed = parse_proc_stat(text);
            if let Ok(stat) = &parsed {
                // The fields come from after the last ')'.
                let after = &text[text.rfind(')').unwrap_or(0)..];
                prop_assert!(after.contains(stat.state));
                prop_assert!(appears(after, stat.ppid) && appears(after, stat.start_time_ticks));
            }
            Ok(parsed.map(drop))
        });
        let expected = [
            ("v1/6.18/proc-pid-stat", 4363, 21051),
            ("v2/6.1/proc-pid-stat", 1, 445),
        ];
        for (name, ppid, start_time_ticks) in expected {
            let stat = ProcStat {
                state: 'S',
                ppid,
                start_time_ticks,
            };
            assert_eq!(parse_proc_stat(&fixture(name)).unwrap(), stat, "{name}");
        }
    }

    #[test]
    fn mutated_proc_status() {
        let files = ["v1/6.18/proc-pid-status", "v2/6.1/proc-pid-status"];
        check_fixture_mutants("parse_proc_status", &files, |text| {
            let parsed = parse_proc_status(text);
            if let Ok(status) = &parsed {
                // The pids come from the first NSpid line.
                let line = text.lines().find(|l| l.starts_with("NSpid:"));
                prop_assert!(line.is_some());
                for pid in &status.ns_pids {
                    prop_assert!(appears(line.unwrap_or(""), pid));
                }
            }
            Ok(parsed.map(drop))
        });
        // The workload's pid, as in cgroup.procs (a single pid namespace).
        for (version, pid) in [("v1/6.18", 4380), ("v2/6.1", 108)] {
            let status = parse_proc_status(&fixture(&format!("{version}/proc-pid-status")));
            assert_eq!(status.unwrap().ns_pids, [pid]);
            let procs = fixture(&format!("{version}/cgroup.procs"));
            assert_eq!(procs.trim(), pid.to_string());
        }
    }
}
