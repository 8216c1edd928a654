//! The subset of the FUSE kernel ABI (include/uapi/linux/fuse.h) a read-only tree needs, encoded
//! and decoded by hand from byte slices: no unsafe transmutes, every length checked.

/// Protocol major version.
pub const KERNEL_VERSION: u32 = 7;
/// Highest protocol minor version this implementation speaks. 7.31 has everything used here and
/// is understood by every kernel proclens supports (4.19+ for cgroup v2 hosts).
pub const KERNEL_MINOR_VERSION: u32 = 31;

/// Size of `fuse_in_header`.
pub const IN_HEADER_LEN: usize = 40;
/// Size of `fuse_out_header`.
pub const OUT_HEADER_LEN: usize = 16;

/// Request opcodes handled (others get ENOSYS).
#[allow(missing_docs)]
pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const READLINK: u32 = 5;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
}

/// `fuse_init_in.flags` / `fuse_init_out.flags` bits used.
pub mod init_flags {
    /// Reads may be sent concurrently.
    pub const ASYNC_READ: u32 = 1 << 0;
    /// The kernel may send parallel lookups and readdirs in one directory.
    pub const PARALLEL_DIROPS: u32 = 1 << 18;
    /// The kernel drops an inode's cached pages when a fresh GETATTR shows another mtime or size.
    pub const AUTO_INVAL_DATA: u32 = 1 << 12;
    /// `max_pages` in the reply is valid.
    pub const MAX_PAGES: u32 = 1 << 22;
    /// The kernel caches symlink targets (READLINK once per inode).
    pub const CACHE_SYMLINKS: u32 = 1 << 23;
}

/// `fuse_open_out.open_flags` bits.
pub mod fopen {
    /// Bypass the page cache: every read reaches the daemon.
    pub const DIRECT_IO: u32 = 1 << 0;
    /// Do not send FLUSH on close.
    pub const NOFLUSH: u32 = 1 << 5;
}

/// Notification code FUSE_NOTIFY_RESEND (Linux 6.9+): requeue all requests being processed.
pub const NOTIFY_RESEND: i32 = 7;

/// `ioctl` number of FUSE_DEV_IOC_CLONE: `_IOR(229, 0, uint32_t)`.
pub const FUSE_DEV_IOC_CLONE: u64 = 0x8004_e500;

/// Little helper to read native-endian integers at fixed offsets of a checked slice.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a>(pub &'a [u8]);

impl Fields<'_> {
    /// u32 at `at`; 0 if out of range (callers check lengths first).
    pub fn u32(&self, at: usize) -> u32 {
        self.0
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
            .unwrap_or(0)
    }

    /// u64 at `at`; 0 if out of range.
    pub fn u64(&self, at: usize) -> u64 {
        self.0
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_ne_bytes)
            .unwrap_or(0)
    }
}

/// `fuse_in_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InHeader {
    /// Total request length, header included.
    pub len: u32,
    /// Operation.
    pub opcode: u32,
    /// Request id, echoed in the reply.
    pub unique: u64,
    /// Inode the request is about.
    pub nodeid: u64,
    /// Caller's uid.
    pub uid: u32,
    /// Caller's gid.
    pub gid: u32,
    /// Caller's thread id, in the daemon's pid namespace (0 if not representable there).
    pub pid: u32,
}

impl InHeader {
    /// Decodes the header; `None` if the buffer is shorter than a header or than `len`.
    pub fn parse(buf: &[u8]) -> Option<InHeader> {
        if buf.len() < IN_HEADER_LEN {
            return None;
        }
        let f = Fields(buf);
        let header = InHeader {
            len: f.u32(0),
            opcode: f.u32(4),
            unique: f.u64(8),
            nodeid: f.u64(16),
            uid: f.u32(24),
            gid: f.u32(28),
            pid: f.u32(32),
        };
        let len = usize::try_from(header.len).ok()?;
        (len >= IN_HEADER_LEN && len <= buf.len()).then_some(header)
    }
}

/// Writes a `fuse_out_header` into the first 16 bytes of `reply`, whose length is the whole reply.
pub fn write_out_header(reply: &mut [u8], unique: u64, error: i32) {
    let len = u32::try_from(reply.len()).unwrap_or(u32::MAX);
    reply[0..4].copy_from_slice(&len.to_ne_bytes());
    reply[4..8].copy_from_slice(&error.to_ne_bytes());
    reply[8..16].copy_from_slice(&unique.to_ne_bytes());
}

/// File attributes (`fuse_attr`, 88 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Time of all three timestamps, seconds since the epoch.
    pub time_secs: u64,
    /// Nanoseconds of that time.
    pub time_nsecs: u32,
    /// File type and permission bits (S_IFREG | 0444, ...).
    pub mode: u32,
    /// Link count.
    pub nlink: u32,
    /// Seconds the kernel may keep these attributes without asking again (0: ask every time).
    /// Not part of `fuse_attr`: it goes into the reply around it.
    pub attr_ttl_secs: u64,
    /// Nanoseconds added to `attr_ttl_secs`.
    pub attr_ttl_nsecs: u32,
    /// Seconds the kernel may keep the name → inode entry of a LOOKUP reply (0: look up again).
    pub entry_ttl_secs: u64,
}

/// Size of an encoded [`Attr`].
pub const ATTR_LEN: usize = 88;

impl Attr {
    /// Appends the 88-byte encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        for v in [
            self.ino,
            self.size,
            self.size.div_ceil(512),
            self.time_secs,
            self.time_secs,
            self.time_secs,
        ] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        // atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags
        let nsecs = self.time_nsecs;
        for v in [nsecs, nsecs, nsecs, self.mode, self.nlink, 0, 0, 0, 4096, 0] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        debug_assert_eq!(out.len() - start, ATTR_LEN);
    }
}

/// Appends a `fuse_entry_out` (128 bytes) with the attribute's cache timeouts.
pub fn entry_out(out: &mut Vec<u8>, attr: &Attr) {
    out.extend_from_slice(&attr.ino.to_ne_bytes()); // nodeid
    out.extend_from_slice(&0u64.to_ne_bytes()); // generation
    out.extend_from_slice(&attr.entry_ttl_secs.to_ne_bytes()); // entry_valid
    out.extend_from_slice(&attr.attr_ttl_secs.to_ne_bytes()); // attr_valid
    out.extend_from_slice(&0u32.to_ne_bytes()); // entry_valid_nsec
    out.extend_from_slice(&attr.attr_ttl_nsecs.to_ne_bytes()); // attr_valid_nsec
    attr.encode(out);
}

/// Appends a `fuse_attr_out` (104 bytes) with the attribute's timeout.
pub fn attr_out(out: &mut Vec<u8>, attr: &Attr) {
    out.extend_from_slice(&attr.attr_ttl_secs.to_ne_bytes());
    out.extend_from_slice(&attr.attr_ttl_nsecs.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    attr.encode(out);
}

/// Appends a `fuse_open_out`.
pub fn open_out(out: &mut Vec<u8>, fh: u64, open_flags: u32) {
    out.extend_from_slice(&fh.to_ne_bytes());
    out.extend_from_slice(&open_flags.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
}

/// Appends one `fuse_dirent` padded to 8 bytes; returns false (appending nothing) if it would
/// exceed `limit` total bytes.
pub fn push_dirent(
    out: &mut Vec<u8>,
    limit: usize,
    ino: u64,
    off: u64,
    kind: u32,
    name: &[u8],
) -> bool {
    let len = 24 + name.len();
    let padded = len.div_ceil(8) * 8;
    if out.len() + padded > limit {
        return false;
    }
    out.extend_from_slice(&ino.to_ne_bytes());
    out.extend_from_slice(&off.to_ne_bytes());
    out.extend_from_slice(&u32::try_from(name.len()).unwrap_or(0).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(name);
    out.resize(out.len() + padded - len, 0);
    true
}

/// Appends the directory entries `(name, ino, DT_* type)` of `all` from index `offset` on, each
/// with the next index as its offset, until `size` more bytes would be exceeded.
pub fn push_dirents(out: &mut Vec<u8>, all: &[(String, u64, u32)], offset: u64, size: u32) {
    let limit = out.len() + size as usize;
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    for (i, (name, child, kind)) in all.iter().enumerate().skip(skip) {
        if !push_dirent(out, limit, *child, i as u64 + 1, *kind, name.as_bytes()) {
            break;
        }
    }
}

/// Appends a `fuse_statfs_out` for a read-only, size-less filesystem.
pub fn statfs_out(out: &mut Vec<u8>) {
    for _ in 0..5 {
        out.extend_from_slice(&0u64.to_ne_bytes()); // blocks bfree bavail files ffree
    }
    for v in [4096u32, 255, 4096, 0, 0, 0, 0, 0, 0, 0] {
        out.extend_from_slice(&v.to_ne_bytes()); // bsize namelen frsize padding spare[6]
    }
}

/// The reply to INIT (`fuse_init_out`, 64 bytes) for a kernel that sent `kernel_minor` and
/// `kernel_flags`; `extra_flags` are wanted beside the defaults, if the kernel offers them.
pub fn init_out(
    out: &mut Vec<u8>,
    kernel_minor: u32,
    kernel_flags: u32,
    max_readahead: u32,
    max_write: u32,
    extra_flags: u32,
) {
    let wanted =
        init_flags::ASYNC_READ | init_flags::PARALLEL_DIROPS | init_flags::MAX_PAGES | extra_flags;
    let minor = kernel_minor.min(KERNEL_MINOR_VERSION);
    out.extend_from_slice(&KERNEL_VERSION.to_ne_bytes());
    out.extend_from_slice(&minor.to_ne_bytes());
    out.extend_from_slice(&max_readahead.to_ne_bytes());
    out.extend_from_slice(&(kernel_flags & wanted).to_ne_bytes());
    out.extend_from_slice(&16u16.to_ne_bytes()); // max_background
    out.extend_from_slice(&12u16.to_ne_bytes()); // congestion_threshold
    out.extend_from_slice(&max_write.to_ne_bytes());
    out.extend_from_slice(&1u32.to_ne_bytes()); // time_gran
    let max_pages = u16::try_from(max_write / 4096).unwrap_or(u16::MAX);
    out.extend_from_slice(&max_pages.to_ne_bytes());
    // map_alignment, flags2, max_stack_depth, request_timeout, unused[11]
    out.resize(out.len() + 2 + 4 + 4 + 2 + 22, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_bounds() {
        let mut buf = vec![0u8; 48];
        buf[0..4].copy_from_slice(&48u32.to_ne_bytes());
        buf[4..8].copy_from_slice(&opcode::READ.to_ne_bytes());
        buf[8..16].copy_from_slice(&7u64.to_ne_bytes());
        buf[32..36].copy_from_slice(&1234u32.to_ne_bytes());
        let h = InHeader::parse(&buf).unwrap();
        assert_eq!(
            (h.len, h.opcode, h.unique, h.pid),
            (48, opcode::READ, 7, 1234)
        );
        assert!(InHeader::parse(&buf[..39]).is_none());
        buf[0..4].copy_from_slice(&4096u32.to_ne_bytes());
        assert!(InHeader::parse(&buf).is_none(), "len beyond the buffer");
    }

    #[test]
    fn encoded_sizes_match_the_abi() {
        let mut out = Vec::new();
        Attr::default().encode(&mut out);
        assert_eq!(out.len(), ATTR_LEN);
        out.clear();
        entry_out(&mut out, &Attr::default());
        assert_eq!(out.len(), 128);
        out.clear();
        attr_out(&mut out, &Attr::default());
        assert_eq!(out.len(), 104);
        out.clear();
        open_out(&mut out, 1, 0);
        assert_eq!(out.len(), 16);
        out.clear();
        statfs_out(&mut out);
        assert_eq!(out.len(), 80);
        out.clear();
        init_out(&mut out, 41, u32::MAX, 0, 131072, 0);
        assert_eq!(out.len(), 64);
        assert_eq!(Fields(&out).u32(4), KERNEL_MINOR_VERSION);
    }

    #[test]
    fn dirents_are_padded_and_bounded() {
        let mut out = Vec::new();
        assert!(push_dirent(&mut out, 64, 1, 1, 4, b"proc"));
        assert_eq!(out.len(), 32);
        assert!(!push_dirent(&mut out, 64, 2, 2, 4, b"a-longer-name"));
        assert_eq!(out.len(), 32);
    }
}
