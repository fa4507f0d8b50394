//! [`Registry`]: the tasks alive on one worker, so that it can drop them all at shutdown.

use super::TaskRef;

/// A slab of a worker's live tasks; each task knows its index (`Header::slot`).
#[derive(Default)]
pub(crate) struct Registry {
    slots: Vec<Option<TaskRef>>,
    free: Vec<usize>,
    live: usize,
}

impl Registry {
    /// Adopts `task`.
    pub(crate) fn insert(&mut self, task: TaskRef) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        task.header().set_slot(slot);
        self.slots[slot] = Some(task);
        self.live += 1;
    }

    /// Lets go of the task at `slot` (it completed). The caller drops the returned handle once
    /// it no longer borrows the registry.
    pub(crate) fn remove(&mut self, slot: usize) -> Option<TaskRef> {
        let task = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        self.live -= 1;
        Some(task)
    }

    /// Takes every task out (shutdown).
    pub(crate) fn take_all(&mut self) -> Vec<TaskRef> {
        self.free.clear();
        self.live = 0;
        self.slots.drain(..).flatten().collect()
    }

    /// How many tasks are alive.
    pub(crate) fn len(&self) -> usize {
        self.live
    }
}
