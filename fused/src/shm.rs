//! A shared memory region (memfd, mapped shared) with bounds-checked, volatile accessors. The
//! supervisor creates it and every worker maps it, so state outlives any one worker.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicU64;

/// A mapped region.
#[derive(Debug)]
pub struct Region {
    ptr: *mut u8,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the region is plain shared memory; all access goes through bounds-checked volatile
// reads and writes, and callers serialise access to the same bytes with their own locks.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

impl Region {
    /// Creates a zero-filled region of `len` bytes (sparse: pages cost memory only once written).
    pub fn create(name: &std::ffi::CStr, len: usize) -> io::Result<Region> {
        // SAFETY: a valid name and flags.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just created, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size = libc::off_t::try_from(len).map_err(io::Error::other)?;
        // SAFETY: resizing our own memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Region::map(fd)
    }

    /// Maps an existing region (inherited from the supervisor).
    pub fn map(fd: OwnedFd) -> io::Result<Region> {
        // SAFETY: fstat into a zeroed struct.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let len = usize::try_from(stat.st_size).map_err(io::Error::other)?;
        if len == 0 {
            return Err(io::Error::other("state region is empty"));
        }
        // SAFETY: mapping the whole file shared, read-write; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region {
            ptr: ptr.cast(),
            len,
            fd,
        })
    }

    /// The memfd, to hand to a worker.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The parts of `range` that hold data, in order: pages ever written (or faulted in through
    /// a mapping), swapped out or not. Everything else is a hole, which reads as zero and costs
    /// no memory until touched; reading it through the mapping would allocate its page, so a
    /// scan for live records skips holes instead.
    pub fn data_ranges(
        &self,
        range: std::ops::Range<usize>,
    ) -> io::Result<Vec<std::ops::Range<usize>>> {
        let end = range.end.min(self.len);
        let mut out = Vec::new();
        let mut pos = range.start;
        while pos < end {
            let Some(data) = self.seek(pos, libc::SEEK_DATA)? else {
                break;
            };
            if data >= end {
                break;
            }
            let hole = self.seek(data, libc::SEEK_HOLE)?.unwrap_or(self.len);
            out.push(data..hole.min(end));
            pos = hole;
        }
        Ok(out)
    }

    /// Frees the memory of `range` (page-aligned): it becomes a hole again and reads as zero.
    /// The caller makes sure nothing in use lies in it.
    pub fn punch(&self, range: std::ops::Range<usize>) -> io::Result<()> {
        let offset = libc::off_t::try_from(range.start).map_err(io::Error::other)?;
        let len = libc::off_t::try_from(range.len()).map_err(io::Error::other)?;
        // SAFETY: fallocate on our own descriptor; punching keeps the size, and the mappings
        // see zeros there from now on.
        let rc = unsafe {
            libc::fallocate(
                self.fd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `lseek(2)` on the memfd; `None` for ENXIO (no data after `offset`).
    fn seek(&self, offset: usize, whence: libc::c_int) -> io::Result<Option<usize>> {
        let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: lseek on our own descriptor; only the file offset changes, which nothing that
        // shares the open file (supervisor, workers) uses: all access goes through mappings.
        let rc = unsafe { libc::lseek(self.fd.as_raw_fd(), offset, whence) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENXIO) => Ok(None),
                _ => Err(err),
            };
        }
        usize::try_from(rc).map(Some).map_err(io::Error::other)
    }

    /// Bytes of memory the region's file holds (its allocated pages, as `fstat` counts them).
    #[cfg(test)]
    pub fn allocated(&self) -> io::Result<u64> {
        // SAFETY: fstat into a zeroed struct.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out-pointer.
        if unsafe { libc::fstat(self.fd.as_raw_fd(), &mut stat) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(u64::try_from(stat.st_blocks).unwrap_or(0) * 512)
    }

    fn check(&self, offset: usize, len: usize, align: usize) {
        let end = offset.checked_add(len).expect("state offset overflow");
        assert!(
            end <= self.len,
            "state access {offset}+{len} beyond {}",
            self.len
        );
        assert!(
            offset.is_multiple_of(align),
            "misaligned state access at {offset}"
        );
    }

    /// Reads a u32 at `offset` (4-aligned).
    pub fn u32(&self, offset: usize) -> u32 {
        self.check(offset, 4, 4);
        // SAFETY: in bounds and aligned (checked); the mapping lives as long as `self`.
        unsafe { std::ptr::read_volatile(self.ptr.add(offset).cast::<u32>()) }
    }

    /// Writes a u32 at `offset` (4-aligned).
    pub fn set_u32(&self, offset: usize, value: u32) {
        self.check(offset, 4, 4);
        // SAFETY: as in `u32`.
        unsafe { std::ptr::write_volatile(self.ptr.add(offset).cast::<u32>(), value) }
    }

    /// Reads a u64 at `offset` (8-aligned).
    pub fn u64(&self, offset: usize) -> u64 {
        self.check(offset, 8, 8);
        // SAFETY: as in `u32`.
        unsafe { std::ptr::read_volatile(self.ptr.add(offset).cast::<u64>()) }
    }

    /// Writes a u64 at `offset` (8-aligned).
    pub fn set_u64(&self, offset: usize, value: u64) {
        self.check(offset, 8, 8);
        // SAFETY: as in `u32`.
        unsafe { std::ptr::write_volatile(self.ptr.add(offset).cast::<u64>(), value) }
    }

    /// The u64 at `offset` (8-aligned) as an atomic, for counters every process mapping the
    /// region adds to at once. Those bytes must be reached only through this accessor.
    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8, 8);
        // SAFETY: in bounds and 8-aligned (checked), valid for as long as `self` keeps the
        // mapping; the memory is shared, and every access to these bytes is atomic.
        unsafe { AtomicU64::from_ptr(self.ptr.add(offset).cast::<u64>()) }
    }

    /// Copies `out.len()` bytes from `offset`.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        self.check(offset, out.len(), 1);
        // SAFETY: in bounds (checked); `out` does not overlap the mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), out.as_mut_ptr(), out.len()) }
    }

    /// Copies `data` to `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) {
        self.check(offset, data.len(), 1);
        // SAFETY: in bounds (checked); `data` does not overlap the mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset), data.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_see_each_others_writes() {
        let a = Region::create(c"test", 8192).unwrap();
        let fd = a.fd().try_clone_to_owned().unwrap();
        let b = Region::map(fd).unwrap();
        a.set_u64(8, 42);
        a.write(100, b"hello");
        assert_eq!(b.u64(8), 42);
        let mut out = [0u8; 5];
        b.read(100, &mut out);
        assert_eq!(&out, b"hello");
        assert_eq!(b.u32(4096), 0, "fresh pages read as zero");
    }

    #[test]
    fn data_ranges_are_the_written_pages() {
        let a = Region::create(c"test", 16 * 4096).unwrap();
        assert!(a.data_ranges(0..a.len()).unwrap().is_empty());
        a.set_u32(4096 + 8, 1);
        a.set_u32(3 * 4096, 1);
        a.set_u32(4 * 4096 + 100, 1);
        assert_eq!(
            a.data_ranges(0..a.len()).unwrap(),
            vec![4096..2 * 4096, 3 * 4096..5 * 4096]
        );
        assert_eq!(
            a.data_ranges(4200..3 * 4096 + 10).unwrap(),
            vec![4200..2 * 4096, 3 * 4096..3 * 4096 + 10]
        );
        assert_eq!(a.allocated().unwrap(), 3 * 4096);
        a.punch(3 * 4096..4 * 4096).unwrap();
        assert_eq!(
            a.data_ranges(0..a.len()).unwrap(),
            vec![4096..2 * 4096, 4 * 4096..5 * 4096]
        );
        assert_eq!(a.u32(3 * 4096), 0, "a punched page reads as zero");
        assert_eq!(a.u32(4 * 4096 + 100), 1);
    }

    #[test]
    #[should_panic(expected = "beyond")]
    fn out_of_bounds_is_caught() {
        let a = Region::create(c"test", 4096).unwrap();
        a.u64(4096);
    }
}
