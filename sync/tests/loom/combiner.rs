//! The combiner ([`regio_sync::Combiner`]): the state is never owned by two threads at once, an
//! inbox post is never stranded (no lost wake-up), and a refused post stays queued; and without
//! the hand-off's fences loom finds the stranded post.

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use regio_sync::{Absorb, Combiner};

/// A stand-in for a ring: counts reaps, records absorbed posts, and checks exclusive access.
#[derive(Default)]
struct Ring {
    reaps: usize,
    absorbed: Vec<u32>,
    refuse: bool,
}

impl Absorb<u32> for Ring {
    fn absorb(&mut self, item: u32) -> Result<(), u32> {
        if self.refuse {
            return Err(item);
        }
        self.absorbed.push(item);
        Ok(())
    }
}

#[test]
fn a_cq_is_never_reaped_by_two_threads_at_once() {
    loom::model(|| {
        let ring = Arc::new(Combiner::<Ring, u32>::new(Ring::default()));
        let inside = Arc::new(AtomicUsize::new(0));
        let reaper = |ring: Arc<Combiner<Ring, u32>>, inside: Arc<AtomicUsize>| {
            move || {
                let mut won = 0;
                for _ in 0..2 {
                    if let Some(mut g) = ring.try_lock() {
                        // SeqCst: a plain witness for the assertion; the lock is under test.
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "double reap");
                        g.with(|r| r.reaps += 1);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        won += 1;
                    }
                }
                won
            }
        };
        let a = thread::spawn(reaper(Arc::clone(&ring), Arc::clone(&inside)));
        let b = thread::spawn(reaper(Arc::clone(&ring), Arc::clone(&inside)));
        let won = a.join().unwrap() + b.join().unwrap();
        let mut g = ring.try_lock().expect("nobody holds the ring any more");
        // The loom cell inside the combiner also fails the model on overlapping `with_mut`s.
        assert_eq!(g.with(|r| r.reaps), won);
    });
}

#[test]
fn an_inbox_post_is_never_stranded() {
    loom::model(|| {
        let ring = Arc::new(Combiner::<Ring, u32>::new(Ring::default()));
        let posters: Vec<_> = (1..=2)
            .map(|item| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || ring.post(item))
            })
            .collect();
        let reaper = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                if let Some(g) = ring.try_lock() {
                    drop(g);
                }
            })
        };
        for p in posters {
            p.join().unwrap();
        }
        reaper.join().unwrap();
        // Every thread has let go: each post must have been absorbed by somebody.
        assert_eq!(ring.queued(), 0, "a post was left in the inbox");
        let mut g = ring.try_lock().unwrap();
        let mut got = g.with(|r| r.absorbed.clone());
        got.sort();
        assert_eq!(got, vec![1, 2]);
    });
}

#[test]
fn a_refused_post_stays_queued_for_the_next_owner() {
    loom::model(|| {
        let ring = Arc::new(Combiner::<Ring, u32>::new(Ring {
            refuse: true,
            ..Ring::default()
        }));
        let poster = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || ring.post(7))
        };
        let owner = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                if let Some(g) = ring.try_lock() {
                    drop(g);
                }
            })
        };
        poster.join().unwrap();
        owner.join().unwrap();
        // The state refused it (a full SQ): the post is still there, never lost.
        assert_eq!(ring.queued(), 1);
        let mut g = ring.try_lock().unwrap();
        g.with(|r| r.refuse = false);
        assert!(g.drain());
        assert_eq!(g.with(|r| r.absorbed.clone()), vec![7]);
    });
}

/// The hand-off without its two SeqCst fences: loom must find the stranded post. This shows the
/// model above is sensitive to the ordering it relies on.
mod broken {
    use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use loom::sync::Mutex;

    #[derive(Default)]
    pub struct Handoff {
        locked: AtomicBool,
        queued: AtomicUsize,
        inbox: Mutex<Vec<u32>>,
        pub absorbed: Mutex<Vec<u32>>,
    }

    impl Handoff {
        fn try_lock(&self) -> bool {
            // Acquire on success, Relaxed on failure: as in the crate's combiner.
            self.locked
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        }

        fn drain(&self) {
            let mut inbox = self.inbox.lock().unwrap();
            // Relaxed: as in the crate; the missing fences are this model's deliberate bug.
            self.queued.fetch_sub(inbox.len(), Ordering::Relaxed);
            self.absorbed.lock().unwrap().append(&mut inbox);
        }

        /// Drains, unlocks, and takes the lock back while posts are queued: as in the crate, but
        /// with no fence between the unlock and the read of the count.
        pub fn unlock(&self) {
            loop {
                self.drain();
                // Release, then a Relaxed read with no fence between: the broken ordering.
                self.locked.store(false, Ordering::Release);
                if self.queued.load(Ordering::Relaxed) == 0 || !self.try_lock() {
                    return;
                }
            }
        }

        /// Posts, with no fence between the count increment and the lock attempt.
        pub fn post(&self, item: u32) {
            {
                let mut inbox = self.inbox.lock().unwrap();
                inbox.push(item);
                // Relaxed with no fence before the lock attempt: the broken ordering.
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
            if self.try_lock() {
                self.unlock();
            }
        }

        pub fn own_and_release(&self) {
            if self.try_lock() {
                self.unlock();
            }
        }

        pub fn queued(&self) -> usize {
            // Relaxed: read after the model's threads were joined.
            self.queued.load(Ordering::Relaxed)
        }
    }
}

#[test]
#[should_panic(expected = "stranded")]
fn without_the_fences_loom_finds_a_stranded_post() {
    loom::model(|| {
        let h = Arc::new(broken::Handoff::default());
        let poster = {
            let h = Arc::clone(&h);
            thread::spawn(move || h.post(1))
        };
        let owner = {
            let h = Arc::clone(&h);
            thread::spawn(move || h.own_and_release())
        };
        poster.join().unwrap();
        owner.join().unwrap();
        assert_eq!(h.queued(), 0, "a post was stranded in the inbox");
    });
}
