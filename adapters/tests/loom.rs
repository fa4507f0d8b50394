//! Loom model of the single-issuer hand-off between a ring's owner and the threads that post to
//! it: the owner sleeps on the CQ eventfd, and a poster that may not take the ring pushes into
//! the [`Combiner`](regio_sync::Combiner)'s inbox and then signals the eventfd. (The combiner's
//! own models are in regio-sync's `tests/loom/combiner.rs`.)
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p regio-adapters --test loom`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use regio_sync::{Absorb, Combiner};

/// A stand-in for a ring: records absorbed posts.
#[derive(Default)]
struct Ring {
    absorbed: Vec<u32>,
}

impl Absorb<u32> for Ring {
    fn absorb(&mut self, item: u32) -> Result<(), u32> {
        self.absorbed.push(item);
        Ok(())
    }
}

/// The CQ eventfd of single-issuer mode, as the owner and the posters use it: a counter that a
/// signal raises, a drain resets, and a sleep waits on (without consuming it, as `poll` does).
#[derive(Default)]
struct EventFd {
    count: loom::sync::Mutex<u64>,
    readable: loom::sync::Condvar,
}

impl EventFd {
    fn signal(&self) {
        *self.count.lock().unwrap() += 1;
        self.readable.notify_all();
    }

    fn drain(&self) {
        *self.count.lock().unwrap() = 0;
    }

    /// Sleeps until the counter is non-zero. Loom fails the model with a deadlock if nothing
    /// can ever signal it.
    fn sleep(&self) {
        let count = self.count.lock().unwrap();
        if *count == 0 {
            drop(self.readable.wait(count).unwrap());
        }
    }
}

/// The owner of a single-issuer ring waiting for a post another thread leaves: it does what
/// `Ring::wait` does (reap, drain the eventfd, reap again, sleep; a reap owns the ring
/// and so drains the inbox), while the poster pushes into the inbox without touching the lock,
/// then signals the eventfd unless `signal` is false. The owner must end up with the post.
fn single_issuer_handoff(signal: bool) {
    loom::model(move || {
        let ring = Arc::new(Combiner::<Ring, u32>::new(Ring::default()));
        let efd = Arc::new(EventFd::default());
        let poster = {
            let (ring, efd) = (Arc::clone(&ring), Arc::clone(&efd));
            thread::spawn(move || {
                ring.push(1);
                if signal {
                    efd.signal();
                }
            })
        };
        let reap = |ring: &Combiner<Ring, u32>| {
            let mut g = ring.try_lock().expect("only the owner takes the ring");
            g.drain();
            !g.with(|r| r.absorbed.is_empty())
        };
        // One sleep is enough for the one post: the loop is bounded by two rounds.
        let mut got = false;
        for _ in 0..2 {
            if reap(&ring) {
                got = true;
                break;
            }
            efd.drain();
            if reap(&ring) {
                got = true;
                break;
            }
            efd.sleep();
        }
        poster.join().unwrap();
        assert!(got, "the owner woke without the post");
        assert_eq!(ring.queued(), 0);
    });
}

#[test]
fn a_single_issuer_owner_asleep_is_woken_for_a_foreign_post() {
    single_issuer_handoff(true);
}

/// Without the signal the owner can sleep forever with the post in the inbox: loom must find
/// it, which shows the model above rests on the signal.
#[test]
#[should_panic(expected = "deadlock")]
fn without_the_signal_loom_finds_the_owner_asleep_forever() {
    single_issuer_handoff(false);
}
