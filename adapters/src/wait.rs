//! The sleep loop shared by [`Ring::wait`](crate::Ring::wait) and
//! [`CqSet::wait`](crate::CqSet::wait): RIONotify with a wait.
//!
//! # Synchronization
//!
//! A waiter sleeps on the CQ eventfds, which the kernel signals after it posts CQEs. Before it
//! sleeps it resets them and then looks at every CQ once more, so a CQE posted before the reset
//! is found by that look and one posted after it leaves its eventfd readable. The look must
//! really happen: a CQ owned by another thread (a poster, a [`Batch`](crate::Batch), another
//! reaper) cannot be looked at, and its owner may let go without reaping. So the look after the
//! reset asks such an owner to wake the waiter ([`Combiner::try_lock_or_ask`]): the request and
//! the owner's release form a fence-based Dekker pair, and whichever owner answers it looks at
//! the CQ after the reset and signals the eventfd if it holds completions
//! ([`Absorb::wake_if_ready`]). The loom model below checks this with the real combiner and this
//! loop; its twin shows that without the request (an owned CQ taken for an empty one) the
//! wake-up is lost.
//!
//! A post that a full SQ refused stays in the ring's inbox, and with SQPOLL room comes back
//! without any signal (the kernel thread empties the SQ). The owner that leaves such a post
//! behind signals the eventfd ([`Absorb::refused`]), and a waiter that finds one after its look
//! naps briefly instead of sleeping, then looks (and pushes) again.
//!
//! [`Combiner::try_lock_or_ask`]: regio_sync::Combiner::try_lock_or_ask
//! [`Absorb::wake_if_ready`]: regio_sync::Absorb::wake_if_ready
//! [`Absorb::refused`]: regio_sync::Absorb::refused

use std::time::{Duration, Instant};

use crate::error::Error;

/// How long a waiter naps, at most, while a refused post waits in an inbox for room in the SQ.
const NAP: Duration = Duration::from_millis(1);

/// How a look treats a CQ that another thread owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owned {
    /// Skips it.
    Skip,
    /// Asks its owner to wake the waiter if the CQ holds completions when it lets go
    /// ([`Combiner::try_lock_or_ask`](regio_sync::Combiner::try_lock_or_ask)).
    Ask,
}

/// What one look at the CQs found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Look {
    /// Completions reaped.
    pub got: usize,
    /// A CQ looked at still has a post in its inbox that the SQ refused.
    pub stuck: bool,
}

/// Looks at the CQs until something arrives or `timeout` passes, and returns how many were
/// reaped (0 on timeout).
///
/// `look` reaps every CQ it can own; `reset` resets the eventfds; `sleep` sleeps on them until
/// one is readable or the time given passes. When a look finds nothing, the eventfds are reset
/// and the CQs looked at once more, asking the owners of those owned by other threads to wake
/// us (module docs), before sleeping.
///
/// A timeout too long to add to the current time (`Duration::MAX`) waits as if there were none.
pub(crate) fn reap_or_sleep(
    timeout: Option<Duration>,
    mut look: impl FnMut(Owned) -> Result<Look, Error>,
    mut reset: impl FnMut(),
    mut sleep: impl FnMut(Option<Duration>) -> Result<(), Error>,
) -> Result<usize, Error> {
    // `checked_add`: `Instant + Duration::MAX` panics; a deadline past the clock's range is none.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let first = look(Owned::Skip)?;
        if first.got > 0 {
            return Ok(first.got);
        }
        reset();
        let second = look(Owned::Ask)?;
        if second.got > 0 {
            return Ok(second.got);
        }
        let left = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => Some(left),
                None => return Ok(0),
            },
            None => None,
        };
        if second.stuck {
            // Our own release signalled the eventfd for the refused post: reset it, so that
            // the nap is one, and wake early only for a completion.
            reset();
            sleep(Some(left.map_or(NAP, |l| l.min(NAP))))?;
        } else {
            sleep(left)?;
        }
    }
}

/// Loom models of the default-mode wait: the real [`Combiner`](regio_sync::Combiner) and
/// [`reap_or_sleep`], with the CQ and its eventfd modelled by loom primitives.
#[cfg(all(test, loom))]
mod loom_models {
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;

    use super::{reap_or_sleep, Look, Owned};
    use regio_sync::{Absorb, Combiner};

    /// The CQ eventfd: a counter that a signal raises, a reset clears, and a sleep waits on
    /// (without consuming it, as `poll` does).
    #[derive(Default)]
    struct EventFd {
        count: Mutex<u64>,
        readable: Condvar,
    }

    impl EventFd {
        fn signal(&self) {
            *self.count.lock().unwrap() += 1;
            self.readable.notify_all();
        }

        fn reset(&self) {
            *self.count.lock().unwrap() = 0;
        }

        /// Sleeps until the counter is non-zero. Loom fails the model with a deadlock if
        /// nothing can ever signal it.
        fn sleep(&self) {
            let mut count = self.count.lock().unwrap();
            while *count == 0 {
                count = self.readable.wait(count).unwrap();
            }
        }
    }

    /// The kernel's side of a ring: CQEs posted (the CQ tail) and the eventfd it signals after
    /// each post.
    #[derive(Default)]
    struct Kernel {
        posted: AtomicUsize,
        efd: EventFd,
    }

    impl Kernel {
        /// Posts a CQE: the tail store (Release, as the kernel's), then the signal.
        fn post(&self) {
            self.posted.fetch_add(1, Ordering::Release);
            self.efd.signal();
        }
    }

    /// A ring's state: the CQ head, over the kernel's tail.
    struct Ring {
        kernel: Arc<Kernel>,
        reaped: usize,
    }

    impl Ring {
        fn reap(&mut self) -> usize {
            // Acquire: as the io-uring crate reads the CQ tail.
            let tail = self.kernel.posted.load(Ordering::Acquire);
            let n = tail - self.reaped;
            self.reaped = tail;
            n
        }
    }

    impl Absorb<()> for Ring {
        fn absorb(&mut self, (): ()) -> Result<(), ()> {
            Ok(())
        }

        /// As `RingState::wake_if_ready`: signal if the CQ holds completions.
        fn wake_if_ready(&mut self) {
            // Acquire: as in `reap`.
            if self.kernel.posted.load(Ordering::Acquire) != self.reaped {
                self.kernel.efd.signal();
            }
        }
    }

    /// A thread owns the ring (a `Batch`, a poster) and lets go without reaping, while the
    /// kernel posts a CQE and another thread waits with no timeout, looking as
    /// `Ring::wait` does. With `ask`, a look after the reset asks the owner of an
    /// owned ring to wake it; without, it takes an owned ring for an empty one (the old code).
    /// The waiter must get the completion.
    fn busy_ring_wait(ask: bool) {
        loom::model(move || {
            let kernel = Arc::new(Kernel::default());
            let ring = Arc::new(Combiner::<Ring, ()>::new(Ring {
                kernel: Arc::clone(&kernel),
                reaped: 0,
            }));
            let owner = {
                let ring = Arc::clone(&ring);
                thread::spawn(move || drop(ring.try_lock()))
            };
            let poster = {
                let kernel = Arc::clone(&kernel);
                thread::spawn(move || kernel.post())
            };
            let got = reap_or_sleep(
                None,
                |owned| {
                    let guard = match owned {
                        Owned::Ask if ask => ring.try_lock_or_ask(),
                        _ => ring.try_lock(),
                    };
                    let got = guard.map_or(0, |mut g| g.with(Ring::reap));
                    Ok(Look { got, stuck: false })
                },
                || kernel.efd.reset(),
                |left| {
                    assert_eq!(left, None, "no timeout, and nothing is ever refused");
                    kernel.efd.sleep();
                    Ok(())
                },
            )
            .unwrap();
            owner.join().unwrap();
            poster.join().unwrap();
            assert_eq!(got, 1);
        });
    }

    #[test]
    fn a_waiter_is_woken_for_a_completion_in_a_ring_another_thread_owned() {
        busy_ring_wait(true);
    }

    /// Without the request, an owned ring taken for an empty one (the code before the fix):
    /// loom finds the waiter asleep forever beside a completed CQE.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn taking_an_owned_ring_for_an_empty_one_loses_the_wake_up() {
        busy_ring_wait(false);
    }
}
