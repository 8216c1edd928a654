//! The per-container subtree, `<mnt>/containers/<pid>/proc/<file>`: one set of inodes per
//! container, so a file's content can stay in the kernel's page cache between changes. In the
//! lxcfs layout every container opens the same inode and each read must reach the daemon
//! (direct_io); here the inode itself belongs to one container, so an open whose content is
//! unchanged (or rendered less than `--subtree-max-age` ago) is answered with FOPEN_KEEP_CACHE
//! and its reads never leave the kernel.
//!
//! `<pid>` names the container of that process (host pid namespace) when it is looked up; the
//! directory and the files under it are the container's, whoever reads them afterwards. Their
//! inode numbers are built from the container's state key (its cgroup paths and directory
//! inodes), so a container keeps its inodes across lookups by different pids and across worker
//! restarts. A worker that meets an inode it did not hand out (after a restart, or once the
//! table dropped the container) takes the container from the reader, and serves only a reader
//! whose container has that key.

use crate::render::Computed;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Inode bit of every subtree node (the lxcfs layout's inodes stay below 2^62 + 1024).
const SUBTREE_BIT: u64 = 1 << 63;
/// Low bits of a subtree inode: which node of the container it is.
const NODE_BITS: u32 = 8;
/// The container part of a subtree inode: 55 bits of its state key.
const CONTAINER_MASK: u64 = (1 << (63 - NODE_BITS)) - 1;
/// Node number of `<pid>/` itself.
const NODE_DIR: u64 = 0xff;
/// Node number of `<pid>/proc/`.
const NODE_PROC: u64 = 0xfe;

/// The files under `<pid>/proc/`, by node number.
pub const FILES: [(Computed, &str); 8] = [
    (Computed::Cpuinfo, "cpuinfo"),
    (Computed::Diskstats, "diskstats"),
    (Computed::Loadavg, "loadavg"),
    (Computed::Meminfo, "meminfo"),
    (Computed::Slabinfo, "slabinfo"),
    (Computed::Stat, "stat"),
    (Computed::Swaps, "swaps"),
    (Computed::Uptime, "uptime"),
];

/// Most containers remembered; beyond it the least recently used quarter is dropped (their
/// inodes keep working: the next reader from the container brings it back).
const CAPACITY: usize = 4096;
/// Rendered content is kept this long after its rendering, for the reads that fill the page
/// cache after an open; later reads that miss the page cache render again.
const CONTENT_TTL: Duration = Duration::from_secs(10);

/// A subtree node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// `<pid>/`
    Dir(u64),
    /// `<pid>/proc/`
    Proc(u64),
    /// `<pid>/proc/<FILES[index]>`
    File(u64, usize),
}

impl Node {
    /// The node of inode `ino`, if it is a subtree inode.
    pub fn of_ino(ino: u64) -> Option<Node> {
        if ino & SUBTREE_BIT == 0 {
            return None;
        }
        let container = (ino >> NODE_BITS) & CONTAINER_MASK;
        match ino & ((1 << NODE_BITS) - 1) {
            NODE_DIR => Some(Node::Dir(container)),
            NODE_PROC => Some(Node::Proc(container)),
            n if (n as usize) < FILES.len() => Some(Node::File(container, n as usize)),
            _ => None,
        }
    }

    /// The node's inode number.
    pub fn ino(self) -> u64 {
        let (container, node) = match self {
            Node::Dir(c) => (c, NODE_DIR),
            Node::Proc(c) => (c, NODE_PROC),
            Node::File(c, index) => (c, index as u64),
        };
        SUBTREE_BIT | ((container & CONTAINER_MASK) << NODE_BITS) | node
    }
}

/// The container part of the inodes of the container with state key `key`.
pub fn container_of_key(key: [u64; 2]) -> u64 {
    key[0] & CONTAINER_MASK
}

/// The last rendering of one file.
#[derive(Debug, Default)]
struct Snapshot {
    /// Its fingerprint and length: what the page cache holds, as far as we know.
    hash: Option<([u64; 2], u64)>,
    /// The bytes, for reads that miss the page cache, kept for [`CONTENT_TTL`].
    content: Option<Arc<[u8]>>,
    rendered: Option<Instant>,
}

#[derive(Debug)]
struct Entry<C> {
    caller: C,
    key: [u64; 2],
    files: [Snapshot; FILES.len()],
    used: Instant,
}

/// What an open of a subtree file answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReply {
    /// The page cache still holds the current content: FOPEN_KEEP_CACHE.
    pub keep_cache: bool,
    /// The length changed (or is not known to the kernel): its cached attributes must go.
    pub length_changed: bool,
}

/// Why a container cannot be given a subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Another container already has inodes with this container part (a 55-bit collision).
    Collision,
}

/// The containers with a subtree (each with the caller `C` whose view its files show), and
/// their files' last renderings.
#[derive(Debug)]
pub struct Subtree<C> {
    max_age: Duration,
    entries: Mutex<HashMap<u64, Entry<C>>>,
}

fn fingerprint(bytes: &[u8]) -> ([u64; 2], u64) {
    (crate::caller::text_hash(bytes), bytes.len() as u64)
}

impl<C: Clone> Subtree<C> {
    /// A table whose files are rendered again at an open once older than `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Subtree {
            max_age,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry<C>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `caller`'s container (state key `key`); returns the container part of its inodes.
    pub fn register(&self, caller: &C, key: [u64; 2]) -> Result<u64, Refused> {
        let container = container_of_key(key);
        let mut entries = self.lock();
        match entries.get_mut(&container) {
            Some(entry) if entry.key == key => {
                entry.used = Instant::now();
                return Ok(container);
            }
            Some(_) => return Err(Refused::Collision),
            None => {}
        }
        if entries.len() >= CAPACITY {
            let mut used: Vec<Instant> = entries.values().map(|e| e.used).collect();
            let quarter = used.len() / 4;
            let cutoff = *used.select_nth_unstable(quarter).1;
            entries.retain(|_, e| e.used > cutoff);
        }
        entries.insert(
            container,
            Entry {
                caller: caller.clone(),
                key,
                files: Default::default(),
                used: Instant::now(),
            },
        );
        Ok(container)
    }

    /// The caller whose view the files of `container` show, if known.
    pub fn caller(&self, container: u64) -> Option<C> {
        let mut entries = self.lock();
        let entry = entries.get_mut(&container)?;
        entry.used = Instant::now();
        Some(entry.caller.clone())
    }

    /// Whether a file was rendered less than the maximum age ago (its open keeps the cache).
    fn fresh(&self, container: u64, index: usize) -> bool {
        let entries = self.lock();
        entries
            .get(&container)
            .and_then(|e| e.files.get(index)?.rendered)
            .is_some_and(|at| at.elapsed() < self.max_age)
    }

    /// Records a new rendering of a file and says what an open must answer for it.
    fn store(&self, container: u64, index: usize, content: Vec<u8>) -> OpenReply {
        let print = fingerprint(&content);
        let mut entries = self.lock();
        let Some(file) = entries
            .get_mut(&container)
            .and_then(|e| e.files.get_mut(index))
        else {
            return OpenReply {
                keep_cache: false,
                length_changed: true,
            };
        };
        let reply = match file.hash {
            Some(known) if known == print => OpenReply {
                keep_cache: true,
                length_changed: false,
            },
            Some((_, len)) => OpenReply {
                keep_cache: false,
                length_changed: len != print.1,
            },
            None => OpenReply {
                keep_cache: false,
                length_changed: true,
            },
        };
        file.hash = Some(print);
        file.content = Some(content.into());
        file.rendered = Some(Instant::now());
        reply
    }

    /// Answers an open of file `index` of `container`: keeps the page cache while the file is
    /// younger than the maximum age, otherwise renders it (with `render`, called without the
    /// table's lock) and keeps the cache only if the content is unchanged.
    pub fn open<E>(
        &self,
        container: u64,
        index: usize,
        render: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<OpenReply, E> {
        if self.fresh(container, index) {
            return Ok(OpenReply {
                keep_cache: true,
                length_changed: false,
            });
        }
        Ok(self.store(container, index, render()?))
    }

    /// The content of a file for a read (the last rendering if kept, else a new one).
    pub fn content<E>(
        &self,
        container: u64,
        index: usize,
        render: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Arc<[u8]>, E> {
        let kept = {
            let entries = self.lock();
            entries
                .get(&container)
                .and_then(|e| e.files.get(index)?.content.clone())
        };
        if let Some(content) = kept {
            return Ok(content);
        }
        let content: Arc<[u8]> = render()?.into();
        let mut entries = self.lock();
        if let Some(file) = entries
            .get_mut(&container)
            .and_then(|e| e.files.get_mut(index))
        {
            file.hash = Some(fingerprint(&content));
            file.content = Some(Arc::clone(&content));
            file.rendered = Some(Instant::now());
        }
        Ok(content)
    }

    /// The length of a file as the kernel should know it (rendering it if never rendered).
    pub fn length<E>(
        &self,
        container: u64,
        index: usize,
        render: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<u64, E> {
        let known = {
            let entries = self.lock();
            entries
                .get(&container)
                .and_then(|e| e.files.get(index)?.hash)
                .map(|(_, len)| len)
        };
        match known {
            Some(len) => Ok(len),
            None => Ok(self.content(container, index, render)?.len() as u64),
        }
    }

    /// Drops content kept longer than [`CONTENT_TTL`] (fingerprints stay); returns how many
    /// files' content went.
    pub fn prune(&self) -> usize {
        let mut dropped = 0;
        let mut entries = self.lock();
        for file in entries.values_mut().flat_map(|e| e.files.iter_mut()) {
            if file.content.is_some() && file.rendered.is_none_or(|at| at.elapsed() >= CONTENT_TTL)
            {
                file.content = None;
                dropped += 1;
            }
        }
        proclens_cgroup::files::shrink_if_sparse(&mut entries);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_numbers_round_trip_and_stay_out_of_the_lxcfs_layout() {
        let container = container_of_key([u64::MAX, 7]);
        for node in [
            Node::Dir(container),
            Node::Proc(container),
            Node::File(container, 0),
            Node::File(container, FILES.len() - 1),
        ] {
            assert!(node.ino() >= SUBTREE_BIT);
            assert_eq!(Node::of_ino(node.ino()), Some(node));
        }
        assert_eq!(Node::of_ino(1), None);
        assert_eq!(Node::of_ino(1024 + (u64::MAX >> 2)), None);
        assert_eq!(Node::of_ino(SUBTREE_BIT | 0x80), None, "no such file node");
    }

    fn render(text: &str) -> impl FnOnce() -> Result<Vec<u8>, ()> + '_ {
        move || Ok(text.as_bytes().to_vec())
    }

    #[test]
    fn an_open_keeps_the_cache_only_while_fresh_or_unchanged() {
        let table: Subtree<&str> = Subtree::new(Duration::ZERO);
        let c = table.register(&"ctr", [42, 1]).unwrap();
        let first = table.open(c, 3, render("MemTotal: 1\n")).unwrap();
        assert_eq!(
            first,
            OpenReply {
                keep_cache: false,
                length_changed: true
            },
            "never rendered: the kernel knows nothing"
        );
        let same = table.open(c, 3, render("MemTotal: 1\n")).unwrap();
        assert!(same.keep_cache && !same.length_changed);
        let changed = table.open(c, 3, render("MemTotal: 2\n")).unwrap();
        assert_eq!(
            changed,
            OpenReply {
                keep_cache: false,
                length_changed: false
            }
        );
        let longer = table.open(c, 3, render("MemTotal: 20\n")).unwrap();
        assert!(!longer.keep_cache && longer.length_changed);
        let content = table.content(c, 3, || Err(())).unwrap();
        assert_eq!(
            &content[..],
            b"MemTotal: 20\n",
            "reads get the open's rendering"
        );
        assert_eq!(table.length(c, 3, || Err(())), Ok(13));
    }

    #[test]
    fn a_fresh_file_is_not_rendered_again() {
        let table: Subtree<&str> = Subtree::new(Duration::from_secs(3600));
        let c = table.register(&"ctr", [42, 1]).unwrap();
        table.open(c, 0, render("a")).unwrap();
        let reply = table
            .open(c, 0, || -> Result<Vec<u8>, ()> {
                panic!("rendered a fresh file")
            })
            .unwrap();
        assert!(reply.keep_cache);
    }

    #[test]
    fn containers_are_told_apart_by_their_whole_key() {
        let table: Subtree<&str> = Subtree::new(Duration::ZERO);
        let c = table.register(&"one", [42, 1]).unwrap();
        assert_eq!(table.register(&"one", [42, 1]), Ok(c));
        assert_eq!(table.register(&"two", [42, 3]), Err(Refused::Collision));
        assert_eq!(table.caller(c), Some("one"));
        assert_eq!(table.caller(c + 1), None);
    }

    #[test]
    fn a_failed_rendering_changes_nothing() {
        let table: Subtree<&str> = Subtree::new(Duration::ZERO);
        let c = table.register(&"ctr", [42, 1]).unwrap();
        table.open(c, 5, render("cpu 1\n")).unwrap();
        assert_eq!(table.open(c, 5, || Err("EIO")), Err("EIO"));
        assert_eq!(&table.content(c, 5, || Err(())).unwrap()[..], b"cpu 1\n");
    }
}
