//! Reaping: each CQE is routed ([`Router`]) where the kernel wrote it (without SQPOLL, through
//! [`CqMap`]), or after a copy out of the CQ a chunk at a time (with SQPOLL), to the work queue
//! that posted its operation, through the slab entry its `user_data` names. A
//! final CQE frees the entry, hands the buffer back and returns the credit; credits go back
//! coalesced ([`CreditReturns`]). After a resize the retiring io_uring is reaped first, through
//! the same slab.

use io_uring::cqueue;
use regio_sync::ReadSide;

use super::cq_map::CqMap;
use super::io_ring::IoRing;
use super::resize::{self, Retiring};
use super::slab::Slab;
use super::{RingState, CANCEL_ALL, ENTER_GETEVENTS, MESSAGE_BIT};
use crate::error::Error;
use crate::handle::{Completion, Sink};
use crate::ops::Side;
use crate::stats::Counters;
use crate::tables::{Tables, WqId};

/// How many CQEs a reap copies out of the CQ at a time before routing them (512 bytes).
const CQE_CHUNK: usize = 32;

/// Credits to give back, coalesced while consecutive completions belong to one work queue and
/// side, so that a batch of completions costs one atomic add instead of one each. Passed by
/// value through the routing loop, so that it lives in registers there.
#[derive(Clone, Copy)]
struct CreditReturns {
    /// The run's work queue, as [`WqId::key`]: one compare per completion instead of two.
    key: u64,
    /// The run's side as a bit ([`side_bit`]): a compare of two words in registers.
    side: u32,
    /// Credits of the run not given back yet (0: no run).
    n: i64,
}

/// `side` as one bit, as a slab entry's stamp holds it (`InFlight::side_bit`): 1 for receive.
#[inline(always)]
fn side_bit(side: Side) -> u32 {
    u32::from(side == Side::Recv)
}

impl CreditReturns {
    /// No run yet.
    fn new() -> Self {
        Self {
            key: 0,
            side: 0,
            n: 0,
        }
    }

    /// Counts one credit of the side whose [`side_bit`] is `side` for the work queue whose
    /// [`WqId::key`] is `key`.
    #[inline(always)]
    #[must_use]
    fn add(mut self, tables: &Tables, reader: &impl ReadSide, key: u64, side: u32) -> Self {
        // Both compares in one test (a branch less per completion than two).
        if (key ^ self.key) | u64::from(side ^ self.side) != 0 {
            // The run's fields go by value, so that the run never needs an address (and stays
            // in registers in the routing loop).
            give_back(tables, reader, self.key, self.side, self.n);
            self = Self { key, side, n: 0 };
        }
        self.n += 1;
        self
    }

    /// Gives back the credits of the run so far.
    fn flush(&mut self, tables: &Tables, reader: &impl ReadSide) {
        give_back(tables, reader, self.key, self.side, self.n);
        self.n = 0;
    }
}

/// Gives `n` credits of the side whose [`side_bit`] is `side` back to the work queue whose
/// [`WqId::key`] is `key`, if it is still in the table (a removed work queue takes no credit
/// back).
#[cold]
fn give_back(tables: &Tables, reader: &impl ReadSide, key: u64, side: u32, n: i64) {
    if n == 0 {
        return;
    }
    let side = if side == 0 { Side::Send } else { Side::Recv };
    if let Some(w) = tables.wq(reader, WqId::from_key(key)) {
        w.adjust(side, n);
    }
}

/// What routing a CQE works with, borrowed from the ring state beside the io_uring being
/// reaped.
struct Router<'a, B, R> {
    slab: &'a mut Slab<B>,
    tables: &'a Tables,
    reader: &'a R,
    credits: CreditReturns,
    /// The current io_uring's serial (see `RingState::uring_serial`).
    current: u32,
    /// While a retiring io_uring exists, its count of operations in flight: an operation
    /// stamped with another serial than `current` went to it.
    retiring_in_flight: Option<&'a mut usize>,
    /// Completions handed to the sink so far.
    delivered: usize,
}

impl<B, R: ReadSide> Router<'_, B, R> {
    /// Turns each CQE of `cqes` into the completion of the work queue that posted it, handed to
    /// `out` (a CQE of the adapter's own makes none). A final CQE frees its slab entry, hands
    /// the buffer back and returns the credit.
    ///
    /// The loop keeps its counts and the credit run in locals, stored back once per chunk: in
    /// the router they would be loads and stores per CQE.
    ///
    /// `RETIRING` says whether a retiring io_uring exists: only then can an operation carry
    /// another serial than the current one, and only then is it compared.
    #[inline(always)]
    fn route_chunk<const RETIRING: bool>(
        &mut self,
        cqes: &[cqueue::Entry],
        out: &mut impl Sink<B>,
    ) {
        let mut credits = self.credits;
        // CQEs of the adapter's own, which make no completion.
        let mut internal = 0usize;
        let (slab, tables, reader, current) =
            (&mut *self.slab, self.tables, self.reader, self.current);
        // Final CQEs of operations stamped with another serial: they went to the retiring ring.
        let mut of_retiring = 0usize;
        for cqe in cqes {
            let ud = cqe.user_data();
            if ud & (MESSAGE_BIT | CANCEL_ALL) != 0 {
                internal += usize::from(!route_unowned(cqe, out));
                continue;
            }
            let (slot, flags) = (ud as u32, cqe.flags());
            if cqueue::more(flags) {
                let f = slab.get(slot).expect("a CQE names a live slab entry");
                out.cqe(f.wq(), f.cookie, cqe.result(), flags, None);
                continue;
            }
            let e = slab
                .finish(slot)
                .expect("a final CQE names a live slab entry");
            let (key, side) = (e.wq_key(), e.side_bit());
            if RETIRING {
                of_retiring += usize::from(e.uring_serial() != current);
            }
            credits = credits.add(tables, reader, key, side);
            let wq = WqId::from_key(key);
            // The cookie and the result are read only now, after the credit run (whose flush
            // is a call): a sink that does not look at them never loads them.
            if e.is_bare() {
                // Handed over as a literal `None`, the completion is known to carry no buffer:
                // a sink that drops it (or reads a field or two) then needs no drop check, and
                // the completion need not be built in memory at all.
                out.cqe(wq, e.cookie, cqe.result(), flags, None);
            } else {
                let cookie = e.cookie;
                hand_back(out, wq, cookie, cqe.result(), flags, e.release());
            }
        }
        self.credits = credits;
        self.delivered += cqes.len() - internal;
        if of_retiring > 0 {
            // Only a retiring ring's operations carry another serial.
            if let Some(n) = self.retiring_in_flight.as_deref_mut() {
                *n -= of_retiring;
            }
        }
    }
}

/// Hands `out` a final completion that carries its buffer: out of line, so that the common
/// completion without one (handed over with a literal `None`) is not merged with it into one
/// call that needs a drop check.
#[cold]
#[inline(never)]
fn hand_back<B>(
    out: &mut impl Sink<B>,
    wq: WqId,
    cookie: u64,
    result: i32,
    flags: u32,
    buf: Option<B>,
) {
    out.cqe(wq, cookie, result, flags, buf);
}

/// A CQE no work queue posted: a message from another ring (handed to `out`, true), or an
/// internal one of a resize's fixed-file carry (consumed here, false).
#[cold]
fn route_unowned<B>(cqe: &cqueue::Entry, out: &mut impl Sink<B>) -> bool {
    let ud = cqe.user_data();
    if resize::carry::is_internal(ud) {
        resize::carry::internal_cqe(cqe);
        return false;
    }
    out.whole(Completion::message(
        ud & !MESSAGE_BIT,
        cqe.result(),
        cqe.flags(),
    ));
    true
}

impl<B> RingState<B> {
    /// Hands up to `max` completions to `out` and returns how many; their credits go back to
    /// their work queues.
    /// `reader` is the caller's read-side section, if it has one; otherwise a guard is taken,
    /// and only when there is something to route.
    pub(crate) fn reap<R: ReadSide>(
        &mut self,
        tables: &Tables,
        reader: Option<&R>,
        out: &mut impl Sink<B>,
        max: usize,
    ) -> Result<usize, Error> {
        // An empty CQ may hide CQEs in the kernel's overflow list (see `sq_flags`).
        if self.io.uring.completion().is_empty()
            && self.local.is_empty()
            && self.retiring.is_none()
            && !self.io.cq_overflow()
        {
            return Ok(0);
        }
        match reader {
            Some(r) => self.reap_with(tables, r, out, max),
            None => self.reap_with(tables, &tables.domain.guard(), out, max),
        }
    }

    /// [`reap`](Self::reap) inside the read-side section `reader`: local completions first,
    /// then the retiring io_uring's CQEs (its operations are the older ones), then the current
    /// one's.
    fn reap_with<R: ReadSide>(
        &mut self,
        tables: &Tables,
        reader: &R,
        out: &mut impl Sink<B>,
        max: usize,
    ) -> Result<usize, Error> {
        let RingState {
            io,
            retiring,
            slab,
            local,
            local_told,
            uring_serial,
            counters,
            ..
        } = self;
        let mut router = Router {
            slab,
            tables,
            reader,
            credits: CreditReturns::new(),
            current: *uring_serial,
            retiring_in_flight: None,
            delivered: 0,
        };
        while router.delivered < max {
            let Some((c, side)) = local.pop_front() else {
                break;
            };
            if let Some(id) = c.wq {
                router.credits = router.credits.add(tables, reader, id.key(), side_bit(side));
            }
            out.whole(c);
            router.delivered += 1;
        }
        *local_told = (*local_told).min(local.len());
        let from_local = router.delivered;
        let mut result = Ok(());
        let mut retiring_done = false;
        if let Some(Retiring {
            io: old, in_flight, ..
        }) = retiring.as_mut()
        {
            router.retiring_in_flight = Some(in_flight);
            result = old
                .flush_sq(counters)
                .map_err(|source| Error::Sys {
                    what: "io_uring_enter (submit on the retiring ring)",
                    source,
                })
                .and_then(|()| drain_cq(old, &mut router, counters, out, max));
            retiring_done = router.retiring_in_flight.as_deref() == Some(&0)
                && old.uring.completion().is_empty()
                && !old.cq_overflow();
        }
        if result.is_ok() {
            result = drain_cq(io, &mut router, counters, out, max);
        }
        router.credits.flush(tables, reader);
        let delivered = router.delivered;
        Counters::add_owned(&counters.completed, (delivered - from_local) as u64);
        if retiring_done && result.is_ok() {
            self.retire();
        }
        result.map(|()| delivered)
    }
}

/// Routes CQEs of `io` through `router` to `out` until the CQ is empty or `max` completions
/// have been delivered, flushing the kernel's overflow list when the CQ is found empty with the
/// overflow flag set.
fn drain_cq<B, R: ReadSide>(
    io: &mut IoRing,
    router: &mut Router<'_, B, R>,
    counters: &Counters,
    out: &mut impl Sink<B>,
    max: usize,
) -> Result<(), Error> {
    while router.delivered < max {
        // Route the CQEs there are (up to `want`), then store the head once.
        let after = match io.cq_map.as_mut() {
            Some(map) => route_in_place(map, router, out, max),
            None => route_copied(&mut io.uring, router, out, max),
        };
        if router.delivered >= max || after != 0 {
            continue;
        }
        if !io.cq_overflow() {
            break;
        }
        // The kernel parked completions in its overflow list (NODROP): count it, and have the
        // kernel move them into the CQ, then keep reaping.
        Counters::add_owned(&counters.cq_overflows, 1);
        tracing::warn!(
            in_flight = router.slab.len(),
            "CQ overflow: flushing the kernel's overflow list"
        );
        if let Err(source) = io.enter(counters, 0, ENTER_GETEVENTS) {
            return Err(Error::Sys {
                what: "io_uring_enter to flush CQ overflow",
                source,
            });
        }
    }
    let dropped = io.uring.completion().overflow();
    if dropped != io.dropped_seen {
        let lost = dropped.wrapping_sub(io.dropped_seen);
        io.dropped_seen = dropped;
        tracing::error!(lost, "the kernel dropped completions");
        return Err(Error::CompletionsLost { lost });
    }
    Ok(())
}

/// Routes the CQEs `map` holds (up to what `max` leaves) where the kernel wrote them, then
/// stores the head once. Returns how many CQEs had arrived behind them.
#[inline(always)]
fn route_in_place<B, R: ReadSide>(
    map: &mut CqMap,
    router: &mut Router<'_, B, R>,
    out: &mut impl Sink<B>,
    max: usize,
) -> usize {
    let (head, ready) = map.ready();
    let want = (max - router.delivered).min(ready);
    out.reserve(want);
    let (first, second) = map.runs(head, want);
    for run in [first, second] {
        // The second run is empty unless the CQEs wrap: skip the chunk's set-up and store-back.
        if run.is_empty() {
            continue;
        }
        if router.retiring_in_flight.is_some() {
            router.route_chunk::<true>(run, out);
        } else {
            router.route_chunk::<false>(run, out);
        }
    }
    let head = map.consume(head, want);
    map.waiting(head)
}

/// Routes the CQEs of `uring` (up to what `max` leaves), copied out a chunk at a time, then
/// stores the head once. Returns how many CQEs had arrived behind them.
#[inline(always)]
fn route_copied<B, R: ReadSide>(
    uring: &mut io_uring::IoUring,
    router: &mut Router<'_, B, R>,
    out: &mut impl Sink<B>,
    max: usize,
) -> usize {
    let mut cq = uring.completion();
    // No more than the CQEs there are: `max` may be far larger than what can arrive
    // (`usize::MAX`), and a reservation of it fails. The CQEs posted after this
    // snapshot of the tail are left for the next round.
    let want = (max - router.delivered).min(cq.len());
    out.reserve(want);
    let mut consumed = 0usize;
    // The CQEs are copied out a chunk at a time before they are routed. The copy
    // issues a chunk's loads back to back, so their cache misses overlap: with SQPOLL
    // the kernel thread wrote them on another core, and routed one by one each load
    // waited behind the previous CQE's slab lookup.
    let mut chunk = [const { std::mem::MaybeUninit::uninit() }; CQE_CHUNK];
    while consumed < want {
        let n = (want - consumed).min(CQE_CHUNK);
        let cqes = cq.fill(&mut chunk[..n]);
        if cqes.is_empty() {
            break;
        }
        consumed += cqes.len();
        if router.retiring_in_flight.is_some() {
            router.route_chunk::<true>(cqes, out);
        } else {
            router.route_chunk::<false>(cqes, out);
        }
    }
    // Stores the head and reads the tail again.
    cq.sync();
    cq.len()
}
