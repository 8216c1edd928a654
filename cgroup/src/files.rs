//! Kernel value files kept open and re-read with pread(2) at offset 0.
//!
//! Opening a cgroup or /proc file costs far more than generating its few bytes (a path walk, a
//! kernfs or procfs open and a release: ~7 µs against ~1 µs for the read itself, measured on a
//! 6.18 host). cgroupfs, sysfs and procfs generate a file afresh for a read at offset 0 through an
//! open descriptor, so a kept descriptor reads exactly what a new open would, with one exception
//! this cache relies on the kernel for: a descriptor outlives what it was opened on. A removed
//! cgroup's files fail with ENODEV and a dead task's /proc files with ESRCH; on any failure the
//! descriptor is dropped and the path opened again, so a cgroup recreated under the same path is
//! read from its new directory, never from the old one.
//!
//! Only files on cgroupfs, procfs and sysfs are kept, because only there does the kernel fail a
//! stale descriptor; any other file (a test's fake tree, say) is opened for every read.
//!
//! Not for files whose open descriptor carries state between reads: v1 `tasks` and
//! `cgroup.procs` keep a pid list per descriptor (reused for a second after the last read), so
//! thread lists are always read through a fresh open.
//!
//! Bounded: at most `capacity` descriptors (each costs the kernel an open file and a seq_file
//! buffer, about 4.5 KiB, and this process about 150 bytes). When full, the least recently used
//! quarter is closed (or, in a cache for reads in rounds, none: [`FileCache::for_rounds`]). One lock guards the table, held for a lookup only (never for a read):
//! two threads reading 1,000 cgroups' files through it wait on it for under 1 % of their time.
//!
//! A read goes into a buffer kept per thread (grown to the largest file read, never cleared),
//! then into a string of the text's own size: one allocation per read, none for the buffer.

use crate::error::{Error, ParseError, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// First read size; doubled while a read fills the buffer.
const FIRST_CHUNK: usize = 4096;

/// Open descriptors of kernel files by path, least recently used closed first.
#[derive(Debug)]
pub struct FileCache {
    capacity: usize,
    /// Keep descriptors of files on any filesystem (unit tests of the cache logic only).
    any_filesystem: bool,
    /// When full, keep the descriptors held rather than close the least recently used for a
    /// new file ([`FileCache::for_rounds`]).
    keep_when_full: bool,
    slots: Mutex<Slots>,
}

/// The table's hash: paths are hashed once per read, and SipHash (the default, resistant to
/// chosen keys) costs more than the rest of the lookup; kept paths are the kernel's files,
/// chosen by this process, not by an adversary.
type PathHash = BuildHasherDefault<FxHasher>;

/// The rustc/Firefox hash (a rotate, xor and multiply per 8 bytes), finished with MurmurHash3's
/// mixer so that every bit of the result depends on every byte: the table indexes by its low
/// bits, and paths of neighbouring cgroups differ in a few bytes in their middle.
#[derive(Debug, Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(SEED);
        }
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[derive(Debug, Default)]
struct Slots {
    /// Kept files by directory, then by name. A cgroup's files are read one after another, so
    /// its directory's entry is still in the processor's cache for the next one, and the table
    /// holds one entry per directory instead of one per file (a lookup in a table of 20,000
    /// files costs a few cache misses, more than the rest of the lookup). Keyed by the bytes
    /// of the directory with its final slash: hashing and comparing bytes is several times
    /// cheaper than `Path`'s component-wise hash and equality, and kept paths are always built
    /// the same way.
    by_dir: HashMap<Box<OsStr>, Vec<Slot>, PathHash>,
    /// Files kept, in all directories.
    len: usize,
    clock: u64,
    /// The clock at the last [`FileCache::close_idle`].
    idle_mark: u64,
}

#[derive(Debug)]
struct Slot {
    /// The file's name in its directory.
    name: Box<OsStr>,
    file: Arc<File>,
    used: u64,
}

thread_local! {
    /// The buffer reads of this thread go into.
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `path` as its directory with the final slash ("" when it has none) and the rest: the two
/// put together are `path`, so different paths never share both.
fn split(path: &Path) -> (&OsStr, &OsStr) {
    let bytes = path.as_os_str().as_bytes();
    let at = bytes.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    (
        OsStr::from_bytes(&bytes[..at]),
        OsStr::from_bytes(&bytes[at..]),
    )
}

impl FileCache {
    /// A cache keeping at most `capacity` descriptors (0: open every file for every read).
    pub fn new(capacity: usize) -> Self {
        FileCache {
            capacity,
            any_filesystem: false,
            keep_when_full: false,
            slots: Mutex::default(),
        }
    }

    /// A cache of at most `capacity` descriptors for a consumer that reads the same files in
    /// rounds (an exporter's collections) and calls [`FileCache::close_idle`] after each. When
    /// full, it keeps the descriptors it holds and reads a new file through a fresh open,
    /// instead of closing the least recently used: with more files per round than `capacity`,
    /// closing the least recently used closes exactly the files the next round reads first, so
    /// every read would miss and pay for an open, a close and the table's upkeep; keeping them
    /// makes `capacity` of each round's reads hits. Room made by `close_idle` (the files of
    /// removed cgroups) goes to the next new files.
    pub fn for_rounds(capacity: usize) -> Self {
        FileCache {
            keep_when_full: true,
            ..FileCache::new(capacity)
        }
    }

    /// Descriptors currently kept.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Whether no descriptor is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the whole of `path` as the kernel generates it now. Errors are those of a fresh
    /// open and read (a vanished file is [`Error::Vanished`]).
    pub fn read(&self, path: &Path) -> Result<String> {
        if self.capacity == 0 {
            return read_file(path);
        }
        let (dir, name) = split(path);
        let kept = {
            let mut slots = self.lock();
            slots.clock += 1;
            let clock = slots.clock;
            let files = slots.by_dir.get_mut(dir);
            files
                .and_then(|files| files.iter_mut().find(|slot| *slot.name == *name))
                .map(|slot| {
                    slot.used = clock;
                    Arc::clone(&slot.file)
                })
        };
        if let Some(file) = kept {
            if let Ok(text) = read_text(&file, path) {
                return text;
            }
            // Stale (the cgroup or task is gone) or failing: forget it and open the path again.
            self.forget(dir, name);
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let text = read_text(&file, path).map_err(|e| Error::io(path, e))?;
        if self.any_filesystem || fails_stale_descriptors(&file) {
            self.insert(dir, name, file);
        }
        text
    }

    /// Closes the descriptors not read since the previous call (a removed cgroup's, a gone
    /// container's), and gives back the table's spare room. Returns how many were closed.
    pub fn close_idle(&self) -> usize {
        let mut slots = self.lock();
        let Slots {
            by_dir,
            len,
            clock,
            idle_mark,
        } = &mut *slots;
        let before = *len;
        by_dir.retain(|_, files| {
            files.retain(|slot| slot.used > *idle_mark);
            !files.is_empty()
        });
        *len = by_dir.values().map(Vec::len).sum();
        shrink_if_sparse(by_dir);
        *idle_mark = *clock;
        before - *len
    }

    /// Closes the descriptor of `dir` + `name`, if kept.
    fn forget(&self, dir: &OsStr, name: &OsStr) {
        let mut slots = self.lock();
        let Slots { by_dir, len, .. } = &mut *slots;
        let Some(files) = by_dir.get_mut(dir) else {
            return;
        };
        if let Some(at) = files.iter().position(|slot| *slot.name == *name) {
            files.swap_remove(at);
            *len -= 1;
        }
        if files.is_empty() {
            by_dir.remove(dir);
        }
    }

    fn insert(&self, dir: &OsStr, name: &OsStr, file: File) {
        let mut slots = self.lock();
        let Slots {
            by_dir, len, clock, ..
        } = &mut *slots;
        let file = Arc::new(file);
        // Another thread may have opened and kept it meanwhile: keep one.
        if let Some(slot) = by_dir
            .get_mut(dir)
            .and_then(|files| files.iter_mut().find(|slot| *slot.name == *name))
        {
            slot.file = file;
            return;
        }
        if *len >= self.capacity {
            if self.keep_when_full {
                return;
            }
            *len -= evict_oldest_quarter(by_dir, *len);
        }
        by_dir.entry(dir.into()).or_default().push(Slot {
            name: name.into(),
            file,
            used: *clock,
        });
        *len += 1;
    }

    /// Whether the descriptor of `path` is kept.
    #[cfg(test)]
    fn keeps(&self, path: &Path) -> bool {
        let (dir, name) = split(path);
        self.lock()
            .by_dir
            .get(dir)
            .is_some_and(|files| files.iter().any(|slot| *slot.name == *name))
    }
}

/// Whether `file` is on cgroupfs (v1 or v2), procfs or sysfs, whose stale descriptors fail: a
/// removed cgroup's files with ENODEV, a dead task's /proc files with ESRCH.
pub fn fails_stale_descriptors(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    const SYSFS_MAGIC: i64 = 0x6265_6572;
    const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    // SAFETY: statfs is plain old data; fstatfs fills it for an open descriptor.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a pointer to a statfs the call may write.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libc targets.
    let kind = st.f_type as i64;
    matches!(
        kind,
        PROC_SUPER_MAGIC | SYSFS_MAGIC | CGROUP_SUPER_MAGIC | CGROUP2_SUPER_MAGIC
    )
}

/// Gives back a table's spare room once it is less than a quarter full (a table shrunk on every
/// check would only regrow under steady churn).
pub fn shrink_if_sparse<K: Eq + std::hash::Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    const SMALL: usize = 64;
    if map.capacity() > 4 * map.len().max(SMALL) {
        map.shrink_to_fit();
    }
}

/// Closes the least recently used quarter (at least one) of the `len` descriptors; returns how
/// many it closed.
fn evict_oldest_quarter(
    by_dir: &mut HashMap<Box<OsStr>, Vec<Slot>, PathHash>,
    len: usize,
) -> usize {
    let mut used: Vec<u64> = by_dir.values().flatten().map(|s| s.used).collect();
    if used.is_empty() {
        return 0;
    }
    let drop = (len / 4).max(1).min(used.len());
    let (_, cutoff, _) = used.select_nth_unstable(drop - 1);
    let cutoff = *cutoff;
    let mut left = drop;
    by_dir.retain(|_, files| {
        files.retain(|slot| {
            if left > 0 && slot.used <= cutoff {
                left -= 1;
                false
            } else {
                true
            }
        });
        !files.is_empty()
    });
    drop - left
}

/// One pread(2) of `file` at `offset`, retried if a signal interrupts it. At offset 0, procfs,
/// sysfs and cgroupfs generate the file afresh.
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Reads `file` from offset 0 to its end with pread into `buf` (grown as needed, never shrunk:
/// its length is what is initialized), so the kernel generates it afresh; returns the length
/// read. procfs, sysfs and cgroupfs return all that fits in one read, so a short read is the end.
fn read_whole(file: &File, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.len() < FIRST_CHUNK {
        buf.resize(FIRST_CHUNK, 0);
    }
    let mut len = 0;
    loop {
        let n = read_at(file, &mut buf[len..], len as u64)?;
        len += n;
        if len < buf.len() {
            return Ok(len);
        }
        buf.resize(2 * buf.len(), 0);
    }
}

/// Reads the whole of `file` through this thread's buffer into a string of its size. The outer
/// result is the read's, the inner the text's (`path` names the file if it is not UTF-8).
fn read_text(file: &File, path: &Path) -> io::Result<Result<String>> {
    READ_BUFFER.with(|buf| {
        // A thread reading within a read (never, but not a panic if it ever did): a buffer of
        // its own.
        let mut own = Vec::new();
        let mut shared = buf.try_borrow_mut();
        let buf = match shared.as_deref_mut() {
            Ok(buf) => buf,
            Err(_) => &mut own,
        };
        let len = read_whole(file, buf)?;
        Ok(match std::str::from_utf8(&buf[..len]) {
            Ok(text) => Ok(text.to_owned()),
            Err(_) => Err(Error::parse(path, ParseError::new("not UTF-8 text"))),
        })
    })
}

/// Reads a whole kernel file through a fresh open, mapping errors with the path. procfs, sysfs
/// and cgroupfs return everything that fits in one read, so a short read is the end: no extra
/// read for EOF and no stat for a size hint.
pub fn read_file(path: &Path) -> Result<String> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    read_text(&file, path).map_err(|e| Error::io(path, e))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::FakeTree;

    /// A cache that keeps descriptors of the test's regular files too.
    fn cache(capacity: usize) -> FileCache {
        FileCache {
            any_filesystem: true,
            ..FileCache::new(capacity)
        }
    }

    #[test]
    fn reads_the_current_content_through_a_kept_descriptor() {
        let tree = FakeTree::new();
        tree.write("a", "1\n");
        let cache = cache(4);
        assert_eq!(cache.read(&tree.path("a")).unwrap(), "1\n");
        assert_eq!(cache.len(), 1);
        std::fs::write(tree.path("a"), "22\n").unwrap();
        assert_eq!(cache.read(&tree.path("a")).unwrap(), "22\n");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_missing_file_is_vanished() {
        let tree = FakeTree::new();
        let err = cache(4).read(&tree.path("gone")).unwrap_err();
        assert!(matches!(err, Error::Vanished { .. }), "{err}");
    }

    #[test]
    fn only_kernel_files_are_kept() {
        let tree = FakeTree::new();
        tree.write("a", "1\n");
        let real = FileCache::new(4);
        real.read(&tree.path("a")).unwrap();
        assert!(
            real.is_empty(),
            "a regular file's descriptor would outlive its removal"
        );
        real.read(Path::new("/proc/self/stat")).unwrap();
        real.read(Path::new("/sys/devices/system/cpu/online"))
            .unwrap();
        assert_eq!(real.len(), 2);
    }

    #[test]
    fn a_dead_tasks_descriptor_is_replaced_by_the_paths_current_file() {
        // Kept /proc/<pid>/stat of a process that exits: the next read opens the path again,
        // which no longer exists.
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let path = std::path::PathBuf::from(format!("/proc/{}/stat", child.id()));
        let real = FileCache::new(4);
        assert!(real.read(&path).unwrap().contains("(sleep)"));
        child.kill().unwrap();
        child.wait().unwrap();
        let err = real.read(&path).unwrap_err();
        assert!(matches!(err, Error::Vanished { .. }), "{err}");
        assert!(real.is_empty());
    }

    #[test]
    fn idle_descriptors_are_closed_and_read_ones_kept() {
        let tree = FakeTree::new();
        for name in ["a", "b", "c"] {
            tree.write(name, name);
        }
        let cache = cache(8);
        for name in ["a", "b"] {
            cache.read(&tree.path(name)).unwrap();
        }
        assert_eq!(cache.close_idle(), 0, "both were read since the start");
        cache.read(&tree.path("a")).unwrap();
        cache.read(&tree.path("c")).unwrap();
        assert_eq!(cache.close_idle(), 1, "b was not read since the last call");
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.read(&tree.path("b")).unwrap(), "b");
        assert_eq!(cache.close_idle(), 2, "a and c idle, b read");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn tables_shrink_only_when_mostly_empty() {
        let mut map: HashMap<u32, u32> = (0..1000).map(|i| (i, i)).collect();
        let full = map.capacity();
        map.retain(|&k, _| k < 600);
        shrink_if_sparse(&mut map);
        // Not shrunk: a table sized for 600 would hold fewer than 1,000 (capacity() can drop a
        // little without a shrink, for slots the removals left marked deleted).
        assert!(map.capacity() >= 1000, "{}", map.capacity());
        map.retain(|&k, _| k < 10);
        shrink_if_sparse(&mut map);
        assert!(map.capacity() < full / 4, "{}", map.capacity());
        assert_eq!(map.len(), 10);
    }

    #[test]
    fn bounded_least_recently_used_go_first() {
        let tree = FakeTree::new();
        for name in ["a", "b", "c", "d", "e"] {
            tree.write(name, name);
        }
        let cache = cache(4);
        for name in ["a", "b", "c", "d"] {
            cache.read(&tree.path(name)).unwrap();
        }
        cache.read(&tree.path("a")).unwrap();
        cache.read(&tree.path("e")).unwrap();
        assert_eq!(cache.len(), 4);
        let kept: Vec<bool> = ["a", "b", "e"]
            .iter()
            .map(|n| cache.keeps(&tree.path(n)))
            .collect();
        assert_eq!(kept, [true, false, true], "b was the least recently used");
    }

    #[test]
    fn a_cache_for_rounds_keeps_what_it_holds_when_full() {
        let tree = FakeTree::new();
        for name in ["a", "b", "c"] {
            tree.write(name, name);
        }
        let cache = FileCache {
            any_filesystem: true,
            ..FileCache::for_rounds(2)
        };
        for round in 0..3 {
            for name in ["a", "b", "c"] {
                assert_eq!(cache.read(&tree.path(name)).unwrap(), name, "round {round}");
            }
            let kept: Vec<bool> = ["a", "b", "c"]
                .iter()
                .map(|n| cache.keeps(&tree.path(n)))
                .collect();
            assert_eq!(kept, [true, true, false], "round {round}: c is read afresh");
            assert_eq!(cache.close_idle(), 0);
        }
        // A round without b (its cgroup removed): b closes, and c takes its place.
        for name in ["a", "c"] {
            cache.read(&tree.path(name)).unwrap();
        }
        assert_eq!(cache.close_idle(), 1);
        cache.read(&tree.path("c")).unwrap();
        assert!(cache.keeps(&tree.path("c")));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn large_files_are_read_whole() {
        let tree = FakeTree::new();
        let big = "x".repeat(3 * FIRST_CHUNK + 5);
        tree.write("big", &big);
        let cache = cache(1);
        assert_eq!(cache.read(&tree.path("big")).unwrap(), big);
        assert_eq!(cache.read(&tree.path("big")).unwrap(), big);
        // The thread's buffer is now larger than a small file: only what was read is text.
        tree.write("small", "1\n");
        assert_eq!(cache.read(&tree.path("small")).unwrap(), "1\n");
        assert_eq!(read_file(&tree.path("small")).unwrap(), "1\n");
    }

    #[test]
    fn a_path_splits_into_its_directory_and_name_and_back() {
        for (path, dir, name) in [
            ("/a/b/c", "/a/b/", "c"),
            ("/x", "/", "x"),
            ("x", "", "x"),
            ("a/", "a/", ""),
        ] {
            let (d, n) = split(Path::new(path));
            assert_eq!((d, n), (OsStr::new(dir), OsStr::new(name)), "{path}");
        }
    }

    #[test]
    fn files_of_several_directories_are_kept_and_counted_apart() {
        let tree = FakeTree::new();
        for name in ["c1/a", "c1/b", "c2/a", "c2/b"] {
            tree.write(name, name);
        }
        let cache = cache(3);
        for name in ["c1/a", "c2/a", "c1/b"] {
            assert_eq!(cache.read(&tree.path(name)).unwrap(), name);
        }
        assert_eq!(cache.len(), 3);
        // Full: the least recently used (c1/a) goes for c2/b.
        assert_eq!(cache.read(&tree.path("c2/b")).unwrap(), "c2/b");
        assert_eq!(cache.len(), 3);
        let kept: Vec<bool> = ["c1/a", "c1/b", "c2/a", "c2/b"]
            .iter()
            .map(|n| cache.keeps(&tree.path(n)))
            .collect();
        assert_eq!(kept, [false, true, true, true]);
        cache.close_idle();
        cache.read(&tree.path("c1/b")).unwrap();
        assert_eq!(
            cache.close_idle(),
            2,
            "c2/a and c2/b idle since the last call"
        );
        assert_eq!(cache.len(), 1);
        assert!(cache.keeps(&tree.path("c1/b")));
    }

    #[test]
    fn neighbouring_paths_spread_over_the_tables_buckets() {
        // The table indexes by the hash's low bits: 1,000 paths differing in their middle
        // should fill about as many of 1,024 buckets as random hashes would (632 expected).
        let buckets: std::collections::HashSet<u64> = (0..1000)
            .map(|i| {
                let path = format!("/sys/fs/cgroup/memory/bench/c{i}/memory.stat");
                PathHash::default().hash_one(OsStr::new(&path)) & 1023
            })
            .collect();
        assert!(buckets.len() > 580, "{} buckets", buckets.len());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let tree = FakeTree::new();
        tree.write("a", "1");
        let cache = cache(0);
        assert_eq!(cache.read(&tree.path("a")).unwrap(), "1");
        assert!(cache.is_empty());
    }
}
