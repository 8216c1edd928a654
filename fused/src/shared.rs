//! The state that outlives a worker, in the supervisor's shared region, with a versioned layout:
//! per-open rendered content (so a later read at an offset, or a resent read, of an open made
//! under a previous worker serves the same bytes) and per-container state (the last /proc/stat
//! rows shown, so counters never go backwards, the load averages and the last task counts).
//!
//! Only one worker writes at a time (the supervisor stops a worker before starting the next), so
//! locks are process-local. A worker killed mid-update leaves a slot marked WRITING; the next
//! worker discards such slots when it attaches.
//!
//! Layout version 1 (all integers native-endian):
//! - header, 4096 bytes: magic, version, handle slot count, container slot count, cell count,
//!   next file handle counter, handle high-water mark; bytes 1024..3088 hold fused's own
//!   counters ([`crate::stats`]; zero in a region an older binary made, which is where they
//!   start).
//! - handle slots, 64 bytes each: fh, state, target kind, target id, content length, first cell,
//!   cell count, last use.
//! - container slots, 96 bytes each: key (two u64), state, row count, first cell, cell count,
//!   three load averages, load update time, last seen time, then the last task count: running,
//!   blocked and total tasks (three u32) and a check word (u32: the low 32 bits of the key's
//!   second half, which are never 0), then 8 bytes unused. Workers before the task count left
//!   bytes 72..96 alone, and may have reused a slot without clearing them: counts are taken only
//!   where the check word matches the slot's key, and all-zero bytes mean "not counted yet".
//! - cells, 256 bytes each: content and stat rows.

use crate::shm::Region;
use proclens_cgroup::model::host::CpuTimes;
use proclens_cgroup::TaskCounts;
use proclens_view::loadavg::LoadAvg;
use std::ops::Range;
use std::sync::Mutex;

const MAGIC: u64 = u64::from_le_bytes(*b"PLSTATE1");
/// Layout version this binary writes and reads.
pub const VERSION: u32 = 1;

const HEADER_LEN: usize = 4096;
/// Page size the layout is aligned to (header, handle table and cells start on pages).
const PAGE: usize = 4096;
const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
const H_HANDLES: usize = 12;
const H_CONTAINERS: usize = 16;
const H_CELLS: usize = 20;
const H_NEXT_FH: usize = 24;
/// One past the highest handle slot ever used: recovery scans no further, so untouched slots
/// never cost memory.
const H_HANDLE_HIGH: usize = 32;

const HANDLE_LEN: usize = 64;
const CONTAINER_LEN: usize = 96;
/// Size of an allocation unit for content and rows.
pub const CELL_LEN: usize = 256;

/// Default sizes: 65,536 open files, 8,192 containers, 32 MiB of content (all sparse).
pub const DEFAULT_HANDLES: u32 = 1 << 16;
/// Default container slots.
pub const DEFAULT_CONTAINERS: u32 = 1 << 13;
/// Default cells.
pub const DEFAULT_CELLS: u32 = 1 << 17;

const FREE: u32 = 0;
const OPEN: u32 = 1;
const RENDERED: u32 = 2;
const WRITING: u32 = 3;
const VALID: u32 = 1;

/// Bits of a file handle that hold its slot index.
const FH_SLOT_BITS: u32 = 24;
/// Containers compete for a slot within this many neighbours of their hash position.
const PROBE_WINDOW: usize = 16;
/// Shards of the handle table lock.
const HANDLE_SHARDS: usize = 64;

/// Sizes of the region's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Handle slots.
    pub handles: u32,
    /// Container slots.
    pub containers: u32,
    /// Content cells.
    pub cells: u32,
}

impl Geometry {
    fn handles_at(&self) -> usize {
        HEADER_LEN
    }
    fn containers_at(&self) -> usize {
        self.handles_at() + self.handles as usize * HANDLE_LEN
    }
    fn cells_at(&self) -> usize {
        (self.containers_at() + self.containers as usize * CONTAINER_LEN).next_multiple_of(4096)
    }
    /// Bytes the region needs.
    pub fn region_len(&self) -> usize {
        self.cells_at() + self.cells as usize * CELL_LEN
    }
}

impl Default for Geometry {
    fn default() -> Self {
        Geometry {
            handles: DEFAULT_HANDLES,
            containers: DEFAULT_CONTAINERS,
            cells: DEFAULT_CELLS,
        }
    }
}

/// Creates and initialises a region (the supervisor does this once per mount).
pub fn create_region(geometry: Geometry) -> std::io::Result<Region> {
    let region = Region::create(c"proclens-state", geometry.region_len())?;
    region.set_u32(H_VERSION, VERSION);
    region.set_u32(H_HANDLES, geometry.handles);
    region.set_u32(H_CONTAINERS, geometry.containers);
    region.set_u32(H_CELLS, geometry.cells);
    region.set_u64(H_NEXT_FH, 1);
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    region.set_u64(H_MAGIC, MAGIC);
    Ok(region)
}

/// What a handle was opened on, as stored in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Kind tag chosen by the filesystem.
    pub kind: u32,
    /// Id within the kind.
    pub id: u64,
}

/// A per-container record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRecord {
    /// Last stat rows shown.
    pub stat_rows: Vec<CpuTimes>,
    /// Load averages.
    pub load: LoadAvg,
    /// CLOCK_MONOTONIC ns of the last load update (0: never).
    pub load_updated_ns: u64,
    /// The container's tasks at the last count (`None`: never counted).
    pub tasks: Option<TaskCounts>,
}

/// Worker-side view of the shared state.
#[derive(Debug)]
pub struct SharedState {
    region: Region,
    geometry: Geometry,
    handle_locks: Vec<Mutex<()>>,
    slots: Mutex<Vec<usize>>,
    containers: Mutex<()>,
    alloc: Mutex<CellAllocator>,
}

/// Errors attaching to a region.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Not a proclens state region.
    #[error("state region has no proclens header")]
    NotState,
    /// Written by a binary with a layout this one cannot read.
    #[error("state layout version {0} is not understood by this binary (it reads {VERSION})")]
    Version(u32),
    /// Header sizes do not fit the region.
    #[error("state header does not match the region size")]
    Geometry,
}

/// First-fit bitmap allocator over the cells (worker-local, rebuilt on attach).
#[derive(Debug)]
struct CellAllocator {
    used: Vec<u64>,
    cells: u32,
}

impl CellAllocator {
    fn new(cells: u32) -> Self {
        CellAllocator {
            used: vec![0; (cells as usize).div_ceil(64)],
            cells,
        }
    }
    fn is_used(&self, cell: u32) -> bool {
        self.used[cell as usize / 64] & (1 << (cell % 64)) != 0
    }
    fn mark(&mut self, first: u32, count: u32, used: bool) {
        for cell in first..first.saturating_add(count).min(self.cells) {
            let (word, bit) = (cell as usize / 64, cell % 64);
            if used {
                self.used[word] |= 1 << bit;
            } else {
                self.used[word] &= !(1 << bit);
            }
        }
    }
    /// Allocates `count` contiguous cells, first fit from the start, so the cells in use stay
    /// packed at the front of the region and untouched pages cost no memory.
    fn alloc(&mut self, count: u32) -> Option<u32> {
        if count == 0 || count > self.cells {
            return None;
        }
        let mut start = 0u32;
        while start + count <= self.cells {
            // Skip whole words of used cells quickly.
            if start.is_multiple_of(64) && self.used[start as usize / 64] == u64::MAX {
                start += 64;
                continue;
            }
            match (start..start + count).find(|&c| self.is_used(c)) {
                Some(used) => start = used + 1,
                None => {
                    self.mark(start, count, true);
                    return Some(start);
                }
            }
        }
        None
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Answers whether offsets, asked in ascending order, lie in one of some ascending ranges.
struct DataCursor<'a> {
    ranges: std::iter::Peekable<std::slice::Iter<'a, Range<usize>>>,
}

impl<'a> DataCursor<'a> {
    fn new(ranges: &'a [Range<usize>]) -> Self {
        DataCursor {
            ranges: ranges.iter().peekable(),
        }
    }

    /// Whether `offset` (not below any offset asked before) lies in a range.
    fn contains(&mut self, offset: usize) -> bool {
        while self.ranges.next_if(|d| d.end <= offset).is_some() {}
        self.ranges.peek().is_some_and(|d| d.contains(&offset))
    }
}

/// Bytes of one stat row in a cell.
const ROW_LEN: usize = 80;

/// Offsets in a container slot of the task count: running, blocked, total, check word.
const C_RUNNING: usize = 72;
const C_BLOCKED: usize = 76;
const C_TOTAL: usize = 80;
const C_CHECK: usize = 84;

/// The check word stored with container `key`'s task count: never 0, so zeroed bytes (a slot
/// from a worker that predates the count) never match.
fn tasks_check(key: [u64; 2]) -> u32 {
    (key[1] as u32) | 1
}

impl SharedState {
    /// Attaches to a region created by [`create_region`] (possibly by an older binary), and
    /// repairs what a killed worker left half-written.
    pub fn attach(region: Region) -> Result<SharedState, AttachError> {
        if region.u64(H_MAGIC) != MAGIC {
            return Err(AttachError::NotState);
        }
        let version = region.u32(H_VERSION);
        if version != VERSION {
            return Err(AttachError::Version(version));
        }
        let geometry = Geometry {
            handles: region.u32(H_HANDLES),
            containers: region.u32(H_CONTAINERS),
            cells: region.u32(H_CELLS),
        };
        if geometry.region_len() != region.len() || geometry.handles as u64 >= 1 << FH_SLOT_BITS {
            return Err(AttachError::Geometry);
        }
        let state = SharedState {
            region,
            geometry,
            handle_locks: (0..HANDLE_SHARDS).map(|_| Mutex::new(())).collect(),
            slots: Mutex::new(Vec::new()),
            containers: Mutex::new(()),
            alloc: Mutex::new(CellAllocator::new(geometry.cells)),
        };
        state.recover();
        Ok(state)
    }

    fn handle_at(&self, slot: usize) -> usize {
        self.geometry.handles_at() + slot * HANDLE_LEN
    }

    fn container_at(&self, slot: usize) -> usize {
        self.geometry.containers_at() + slot * CONTAINER_LEN
    }

    fn cell_at(&self, cell: u32) -> usize {
        self.geometry.cells_at() + cell as usize * CELL_LEN
    }

    /// The parts of `range` that hold data ([`Region::data_ranges`]); all of it if the kernel
    /// cannot tell (then a scan reads holes too, which costs memory but is correct).
    fn data_of(&self, range: Range<usize>) -> Vec<Range<usize>> {
        self.region
            .data_ranges(range.clone())
            .unwrap_or_else(|err| {
                tracing::warn!(%err, "cannot find the state region's holes: scanning all of it");
                vec![range]
            })
    }

    /// Drops half-written slots and rebuilds the cell allocator from the live ones. Only slots
    /// on pages that hold data can be live: a slot in a hole was never written (or was freed
    /// and punched out) and reads as FREE, and reading it through the mapping would cost a
    /// page of memory for nothing (the container table alone is 768 KiB by default).
    fn recover(&self) {
        let mut alloc = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
        let mut free_slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let r = &self.region;
        let high = (r.u32(H_HANDLE_HIGH) as usize).min(self.geometry.handles as usize);
        r.set_u32(H_HANDLE_HIGH, high as u32);
        let data = self.data_of(self.handle_at(0)..self.handle_at(high));
        let mut in_data = DataCursor::new(&data);
        let mut free = Vec::new();
        for slot in 0..high {
            let at = self.handle_at(slot);
            if !in_data.contains(at + 8) {
                free.push(slot);
                continue;
            }
            match r.u32(at + 8) {
                FREE => free.push(slot),
                WRITING => {
                    r.set_u32(at + 24, 0);
                    r.set_u32(at + 32, 0);
                    r.set_u32(at + 8, OPEN);
                }
                _ => alloc.mark(r.u32(at + 28), r.u32(at + 32), true),
            }
        }
        // Popped from the end: the lowest slots are reused first.
        free_slots.extend(free.into_iter().rev());
        let n = self.geometry.containers as usize;
        let data = self.data_of(self.container_at(0)..self.container_at(n));
        let mut in_data = DataCursor::new(&data);
        for slot in 0..n {
            let at = self.container_at(slot);
            if !in_data.contains(at + 16) {
                continue;
            }
            match r.u32(at + 16) {
                VALID => alloc.mark(r.u32(at + 24), r.u32(at + 28), true),
                FREE => {}
                _ => {
                    r.write(at, &[0u8; CONTAINER_LEN]);
                }
            }
        }
    }

    /// Gives back the memory of whole pages that hold only free handle slots or free cells:
    /// they are punched out of the region and read as zero again, which is all a free slot or
    /// cell may hold. After a burst of opens (each open holds a slot and its rendering until
    /// the kernel's RELEASE, which can lag behind under load) this brings the region back to
    /// what is in use. Returns the bytes released.
    pub fn release_free_pages(&self) -> usize {
        let mut released = 0;
        let per_page = PAGE / HANDLE_LEN;
        {
            // Slots in the free list (or never claimed, at or past the high-water mark) are not
            // in use and cannot be claimed while the list is locked.
            let free_slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let high = self.region.u32(H_HANDLE_HIGH) as usize;
            let mut free = vec![false; high];
            for &slot in free_slots.iter().filter(|&&s| s < high) {
                free[slot] = true;
            }
            let pages = high.div_ceil(per_page);
            let area = self.handle_at(0)..self.handle_at(pages * per_page);
            released += self.punch_free_pages(area, |page| {
                (page * per_page..(page + 1) * per_page).all(|s| s >= high || free[s])
            });
        }
        {
            // Free cells are written by nobody until allocated, which needs this lock.
            let alloc = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
            let per_page = (PAGE / CELL_LEN) as u32;
            let pages = (alloc.cells / per_page) as usize;
            let area = self.cell_at(0)..self.cell_at(0) + pages * PAGE;
            released += self.punch_free_pages(area, |page| {
                let first = page as u32 * per_page;
                (first..first + per_page).all(|cell| !alloc.is_used(cell))
            });
        }
        released
    }

    /// Punches out the pages of `area` (page-aligned) that hold data and of which `free` says
    /// yes (`free` gets the page's index within `area`). Returns the bytes punched.
    fn punch_free_pages(&self, area: Range<usize>, free: impl Fn(usize) -> bool) -> usize {
        let Ok(data) = self.region.data_ranges(area.clone()) else {
            return 0;
        };
        let mut released = 0;
        let mut run: Option<Range<usize>> = None;
        let mut flush = |run: &mut Option<Range<usize>>| {
            if let Some(range) = run.take() {
                match self.region.punch(range.clone()) {
                    Ok(()) => released += range.len(),
                    Err(err) => tracing::warn!(%err, "cannot free state region pages"),
                }
            }
        };
        for range in data {
            let mut at = range.start - (range.start - area.start) % PAGE;
            while at < range.end {
                if free((at - area.start) / PAGE) {
                    match &mut run {
                        Some(r) if r.end == at => r.end = at + PAGE,
                        _ => {
                            flush(&mut run);
                            run = Some(at..at + PAGE);
                        }
                    }
                } else {
                    flush(&mut run);
                }
                at += PAGE;
            }
        }
        flush(&mut run);
        released
    }

    fn lock_handle(&self, slot: usize) -> std::sync::MutexGuard<'_, ()> {
        self.handle_locks[slot % HANDLE_SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn slot_of(&self, fh: u64) -> Option<usize> {
        let slot = usize::try_from(fh & ((1 << FH_SLOT_BITS) - 1)).ok()?;
        (slot < self.geometry.handles as usize).then_some(slot)
    }

    /// Opens a handle on `target`; `None` when every slot is in use.
    pub fn open(&self, target: Target) -> Option<u64> {
        let r = &self.region;
        let mut free_slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match free_slots.pop() {
            Some(slot) => slot,
            None => {
                let high = r.u32(H_HANDLE_HIGH);
                if high >= self.geometry.handles {
                    return None;
                }
                r.set_u32(H_HANDLE_HIGH, high + 1);
                high as usize
            }
        };
        let counter = r.u64(H_NEXT_FH);
        r.set_u64(H_NEXT_FH, counter.wrapping_add(1).max(1));
        drop(free_slots);
        let _lock = self.lock_handle(slot);
        let at = self.handle_at(slot);
        let fh = (counter << FH_SLOT_BITS) | slot as u64;
        r.set_u32(at + 12, target.kind);
        r.set_u64(at + 16, target.id);
        r.set_u32(at + 24, 0);
        r.set_u32(at + 28, 0);
        r.set_u32(at + 32, 0);
        r.set_u64(at + 40, now_ns());
        r.set_u64(at, fh);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        r.set_u32(at + 8, OPEN);
        Some(fh)
    }

    /// The target of handle `fh`, and its last rendering if `want_content`.
    pub fn get(&self, fh: u64, want_content: bool) -> Option<(Target, Option<Vec<u8>>)> {
        let slot = self.slot_of(fh)?;
        let _lock = self.lock_handle(slot);
        let r = &self.region;
        let at = self.handle_at(slot);
        let state = r.u32(at + 8);
        if r.u64(at) != fh || state == FREE {
            return None;
        }
        let target = Target {
            kind: r.u32(at + 12),
            id: r.u64(at + 16),
        };
        let content = (want_content && state == RENDERED).then(|| {
            let mut content = vec![0u8; r.u32(at + 24) as usize];
            r.read(self.cell_at(r.u32(at + 28)), &mut content);
            content
        });
        Some((target, content))
    }

    /// Stores `content` as the last rendering of `fh`. When no cells are free the rendering is
    /// not kept (a later read at an offset then renders afresh) and false is returned.
    pub fn store(&self, fh: u64, content: &[u8]) -> bool {
        let Some(slot) = self.slot_of(fh) else {
            return false;
        };
        let _lock = self.lock_handle(slot);
        let r = &self.region;
        let at = self.handle_at(slot);
        if r.u64(at) != fh || r.u32(at + 8) == FREE {
            return false;
        }
        let needed = u32::try_from(content.len().div_ceil(CELL_LEN)).unwrap_or(u32::MAX);
        let (old_first, old_count) = (r.u32(at + 28), r.u32(at + 32));
        r.set_u32(at + 8, WRITING);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        let first = self.reallocate(old_first, old_count, needed);
        let Some(first) = first else {
            r.set_u32(at + 24, 0);
            r.set_u32(at + 32, 0);
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            r.set_u32(at + 8, OPEN);
            return false;
        };
        r.write(self.cell_at(first), content);
        r.set_u32(at + 24, u32::try_from(content.len()).unwrap_or(0));
        r.set_u32(at + 28, first);
        r.set_u32(at + 32, needed);
        r.set_u64(at + 40, now_ns());
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        r.set_u32(at + 8, RENDERED);
        true
    }

    /// Frees cells `old_first..+old_count` and allocates `needed` new ones (`Some(0)` for none).
    fn reallocate(&self, old_first: u32, old_count: u32, needed: u32) -> Option<u32> {
        let mut alloc = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
        alloc.mark(old_first, old_count, false);
        if needed == 0 {
            Some(0)
        } else {
            alloc.alloc(needed)
        }
    }

    /// Frees handle `fh` and its content.
    pub fn release(&self, fh: u64) {
        let Some(slot) = self.slot_of(fh) else { return };
        let guard = self.lock_handle(slot);
        let r = &self.region;
        let at = self.handle_at(slot);
        if r.u64(at) != fh || r.u32(at + 8) == FREE {
            return;
        }
        let (first, count) = (r.u32(at + 28), r.u32(at + 32));
        r.set_u32(at + 8, WRITING);
        self.alloc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mark(first, count, false);
        r.set_u64(at, 0);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        r.set_u32(at + 8, FREE);
        drop(guard);
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot);
    }

    /// fused's own counters, which live in this region's header page.
    pub fn stats(&self) -> crate::stats::Counters<'_> {
        crate::stats::Counters::new(&self.region)
    }

    /// Number of container slots: at most this many containers keep state at once.
    pub fn container_slots(&self) -> usize {
        self.geometry.containers as usize
    }

    /// Finds the slot of container `key`, or claims one (evicting the least recently seen within
    /// the probe window).
    fn container_slot(&self, key: [u64; 2]) -> usize {
        let r = &self.region;
        let n = self.geometry.containers as usize;
        let home = (key[0] as usize) % n;
        let mut oldest = (u64::MAX, home);
        for probe in 0..PROBE_WINDOW.min(n) {
            let slot = (home + probe) % n;
            let at = self.container_at(slot);
            if r.u32(at + 16) == VALID && r.u64(at) == key[0] && r.u64(at + 8) == key[1] {
                return slot;
            }
            let seen = if r.u32(at + 16) == VALID {
                r.u64(at + 64)
            } else {
                0
            };
            if seen < oldest.0 {
                oldest = (seen, slot);
            }
        }
        oldest.1
    }

    /// Runs `f` on container `key`'s record (a default one if new) and stores the result.
    pub fn with_container<T>(&self, key: [u64; 2], f: impl FnOnce(&mut ContainerRecord) -> T) -> T {
        let _guard = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        let r = &self.region;
        let slot = self.container_slot(key);
        let at = self.container_at(slot);
        let existing = r.u32(at + 16) == VALID && r.u64(at) == key[0] && r.u64(at + 8) == key[1];
        let mut record = ContainerRecord::default();
        let (old_first, old_count) = if r.u32(at + 16) == VALID {
            (r.u32(at + 24), r.u32(at + 28))
        } else {
            (0, 0)
        };
        if existing {
            let rows = r.u32(at + 20) as usize;
            let mut bytes = vec![0u8; rows * ROW_LEN];
            r.read(self.cell_at(old_first), &mut bytes);
            record.stat_rows = bytes.chunks_exact(ROW_LEN).map(decode_row).collect();
            record.load = LoadAvg {
                avenrun: [r.u64(at + 32), r.u64(at + 40), r.u64(at + 48)],
            };
            record.load_updated_ns = r.u64(at + 56);
            record.tasks = (r.u32(at + C_CHECK) == tasks_check(key)).then(|| TaskCounts {
                running: r.u32(at + C_RUNNING),
                blocked: r.u32(at + C_BLOCKED),
                total: r.u32(at + C_TOTAL),
            });
        }
        let result = f(&mut record);

        let bytes: Vec<u8> = record.stat_rows.iter().flat_map(encode_row).collect();
        let needed = u32::try_from(bytes.len().div_ceil(CELL_LEN)).unwrap_or(u32::MAX);
        r.set_u32(at + 16, WRITING);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        let first = self.reallocate(old_first, old_count, needed);
        let (first, count, rows) = match first {
            Some(first) => {
                r.write(self.cell_at(first), &bytes);
                (first, needed, record.stat_rows.len())
            }
            // No room for rows: keep the load averages, forget the rows.
            None => (0, 0, 0),
        };
        r.set_u64(at, key[0]);
        r.set_u64(at + 8, key[1]);
        r.set_u32(at + 20, u32::try_from(rows).unwrap_or(0));
        r.set_u32(at + 24, first);
        r.set_u32(at + 28, count);
        for (i, load) in record.load.avenrun.iter().enumerate() {
            r.set_u64(at + 32 + 8 * i, *load);
        }
        r.set_u64(at + 56, record.load_updated_ns);
        r.set_u64(at + 64, now_ns());
        let tasks = record.tasks.unwrap_or_default();
        r.set_u32(at + C_RUNNING, tasks.running);
        r.set_u32(at + C_BLOCKED, tasks.blocked);
        r.set_u32(at + C_TOTAL, tasks.total);
        r.set_u32(at + C_CHECK, record.tasks.map_or(0, |_| tasks_check(key)));
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        r.set_u32(at + 16, VALID);
        result
    }
}

fn encode_row(row: &CpuTimes) -> Vec<u8> {
    [
        row.user,
        row.nice,
        row.system,
        row.idle,
        row.iowait,
        row.irq,
        row.softirq,
        row.steal,
        row.guest,
        row.guest_nice,
    ]
    .iter()
    .flat_map(|v| v.to_ne_bytes())
    .collect()
}

fn decode_row(bytes: &[u8]) -> CpuTimes {
    let v = |i: usize| {
        bytes
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_ne_bytes)
    };
    CpuTimes {
        user: v(0),
        nice: v(1),
        system: v(2),
        idle: v(3),
        iowait: v(4),
        irq: v(5),
        softirq: v(6),
        steal: v(7),
        guest: v(8),
        guest_nice: v(9),
    }
}

/// CLOCK_MONOTONIC in ns (the same clock in every process).
pub fn monotonic_ns() -> u64 {
    now_ns()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Geometry {
        Geometry {
            handles: 8,
            containers: 32,
            cells: 16,
        }
    }

    fn reattach(state: &SharedState) -> SharedState {
        let fd = state.region.fd().try_clone_to_owned().unwrap();
        SharedState::attach(Region::map(fd).unwrap()).unwrap()
    }

    #[test]
    fn handles_and_content_survive_a_new_attach() {
        let state = SharedState::attach(create_region(small()).unwrap()).unwrap();
        let fh = state.open(Target { kind: 1, id: 7 }).unwrap();
        assert!(state.store(fh, &[b'x'; 600]));
        let next = reattach(&state);
        let (target, content) = next.get(fh, true).unwrap();
        assert_eq!(target, Target { kind: 1, id: 7 });
        assert_eq!(content.unwrap(), vec![b'x'; 600]);
        next.release(fh);
        assert!(next.get(fh, false).is_none());
        assert!(state.get(fh, false).is_none(), "the region is shared");
    }

    #[test]
    fn half_written_content_is_dropped_on_attach() {
        let state = SharedState::attach(create_region(small()).unwrap()).unwrap();
        let fh = state.open(Target { kind: 1, id: 1 }).unwrap();
        assert!(state.store(fh, b"complete"));
        let slot = state.slot_of(fh).unwrap();
        state.region.set_u32(state.handle_at(slot) + 8, WRITING);
        let next = reattach(&state);
        let (_, content) = next.get(fh, true).unwrap();
        assert_eq!(content, None, "a rendering caught mid-write is not served");
    }

    #[test]
    fn cells_run_out_gracefully_and_are_reused() {
        let state = SharedState::attach(create_region(small()).unwrap()).unwrap();
        let a = state.open(Target { kind: 1, id: 1 }).unwrap();
        let b = state.open(Target { kind: 1, id: 2 }).unwrap();
        assert!(state.store(a, &vec![1u8; 12 * CELL_LEN]));
        assert!(
            !state.store(b, &vec![2u8; 8 * CELL_LEN]),
            "only 4 cells left"
        );
        assert_eq!(state.get(b, true).unwrap().1, None);
        state.release(a);
        assert!(state.store(b, &vec![2u8; 8 * CELL_LEN]));
    }

    #[test]
    fn handle_slots_run_out_and_stale_handles_are_rejected() {
        let state = SharedState::attach(create_region(small()).unwrap()).unwrap();
        let fhs: Vec<u64> = (0..8)
            .map(|i| state.open(Target { kind: 1, id: i }).unwrap())
            .collect();
        assert!(state.open(Target { kind: 1, id: 9 }).is_none());
        state.release(fhs[3]);
        let again = state.open(Target { kind: 1, id: 9 }).unwrap();
        assert_ne!(again, fhs[3], "a reused slot gets a new handle number");
        assert!(state.get(fhs[3], false).is_none());
    }

    #[test]
    fn container_records_persist_and_evict() {
        let state = SharedState::attach(create_region(small()).unwrap()).unwrap();
        let row = CpuTimes {
            user: 5,
            idle: 9,
            ..Default::default()
        };
        state.with_container([1, 2], |r| {
            assert!(r.stat_rows.is_empty());
            r.stat_rows = vec![row; 3];
            r.load.avenrun = [1, 2, 3];
        });
        let next = reattach(&state);
        next.with_container([1, 2], |r| {
            assert_eq!(r.stat_rows, vec![row; 3]);
            assert_eq!(r.load.avenrun, [1, 2, 3]);
        });
        // Many more containers than slots: lookups still work, old ones get evicted.
        for k in 0..100u64 {
            next.with_container([k + 10, k], |r| r.stat_rows = vec![row]);
        }
        next.with_container([109, 99], |r| assert_eq!(r.stat_rows, vec![row]));
    }

    #[test]
    fn task_counts_persist_and_stale_bytes_are_not_taken_for_them() {
        let state = SharedState::attach(create_region(small()).unwrap()).unwrap();
        let tasks = TaskCounts {
            running: 2,
            blocked: 1,
            total: 9,
        };
        state.with_container([1, 2], |r| {
            assert_eq!(r.tasks, None, "a new container is not counted yet");
            r.tasks = Some(tasks);
        });
        let next = reattach(&state);
        next.with_container([1, 2], |r| assert_eq!(r.tasks, Some(tasks)));
        // A worker that predates the count reuses the slot for another container (same home
        // slot) and leaves bytes 72..96 as they were: they must not pass for its count.
        let at = next.container_at(next.container_slot([1, 2]));
        next.region.set_u64(at, 33);
        next.region.set_u64(at + 8, 34);
        next.with_container([33, 34], |r| {
            assert_eq!(r.tasks, None);
            r.tasks = Some(tasks);
        });
        next.with_container([33, 34], |r| assert_eq!(r.tasks, Some(tasks)));
        // Zeros (a region written only by such a worker) mean "not counted".
        next.region.write(at + C_RUNNING, &[0; 16]);
        next.with_container([33, 34], |r| assert_eq!(r.tasks, None));
    }

    #[test]
    fn attaching_touches_no_page_it_does_not_need() {
        let geometry = Geometry::default();
        let state = SharedState::attach(create_region(geometry).unwrap()).unwrap();
        assert_eq!(
            state.region.allocated().unwrap(),
            4096,
            "only the header is allocated"
        );
        // One container record and one open file: a few pages more, not the whole table.
        state.with_container([3, 4], |r| r.load.avenrun = [1, 2, 3]);
        let fh = state.open(Target { kind: 1, id: 1 }).unwrap();
        assert!(state.store(fh, b"content"));
        let next = reattach(&state);
        next.with_container([3, 4], |r| assert_eq!(r.load.avenrun, [1, 2, 3]));
        assert_eq!(next.get(fh, true).unwrap().1.unwrap(), b"content");
        assert!(next.region.allocated().unwrap() <= 5 * 4096);
    }

    #[test]
    fn free_slots_and_cells_give_their_pages_back() {
        let state = SharedState::attach(create_region(Geometry::default()).unwrap()).unwrap();
        // A burst: many files open at once, each with a rendering of a few cells.
        let fhs: Vec<u64> = (0..1000)
            .map(|i| state.open(Target { kind: 1, id: i }).unwrap())
            .collect();
        for &fh in &fhs {
            assert!(state.store(fh, &[7u8; 3 * CELL_LEN]));
        }
        let burst = state.region.allocated().unwrap();
        assert!(burst > 700 * 1024, "{burst}");
        // All but a few are released again; one keeps its rendering, one never rendered.
        let kept = [fhs[0], fhs[500], fhs[999]];
        for fh in fhs.iter().filter(|fh| !kept.contains(fh)) {
            state.release(*fh);
        }
        assert!(state.store(kept[2], b"short"));
        let released = state.release_free_pages();
        let after = state.region.allocated().unwrap();
        assert_eq!(after as usize, burst as usize - released);
        assert!(after < 8 * 4096, "{after} bytes left");
        assert_eq!(
            state.get(kept[0], true).unwrap().1.unwrap(),
            vec![7u8; 3 * CELL_LEN]
        );
        assert_eq!(
            state.get(kept[1], true).unwrap().1.unwrap(),
            vec![7u8; 3 * CELL_LEN]
        );
        assert_eq!(state.get(kept[2], true).unwrap().1.unwrap(), b"short");
        assert!(
            state.get(fhs[1], false).is_none(),
            "a released handle stays released"
        );
        // Released slots and cells work as before, under this worker and the next.
        let fh = state.open(Target { kind: 2, id: 2 }).unwrap();
        assert!(state.store(fh, &[9u8; 2 * CELL_LEN]));
        let next = reattach(&state);
        assert_eq!(
            next.get(fh, true).unwrap().1.unwrap(),
            vec![9u8; 2 * CELL_LEN]
        );
        assert_eq!(
            next.get(kept[0], true).unwrap().1.unwrap(),
            vec![7u8; 3 * CELL_LEN]
        );
        let again = next.open(Target { kind: 3, id: 3 }).unwrap();
        assert!(next.store(again, &[1u8; 600]));
        assert_ne!(again, fh);
        assert_eq!(next.release_free_pages(), 0, "nothing more to give back");
    }

    #[test]
    fn a_record_across_a_page_boundary_is_recovered() {
        let state = SharedState::attach(create_region(Geometry::default()).unwrap()).unwrap();
        // A slot that starts on one page and ends on the next (its home slot is its key's
        // first word modulo the slot count).
        let slot = (0..state.geometry.containers as usize)
            .find(|&s| {
                let at = state.container_at(s);
                at / 4096 != (at + CONTAINER_LEN - 1) / 4096
            })
            .unwrap();
        let key = [slot as u64, 7];
        let row = CpuTimes {
            user: 11,
            ..Default::default()
        };
        state.with_container(key, |r| {
            r.stat_rows = vec![row; 2];
            r.load.avenrun = [4, 5, 6];
        });
        let other = [slot as u64 + 1, 8];
        state.with_container(other, |r| r.load.avenrun = [9, 9, 9]);
        let at = state.container_at(slot + 1);
        state.region.set_u32(at + 16, WRITING);
        let next = reattach(&state);
        next.with_container(key, |r| {
            assert_eq!(r.stat_rows, vec![row; 2]);
            assert_eq!(r.load.avenrun, [4, 5, 6]);
        });
        assert_eq!(
            next.region.u32(at + 16),
            FREE,
            "a half-written record is cleared"
        );
    }

    #[test]
    fn foreign_or_newer_regions_are_refused() {
        let region = Region::create(c"test", small().region_len()).unwrap();
        assert!(matches!(
            SharedState::attach(region),
            Err(AttachError::NotState)
        ));
        let region = create_region(small()).unwrap();
        region.set_u32(H_VERSION, VERSION + 1);
        assert!(matches!(
            SharedState::attach(region),
            Err(AttachError::Version(_))
        ));
    }
}
