//! /proc/<pid>/mountinfo (proc(5)): one mount per line.

use super::ParseResult;
use crate::error::ParseError;

/// One line of mountinfo, with the fields proclens uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// `major:minor` of the mounted filesystem (field 3): one per superblock.
    pub device: String,
    /// Root of the mount within its filesystem (field 4), e.g. "/" or "/docker/abc".
    pub root: String,
    /// Mount point (field 5), octal escapes decoded.
    pub mount_point: String,
    /// Per-mount options (field 6), e.g. "ro,nosuid,nodev,relatime".
    pub mount_options: String,
    /// Filesystem type after the " - " separator, e.g. "cgroup", "cgroup2", "fuse.proclens".
    pub fs_type: String,
    /// Super block options, e.g. "rw,memory" (v1 cgroup lists its controllers here).
    pub super_options: String,
}

/// Parses mountinfo text; lines that do not have the documented shape are an error.
pub fn parse_mountinfo(text: &str) -> ParseResult<Vec<MountInfo>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> ParseResult<MountInfo> {
    let bad = || ParseError::new(format!("mountinfo: malformed line {line:?}"));
    let (left, right) = line.split_once(" - ").ok_or_else(bad)?;
    let fields: Vec<&str> = left.split(' ').collect();
    if fields.len() < 6 {
        return Err(bad());
    }
    let mut right = right.split(' ');
    let fs_type = right.next().ok_or_else(bad)?;
    let _source = right.next().ok_or_else(bad)?;
    let super_options = right.next().unwrap_or("");
    Ok(MountInfo {
        device: fields[2].to_string(),
        root: unescape(fields[3]),
        mount_point: unescape(fields[4]),
        mount_options: fields[5].to_string(),
        fs_type: fs_type.to_string(),
        super_options: super_options.to_string(),
    })
}

/// Decodes the kernel's octal escapes (`\040` for space, `\011`, `\012`, `\134`).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_fixture_mutants, fixture, non_blank_lines};
    use proptest::prelude::*;

    #[test]
    fn parses_cgroup_lines() {
        let text = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
        let mounts = parse_mountinfo(text).unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].mount_point, "/sys/fs/cgroup/cpu");
        assert_eq!(mounts[0].fs_type, "cgroup");
        assert_eq!(mounts[0].super_options, "rw,cpu");
        assert_eq!(mounts[0].device, "0:29");
        assert_eq!(mounts[0].mount_options, "rw,relatime");
        assert_eq!(mounts[1].fs_type, "cgroup2");
        assert_eq!(mounts[1].root, "/");
    }

    #[test]
    fn decodes_escapes() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape("/x\\"), "/x\\");
        assert_eq!(unescape("/x\\04"), "/x\\04");
    }

    #[test]
    fn rejects_lines_without_separator() {
        assert!(parse_mountinfo("1 2 3\n").is_err());
    }

    #[test]
    fn v2_fixture() {
        let mounts = parse_mountinfo(&fixture("v2/6.1/proc-self-mountinfo")).unwrap();
        assert_eq!(mounts.len(), 6);
        assert_eq!(
            mounts[5],
            MountInfo {
                device: "0:23".into(),
                root: "/".into(),
                mount_point: "/sys/fs/cgroup".into(),
                mount_options: "rw,nosuid,nodev,noexec,relatime".into(),
                fs_type: "cgroup2".into(),
                super_options: "rw,nsdelegate,memory_recursiveprot".into(),
            }
        );
    }

    #[test]
    fn mutated_fixtures() {
        let files = ["v1/6.18/proc-self-mountinfo", "v2/6.1/proc-self-mountinfo"];
        check_fixture_mutants("parse_mountinfo", &files, |text| {
            let parsed = parse_mountinfo(text);
            if let Ok(mounts) = &parsed {
                // One mount per line; its fields are on the line (decoded paths only compare
                // when the line has no escapes).
                let lines = non_blank_lines(text);
                prop_assert_eq!(mounts.len(), lines.len());
                for (mount, line) in mounts.iter().zip(&lines) {
                    let after = line.split_once(" - ").map(|(_, r)| r).unwrap_or("");
                    prop_assert!(after.starts_with(&mount.fs_type), "{mount:?} from {line:?}");
                    prop_assert!(after.contains(&mount.super_options));
                    if !line.contains('\\') {
                        for path in [&mount.root, &mount.mount_point] {
                            let field = format!(" {path} ");
                            prop_assert!(line.contains(&field), "{path:?} from {line:?}");
                        }
                    }
                }
            }
            Ok(parsed.map(drop))
        });
    }

    /// The kernel's escaping of a mountinfo path field.
    fn escape(path: &str) -> String {
        let mut out = String::new();
        for c in path.chars() {
            match c {
                ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
                c => out.push(c),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn unescape_inverts_the_kernel_escaping(path in ".{0,20}( |\t|\n|\\\\)?[0-7\\\\]{0,4}") {
            prop_assert_eq!(unescape(&escape(&path)), path);
        }
    }
}
