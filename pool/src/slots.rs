//! The fixed-file slot pool: the "descriptors" half of pre-registered buffers and descriptors.
//!
//! An adapter registers a sparse fixed-file table of `N` entries with its ring
//! (`IORING_REGISTER_FILES` with `-1` entries, or `FILES_SPARSE`); this pool hands its slot
//! numbers out and takes them back, so that opening a file or accepting a connection straight
//! into a fixed slot needs no lock.
//!
//! # Synchronization
//!
//! - Free slots sit in an [`IndexStack`]; see its docs.
//! - Each slot has an `allocated` flag, swapped on every hand-out and take-back, so that a slot
//!   freed twice is reported instead of being handed out twice: the swap's AcqRel makes the two
//!   transitions of one slot totally ordered.

use regio_sync::primitive::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::error::{Error, Result};
use crate::stack::{IndexStack, NIL};

/// A slot in a registered fixed-file table (a direct descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileSlot(pub u32);

/// A pool of fixed-file slots `0..capacity`.
///
/// ```
/// use regio_pool::FileSlots;
///
/// let slots = FileSlots::new(2);
/// let a = slots.alloc().unwrap();
/// let b = slots.alloc().unwrap();
/// assert!(slots.alloc().unwrap_err().is_would_block());
/// slots.free(a).unwrap();
/// assert!(slots.free(a).is_err()); // a double free is reported
/// # let _ = b;
/// ```
#[derive(Debug)]
pub struct FileSlots {
    free: IndexStack,
    links: Box<[AtomicU32]>,
    allocated: Box<[AtomicBool]>,
}

impl FileSlots {
    /// A pool of `capacity` slots, all free.
    pub fn new(capacity: u32) -> Self {
        let slots = Self {
            free: IndexStack::new(),
            links: (0..capacity).map(|_| AtomicU32::new(NIL)).collect(),
            allocated: (0..capacity).map(|_| AtomicBool::new(false)).collect(),
        };
        // Pushed in reverse so that slot 0 is handed out first.
        let all: Vec<u32> = (0..capacity).rev().collect();
        slots.free.push_slice(&*slots.links, &all);
        slots
    }

    /// The number of slots.
    pub fn capacity(&self) -> u32 {
        self.links.len() as u32
    }

    /// About how many slots are free.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Takes a free slot.
    ///
    /// # Errors
    ///
    /// [`Error::SlotsExhausted`] (a would-block) if none is free.
    pub fn alloc(&self) -> Result<FileSlot> {
        let slot = self.free.pop(&*self.links).ok_or(Error::SlotsExhausted {
            capacity: self.capacity(),
        })?;
        // AcqRel: see the module docs; the slot was free, so the flag was false.
        let was = self.allocated[slot as usize].swap(true, Ordering::AcqRel);
        debug_assert!(!was, "a free slot is never marked allocated");
        Ok(FileSlot(slot))
    }

    /// Gives a slot back.
    ///
    /// # Errors
    ///
    /// [`Error::SlotNotAllocated`] if the slot is out of range or not handed out (a double
    /// free); the pool is unchanged then.
    pub fn free(&self, slot: FileSlot) -> Result<()> {
        let flag = self
            .allocated
            .get(slot.0 as usize)
            .ok_or(Error::SlotNotAllocated(slot.0))?;
        // AcqRel: see the module docs.
        if !flag.swap(false, Ordering::AcqRel) {
            return Err(Error::SlotNotAllocated(slot.0));
        }
        self.free.push(&*self.links, slot.0);
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn hands_out_every_slot_once() {
        let slots = FileSlots::new(3);
        let mut got: Vec<u32> = (0..3).map(|_| slots.alloc().unwrap().0).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
        assert!(matches!(
            slots.alloc(),
            Err(Error::SlotsExhausted { capacity: 3 })
        ));
        slots.free(FileSlot(1)).unwrap();
        assert_eq!(slots.available(), 1);
        assert_eq!(slots.alloc().unwrap(), FileSlot(1));
    }

    #[test]
    fn threads_share_the_slots_without_duplicates() {
        let slots = FileSlots::new(8);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    for round in 0..2_000 {
                        if round % 3 != 2 {
                            if let Ok(slot) = slots.alloc() {
                                mine.push(slot);
                            }
                        } else if let Some(slot) = mine.pop() {
                            slots.free(slot).unwrap();
                        }
                    }
                    for slot in mine {
                        slots.free(slot).unwrap();
                    }
                });
            }
        });
        assert_eq!(slots.available(), 8);
        let mut all: Vec<u32> = (0..8).map(|_| slots.alloc().unwrap().0).collect();
        all.sort_unstable();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn bad_frees_are_reported() {
        let slots = FileSlots::new(1);
        assert!(matches!(
            slots.free(FileSlot(0)),
            Err(Error::SlotNotAllocated(0))
        ));
        assert!(matches!(
            slots.free(FileSlot(9)),
            Err(Error::SlotNotAllocated(9))
        ));
        let s = slots.alloc().unwrap();
        slots.free(s).unwrap();
        assert!(slots.free(s).is_err());
        assert_eq!(slots.available(), 1);
    }
}
