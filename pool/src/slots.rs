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
//! - **Ownership, not flags.** A slot is handed out as an [`OwnedFileSlot`], which is neither
//!   `Copy` nor `Clone` and pushes its slot back when it drops. So a slot has one owner at a time
//!   and goes back once, by its owner: a stale copy of its number cannot free it while someone
//!   else holds it.

use std::fmt;

use regio_loom_shim::sync::atomic::AtomicU32;
use regio_loom_shim::sync::Arc;

use crate::error::{Error, Result};
use regio_sync::{IndexStack, NIL};

/// A slot in a registered fixed-file table (a direct descriptor), as operations name it. A slot
/// handed out by [`FileSlots`] is owned through an [`OwnedFileSlot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileSlot(pub u32);

/// The most slots a table may have: the kernel's limit on a fixed-file table
/// (`IORING_MAX_FIXED_FILES`).
const MAX_SLOTS: u32 = 1 << 20;

struct Table {
    free: IndexStack,
    links: Box<[AtomicU32]>,
}

/// A pool of fixed-file slots `0..capacity`. A handle: clones share the slots.
///
/// ```
/// use regio_pool::FileSlots;
///
/// let slots = FileSlots::new(2)?;
/// let a = slots.alloc()?;
/// let b = slots.alloc()?;
/// assert!(slots.alloc().unwrap_err().is_would_block());
/// let number = a.slot(); // what an operation names
/// drop(a); // back to the table
/// assert_eq!(slots.alloc()?.slot(), number);
/// # drop(b);
/// # Ok::<(), regio_pool::Error>(())
/// ```
///
/// A slot goes back once, by its owner:
///
/// ```compile_fail,E0382
/// let slots = regio_pool::FileSlots::new(1).unwrap();
/// let a = slots.alloc().unwrap();
/// drop(a);
/// drop(a);
/// ```
#[derive(Clone)]
pub struct FileSlots {
    table: Arc<Table>,
}

impl fmt::Debug for FileSlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSlots")
            .field("capacity", &self.capacity())
            .field("available", &self.available())
            .finish()
    }
}

impl FileSlots {
    /// A pool of `capacity` slots, all free.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `capacity` is above the kernel's limit of 2^20 fixed files.
    pub fn new(capacity: u32) -> Result<Self> {
        if capacity > MAX_SLOTS {
            return Err(Error::Config(format!(
                "a fixed-file table holds at most {MAX_SLOTS} slots, not {capacity}"
            )));
        }
        let table = Table {
            free: IndexStack::new(),
            links: (0..capacity).map(|_| AtomicU32::new(NIL)).collect(),
        };
        // Pushed in reverse so that slot 0 is handed out first.
        let all: Vec<u32> = (0..capacity).rev().collect();
        table.free.push_slice(&*table.links, &all);
        Ok(Self {
            table: Arc::new(table),
        })
    }

    /// The number of slots.
    pub fn capacity(&self) -> u32 {
        self.table.links.len() as u32
    }

    /// About how many slots are free.
    pub fn available(&self) -> usize {
        self.table.free.len()
    }

    /// Takes a free slot. It comes back when the [`OwnedFileSlot`] drops.
    ///
    /// # Errors
    ///
    /// [`Error::SlotsExhausted`] (a would-block) if none is free.
    pub fn alloc(&self) -> Result<OwnedFileSlot> {
        let slot = self
            .table
            .free
            .pop(&*self.table.links)
            .ok_or(Error::SlotsExhausted {
                capacity: self.capacity(),
            })?;
        Ok(OwnedFileSlot {
            slot: FileSlot(slot),
            table: Arc::clone(&self.table),
        })
    }
}

/// A fixed-file slot handed out by [`FileSlots`]: its owner's alone until it drops, when the
/// slot goes back to its table.
#[must_use = "dropping it gives the slot back at once"]
pub struct OwnedFileSlot {
    slot: FileSlot,
    table: Arc<Table>,
}

impl OwnedFileSlot {
    /// The slot, as operations name it.
    pub fn slot(&self) -> FileSlot {
        self.slot
    }
}

impl fmt::Debug for OwnedFileSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OwnedFileSlot").field(&self.slot.0).finish()
    }
}

impl Drop for OwnedFileSlot {
    fn drop(&mut self) {
        self.table.free.push(&*self.table.links, self.slot.0);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn hands_out_every_slot_once() {
        let slots = FileSlots::new(3).unwrap();
        let mut held: Vec<OwnedFileSlot> = (0..3).map(|_| slots.alloc().unwrap()).collect();
        let mut got: Vec<u32> = held.iter().map(|s| s.slot().0).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
        assert!(matches!(
            slots.alloc(),
            Err(Error::SlotsExhausted { capacity: 3 })
        ));
        let one = held.iter().position(|s| s.slot() == FileSlot(1)).unwrap();
        drop(held.swap_remove(one));
        assert_eq!(slots.available(), 1);
        assert_eq!(slots.alloc().unwrap().slot(), FileSlot(1));
    }

    #[test]
    fn threads_share_the_slots_without_duplicates() {
        let slots = FileSlots::new(8).unwrap();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    for round in 0..2_000 {
                        if round % 3 != 2 {
                            if let Ok(slot) = slots.alloc() {
                                mine.push(slot);
                            }
                        } else {
                            mine.pop();
                        }
                    }
                });
            }
        });
        assert_eq!(slots.available(), 8);
        let all: Vec<OwnedFileSlot> = (0..8).map(|_| slots.alloc().unwrap()).collect();
        let mut numbers: Vec<u32> = all.iter().map(|s| s.slot().0).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (0..8).collect::<Vec<_>>());
    }

    /// With slots freed by number, a stale copy freed a slot that someone else held by then,
    /// and the next alloc handed it out a second time. An owned slot goes back once, by its
    /// owner, to its own table.
    #[test]
    fn a_slot_has_one_owner_until_it_goes_back() {
        let slots = FileSlots::new(1).unwrap();
        let first = slots.alloc().unwrap();
        let stale = first.slot();
        drop(first);
        let second = slots.alloc().unwrap();
        assert_eq!(second.slot(), stale, "the same number, a new owner");
        assert!(
            slots.alloc().unwrap_err().is_would_block(),
            "held by `second` alone"
        );
        let other = FileSlots::new(1).unwrap();
        let theirs = other.alloc().unwrap();
        assert_eq!(theirs.slot(), second.slot());
        drop(theirs);
        assert_eq!(other.available(), 1, "it went back to its own table");
        assert_eq!(slots.available(), 0, "not to this one");
        drop(slots);
        drop(second);
        assert!(matches!(FileSlots::new(u32::MAX), Err(Error::Config(_))));
    }
}
