//! [`Handshakes`]: the connections in their handshake, oldest first, so that a new connection
//! that finds every control pair taken can close the oldest of them rather than wait.
//!
//! A connection holds its two control buffers from its start, and a client that connects and
//! then says nothing keeps them until the handshake timeout. Once such clients held every pair,
//! new clients waited for that timeout. Now a connection that finds no pair free raises the
//! eviction signal of the connection longest in its handshake, once that one has been in it for
//! [`STALE_AFTER`]; it closes the next time it waits for its client (never in the middle of a
//! send), and its pair goes back to the pool. Connections in transmission are never evicted:
//! they wait as before.
//!
//! The age keeps a flood of silent connections from evicting clients that are negotiating: a
//! real client ends its handshake in a few round trips, far within [`STALE_AFTER`], so only
//! connections that stalled can be closed to make room.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::sync::Signal;

/// The connections in their handshake, by the order they entered it.
#[derive(Debug, Default)]
pub(crate) struct Handshakes {
    open: Mutex<Open>,
}

/// How long a connection must have been in its handshake before a newcomer may evict it.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Open {
    next: u64,
    by_age: BTreeMap<u64, (Instant, Arc<Signal>)>,
}

/// What [`Handshakes::evict_stale`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eviction {
    /// The oldest connection in its handshake was asked to close.
    Evicted,
    /// The oldest is younger than the age asked for: it may be evicted after this long.
    NotYet(Duration),
    /// No connection is in its handshake.
    NoneOpen,
}

/// One connection in its handshake: listed until dropped.
#[derive(Debug)]
pub(crate) struct InHandshake<'a> {
    handshakes: &'a Handshakes,
    id: u64,
    /// Raised when a newer connection needs this one's control pair.
    pub(crate) evicted: Arc<Signal>,
}

impl Handshakes {
    /// Lists a connection that starts its handshake.
    pub(crate) fn enter(&self) -> InHandshake<'_> {
        let evicted = Arc::new(Signal::default());
        let mut open = self.open.lock();
        let id = open.next;
        open.next += 1;
        open.by_age
            .insert(id, (Instant::now(), Arc::clone(&evicted)));
        InHandshake {
            handshakes: self,
            id,
            evicted,
        }
    }

    /// Asks the connection longest in its handshake to close (and unlists it) if it has been
    /// in its handshake for `min_age` at least.
    pub(crate) fn evict_stale(&self, min_age: Duration) -> Eviction {
        let mut open = self.open.lock();
        let Some(oldest) = open.by_age.first_entry() else {
            return Eviction::NoneOpen;
        };
        let age = oldest.get().0.elapsed();
        if age < min_age {
            return Eviction::NotYet(min_age - age);
        }
        oldest.remove().1.raise();
        Eviction::Evicted
    }

    /// How many connections are in their handshake.
    #[cfg(test)]
    fn count(&self) -> usize {
        self.open.lock().by_age.len()
    }
}

impl Drop for InHandshake<'_> {
    fn drop(&mut self) {
        self.handshakes.open.lock().by_age.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_handshake_is_evicted_first_and_each_only_once() {
        let handshakes = Handshakes::default();
        let first = handshakes.enter();
        let second = handshakes.enter();
        assert_eq!(handshakes.count(), 2);
        assert_eq!(handshakes.evict_stale(Duration::ZERO), Eviction::Evicted);
        assert!(first.evicted.is_raised() && !second.evicted.is_raised());
        drop(second);
        assert_eq!(
            handshakes.evict_stale(Duration::ZERO),
            Eviction::NoneOpen,
            "the first is unlisted already"
        );
        drop(first);
        assert_eq!(handshakes.count(), 0);
    }

    #[test]
    fn a_handshake_younger_than_the_age_asked_for_is_kept() {
        let handshakes = Handshakes::default();
        let young = handshakes.enter();
        let hour = Duration::from_secs(3600);
        assert!(matches!(
            handshakes.evict_stale(hour),
            Eviction::NotYet(left) if left > hour - Duration::from_secs(60) && left <= hour
        ));
        assert!(!young.evicted.is_raised());
        assert_eq!(handshakes.count(), 1);
    }
}
