//! Gives back resident pages a process touched only while it started, so its resident set is
//! what it uses from then on.
//!
//! Two kinds of memory are released:
//! - free heap memory, with `malloc_trim(0)` (glibc returns the top of each arena and
//!   `madvise`s whole free pages inside it);
//! - page-table entries of read-only, private file mappings that hold no private copy of any
//!   page (`Anonymous: 0 kB` in `/proc/self/smaps`): the binary's code and constants, libc's,
//!   ld.so's. `MADV_DONTNEED` on such a mapping only unmaps pages of the page cache; the next
//!   access maps the same bytes again from the file, exactly as after the kernel reclaimed
//!   them. Writable mappings, and read-only ones with a private copy (RELRO, a page a debugger
//!   patched), are never touched, because there `MADV_DONTNEED` would discard that copy.

use std::io;

/// What [`release_startup_pages`] released.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Mappings whose pages were unmapped.
    pub mappings: usize,
    /// Resident kB of those mappings before.
    pub file_kb: u64,
}

/// One mapping of `/proc/self/smaps` with the fields the decision needs.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    perms: String,
    inode: u64,
    rss_kb: u64,
    anonymous_kb: u64,
}

impl Mapping {
    /// Whether dropping the mapping's page-table entries can change nothing the process sees.
    fn is_clean_file_copy(&self) -> bool {
        let perms = self.perms.as_bytes();
        self.inode != 0
            && perms.first() == Some(&b'r')
            && perms.get(1) == Some(&b'-')
            && perms.get(3) == Some(&b'p')
            && self.anonymous_kb == 0
            && self.rss_kb > 0
    }
}

/// Parses `/proc/<pid>/smaps` text into its mappings (fields not needed are skipped).
fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-') {
            let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) else {
                continue;
            };
            let perms = fields.next().unwrap_or("").to_string();
            let inode = fields.nth(2).and_then(|i| i.parse().ok()).unwrap_or(0);
            out.push(Mapping {
                start,
                end,
                perms,
                inode,
                rss_kb: 0,
                anonymous_kb: u64::MAX,
            });
            continue;
        }
        let Some(mapping) = out.last_mut() else {
            continue;
        };
        let value = || fields.clone().next().and_then(|v| v.parse::<u64>().ok());
        match first {
            "Rss:" => mapping.rss_kb = value().unwrap_or(0),
            "Anonymous:" => mapping.anonymous_kb = value().unwrap_or(u64::MAX),
            _ => {}
        }
    }
    out
}

/// Gives the allocator's free memory back to the kernel: whole free pages inside each arena as
/// well as the top of the heap.
pub fn trim_heap() {
    // SAFETY: malloc_trim only returns free memory of the allocator to the kernel.
    unsafe { libc::malloc_trim(0) };
}

/// Releases the free heap and unmaps the pages of clean read-only file mappings (see the
/// module documentation). Safe at any time: what is unmapped is mapped again on the next
/// access. Costs one read of `/proc/self/smaps` and a few syscalls.
pub fn release_startup_pages() -> io::Result<Released> {
    trim_heap();
    let text = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = Released::default();
    for mapping in parse_smaps(&text).iter().filter(|m| m.is_clean_file_copy()) {
        // SAFETY: the range is exactly one existing mapping of this process that is private,
        // not writable and holds no anonymous (copied) page: MADV_DONTNEED drops only
        // page-table entries of page-cache pages, which later accesses fault in again with the
        // same contents.
        let rc = unsafe {
            libc::madvise(
                mapping.start as *mut libc::c_void,
                mapping.end - mapping.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        released.mappings += 1;
        released.file_kb += mapping.rss_kb;
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
558a6eb9b000-558a6ec17000 r--p 00000000 fe:01 1234 /usr/bin/proclens-fused
Size:                496 kB
Rss:                 340 kB
Anonymous:             0 kB
558a6ec17000-558a6eda8000 r-xp 0007c000 fe:01 1234 /usr/bin/proclens-fused
Rss:                1284 kB
Anonymous:             0 kB
558a6eda8000-558a6edb9000 r--p 0020c000 fe:01 1234 /usr/bin/proclens-fused
Rss:                  68 kB
Anonymous:            68 kB
558a6edb9000-558a6edbb000 rw-p 0021d000 fe:01 1234 /usr/bin/proclens-fused
Rss:                   8 kB
Anonymous:             8 kB
558a83f2a000-558a83f4b000 rw-p 00000000 00:00 0 [heap]
Rss:                  60 kB
Anonymous:            60 kB
7f8b90f09000-7f8b933ca000 rw-s 00000000 00:01 77 /memfd:proclens-state (deleted)
Rss:                 772 kB
Anonymous:             0 kB
7ff55ab56000-7ff55ab6d000 r-xp 00003000 fe:01 99 /usr/lib/x86_64-linux-gnu/libgcc_s.so.1
Rss:                   0 kB
Anonymous:             0 kB
7ff55ab84000-7ff55ab86000 r-xp 00000000 00:00 0 [vdso]
Rss:                   4 kB
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_private_file_mappings_are_released() {
        let mappings = parse_smaps(SMAPS);
        assert_eq!(mappings.len(), 8);
        assert_eq!(
            mappings[1],
            Mapping {
                start: 0x558a6ec17000,
                end: 0x558a6eda8000,
                perms: "r-xp".into(),
                inode: 1234,
                rss_kb: 1284,
                anonymous_kb: 0,
            }
        );
        let chosen: Vec<bool> = mappings.iter().map(Mapping::is_clean_file_copy).collect();
        // Code and constants: yes. RELRO (a private copy), data, heap, the shared memfd, an
        // empty mapping and the vdso: no.
        assert_eq!(
            chosen,
            [true, true, false, false, false, false, false, false]
        );
    }

    #[test]
    fn a_mapping_without_an_anonymous_line_is_left_alone() {
        let mappings = parse_smaps("1000-2000 r-xp 00000000 fe:01 5 /bin/x\nRss: 4 kB\n");
        assert!(!mappings[0].is_clean_file_copy());
    }

    #[test]
    fn releasing_keeps_the_process_working() {
        let released = release_startup_pages().unwrap();
        assert!(released.mappings > 0, "{released:?}");
        // Code and constants come back on use.
        let text = format!("{:?}", parse_smaps(SMAPS).len());
        assert_eq!(text, "8");
    }
}
