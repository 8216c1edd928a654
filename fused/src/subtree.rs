//! The per-container subtree, `<mnt>/containers/<pid>/proc/<file>`: one set of inodes per
//! container, on a FUSE connection of its own, so a file's content stays in the kernel's page
//! cache between changes. In the lxcfs layout every container opens the same inode and every
//! read must reach the daemon (direct_io, three round trips per open+read+close); here the inode
//! belongs to one container, and an open+read+close costs none while the content is fresh:
//!
//! - OPEN is answered ENOSYS once, so the kernel stops sending it (and RELEASE) for the whole
//!   connection; that is why the subtree cannot share the lxcfs layout's connection, whose
//!   per-open content needs OPEN.
//! - A file's attributes are valid for `--subtree-max-age`. Once they expire, the next use sends
//!   a GETATTR; the daemon renders the file, and if the content changed it gets a new mtime (and
//!   size), so the kernel drops the cached pages (FUSE_AUTO_INVAL_DATA) and the next read
//!   fetches the new rendering with one READ.
//!
//! `<pid>` names the container of that process (host pid namespace) when it is looked up; the
//! directory and the files under it are the container's, whoever reads them afterwards. Their
//! inode numbers are built from the container's state key (its cgroup paths and directory
//! inodes), so a container keeps its inodes across lookups by different pids and across worker
//! restarts. A worker that meets an inode it did not hand out (after a restart, or once the
//! table dropped the container) takes the container from the reader, and serves only a reader
//! whose container has that key. Until then the kernel still serves what its page cache holds,
//! to any reader and without asking, while the attributes an earlier worker gave are valid (the
//! maximum age, rounded up to clock ticks): that content is the container's too.

use crate::caller::{ContainerCaller, Viewer};
use crate::fs::{dir_attr, file_attr, proc_files, ProcFs, PROC_FILE_COUNT};
use crate::fuse::abi::{init_flags, push_dirents};
use crate::fuse::{Attr, Errno, Handler, Request};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Inode of the subtree's root, `containers/` (fixed by the kernel).
const ROOT: u64 = 1;
/// Inode bit of every container node (clear of the root's inode).
const SUBTREE_BIT: u64 = 1 << 63;
/// Low bits of a subtree inode: which node of the container it is.
const NODE_BITS: u32 = 8;
/// The container part of a subtree inode: 55 bits of its state key.
const CONTAINER_MASK: u64 = (1 << (63 - NODE_BITS)) - 1;
/// Node number of `<pid>/` itself.
const NODE_DIR: u64 = 0xff;
/// Node number of `<pid>/proc/`.
const NODE_PROC: u64 = 0xfe;

/// Most containers remembered; beyond it the least recently used quarter is dropped (their
/// inodes keep working: the next reader from the container brings it back).
const CAPACITY: usize = 4096;
/// Rendered content is kept until a read takes it to its end (the page cache then holds it), or
/// at most this long after its rendering; later reads that miss the page cache render again.
const CONTENT_TTL: Duration = Duration::from_secs(10);
/// How long the kernel may keep `<pid>`: a pid can soon name another process.
const PID_ENTRY_TTL_SECS: u64 = 1;

/// A subtree node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// `<pid>/`
    Dir(u64),
    /// `<pid>/proc/`
    Proc(u64),
    /// `<pid>/proc/<proc_files()[index]>`
    File(u64, usize),
}

impl Node {
    /// The node of inode `ino`, if it is a container node.
    pub fn of_ino(ino: u64) -> Option<Node> {
        if ino & SUBTREE_BIT == 0 {
            return None;
        }
        let container = (ino >> NODE_BITS) & CONTAINER_MASK;
        match ino & ((1 << NODE_BITS) - 1) {
            NODE_DIR => Some(Node::Dir(container)),
            NODE_PROC => Some(Node::Proc(container)),
            n if (n as usize) < PROC_FILE_COUNT => Some(Node::File(container, n as usize)),
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
    print: Option<([u64; 2], u64)>,
    /// When the content last changed: the file's mtime.
    changed: Option<SystemTime>,
    /// The bytes, for the reads that fill the page cache: kept until one takes them to their
    /// end, or for [`CONTENT_TTL`] at most.
    content: Option<Arc<[u8]>>,
    rendered: Option<Instant>,
}

#[derive(Debug)]
struct Entry<C> {
    caller: C,
    key: [u64; 2],
    files: [Snapshot; PROC_FILE_COUNT],
    used: Instant,
}

/// What the kernel is told of a file: its length and when its content last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// Length in bytes.
    pub len: u64,
    /// Time of the last change (the file's mtime).
    pub changed: SystemTime,
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
    /// Boxed: an entry is ~1 KB, and the table's spare slots should not be.
    entries: Mutex<HashMap<u64, Box<Entry<C>>>>,
}

fn fingerprint(bytes: &[u8]) -> ([u64; 2], u64) {
    (crate::caller::text_hash(bytes), bytes.len() as u64)
}

impl<C: Clone> Subtree<C> {
    /// A table whose files are rendered again once older than `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Subtree {
            max_age,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Box<Entry<C>>>> {
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
            Box::new(Entry {
                caller: caller.clone(),
                key,
                files: Default::default(),
                used: Instant::now(),
            }),
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

    /// Records a rendering of a file; returns its version (a new change time only if the
    /// content differs from the last rendering). Nothing is kept for an unknown container.
    fn store(&self, container: u64, index: usize, content: Arc<[u8]>) -> Version {
        let print = fingerprint(&content);
        let now = SystemTime::now();
        let mut entries = self.lock();
        let Some(file) = entries
            .get_mut(&container)
            .and_then(|e| e.files.get_mut(index))
        else {
            return Version {
                len: print.1,
                changed: now,
            };
        };
        let changed = match (file.print, file.changed) {
            (Some(known), Some(at)) if known == print => at,
            _ => now,
        };
        file.print = Some(print);
        file.changed = Some(changed);
        file.content = Some(content);
        file.rendered = Some(Instant::now());
        Version {
            len: print.1,
            changed,
        }
    }

    /// The version of file `index` of `container` for a GETATTR: the last one while younger
    /// than the maximum age, else a new rendering's (by `render`, called without the table's
    /// lock).
    pub fn version<E>(
        &self,
        container: u64,
        index: usize,
        render: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Version, E> {
        let fresh = {
            let entries = self.lock();
            entries
                .get(&container)
                .and_then(|e| e.files.get(index))
                .filter(|f| f.rendered.is_some_and(|at| at.elapsed() < self.max_age))
                .and_then(|f| Some((f.print?, f.changed?)))
        };
        if let Some(((_, len), changed)) = fresh {
            return Ok(Version { len, changed });
        }
        Ok(self.store(container, index, render()?.into()))
    }

    /// The content of a file for a read: the last rendering if kept, else a new one.
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
        self.store(container, index, Arc::clone(&content));
        Ok(content)
    }

    /// Drops the kept content of a file once a read has taken it to its end: the page cache has
    /// it now (a later miss renders it again). Its fingerprint stays.
    pub fn drop_content(&self, container: u64, index: usize) {
        let mut entries = self.lock();
        if let Some(file) = entries
            .get_mut(&container)
            .and_then(|e| e.files.get_mut(index))
        {
            file.content = None;
        }
    }

    /// Drops content kept longer than [`CONTENT_TTL`] (fingerprints stay); returns how many
    /// files' content went.
    pub fn prune(&self) -> usize {
        let mut dropped = 0;
        let mut entries = self.lock();
        for file in entries.values_mut().flat_map(|e| e.files.iter_mut()) {
            let old = file.rendered.is_none_or(|at| at.elapsed() >= CONTENT_TTL);
            if file.content.is_some() && old {
                file.content = None;
                dropped += 1;
            }
        }
        proclens_cgroup::files::shrink_if_sparse(&mut entries);
        dropped
    }
}

/// The subtree's filesystem: the [`Handler`] of its connection.
#[derive(Debug)]
pub struct SubtreeFs {
    procfs: Arc<ProcFs>,
    table: Subtree<ContainerCaller>,
    /// How long the kernel may trust a file's attributes (and so its cached pages).
    max_age: Duration,
}

impl SubtreeFs {
    /// The subtree of `procfs`'s views; file content is trusted for `max_age`.
    pub fn new(procfs: Arc<ProcFs>, max_age: Duration) -> Self {
        SubtreeFs {
            procfs,
            table: Subtree::new(max_age),
            max_age,
        }
    }

    /// Drops content kept past its time; returns how many files' content went.
    pub fn prune(&self) -> usize {
        self.table.prune()
    }

    /// `<pid>`: registers the container of process `pid` (host pid namespace).
    fn lookup_container(&self, name: &str) -> Result<Attr, Errno> {
        let pid: u32 = name
            .parse()
            .ok()
            .filter(|&p| p > 0 && name.bytes().all(|b| b.is_ascii_digit()))
            .ok_or(libc::ENOENT)?;
        let caller = match self.procfs.resolve(pid) {
            Ok(Viewer::Container(caller)) => caller,
            // The host has its own /proc; a process that is gone has no container.
            Ok(Viewer::Host) => return Err(libc::ENOENT),
            Err(err) if err.is_gone() => return Err(libc::ENOENT),
            Err(err) => {
                tracing::warn!(pid, %err, "cannot resolve the container of a subtree");
                return Err(libc::EIO);
            }
        };
        let (_, key) = caller
            .identity(self.procfs.renderer().reader())
            .map_err(|err| {
                tracing::warn!(pid, %err, "cannot identify the container of a subtree");
                libc::EIO
            })?;
        let container = self.table.register(&caller, key).map_err(|refused| {
            tracing::error!(
                pid,
                ?refused,
                "subtree inode collision: refusing the lookup"
            );
            libc::EIO
        })?;
        let mut attr = dir_attr(Node::Dir(container).ino(), self.procfs.mount_time());
        attr.entry_ttl_secs = PID_ENTRY_TTL_SECS;
        Ok(attr)
    }

    /// The caller whose view the files of `container` show. A worker that did not register the
    /// container (it started after the lookup, or dropped the entry) takes it from a reader
    /// inside that container; any other reader gets EIO.
    fn caller_of(&self, req: &Request, container: u64) -> Result<ContainerCaller, Errno> {
        if let Some(caller) = self.table.caller(container) {
            return Ok(caller);
        }
        if let Viewer::Container(caller) = self.procfs.viewer(req)? {
            let reader = self.procfs.renderer().reader();
            let key = caller.identity(reader).ok().map(|(_, key)| key);
            if let Some(key) = key.filter(|&k| container_of_key(k) == container) {
                if self.table.register(&caller, key).is_ok() {
                    return Ok(caller);
                }
            }
        }
        tracing::warn!(
            pid = req.pid,
            container = format_args!("{container:#x}"),
            "a subtree file of a container this worker does not know was read from outside it"
        );
        Err(libc::EIO)
    }

    /// Renders file `index` for `caller`.
    fn render(&self, caller: &ContainerCaller, index: usize) -> Result<Vec<u8>, Errno> {
        let file = proc_files()[index].0;
        self.procfs
            .renderer()
            .render(file, &Viewer::Container(caller.clone()))
            .map_err(|err| {
                tracing::warn!(pid = caller.pid, ?file, %err, "subtree read failed");
                libc::EIO
            })
    }

    /// Attributes of a node; a file's are valid for the maximum age.
    fn attr(&self, req: &Request, node: Node) -> Result<Attr, Errno> {
        let (container, index) = match node {
            Node::Dir(_) | Node::Proc(_) => {
                return Ok(dir_attr(node.ino(), self.procfs.mount_time()))
            }
            Node::File(container, index) => (container, index),
        };
        let caller = self.caller_of(req, container)?;
        let version = self
            .table
            .version(container, index, || self.render(&caller, index))?;
        let since_epoch = version
            .changed
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut attr = file_attr(node.ino(), since_epoch.as_secs(), version.len);
        attr.time_nsecs = since_epoch.subsec_nanos();
        attr.attr_ttl_secs = self.max_age.as_secs();
        attr.attr_ttl_nsecs = self.max_age.subsec_nanos();
        Ok(attr)
    }
}

impl Handler for SubtreeFs {
    fn init_flags(&self) -> u32 {
        init_flags::AUTO_INVAL_DATA
    }

    fn lookup(&self, req: &Request, parent: u64, name: &[u8]) -> Result<Attr, Errno> {
        let name = std::str::from_utf8(name).map_err(|_| libc::ENOENT)?;
        if parent == ROOT {
            return self.lookup_container(name);
        }
        let child = match Node::of_ino(parent).ok_or(libc::ENOENT)? {
            Node::Dir(c) if name == "proc" => Node::Proc(c),
            Node::Dir(_) => return Err(libc::ENOENT),
            Node::Proc(c) => {
                let index = proc_files()
                    .iter()
                    .position(|(_, n)| *n == name)
                    .ok_or(libc::ENOENT)?;
                Node::File(c, index)
            }
            Node::File(..) => return Err(libc::ENOTDIR),
        };
        self.attr(req, child)
    }

    fn getattr(&self, req: &Request, ino: u64) -> Result<Attr, Errno> {
        if ino == ROOT {
            return Ok(dir_attr(ROOT, self.procfs.mount_time()));
        }
        self.attr(req, Node::of_ino(ino).ok_or(libc::ENOENT)?)
    }

    fn readlink(&self, _req: &Request, _ino: u64) -> Result<Vec<u8>, Errno> {
        Err(libc::EINVAL)
    }

    /// ENOSYS: the kernel then opens every file of this connection without asking (and sends
    /// no RELEASE), keeping the page cache.
    fn open(&self, _req: &Request, _ino: u64) -> Result<(u64, u32), Errno> {
        Err(libc::ENOSYS)
    }

    fn read(
        &self,
        req: &Request,
        ino: u64,
        _fh: u64,
        offset: u64,
        size: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        let Some(Node::File(container, index)) = Node::of_ino(ino) else {
            return Err(libc::EISDIR);
        };
        // The page cache asks for what it misses: the rendering the last GETATTR described
        // (or a new one, once that is gone).
        let started = (offset == 0).then(std::time::Instant::now);
        let content = self.caller_of(req, container).and_then(|caller| {
            self.table
                .content(container, index, || self.render(&caller, index))
        });
        if let Some(started) = started {
            // The subtree's files are the first of the lxcfs layout's, in the same order.
            self.procfs
                .shared()
                .stats()
                .record(index, started.elapsed(), content.is_ok());
        }
        let content = content?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(size as usize).min(content.len());
        out.extend_from_slice(content.get(start..end).unwrap_or(&[]));
        if end == content.len() {
            self.table.drop_content(container, index);
        }
        Ok(())
    }

    fn release(&self, _fh: u64) {}

    fn readdir(
        &self,
        _req: &Request,
        ino: u64,
        offset: u64,
        size: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        let dir = u32::from(libc::DT_DIR);
        let mut all = vec![(".".to_string(), ino, dir)];
        match (ino, Node::of_ino(ino)) {
            (ROOT, _) => all.push(("..".to_string(), ROOT, dir)),
            (_, Some(Node::Dir(c))) => {
                all.push(("..".to_string(), ROOT, dir));
                all.push(("proc".to_string(), Node::Proc(c).ino(), dir));
            }
            (_, Some(Node::Proc(c))) => {
                all.push(("..".to_string(), Node::Dir(c).ino(), dir));
                all.extend(proc_files().iter().enumerate().map(|(index, (_, name))| {
                    (
                        name.to_string(),
                        Node::File(c, index).ino(),
                        u32::from(libc::DT_REG),
                    )
                }));
            }
            (_, Some(Node::File(..))) => return Err(libc::ENOTDIR),
            _ => return Err(libc::ENOENT),
        }
        push_dirents(out, &all, offset, size);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_numbers_round_trip_and_stay_clear_of_the_root() {
        let container = container_of_key([u64::MAX, 7]);
        for node in [
            Node::Dir(container),
            Node::Proc(container),
            Node::File(container, 0),
            Node::File(container, PROC_FILE_COUNT - 1),
        ] {
            assert!(node.ino() >= SUBTREE_BIT);
            assert_eq!(Node::of_ino(node.ino()), Some(node));
        }
        assert_eq!(Node::of_ino(ROOT), None);
        assert_eq!(Node::of_ino(SUBTREE_BIT | 0x80), None, "no such file node");
    }

    fn render(text: &str) -> impl FnOnce() -> Result<Vec<u8>, ()> + '_ {
        move || Ok(text.as_bytes().to_vec())
    }

    #[test]
    fn a_new_change_time_only_when_the_content_changes() {
        let table: Subtree<&str> = Subtree::new(Duration::ZERO);
        let c = table.register(&"ctr", [42, 1]).unwrap();
        let first = table.version(c, 3, render("MemTotal: 1\n")).unwrap();
        assert_eq!(first.len, 12);
        let same = table.version(c, 3, render("MemTotal: 1\n")).unwrap();
        assert_eq!(
            same, first,
            "unchanged content keeps its mtime: the page cache stays"
        );
        let changed = table.version(c, 3, render("MemTotal: 2\n")).unwrap();
        assert_eq!(changed.len, 12);
        assert!(changed.changed > first.changed, "a change gets a new mtime");
        let longer = table.version(c, 3, render("MemTotal: 20\n")).unwrap();
        assert_eq!(longer.len, 13);
        let content = table.content(c, 3, || Err(())).unwrap();
        assert_eq!(
            &content[..],
            b"MemTotal: 20\n",
            "reads get the GETATTR's rendering"
        );
        table.drop_content(c, 3);
        let again = table.content(c, 3, render("MemTotal: 21\n")).unwrap();
        assert_eq!(
            &again[..],
            b"MemTotal: 21\n",
            "a miss after the content went renders"
        );
        let after = table.version(c, 3, render("MemTotal: 21\n")).unwrap();
        assert!(
            after.changed > longer.changed,
            "and that rendering is a change"
        );
    }

    #[test]
    fn a_fresh_file_is_not_rendered_again() {
        let table: Subtree<&str> = Subtree::new(Duration::from_secs(3600));
        let c = table.register(&"ctr", [42, 1]).unwrap();
        let first = table.version(c, 0, render("a")).unwrap();
        let again = table
            .version(c, 0, || -> Result<Vec<u8>, ()> {
                panic!("rendered a fresh file")
            })
            .unwrap();
        assert_eq!(again, first);
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
        let before = table.version(c, 5, render("cpu 1\n")).unwrap();
        assert_eq!(table.version(c, 5, || Err("EIO")), Err("EIO"));
        assert_eq!(&table.content(c, 5, || Err(())).unwrap()[..], b"cpu 1\n");
        assert_eq!(table.version(c, 5, render("cpu 1\n")).unwrap(), before);
    }
}
