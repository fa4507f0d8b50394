//! Regions: page-aligned anonymous memory, optionally on 2 MiB huge pages and optionally locked.

use std::io;
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::memlock::MemlockLimit;

/// The size of a huge page this crate asks for.
pub const HUGE_PAGE: usize = 2 << 20;

/// How a region's memory is mapped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegionOptions {
    /// Try 2 MiB huge pages (`MAP_HUGETLB`) first; fall back to normal pages with
    /// `MADV_HUGEPAGE` when none are reserved.
    pub huge_pages: bool,
    /// `mlock` the region, so that it is resident before the kernel pins it.
    pub mlock: bool,
}

/// An anonymous, page-aligned mapping owned by the pool. Unmapped on drop.
#[derive(Debug)]
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    huge: bool,
    locked: bool,
}

// SAFETY: a `Region` is a plain owned mapping; the pointer is never aliased by Rust references
// that the region itself hands out, and unmapping on any thread is allowed.
unsafe impl Send for Region {}
// SAFETY: `&Region` only exposes the address and length, never the memory.
unsafe impl Sync for Region {}

impl Region {
    /// Maps at least `len` bytes (rounded up to the page or huge-page size).
    ///
    /// # Errors
    ///
    /// [`Error::Map`] or [`Error::Lock`], both naming RLIMIT_MEMLOCK and its value.
    pub fn map(len: usize, options: RegionOptions) -> Result<Region> {
        if len == 0 {
            return Err(Error::Config("a region cannot be empty".into()));
        }
        let region = if options.huge_pages {
            match map_anon(round_up(len, HUGE_PAGE)?, true) {
                Ok(r) => r,
                Err(_) => {
                    let r = map_anon(round_up(len, page_size())?, false)?;
                    // Transparent huge pages are a hint: failure changes nothing but speed.
                    // SAFETY: the range is exactly the mapping just created.
                    unsafe {
                        libc::madvise(r.base.as_ptr().cast(), r.len, libc::MADV_HUGEPAGE);
                    }
                    r
                }
            }
        } else {
            map_anon(round_up(len, page_size())?, false)?
        };
        if options.mlock {
            return region.lock();
        }
        Ok(region)
    }

    fn lock(mut self) -> Result<Region> {
        // The raw system call rather than libc's `mlock`: sanitizers intercept `mlock` and turn
        // it into a no-op that always succeeds, which would hide RLIMIT_MEMLOCK failures.
        // SAFETY: the range is exactly this region's mapping; mlock only pins it.
        let rc = unsafe { libc::syscall(libc::SYS_mlock, self.base.as_ptr(), self.len) };
        if rc != 0 {
            return Err(Error::Lock {
                len: self.len,
                source: io::Error::last_os_error(),
                memlock: MemlockLimit::current(),
            });
        }
        self.locked = true;
        Ok(self)
    }

    /// The first byte.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// The mapped length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: regions are never empty. (Here for the `len` convention.)
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the region sits on explicit 2 MiB huge pages.
    pub fn is_huge(&self) -> bool {
        self.huge
    }

    /// Whether the region is mlocked.
    pub fn is_locked(&self) -> bool {
        self.locked
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the range is exactly this region's mapping, and nothing refers to it any more
        // (the pool drops regions only once every buffer is back). `munmap` also unlocks it.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

fn map_anon(len: usize, huge: bool) -> Result<Region> {
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    if huge {
        flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_2MB;
    }
    // SAFETY: an anonymous mapping at an address of the kernel's choosing aliases nothing.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(Error::Map {
            len,
            source: io::Error::last_os_error(),
            memlock: MemlockLimit::current(),
        });
    }
    Ok(Region {
        base: NonNull::new(ptr.cast()).expect("mmap never returns null on success"),
        len,
        huge,
        locked: false,
    })
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: `sysconf` has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// `len` rounded up to a multiple of `to`, or the `ENOMEM` the kernel gives for a length that no
/// address space holds.
fn round_up(len: usize, to: usize) -> Result<usize> {
    len.checked_next_multiple_of(to).ok_or_else(|| Error::Map {
        len,
        source: io::Error::from_raw_os_error(libc::ENOMEM),
        memlock: MemlockLimit::current(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_page_aligned_and_writable() {
        let r = Region::map(10_000, RegionOptions::default()).unwrap();
        assert_eq!(r.base().as_ptr() as usize % page_size(), 0);
        assert_eq!(r.len() % page_size(), 0);
        assert!(r.len() >= 10_000);
        // SAFETY: the region is ours and at least 10 000 bytes long.
        unsafe { r.base().as_ptr().add(9_999).write(7) };
    }

    #[test]
    fn huge_pages_fall_back() {
        let r = Region::map(
            4096,
            RegionOptions {
                huge_pages: true,
                mlock: false,
            },
        )
        .unwrap();
        assert!(r.len() >= 4096);
        if r.is_huge() {
            assert_eq!(r.len() % HUGE_PAGE, 0);
        }
    }

    #[test]
    fn mlock_marks_region_locked() {
        let r = Region::map(
            8192,
            RegionOptions {
                huge_pages: false,
                mlock: true,
            },
        );
        // Under a small RLIMIT_MEMLOCK without CAP_IPC_LOCK this may fail; then the error must
        // name the limit.
        match r {
            Ok(r) => assert!(r.is_locked()),
            Err(e) => assert!(e.to_string().contains("RLIMIT_MEMLOCK"), "{e}"),
        }
    }

    #[test]
    fn a_failed_mmap_names_rlimit_memlock() {
        // Far beyond the 47-bit user address space: the kernel refuses with ENOMEM.
        let err = Region::map(1 << 50, RegionOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Map { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("RLIMIT_MEMLOCK is "), "{text}");
        assert_eq!(
            std::io::Error::from(err).kind(),
            std::io::ErrorKind::OutOfMemory
        );
    }

    #[test]
    fn a_length_that_cannot_be_rounded_up_is_an_error() {
        for options in [
            RegionOptions::default(),
            RegionOptions {
                huge_pages: true,
                mlock: false,
            },
        ] {
            let err = Region::map(usize::MAX, options).unwrap_err();
            assert!(matches!(err, Error::Map { .. }), "{err}");
            assert_eq!(
                std::io::Error::from(err).kind(),
                std::io::ErrorKind::OutOfMemory
            );
        }
    }

    #[test]
    fn zero_length_is_a_config_error() {
        assert!(matches!(
            Region::map(0, RegionOptions::default()),
            Err(Error::Config(_))
        ));
    }
}
