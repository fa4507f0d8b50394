//! Anonymous memory, for tests that register memory themselves.

use std::ptr::NonNull;

/// A private anonymous mapping, unmapped when dropped. Unlike heap memory it never shares a
/// huge page with other data, so registering it pins exactly its own pages.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; the tests synchronise their accesses.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `len` bytes (rounded up to pages by the kernel), zeroed.
    ///
    /// # Panics
    ///
    /// If the kernel refuses the mapping.
    pub fn new(len: usize) -> Self {
        // SAFETY: an anonymous private mapping at an address the kernel chooses; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(
            base,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let base = NonNull::new(base.cast()).expect("mmap never returns address 0 here");
        Self { base, len }
    }

    /// Leaks the mapping (it stays until the process ends) and returns its address: for memory
    /// handed to something that may outlive every owner the test could keep.
    pub fn leak(self) -> *mut u8 {
        let base = self.base.as_ptr();
        std::mem::forget(self);
        base
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The length asked for.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the length is 0 (never, once mapped).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of `len` bytes at `offset`. The caller makes sure the kernel is not writing there.
    ///
    /// # Panics
    ///
    /// If the range leaves the mapping.
    pub fn read(&self, offset: usize, len: usize) -> Vec<u8> {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        let mut v = vec![0u8; len];
        // SAFETY: the range is inside the mapping (checked above) and `v` has `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr().add(offset), v.as_mut_ptr(), len) };
        v
    }

    /// Copies `data` to `offset`. The caller makes sure the kernel is not using that range.
    ///
    /// # Panics
    ///
    /// If the range leaves the mapping.
    pub fn write(&self, offset: usize, data: &[u8]) {
        assert!(offset
            .checked_add(data.len())
            .is_some_and(|end| end <= self.len));
        // SAFETY: the range is inside the mapping (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr().add(offset), data.len())
        };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `new` with this length and is unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
