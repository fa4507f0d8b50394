//! The FIFO of tasks and threads waiting for an element, and the hand-off to them.
//!
//! # Synchronization
//!
//! - **One mutex for the list.** Queues and ticket slots change only under `list`. The fast
//!   path never takes it: acquirers and releasers look at the counter of all waiters, `total`,
//!   first (one word in the pool's own struct), and at the class's `queued` counter after.
//! - **Dekker pair against lost wake-ups.** A waiter raises `queued` (under the lock), then
//!   issues a SeqCst fence and looks at the shared store once more before it sleeps. A releaser
//!   pushes to the store, issues a SeqCst fence, then reads `queued`. Of two such sequences, at
//!   least one sees the other's write: either the waiter finds the element, or the releaser sees
//!   the waiter and hands elements over under the lock (which the waiter still holds until it
//!   is enqueued, so the releaser finds its ticket).
//! - **Grants are owned.** A granted element sits in the waiter's ticket slot until the waiter
//!   takes it, or until a cancelled waiter gives it back to the pool: nothing is lost when a
//!   future is dropped.

use std::collections::VecDeque;
use std::task::Waker;
use std::time::Instant;

use regio_loom_shim::sync::atomic::{fence, AtomicUsize, Ordering};
use regio_loom_shim::sync::{Condvar, Mutex, MutexGuard};

/// A queued waiter's place in the list.
#[derive(Debug)]
pub(crate) struct Ticket(u32);

enum Slot {
    Vacant,
    /// Waiting; a blocking waiter has no waker and sleeps on the condvar.
    Waiting(Option<Waker>),
    Granted(u32),
}

struct List {
    queues: Vec<VecDeque<u32>>,
    slots: Vec<Slot>,
    vacant: Vec<u32>,
}

pub(crate) struct Waiters {
    /// Waiters of any class: the hot paths' hint. Changed with `queued`, under the lock.
    total: AtomicUsize,
    queued: Box<[AtomicUsize]>,
    list: Mutex<List>,
    granted: Condvar,
}

impl Waiters {
    /// Room for `prealloc` waiters is reserved up front; more grow the list (only while the pool
    /// is exhausted).
    pub(crate) fn new(classes: usize, prealloc: usize) -> Self {
        Self {
            total: AtomicUsize::new(0),
            queued: (0..classes).map(|_| AtomicUsize::new(0)).collect(),
            list: Mutex::new(List {
                queues: (0..classes)
                    .map(|_| VecDeque::with_capacity(prealloc))
                    .collect(),
                slots: Vec::with_capacity(prealloc),
                vacant: Vec::with_capacity(prealloc),
            }),
            granted: Condvar::new(),
        }
    }

    /// Whether anyone waits for `class`: the releasers' fast check.
    #[inline]
    pub(crate) fn any(&self, class: usize) -> bool {
        // Relaxed: a hint on the fast path. The SeqCst fence that releasers issue before the
        // decisive check (see "Dekker pair") gives the guarantee.
        self.queued[class].load(Ordering::Relaxed) > 0
    }

    /// Whether anyone waits for any class: the hot paths' hint, one load with no indexing. When
    /// it says yes, [`any`](Self::any) tells whether it concerns the caller's class.
    #[inline(always)]
    pub(crate) fn any_class(&self) -> bool {
        // Relaxed: as in `any`.
        self.total.load(Ordering::Relaxed) > 0
    }

    /// Counts a waiter of `class` in. The caller holds the lock.
    fn raise(&self, class: usize) {
        // Relaxed: the counters change only under the lock; the fence that follows in `enqueue`
        // orders `queued` before the recheck, and `total` is a hint.
        self.queued[class].fetch_add(1, Ordering::Relaxed);
        // Relaxed: as above.
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a waiter of `class` out. The caller holds the lock.
    fn lower(&self, class: usize) {
        // Relaxed: changed only under the lock; see `any`.
        self.queued[class].fetch_sub(1, Ordering::Relaxed);
        // Relaxed: as above.
        self.total.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether anyone waits for `class`, after the releaser's half of the Dekker pair.
    pub(crate) fn any_after_publish(&self, class: usize) -> bool {
        // SeqCst: the releaser half of the Dekker pair: orders the caller's store push before
        // the load of `queued`.
        fence(Ordering::SeqCst);
        self.any(class)
    }

    fn lock(&self) -> MutexGuard<'_, List> {
        // Every critical section leaves the list consistent before anything that could panic
        // (waking happens after unlocking), so a poisoned lock is still usable.
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a waiter for `class`, unless `recheck` (a look at the shared store made after the
    /// waiter is announced) finds an element first.
    pub(crate) fn enqueue(
        &self,
        class: usize,
        waker: Option<&Waker>,
        recheck: impl FnOnce() -> Option<u32>,
    ) -> Result<u32, Ticket> {
        let mut list = self.lock();
        self.raise(class);
        // SeqCst: the waiter half of the Dekker pair (module docs).
        fence(Ordering::SeqCst);
        if let Some(elem) = recheck() {
            self.lower(class);
            return Ok(elem);
        }
        let slot = Slot::Waiting(waker.cloned());
        let id = match list.vacant.pop() {
            Some(id) => {
                list.slots[id as usize] = slot;
                id
            }
            None => {
                list.slots.push(slot);
                (list.slots.len() - 1) as u32
            }
        };
        list.queues[class].push_back(id);
        Err(Ticket(id))
    }

    /// Takes the element granted to `ticket`, or records `waker` to be woken when one is.
    pub(crate) fn poll(&self, ticket: &Ticket, waker: &Waker) -> Option<u32> {
        let mut list = self.lock();
        match &mut list.slots[ticket.0 as usize] {
            Slot::Granted(elem) => {
                let elem = *elem;
                free_slot(&mut list, ticket.0);
                Some(elem)
            }
            Slot::Waiting(w) => {
                match w {
                    Some(old) if old.will_wake(waker) => {}
                    _ => *w = Some(waker.clone()),
                }
                None
            }
            Slot::Vacant => unreachable!("a live ticket's slot is never vacant"),
        }
    }

    /// Sleeps until an element is granted to `ticket` or `deadline` passes (with no deadline,
    /// until the grant). On `None` the ticket is still queued: the caller must
    /// [`cancel`](Self::cancel) it.
    pub(crate) fn wait(&self, ticket: &Ticket, deadline: Option<Instant>) -> Option<u32> {
        let mut list = self.lock();
        loop {
            if let Slot::Granted(elem) = list.slots[ticket.0 as usize] {
                free_slot(&mut list, ticket.0);
                return Some(elem);
            }
            list = match deadline {
                None => self.granted.wait(list).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    match self.granted.wait_timeout(list, deadline - now) {
                        Ok((list, _)) => list,
                        Err(e) => e.into_inner().0,
                    }
                }
            };
        }
    }

    /// Withdraws `ticket`. If an element was already granted to it, that element comes back and
    /// the caller must return it to the pool.
    pub(crate) fn cancel(&self, class: usize, ticket: Ticket) -> Option<u32> {
        let mut list = self.lock();
        let granted = match list.slots[ticket.0 as usize] {
            Slot::Granted(elem) => Some(elem),
            Slot::Waiting(_) => {
                let queue = &mut list.queues[class];
                let pos = queue
                    .iter()
                    .position(|&t| t == ticket.0)
                    .expect("a waiting ticket is queued");
                queue.remove(pos);
                self.lower(class);
                None
            }
            Slot::Vacant => unreachable!("a live ticket's slot is never vacant"),
        };
        free_slot(&mut list, ticket.0);
        granted
    }

    /// Hands `elem` to the oldest waiter of `class`, or gives it back if there is none.
    pub(crate) fn grant(&self, class: usize, elem: u32) -> Result<(), u32> {
        let mut once = Some(elem);
        self.grant_from(class, || once.take())
            .map(|_| ())
            .ok_or(elem)
    }

    /// While waiters of `class` are queued and `take` yields elements, hands them over, oldest
    /// waiter first. Returns how many were handed over, or `None` if nobody waited.
    pub(crate) fn grant_from(
        &self,
        class: usize,
        mut take: impl FnMut() -> Option<u32>,
    ) -> Option<usize> {
        let mut granted = 0;
        let mut wake_blocked = false;
        loop {
            let mut list = self.lock();
            if list.queues[class].is_empty() {
                break;
            }
            let Some(elem) = take() else {
                break;
            };
            let id = list.queues[class]
                .pop_front()
                .expect("checked non-empty above");
            self.lower(class);
            let previous = std::mem::replace(&mut list.slots[id as usize], Slot::Granted(elem));
            drop(list);
            granted += 1;
            match previous {
                Slot::Waiting(Some(waker)) => waker.wake(),
                Slot::Waiting(None) => wake_blocked = true,
                Slot::Granted(_) | Slot::Vacant => {
                    unreachable!("a queued ticket is waiting")
                }
            }
        }
        if wake_blocked {
            self.granted.notify_all();
        }
        (granted > 0).then_some(granted)
    }
}

fn free_slot(list: &mut List, id: u32) {
    list.slots[id as usize] = Slot::Vacant;
    list.vacant.push(id);
}
