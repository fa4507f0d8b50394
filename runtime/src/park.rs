//! The park handshake: how a worker goes to sleep without missing a hand-off from another thread.
//!
//! Each worker has one [`Park`] word with two bits, `PARKED` (the worker is asleep or about to
//! be) and `NOTIFIED` (something was put in its inbox since it last looked). Other threads reach
//! a worker only through [`post`]: push into the inbox, then set `NOTIFIED`, then ring the
//! worker's [`Doorbell`] (an eventfd write) only if the word said `PARKED` and nobody had
//! notified this park yet. The worker goes to sleep only through [`idle`]:
//!
//! 1. clear the doorbell (a ring from before this point is consumed, one after it stays);
//! 2. announce the park: swap the word to `PARKED`; a `NOTIFIED` in the old value means the
//!    inbox has news, so it does not sleep;
//! 3. recheck its own sources (completions on each of its rings, one per adapter, and due
//!    timers) that do not go through the word; a completion after the clear of step 1 signals
//!    its ring's eventfd, one of the doorbell's, so either this look or the sleep sees it (the
//!    loom model `a_completion_on_the_second_ring_reaches_a_worker_that_parks`, and its twin
//!    that clears after the look and loses it);
//! 4. sleep on the doorbell, with the next timer deadline as timeout;
//! 5. leave: swap the word to 0; the caller then drains the inbox.
//!
//! # Synchronization
//!
//! - **One word, changed only by read-modify-writes.** Every change (the poster's `fetch_or`,
//!   the worker's swaps, its `fetch_and`) is an RMW, so all of them are totally ordered in the
//!   word's modification order and each sees the one before. Either the poster's `fetch_or`
//!   comes first, and the worker's announcing swap reads `NOTIFIED` (it does not sleep), or the
//!   swap comes first, and the poster reads `PARKED` and rings. A plain load and store on either
//!   side would let one side's store overwrite the other's bit between its load and its store:
//!   the loom model `broken_notify_loses_a_wake_up` shows the lost wake-up.
//! - **AcqRel on the poster's `fetch_or` and the worker's swaps.** The Release half of the
//!   poster's RMW and the Acquire half of the worker's make the inbox push visible to the drain
//!   that follows. The worker's Release half and the poster's Acquire half order the doorbell
//!   clear (step 1) before the poster's ring, so a ring for this park is never consumed by it.
//! - **A Relaxed peek before the per-turn `fetch_and`.** A busy worker looks at the word once
//!   per loop turn; a stale 0 only delays the drain to the next turn or to the announcing swap,
//!   which is an RMW and cannot miss the bit.
//!
//! The loom models below run this module's and the [`inbox`](crate::inbox) module's own code,
//! with a condition variable in place of the eventfd.

use std::time::Duration;

use regio_loom_shim::sync::atomic::{AtomicU32, Ordering};

use crate::inbox::Inbox;

/// The worker is asleep, or about to check its sources one last time and sleep.
const PARKED: u32 = 1;
/// Something was pushed into the inbox since the worker last drained it.
const NOTIFIED: u32 = 2;

/// What wakes a sleeping worker: for a real worker, its completion queues' eventfds (one per
/// adapter, module `bell`).
pub(crate) trait Doorbell {
    /// Makes the next (or the current) [`wait`](Self::wait) return.
    fn ring(&self);
    /// Forgets the rings so far.
    fn clear(&self);
    /// Sleeps until a ring (one made since the last [`clear`](Self::clear) counts) or until
    /// `timeout` passes.
    fn wait(&self, timeout: Option<Duration>);
}

/// One worker's park word.
pub(crate) struct Park {
    word: AtomicU32,
}

impl Park {
    /// Not parked, nothing notified.
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU32::new(0),
        }
    }

    /// Marks the inbox as having news; returns whether the caller must ring the doorbell (the
    /// worker is parked and this is the first notification of that park).
    fn notify(&self) -> bool {
        // AcqRel: Release publishes the caller's inbox push to the worker's Acquire swap;
        // Acquire orders the worker's doorbell clear before the ring that follows (module docs).
        let prev = self.word.fetch_or(NOTIFIED, Ordering::AcqRel);
        prev & (PARKED | NOTIFIED) == PARKED
    }

    /// The worker, once per loop turn: takes the notification, if any; then it drains the
    /// inbox.
    pub(crate) fn take_notification(&self) -> bool {
        // Relaxed: a peek; a stale 0 is caught at the next turn or by the announcing swap.
        if self.word.load(Ordering::Relaxed) & NOTIFIED == 0 {
            return false;
        }
        // Acquire: pairs with the poster's Release, so the drain that follows sees its push.
        self.word.fetch_and(!NOTIFIED, Ordering::Acquire) & NOTIFIED != 0
    }

    /// Announces the park; returns false if a notification came first (then do not sleep).
    fn announce(&self) -> bool {
        // AcqRel: Acquire sees the pushes of notifiers ordered before us; Release orders our
        // doorbell clear before the ring of any poster that reads PARKED (module docs).
        self.word.swap(PARKED, Ordering::AcqRel) & NOTIFIED == 0
    }

    /// Ends a park (slept or not).
    fn leave(&self) {
        // Acquire: pairs with the Release of notifiers that came during the park, so the drain
        // after this sees their pushes. Clearing NOTIFIED is safe: the caller drains next.
        self.word.swap(0, Ordering::Acquire);
    }
}

/// Whether a post had to ring the doorbell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Posted {
    /// The worker was awake, or another poster already rang for this park.
    Queued,
    /// The worker was parked: this post rang its doorbell.
    Rang,
}

/// Hands `item` to a worker: pushes it into `inbox`, notifies `park`, and rings `bell` if the
/// worker sleeps. Hands `item` back if the inbox is closed.
pub(crate) fn post<T>(
    inbox: &Inbox<T>,
    park: &Park,
    bell: &impl Doorbell,
    item: T,
) -> Result<Posted, T> {
    inbox.push(item)?;
    if park.notify() {
        bell.ring();
        Ok(Posted::Rang)
    } else {
        Ok(Posted::Queued)
    }
}

/// Puts a worker to sleep on `bell` until something is posted or rung, or `timeout` passes,
/// unless `busy` (the last look at the sources that ring the doorbell themselves) finds work.
/// `sleeping` runs just before the sleep. The caller drains its inbox afterwards, whatever the
/// outcome.
pub(crate) fn idle(
    park: &Park,
    bell: &impl Doorbell,
    busy: impl FnOnce() -> bool,
    sleeping: impl FnOnce(),
    timeout: Option<Duration>,
) {
    bell.clear();
    // A notification came first: the inbox has news, no sleep.
    if !park.announce() {
        park.leave();
        return;
    }
    // Completions or due timers: work, no sleep.
    if busy() {
        park.leave();
        return;
    }
    sleeping();
    bell.wait(timeout);
    park.leave();
}

#[cfg(all(test, loom))]
mod loom_models {
    //! Loom models of the handshake, on this module's and the inbox's own code.
    //!
    //! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom
    //! cargo test --release -p regio-runtime --lib`

    use std::collections::VecDeque;
    use std::time::Duration;

    use loom::sync::atomic::Ordering;
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;

    use super::{idle, post, Doorbell, Park, NOTIFIED, PARKED};
    use crate::inbox::Inbox;

    /// The eventfd as the worker uses it: a counter that a ring raises, a clear resets, and a
    /// wait sleeps on (without consuming it, as `poll` does). Loom reports a deadlock if the
    /// worker waits and nothing can ever ring.
    #[derive(Default)]
    struct Bell {
        count: Mutex<u64>,
        readable: Condvar,
    }

    impl Doorbell for Bell {
        fn ring(&self) {
            *self.count.lock().unwrap() += 1;
            self.readable.notify_all();
        }

        fn clear(&self) {
            *self.count.lock().unwrap() = 0;
        }

        fn wait(&self, _: Option<Duration>) {
            let mut count = self.count.lock().unwrap();
            while *count == 0 {
                count = self.readable.wait(count).unwrap();
            }
        }
    }

    struct Worker {
        inbox: Inbox<u32>,
        park: Park,
        bell: Bell,
    }

    impl Worker {
        /// A worker for one execution of a model. It is leaked rather than shared through an
        /// `Arc`: when a model fails by design (a deadlock), loom unwinds the blocked thread
        /// after its execution has ended, and dropping a loom `Arc` then aborts the process.
        fn leaked() -> &'static Self {
            Box::leak(Box::new(Self {
                inbox: Inbox::new(),
                park: Park::new(),
                bell: Bell::default(),
            }))
        }

        /// The worker loop, cut down to the handshake: drain when notified, else idle; stop
        /// once `want` items have come. Returns them.
        fn run(&self, want: usize) -> Vec<u32> {
            let mut got = VecDeque::new();
            while got.len() < want {
                if self.park.take_notification() {
                    self.inbox.drain_into(&mut got);
                    continue;
                }
                idle(&self.park, &self.bell, || false, || {}, None);
                self.inbox.drain_into(&mut got);
            }
            got.into()
        }
    }

    #[test]
    fn a_post_always_reaches_a_worker_that_parks() {
        loom::model(|| {
            let w = Worker::leaked();
            let poster = thread::spawn(move || {
                post(&w.inbox, &w.park, &w.bell, 7).unwrap();
            });
            assert_eq!(w.run(1), vec![7]);
            poster.join().unwrap();
        });
    }

    #[test]
    fn two_posters_wake_the_worker_for_both_items() {
        loom::model(|| {
            let w = Worker::leaked();
            let posters: Vec<_> = [1, 2]
                .into_iter()
                .map(|item| thread::spawn(move || post(&w.inbox, &w.park, &w.bell, item).unwrap()))
                .collect();
            let mut got = w.run(2);
            let rang = posters
                .into_iter()
                .map(|p| p.join().unwrap())
                .filter(|p| *p == super::Posted::Rang)
                .count();
            got.sort();
            assert_eq!(got, vec![1, 2]);
            // The worker parks at most twice for two items, and each park is rung at most once.
            assert!(rang <= 2);
        });
    }

    #[test]
    fn a_push_racing_a_close_is_drained_or_handed_back() {
        loom::model(|| {
            let inbox = Arc::new(Inbox::new());
            let pusher = {
                let inbox = Arc::clone(&inbox);
                thread::spawn(move || inbox.push(5).is_ok())
            };
            let drained = inbox.close();
            let accepted = pusher.join().unwrap();
            // Accepted items are in the closer's drain; refused ones went back to the pusher.
            assert_eq!(drained.len(), usize::from(accepted));
            assert!(inbox.push(6).is_err(), "a closed inbox refuses");
        });
    }

    /// The poster's notification made of a load and a store instead of one RMW: the worker's
    /// announcing swap can land between them and be overwritten, so the poster sees no park
    /// and rings nothing while the worker sleeps with the item in its inbox.
    fn broken_notify(park: &Park) -> bool {
        // SeqCst even: no ordering repairs a lost update.
        let prev = park.word.load(Ordering::SeqCst);
        // SeqCst: as above.
        park.word.store(prev | NOTIFIED, Ordering::SeqCst);
        prev & (PARKED | NOTIFIED) == PARKED
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn broken_notify_loses_a_wake_up() {
        loom::model(|| {
            let w = Worker::leaked();
            let poster = thread::spawn(move || {
                w.inbox.push(7).unwrap();
                if broken_notify(&w.park) {
                    w.bell.ring();
                }
            });
            assert_eq!(w.run(1), vec![7]);
            poster.join().unwrap();
        });
    }

    /// A worker that checks its inbox and then parks with a plain store, instead of announcing
    /// the park with a swap and looking at what it replaced: a post between the check and the
    /// store is neither seen nor rung for.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn checking_the_inbox_before_announcing_loses_a_wake_up() {
        loom::model(|| {
            let w = Worker::leaked();
            let poster = thread::spawn(move || {
                post(&w.inbox, &w.park, &w.bell, 7).unwrap();
            });
            let mut got = VecDeque::new();
            while got.is_empty() {
                w.inbox.drain_into(&mut got);
                if !got.is_empty() {
                    break;
                }
                w.bell.clear();
                // SeqCst: the strongest ordering, to show that the bug is the missing look at
                // the word's old value, not the ordering.
                w.park.word.store(PARKED, Ordering::SeqCst);
                w.bell.wait(None);
                // SeqCst: as above.
                w.park.word.swap(0, Ordering::SeqCst);
            }
            poster.join().unwrap();
        });
    }

    /// A worker's eventfds, one per adapter's ring, as one doorbell (the `bell` module's
    /// `EventFdBell`): a ring raises the first, a completion raises its own ring's, a clear
    /// resets them all, and a wait sleeps until any is raised (as `ppoll` does).
    #[derive(Default)]
    struct Bells {
        counts: Mutex<[u64; 2]>,
        readable: Condvar,
    }

    impl Bells {
        fn signal(&self, ring: usize) {
            self.counts.lock().unwrap()[ring] += 1;
            self.readable.notify_all();
        }
    }

    impl Doorbell for Bells {
        fn ring(&self) {
            self.signal(0);
        }

        fn clear(&self) {
            *self.counts.lock().unwrap() = [0; 2];
        }

        fn wait(&self, _: Option<Duration>) {
            let mut counts = self.counts.lock().unwrap();
            while counts.iter().all(|&c| c == 0) {
                counts = self.readable.wait(counts).unwrap();
            }
        }
    }

    /// A worker with two rings: its park word, its eventfds, and the CQ tail of its second
    /// ring, which the kernel raises before it signals that ring's eventfd.
    struct TwoRings {
        park: Park,
        bells: Bells,
        second_tail: loom::sync::atomic::AtomicUsize,
    }

    impl TwoRings {
        fn leaked() -> &'static Self {
            Box::leak(Box::new(Self {
                park: Park::new(),
                bells: Bells::default(),
                second_tail: loom::sync::atomic::AtomicUsize::new(0),
            }))
        }

        /// The kernel posts a completion on the second ring: the CQ tail (Release, as the
        /// kernel's store), then the ring's eventfd.
        fn complete_on_second(&self) {
            // Release: as the kernel's tail store, publishing the CQE.
            self.second_tail.fetch_add(1, Ordering::Release);
            self.bells.signal(1);
        }

        /// A reap of the second ring: whether the tail moved past `head` (Acquire, as the
        /// io-uring crate reads the tail).
        fn reap_second(&self, head: &mut usize) -> bool {
            // Acquire: pairs with the kernel's Release tail store.
            let tail = self.second_tail.load(Ordering::Acquire);
            let got = tail > *head;
            *head = tail;
            got
        }
    }

    /// The worker loop cut down to the park, with a receive in flight on its second ring: it
    /// reaps, idles with the reap as its last look, and must get the completion however the
    /// kernel's post interleaves with the park.
    #[test]
    fn a_completion_on_the_second_ring_reaches_a_worker_that_parks() {
        loom::model(|| {
            let w = TwoRings::leaked();
            let kernel = thread::spawn(move || w.complete_on_second());
            let mut head = 0;
            let mut got = w.reap_second(&mut head);
            while !got {
                let mut found = false;
                idle(
                    &w.park,
                    &w.bells,
                    || {
                        found = w.reap_second(&mut head);
                        found
                    },
                    || {},
                    None,
                );
                got = found || w.reap_second(&mut head);
            }
            kernel.join().unwrap();
        });
    }

    /// A worker that clears its eventfds after its last look at the rings instead of before:
    /// a completion between the look and the clear is neither seen nor left signalled.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn clearing_the_bells_after_the_last_look_loses_a_completion() {
        loom::model(|| {
            let w = TwoRings::leaked();
            let kernel = thread::spawn(move || w.complete_on_second());
            let mut head = 0;
            while !w.reap_second(&mut head) {
                w.bells.clear();
                w.bells.wait(None);
            }
            kernel.join().unwrap();
        });
    }
}
