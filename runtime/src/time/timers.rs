//! [`Timers`]: one worker's pending timers, ordered by deadline.
//!
//! An ordered map from `(deadline, sequence number)` to the waiting task's waker: insertion and
//! removal are O(log n), the next deadline is the first key, and the due timers are a prefix.
//! No timer ever becomes a kernel operation: the worker fires the due ones once per loop turn,
//! and sleeps at most until the first deadline. The structure is the worker's alone.

use std::collections::BTreeMap;
use std::task::Waker;
use std::time::Instant;

/// A timer's key: its deadline, then its order of insertion (deadlines can be equal).
pub(crate) type TimerKey = (Instant, u64);

/// One worker's timers.
#[derive(Default)]
pub(crate) struct Timers {
    entries: BTreeMap<TimerKey, Waker>,
    next: u64,
}

impl Timers {
    /// Adds a timer for `deadline` that wakes `waker`.
    pub(crate) fn insert(&mut self, deadline: Instant, waker: &Waker) -> TimerKey {
        let key = (deadline, self.next);
        self.next += 1;
        self.entries.insert(key, waker.clone());
        key
    }

    /// Whether the timer `key` has fired (it is gone); if not, makes it wake `waker`.
    pub(crate) fn poll(&mut self, key: TimerKey, waker: &Waker) -> bool {
        match self.entries.get_mut(&key) {
            Some(w) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                false
            }
            None => true,
        }
    }

    /// Removes a timer that has not fired.
    pub(crate) fn remove(&mut self, key: TimerKey) {
        self.entries.remove(&key);
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .first_key_value()
            .map(|((deadline, _), _)| *deadline)
    }

    /// Removes the timers due at `now` and moves their wakers to `due`.
    pub(crate) fn fire(&mut self, now: Instant, due: &mut Vec<Waker>) {
        while let Some(entry) = self.entries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
    }

    /// Drops every timer (shutdown).
    pub(crate) fn clear(&mut self) -> BTreeMap<TimerKey, Waker> {
        std::mem::take(&mut self.entries)
    }

    /// Whether no timer is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::task::Waker;
    use std::time::{Duration, Instant};

    use super::Timers;

    #[test]
    fn timers_fire_in_deadline_order_and_only_when_due() {
        let mut timers = Timers::default();
        let now = Instant::now();
        let waker = Waker::noop();
        let late = timers.insert(now + Duration::from_secs(2), waker);
        let early = timers.insert(now + Duration::from_secs(1), waker);
        let gone = timers.insert(now + Duration::from_millis(500), waker);
        timers.remove(gone);
        assert_eq!(timers.next_deadline(), Some(early.0));
        let mut due = Vec::new();
        timers.fire(now + Duration::from_millis(1500), &mut due);
        assert_eq!(due.len(), 1);
        assert!(timers.poll(early, waker), "the early timer fired");
        assert!(!timers.poll(late, waker), "the late one has not");
        timers.fire(now + Duration::from_secs(3), &mut due);
        assert!(timers.is_empty());
    }
}
