//! [`Handshakes`]: the connections in their handshake, oldest first, so that a new connection
//! that finds every control pair taken can close the oldest of them rather than wait.
//!
//! A connection holds its two control buffers from its start, and a client that connects and
//! then says nothing keeps them until the handshake timeout. Once such clients held every pair,
//! new clients waited for that timeout. Now a connection that finds no pair free raises the
//! eviction signal of the connection longest in its handshake; that connection closes the next
//! time it waits for its client (never in the middle of a send), and its pair goes back to the
//! pool. Connections in transmission are never evicted: they wait as before.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::sync::Signal;

/// The connections in their handshake, by the order they entered it.
#[derive(Debug, Default)]
pub(crate) struct Handshakes {
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    by_age: BTreeMap<u64, Arc<Signal>>,
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
        open.by_age.insert(id, Arc::clone(&evicted));
        InHandshake {
            handshakes: self,
            id,
            evicted,
        }
    }

    /// Asks the connection longest in its handshake to close (and unlists it); false if there
    /// is none.
    pub(crate) fn evict_oldest(&self) -> bool {
        let oldest = self.open.lock().by_age.pop_first();
        match oldest {
            Some((_, evicted)) => {
                evicted.raise();
                true
            }
            None => false,
        }
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
        assert!(handshakes.evict_oldest());
        assert!(first.evicted.is_raised() && !second.evicted.is_raised());
        drop(second);
        assert!(!handshakes.evict_oldest(), "the first is unlisted already");
        drop(first);
        assert_eq!(handshakes.count(), 0);
    }
}
