//! [`MemoryExport`]: an export in anonymous memory, with a page map of what was written for
//! `base:allocation`, registered with the runtime's rings for zero-copy reads when it can be.
//!
//! The mapping is private, anonymous and `MAP_NORESERVE`: a page costs memory only once it is
//! written, and pages given back with `MADV_DONTNEED` read as zeroes again. A bitmap with one
//! bit per page says which pages hold data; a read-write lock over it also orders the copies
//! in and out of the mapping (copies are memcpy-fast, so readers share it and a writer holds it
//! for one copy).
//!
//! # Zero copy
//!
//! [`register`](MemoryExport::register) makes the mapping a [`Region`] of the runtime: READ
//! replies are then sent straight from it with `SEND_ZC`. Registering pins the whole export:
//! the kernel faults in every page (the export then costs its full size in memory, written or
//! not) and keeps the pages until the region is gone. A pinned page must stay the page the
//! mapping shows, so a registered export never gives pages back with `MADV_DONTNEED` (the
//! mapping would get fresh zero pages while the kernel kept sending the old ones): TRIM and
//! WRITE_ZEROES write zeroes over the pages that hold data instead, and the page map still
//! says they hold none. Exports larger than [`ZERO_COPY_MAX`] (or half the machine's memory),
//! or than `RLIMIT_MEMLOCK` without `CAP_IPC_LOCK`, are not registered (the kernel would fault
//! in every page before it refused), and a registration the kernel refuses (the limit reached
//! with what is pinned already, single-issuer rings) leaves the export on the copy path too,
//! with a warning.

use std::io;
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use regio_runtime::region::{Memory, Region};

use crate::proto::{BlockStatusFlags, Errno, Extent};

/// The largest memory export registered for zero-copy reads: registering pins (and so
/// allocates) all of it.
pub(crate) const ZERO_COPY_MAX: u64 = 16 << 30;

/// The most extents one block status answer collects (the client asks again for the rest).
const MAX_EXTENTS: usize = 4096;

/// A lazily allocated export in memory.
#[derive(Debug)]
pub(crate) struct MemoryExport {
    map: Arc<Mapping>,
    /// The mapping as a registered region, once [`register`](Self::register) ran (`None`
    /// inside when it was refused: the copy path).
    region: OnceLock<Option<Region>>,
    page: usize,
    /// One bit per page: set when the page holds data.
    pages: RwLock<Vec<u64>>,
}

/// An anonymous mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; every access to its bytes goes
// through `MemoryExport`, which orders them with its lock.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared access only reads `base` and `len`, and the bytes are reached under
// the export's lock.
unsafe impl Sync for Mapping {}

// SAFETY: `base..base + len` is one mapping, readable, unmapped only when the `Mapping` drops
// (the region holds an `Arc` to it until its last send completed); its address and length never
// change.
unsafe impl Memory for Mapping {
    fn as_ptr(&self) -> *const u8 {
        self.base.as_ptr()
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are the mapping made in `MemoryExport::new`, unmapped only
        // here, and no reference into it outlives the export.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl MemoryExport {
    /// Reserves `size` bytes (nothing is allocated until written).
    pub(crate) fn new(size: u64) -> io::Result<Self> {
        let len =
            usize::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // SAFETY: a fresh anonymous private mapping at an address the kernel chooses; no
        // existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast()).expect("mmap never maps address 0 here");
        let page = regio_pool::page_size();
        let words = len.div_ceil(page).div_ceil(64);
        Ok(Self {
            map: Arc::new(Mapping { base, len }),
            region: OnceLock::new(),
            page,
            pages: RwLock::new(vec![0; words]),
        })
    }

    /// Registers the mapping with the current runtime's rings (once; later calls return what
    /// the first found): the region READ replies are sent from, or `None` for the copy path.
    /// See the [module docs](self#zero-copy).
    pub(crate) fn register(&self) -> Option<&Region> {
        self.region
            .get_or_init(|| {
                let size = self.map.len as u64;
                if size > zero_copy_limit() {
                    tracing::warn!(
                        size,
                        limit = zero_copy_limit(),
                        "a memory export this large is not registered: reads are copied"
                    );
                    return None;
                }
                // Pinning faults in every page before the kernel checks the limit: an export
                // that cannot fit is not tried (it would cost its whole size in memory for
                // nothing).
                let memlock = regio_pool::MemlockLimit::current();
                if memlock.lockable_bytes().is_some_and(|limit| size > limit) {
                    tracing::warn!(
                        size,
                        %memlock,
                        advice = memlock.advice().unwrap_or_default(),
                        "a memory export larger than RLIMIT_MEMLOCK is not registered: reads are copied"
                    );
                    return None;
                }
                match Region::register(Arc::clone(&self.map)) {
                    Ok(region) => {
                        tracing::info!(size, "memory export registered (pinned) for zero-copy reads");
                        Some(region)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot register a memory export: reads are copied");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// The registered region, if [`register`](Self::register) made one.
    pub(crate) fn region(&self) -> Option<&Region> {
        self.region.get().and_then(Option::as_ref)
    }

    /// Copies `out.len()` bytes from `offset` (in range: the request was validated).
    pub(crate) fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), Errno> {
        let start = self.range(offset, out.len())?;
        let _pages = self.pages.read();
        // SAFETY: `range` checked that `start..start + out.len()` lies in the mapping, which
        // lives as long as `self`; writers hold the lock exclusively, so no byte changes while
        // it is copied; `out` is a distinct buffer (a pool message).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.base.as_ptr().add(start),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(())
    }

    /// Copies `data` to `offset`, and marks its pages as holding data.
    pub(crate) fn write(&self, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let start = self.range(offset, data.len())?;
        let mut pages = self.pages.write();
        // SAFETY: as in `read`, with the lock held exclusively: nobody else reads or writes
        // these bytes now.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.base.as_ptr().add(start),
                data.len(),
            )
        };
        self.mark(&mut pages, start, data.len(), true);
        Ok(())
    }

    /// Gives the whole pages of the range back (they read as zeroes); partial pages at its
    /// edges are zeroed where they hold data, unless `edges` is false (a trim, which may
    /// leave them).
    pub(crate) fn punch(&self, offset: u64, len: usize, edges: bool) -> Result<(), Errno> {
        let start = self.range(offset, len)?;
        let end = start + len;
        let first_whole = start.next_multiple_of(self.page);
        let last_whole = end - end % self.page;
        let mut pages = self.pages.write();
        if self.region().is_some() {
            // Pinned pages must stay: zero what holds data, page by page, and mark it a hole.
            let mut at = start;
            while at < end {
                let stop = (at - at % self.page + self.page).min(end);
                let whole = at % self.page == 0 && stop - at == self.page;
                if edges || whole {
                    self.zero_if_data(&pages, at, stop);
                }
                if whole {
                    self.mark(&mut pages, at, self.page, false);
                }
                at = stop;
            }
            return Ok(());
        }
        if first_whole < last_whole {
            // SAFETY: a page-aligned range inside the mapping, under the exclusive lock:
            // nobody holds a reference into it; DONTNEED makes it read as zeroes.
            let rc = unsafe {
                libc::madvise(
                    self.map.base.as_ptr().add(first_whole).cast(),
                    last_whole - first_whole,
                    libc::MADV_DONTNEED,
                )
            };
            if rc != 0 {
                return Err(Errno::from(&io::Error::last_os_error()));
            }
            self.mark(&mut pages, first_whole, last_whole - first_whole, false);
            if edges {
                self.zero_if_data(&pages, start, first_whole.min(end));
                self.zero_if_data(&pages, last_whole.max(start), end);
            }
        } else if edges {
            self.zero_if_data(&pages, start, end);
        }
        Ok(())
    }

    /// Writes zeroes over the range and marks it as data (`NO_HOLE`).
    pub(crate) fn fill_zeroes(&self, offset: u64, len: usize) -> Result<(), Errno> {
        let start = self.range(offset, len)?;
        let mut pages = self.pages.write();
        // SAFETY: in range (checked), under the exclusive lock.
        unsafe { std::ptr::write_bytes(self.map.base.as_ptr().add(start), 0, len) };
        self.mark(&mut pages, start, len, true);
        Ok(())
    }

    /// The allocation of the export from `offset` on, for up to `len` bytes: runs of pages
    /// with data (flags 0) and without (`HOLE | ZERO`).
    pub(crate) fn extents(&self, offset: u64, len: u64) -> Vec<Extent> {
        let size = self.map.len as u64;
        let end = offset.saturating_add(len).min(size);
        let pages = self.pages.read();
        let page = self.page as u64;
        let mut extents: Vec<Extent> = Vec::new();
        let mut at = offset;
        while at < end && extents.len() < MAX_EXTENTS {
            let index = (at / page) as usize;
            let data = pages[index / 64] & (1 << (index % 64)) != 0;
            let run = same_run(&pages, index, data, end.div_ceil(page) as usize);
            let page_end = ((run as u64) * page).min(end);
            let flags = if data {
                BlockStatusFlags::empty()
            } else {
                BlockStatusFlags::HOLE | BlockStatusFlags::ZERO
            };
            match extents.last_mut() {
                Some(last) if last.flags == flags => last.length += page_end - at,
                _ => extents.push(Extent {
                    length: page_end - at,
                    flags,
                }),
            }
            at = page_end;
        }
        extents
    }

    /// The export's size.
    pub(crate) fn size(&self) -> u64 {
        self.map.len as u64
    }

    /// `offset..offset + len` as a start in the mapping, if it lies inside it.
    fn range(&self, offset: u64, len: usize) -> Result<usize, Errno> {
        let start = usize::try_from(offset).map_err(|_| Errno::EINVAL)?;
        match start.checked_add(len) {
            Some(end) if end <= self.map.len => Ok(start),
            _ => Err(Errno::EINVAL),
        }
    }

    fn mark(&self, pages: &mut [u64], start: usize, len: usize, data: bool) {
        if len == 0 {
            return;
        }
        for index in start / self.page..=(start + len - 1) / self.page {
            let bit = 1 << (index % 64);
            if data {
                pages[index / 64] |= bit;
            } else {
                pages[index / 64] &= !bit;
            }
        }
    }

    /// Zeroes `start..end` (within one page) if its page holds data: a page without data
    /// reads as zeroes already, and writing it would allocate it.
    fn zero_if_data(&self, pages: &[u64], start: usize, end: usize) {
        if start >= end {
            return;
        }
        let index = start / self.page;
        if pages[index / 64] & (1 << (index % 64)) != 0 {
            // SAFETY: in range (the callers' ranges lie in the checked range), and the caller
            // holds the lock exclusively (`pages` is borrowed from its write guard).
            unsafe { std::ptr::write_bytes(self.map.base.as_ptr().add(start), 0, end - start) };
        }
    }
}

/// The largest memory export [`MemoryExport::register`] registers: [`ZERO_COPY_MAX`], or half
/// the machine's memory if that is less.
fn zero_copy_limit() -> u64 {
    // SAFETY: sysconf takes no pointers.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    let physical = u64::try_from(pages)
        .unwrap_or(0)
        .saturating_mul(regio_pool::page_size() as u64);
    ZERO_COPY_MAX.min(physical / 2)
}

/// The end (a page index, at most `limit`) of the run of pages from `index` on whose bit in
/// `pages` is `data`: the bits left in `index`'s word at once, then whole words of the same
/// state. (Page by page, a block status request of 4 GiB walked a million pages.)
fn same_run(pages: &[u64], index: usize, data: bool, limit: usize) -> usize {
    let state = |word: u64| if data { word } else { !word };
    let bit = index % 64;
    // The pages from `index` to the end of its word that share its state, in a row.
    let same = (!(state(pages[index / 64]) >> bit)).trailing_zeros() as usize;
    let mut end = index + same.min(64 - bit);
    if end % 64 == 0 {
        while end < limit && state(pages[end / 64]) == u64::MAX {
            end += 64;
        }
    }
    end.min(limit).max(index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hole(length: u64) -> Extent {
        Extent {
            length,
            flags: BlockStatusFlags::HOLE | BlockStatusFlags::ZERO,
        }
    }

    fn data(length: u64) -> Extent {
        Extent {
            length,
            flags: BlockStatusFlags::empty(),
        }
    }

    /// The extents walked word by word agree with a page-by-page walk of the same map, for
    /// runs that start and end anywhere in a word and span whole words.
    #[test]
    fn extents_agree_with_a_page_by_page_walk() {
        let page = regio_pool::page_size() as u64;
        let pages = 300_u64;
        let export = MemoryExport::new(pages * page).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..40 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let first = state % pages;
            let count = 1 + (state >> 20) % 90;
            let at = first * page;
            let len = (count * page).min((pages - first) * page) as usize;
            if state & (1 << 40) == 0 {
                export.write(at, &vec![1; len]).unwrap();
            } else {
                export.punch(at, len, true).unwrap();
            }
            let marks = export.pages.read().clone();
            let is_data = |p: u64| marks[(p / 64) as usize] & (1 << (p % 64)) != 0;
            for (offset, len) in [
                (0, pages * page),
                (7 * page + 3, 200 * page),
                (64 * page, 65 * page),
            ] {
                let mut expected: Vec<Extent> = Vec::new();
                let mut at = offset;
                while at < offset + len {
                    let p = at / page;
                    let stop = ((p + 1) * page).min(offset + len);
                    let extent = if is_data(p) {
                        data(stop - at)
                    } else {
                        hole(stop - at)
                    };
                    match expected.last_mut() {
                        Some(last) if last.flags == extent.flags => last.length += extent.length,
                        _ => expected.push(extent),
                    }
                    at = stop;
                }
                assert_eq!(export.extents(offset, len), expected, "{offset}+{len}");
            }
        }
    }

    #[test]
    fn reads_back_writes_and_maps_them() {
        let page = regio_pool::page_size() as u64;
        let export = MemoryExport::new(16 * page).unwrap();
        assert_eq!(export.extents(0, 16 * page), [hole(16 * page)]);
        export.write(page + 10, b"hello").unwrap();
        let mut out = [0; 7];
        export.read(page + 9, &mut out).unwrap();
        assert_eq!(&out, b"\0hello\0");
        assert_eq!(
            export.extents(0, 16 * page),
            [hole(page), data(page), hole(14 * page)]
        );
        // From the middle of a page, and clipped to the request and the export.
        assert_eq!(export.extents(page + 100, 50), [data(50)]);
        assert_eq!(export.extents(15 * page, u64::MAX), [hole(page)]);
        assert_eq!(export.read(16 * page - 2, &mut out), Err(Errno::EINVAL));
    }

    #[test]
    fn punching_gives_pages_back_and_zeroes_edges_with_data() {
        let page = regio_pool::page_size();
        let export = MemoryExport::new(4 * page as u64).unwrap();
        export.write(0, &vec![0xff; 4 * page]).unwrap();
        // From the middle of page 0 to the middle of page 3.
        let (start, len) = (page / 2, 3 * page);
        export.punch(start as u64, len, true).unwrap();
        let mut all = vec![0; 4 * page];
        export.read(0, &mut all).unwrap();
        assert!(all[..start].iter().all(|&b| b == 0xff));
        assert!(all[start..start + len].iter().all(|&b| b == 0));
        assert!(all[start + len..].iter().all(|&b| b == 0xff));
        let p = page as u64;
        assert_eq!(export.extents(0, 4 * p), [data(p), hole(2 * p), data(p)]);
        // A trim leaves partial pages alone.
        export.punch(0, page / 2, false).unwrap();
        export.read(0, &mut all[..1]).unwrap();
        assert_eq!(all[0], 0xff);
        // Zeroes written with NO_HOLE are data.
        export.fill_zeroes(p, page).unwrap();
        assert_eq!(export.extents(0, 4 * p), [data(2 * p), hole(p), data(p)]);
    }
}
