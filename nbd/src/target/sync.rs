//! The few async coordination tools a server needs, on plain mutexes: a fair [`Semaphore`]
//! (the per-connection cap on requests in flight, and the gate that makes multi-buffer
//! acquisitions one at a time), a many-to-one [`Queue`] (replies to the writer), a [`Signal`]
//! (shutdown) and a [`Tracker`] (live connections).
//!
//! # Synchronization
//!
//! [`join_all`] runs a request's chunk operations side by side.
//!
//! Each tool keeps its whole state under one `std::sync::Mutex`, held for a few instructions
//! and never across an `.await`; wakers are called after the lock is released where a waker
//! could take it again. No atomics, so nothing here needs a loom model.

use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A counting semaphore whose waiters are served in arrival order.
#[derive(Debug)]
pub(crate) struct Semaphore {
    state: Mutex<SemState>,
}

#[derive(Debug)]
struct SemState {
    permits: usize,
    /// Waiters by arrival: their ids and wakers. Only the first may take a permit.
    waiters: VecDeque<(u64, Waker)>,
    next_id: u64,
}

/// Permits of a [`Semaphore`]; given back on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    sem: Arc<Semaphore>,
    count: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.sem.state);
            state.permits += self.count;
            state.waiters.front().map(|(_, w)| w.clone())
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Semaphore {
    pub(crate) fn new(permits: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(SemState {
                permits,
                waiters: VecDeque::new(),
                next_id: 0,
            }),
        })
    }

    /// The permits free now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        lock(&self.state).permits
    }

    /// A permit if one is free and nobody waits for one (a waiter is never overtaken).
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut state = lock(&self.state);
        if !state.waiters.is_empty() || state.permits == 0 {
            return None;
        }
        state.permits -= 1;
        Some(Permit {
            sem: Arc::clone(self),
            count: 1,
        })
    }

    /// Waits for a permit, behind every earlier waiter. Dropping the future leaves the line.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Permit {
        self.acquire_many(1).await
    }

    /// Waits for `count` permits at once (never a part of them: two waiters that each held
    /// part of what they need would wait for each other), behind every earlier waiter.
    /// `count` must not exceed the semaphore's permits in all.
    pub(crate) async fn acquire_many(self: &Arc<Self>, count: usize) -> Permit {
        let mut id = None;
        let mut guard = LeaveOnDrop {
            sem: self,
            id: None,
        };
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            let first = match id {
                None => state.waiters.is_empty(),
                Some(me) => state.waiters.front().is_some_and(|(w, _)| *w == me),
            };
            if first && state.permits >= count {
                state.permits -= count;
                if id.is_some() {
                    state.waiters.pop_front();
                }
                guard.id = None;
                // The next in line may find a permit too.
                let next = (state.permits > 0)
                    .then(|| state.waiters.front().map(|(_, w)| w.clone()))
                    .flatten();
                drop(state);
                if let Some(next) = next {
                    next.wake();
                }
                return Poll::Ready(Permit {
                    sem: Arc::clone(self),
                    count,
                });
            }
            match id {
                None => {
                    let me = state.next_id;
                    state.next_id += 1;
                    state.waiters.push_back((me, cx.waker().clone()));
                    id = Some(me);
                    guard.id = Some(me);
                }
                Some(me) => {
                    if let Some(slot) = state.waiters.iter_mut().find(|(w, _)| *w == me) {
                        slot.1.clone_from(cx.waker());
                    }
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Takes a dropped waiter out of the line, and passes a free permit on to the next one.
struct LeaveOnDrop<'a> {
    sem: &'a Semaphore,
    id: Option<u64>,
}

impl Drop for LeaveOnDrop<'_> {
    fn drop(&mut self) {
        let Some(me) = self.id else { return };
        let next = {
            let mut state = lock(&self.sem.state);
            state.waiters.retain(|(w, _)| *w != me);
            (state.permits > 0)
                .then(|| state.waiters.front().map(|(_, w)| w.clone()))
                .flatten()
        };
        if let Some(next) = next {
            next.wake();
        }
    }
}

/// A many-to-one queue: [`Sender`]s push, one [`Receiver`] pops. It ends when every sender is
/// gone and it is empty. Once the receiver is gone, what was queued and what is pushed later
/// is dropped at once (the items may hold what a sender waits for).
pub(crate) fn queue<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(QueueState {
        items: VecDeque::new(),
        senders: 1,
        waker: None,
        closed: false,
    }));
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

#[derive(Debug)]
struct QueueState<T> {
    items: VecDeque<T>,
    senders: usize,
    waker: Option<Waker>,
    /// The receiver is gone.
    closed: bool,
}

/// The pushing side of a [`queue`].
#[derive(Debug)]
pub(crate) struct Sender<T> {
    shared: Arc<Mutex<QueueState<T>>>,
}

impl<T> Sender<T> {
    pub(crate) fn push(&self, item: T) {
        let waker = {
            let mut state = lock(&self.shared);
            if state.closed {
                // Dropped after the lock is released.
                drop(state);
                drop(item);
                return;
            }
            state.items.push_back(item);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        lock(&self.shared).senders += 1;
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.shared);
            state.senders -= 1;
            if state.senders == 0 {
                state.waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The popping side of a [`queue`].
#[derive(Debug)]
pub(crate) struct Receiver<T> {
    shared: Arc<Mutex<QueueState<T>>>,
}

impl<T> Receiver<T> {
    /// The next item, or `None` once the queue is empty and has no sender left.
    pub(crate) async fn pop(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut state = lock(&self.shared);
            if let Some(item) = state.items.pop_front() {
                return Poll::Ready(Some(item));
            }
            if state.senders == 0 {
                return Poll::Ready(None);
            }
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The next item if one is queued now.
    pub(crate) fn try_pop(&mut self) -> Option<T> {
        lock(&self.shared).items.pop_front()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut state = lock(&self.shared);
            state.closed = true;
            std::mem::take(&mut state.items)
        };
        // Outside the lock: dropping an item may wake a task that pushes.
        drop(items);
    }
}

/// A flag raised once (shutdown) that any number of tasks can wait for.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    state: Mutex<SignalState>,
}

#[derive(Debug, Default)]
struct SignalState {
    raised: bool,
    waiters: HashMap<u64, Waker>,
    next_id: u64,
}

impl Signal {
    pub(crate) fn raise(&self) {
        let waiters = {
            let mut state = lock(&self.state);
            state.raised = true;
            std::mem::take(&mut state.waiters)
        };
        waiters.into_values().for_each(Waker::wake);
    }

    pub(crate) fn is_raised(&self) -> bool {
        lock(&self.state).raised
    }

    /// Runs `fut` until it finishes (`Some`) or the signal is raised (`None`, `fut` dropped).
    pub(crate) async fn or_raised<F: Future>(&self, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        let mut id = None;
        let out = poll_fn(|cx: &mut Context<'_>| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            let mut state = lock(&self.state);
            if state.raised {
                return Poll::Ready(None);
            }
            let me = *id.get_or_insert_with(|| {
                state.next_id += 1;
                state.next_id
            });
            state.waiters.insert(me, cx.waker().clone());
            Poll::Pending
        })
        .await;
        if let Some(me) = id {
            lock(&self.state).waiters.remove(&me);
        }
        out
    }
}

/// Counts live things (connections) and lets one task wait until there are none.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    state: Mutex<(usize, Vec<Waker>)>,
}

/// One live thing of a [`Tracker`]; counted until dropped.
#[derive(Debug)]
pub(crate) struct Tracked {
    tracker: Arc<Tracker>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let waiters = {
            let mut state = lock(&self.tracker.state);
            state.0 -= 1;
            if state.0 == 0 {
                std::mem::take(&mut state.1)
            } else {
                Vec::new()
            }
        };
        waiters.into_iter().for_each(Waker::wake);
    }
}

impl Tracker {
    pub(crate) fn enter(self: &Arc<Self>) -> Tracked {
        lock(&self.state).0 += 1;
        Tracked {
            tracker: Arc::clone(self),
        }
    }

    pub(crate) fn count(&self) -> usize {
        lock(&self.state).0
    }

    /// Resolves once nothing is tracked.
    pub(crate) async fn idle(&self) {
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            if state.0 == 0 {
                return Poll::Ready(());
            }
            state.1.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Runs `futures` side by side; their outputs in order.
pub(crate) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut running: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = running.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (fut, out) in running.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(value) => *out = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|out| out.expect("every future finished"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            // Relaxed: a test counter read after the wakes, on the same thread.
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
        fut.poll(&mut Context::from_waker(waker))
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(0.into()));
        (Arc::clone(&count), Waker::from(count))
    }

    #[test]
    fn semaphore_serves_in_order_and_a_dropped_waiter_passes_its_turn() {
        let sem = Semaphore::new(1);
        let (_, waker) = counter();
        let mut first = Box::pin(sem.acquire());
        let Poll::Ready(held) = poll_once(first.as_mut(), &waker) else {
            panic!("a free permit is taken at once")
        };
        let (woken, waker2) = counter();
        let mut second = Box::pin(sem.acquire());
        let mut third = Box::pin(sem.acquire());
        assert!(poll_once(second.as_mut(), &waker2).is_pending());
        assert!(poll_once(third.as_mut(), &waker2).is_pending());
        drop(held);
        // Relaxed: as in `Count::wake`.
        assert_eq!(woken.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        // The third may not jump the line.
        assert!(poll_once(third.as_mut(), &waker2).is_pending());
        drop(second);
        assert!(poll_once(third.as_mut(), &waker2).is_ready());
        assert_eq!(sem.available(), 1);
    }

    #[test]
    fn a_try_never_overtakes_a_waiter() {
        let sem = Semaphore::new(1);
        let held = sem.try_acquire().expect("a free permit");
        assert!(sem.try_acquire().is_none(), "none free");
        let (_, waker) = counter();
        let mut waiting = Box::pin(sem.acquire());
        assert!(poll_once(waiting.as_mut(), &waker).is_pending());
        drop(held);
        assert!(
            sem.try_acquire().is_none(),
            "one free, but a waiter is first"
        );
        assert!(poll_once(waiting.as_mut(), &waker).is_ready());
        assert_eq!(sem.available(), 1);
    }

    #[test]
    fn many_permits_are_taken_whole_and_in_order() {
        let sem = Semaphore::new(4);
        let (_, waker) = counter();
        let mut three = Box::pin(sem.acquire_many(3));
        let Poll::Ready(three_held) = poll_once(three.as_mut(), &waker) else {
            panic!("three of four are free")
        };
        let mut two = Box::pin(sem.acquire_many(2));
        let mut one = Box::pin(sem.acquire());
        assert!(poll_once(two.as_mut(), &waker).is_pending());
        // One is free, but the waiter for two is first in line.
        assert!(poll_once(one.as_mut(), &waker).is_pending());
        drop(three_held);
        assert!(poll_once(two.as_mut(), &waker).is_ready());
        assert!(poll_once(one.as_mut(), &waker).is_ready());
    }

    #[test]
    fn queue_ends_when_its_senders_are_gone() {
        let (tx, mut rx) = queue();
        let tx2 = tx.clone();
        tx.push(1);
        drop(tx);
        tx2.push(2);
        let (woken, waker) = counter();
        assert_eq!(rx.try_pop(), Some(1));
        let mut first = Box::pin(rx.pop());
        assert_eq!(poll_once(first.as_mut(), &waker), Poll::Ready(Some(2)));
        drop(first);
        let mut pop = Box::pin(rx.pop());
        assert!(poll_once(pop.as_mut(), &waker).is_pending());
        drop(tx2);
        // Relaxed: as in `Count::wake`.
        assert_eq!(woken.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(poll_once(pop.as_mut(), &waker), Poll::Ready(None));
    }

    /// Before the fix a queue kept its items until its last sender was gone, and a sender
    /// waiting for what an item held (a connection's share of the pool) waited forever once
    /// the writer that pops was cut.
    #[test]
    fn a_queue_without_its_receiver_drops_its_items() {
        let (tx, rx) = queue();
        let held = Arc::new(());
        tx.push(Arc::clone(&held));
        drop(rx);
        assert_eq!(Arc::strong_count(&held), 1, "the queued item is dropped");
        tx.push(Arc::clone(&held));
        assert_eq!(Arc::strong_count(&held), 1, "a later push is dropped");
    }

    #[test]
    fn a_signal_stops_a_pending_future_and_forgets_its_waiters() {
        let signal = Signal::default();
        let (_, waker) = counter();
        let mut waiting = Box::pin(signal.or_raised(std::future::pending::<()>()));
        assert!(poll_once(waiting.as_mut(), &waker).is_pending());
        assert!(poll_once(waiting.as_mut(), &waker).is_pending());
        assert_eq!(lock(&signal.state).waiters.len(), 1);
        signal.raise();
        assert_eq!(poll_once(waiting.as_mut(), &waker), Poll::Ready(None));
        let mut done = Box::pin(signal.or_raised(async { 7 }));
        assert_eq!(poll_once(done.as_mut(), &waker), Poll::Ready(Some(7)));
        assert!(lock(&signal.state).waiters.is_empty());
    }

    #[test]
    fn join_all_keeps_the_order_of_its_futures() {
        let (_, waker) = counter();
        let (tx, mut rx) = queue::<u32>();
        let mut joined = Box::pin(join_all(vec![
            Box::pin(async move { rx.pop().await.unwrap() })
                as std::pin::Pin<Box<dyn Future<Output = u32>>>,
            Box::pin(async { 2 }),
        ]));
        assert!(poll_once(joined.as_mut(), &waker).is_pending());
        tx.push(1);
        assert_eq!(poll_once(joined.as_mut(), &waker), Poll::Ready(vec![1, 2]));
    }

    #[test]
    fn a_tracker_is_idle_when_its_last_guard_drops() {
        let tracker = Arc::new(Tracker::default());
        let (woken, waker) = counter();
        let a = tracker.enter();
        let b = tracker.enter();
        let mut idle = Box::pin(tracker.idle());
        assert!(poll_once(idle.as_mut(), &waker).is_pending());
        drop(a);
        assert_eq!(tracker.count(), 1);
        drop(b);
        // Relaxed: as in `Count::wake`.
        assert_eq!(woken.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(poll_once(idle.as_mut(), &waker).is_ready());
    }
}
