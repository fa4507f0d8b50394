//! [`Wakers`]: the wakers of a worker's operations, shared between the operations of one task.
//!
//! A task that starts 32 operations in one poll hands the same waker to each. Cloning it for
//! every operation, and dropping each clone at completion, would cost two atomic
//! read-modify-writes per operation on the task's reference count (a few tens of nanoseconds
//! where locked instructions are slow). Instead each distinct waker is cloned once, counted
//! here with a plain (worker-local) counter, and dropped when its last operation lets go.
//! Consecutive operations are matched with [`Waker::will_wake`] against the waker stored last,
//! which is the common case (one task starting several operations in a row). Worker-local: no
//! synchronization.

use std::task::Waker;

/// The index of a stored waker.
pub(crate) type WakerId = u32;

struct Entry {
    waker: Waker,
    refs: u32,
}

/// A worker's operation wakers, reference-counted locally.
#[derive(Default)]
pub(crate) struct Wakers {
    entries: Vec<Option<Entry>>,
    free: Vec<WakerId>,
    /// The entry stored or reused last.
    last: Option<WakerId>,
}

impl Wakers {
    /// A reference to a waker that wakes what `waker` wakes: the last one stored if it does,
    /// else a new clone.
    #[inline]
    pub(crate) fn acquire(&mut self, waker: &Waker) -> WakerId {
        if let Some(id) = self.last {
            if let Some(Some(entry)) = self.entries.get_mut(id as usize) {
                if entry.waker.will_wake(waker) {
                    entry.refs += 1;
                    return id;
                }
            }
        }
        let entry = Some(Entry {
            waker: waker.clone(),
            refs: 1,
        });
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as WakerId
            }
        };
        self.last = Some(id);
        id
    }

    /// Whether `id` wakes what `waker` wakes.
    #[inline]
    pub(crate) fn will_wake(&self, id: WakerId, waker: &Waker) -> bool {
        matches!(&self.entries[id as usize], Some(e) if e.waker.will_wake(waker))
    }

    /// Lets go of a reference; the last one returns the waker, for the caller to drop (or
    /// wake) once it no longer borrows the table.
    #[inline]
    #[must_use]
    pub(crate) fn release(&mut self, id: WakerId) -> Option<Waker> {
        let slot = &mut self.entries[id as usize];
        let entry = slot.as_mut().expect("a held waker reference");
        entry.refs -= 1;
        if entry.refs > 0 {
            return None;
        }
        if self.last == Some(id) {
            self.last = None;
        }
        self.free.push(id);
        slot.take().map(|e| e.waker)
    }

    /// Wakes the waker `id` and lets go of the reference.
    #[inline]
    pub(crate) fn wake(&mut self, id: WakerId) {
        match self.release(id) {
            Some(last) => crate::contain::wake(last),
            None => {
                if let Some(Some(entry)) = self.entries.get(id as usize) {
                    crate::contain::wake_by_ref(&entry.waker);
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    use super::Wakers;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            // Relaxed: a count read on this thread.
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn one_clone_serves_consecutive_operations_of_a_task() {
        let a = Arc::new(Count::default());
        let b = Arc::new(Count::default());
        let (wa, wb) = (Waker::from(Arc::clone(&a)), Waker::from(Arc::clone(&b)));
        let mut wakers = Wakers::default();
        let ids: Vec<_> = (0..3).map(|_| wakers.acquire(&wa)).collect();
        assert!(ids.iter().all(|&i| i == ids[0]));
        assert_eq!(
            Arc::strong_count(&a),
            3,
            "the test's two handles and one stored clone"
        );
        let other = wakers.acquire(&wb);
        assert_ne!(other, ids[0]);
        assert!(wakers.will_wake(other, &wb) && !wakers.will_wake(other, &wa));
        for id in ids {
            wakers.wake(id);
        }
        wakers.wake(other);
        // Relaxed: read on the waking thread.
        assert_eq!(a.0.load(Ordering::Relaxed), 3);
        assert_eq!(b.0.load(Ordering::Relaxed), 1);
        assert_eq!(
            Arc::strong_count(&a),
            2,
            "the stored clone was dropped with its last use"
        );
        assert_eq!(Arc::strong_count(&b), 2);
    }
}
