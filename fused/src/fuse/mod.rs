//! A thin FUSE server over the kernel ABI, enough for a read-only tree: mount, the request loop,
//! and the [`Handler`] trait the filesystem implements. Written here instead of using fuser so the
//! /dev/fuse connection is ours to clone, hand over and re-adopt across restarts (README, design
//! notes).

pub mod abi;
pub mod mount;
pub mod session;

pub use abi::Attr;

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Kernel request id.
    pub unique: u64,
    /// Caller's thread id in the daemon's pid namespace.
    pub pid: u32,
    /// Caller's uid.
    pub uid: u32,
}

/// An errno to reply with.
pub type Errno = i32;

/// The filesystem operations the session dispatches. Every method answers; errors are errnos.
pub trait Handler: Send + Sync {
    /// INIT flags (`abi::init_flags`) wanted beside the defaults.
    fn init_flags(&self) -> u32 {
        0
    }
    /// Looks up `name` in directory `parent`.
    fn lookup(&self, req: &Request, parent: u64, name: &[u8]) -> Result<Attr, Errno>;
    /// Attributes of `ino`.
    fn getattr(&self, req: &Request, ino: u64) -> Result<Attr, Errno>;
    /// Target of symlink `ino`.
    fn readlink(&self, req: &Request, ino: u64) -> Result<Vec<u8>, Errno>;
    /// Opens file `ino`; returns the handle and FOPEN_* flags.
    fn open(&self, req: &Request, ino: u64) -> Result<(u64, u32), Errno>;
    /// Appends up to `size` bytes of `ino` at `offset` through handle `fh` to `out`.
    fn read(
        &self,
        req: &Request,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno>;
    /// Drops handle `fh`.
    fn release(&self, fh: u64);
    /// Appends directory entries of `ino` from `offset` to `out`, at most `size` bytes in all.
    fn readdir(
        &self,
        req: &Request,
        ino: u64,
        offset: u64,
        size: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno>;
}
