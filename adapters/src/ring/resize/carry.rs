//! Carrying the fixed files of a ring that a resize replaces into the ring that replaces it
//! (see `adapter::resize` for the design of a resize, and `ring::resize` for the ring's side).
//!
//! # What is carried, and how the slots are known
//!
//! Nothing is tracked in user space: the adapter does not see which slot an accept filled
//! (`accept_multishot` lets the kernel choose) or which one a close emptied. Instead the kernel's
//! own table is read when the resize happens, from the ring's `/proc/self/fdinfo` entry, which
//! lists the occupied slots (`UserFiles:`, one `index: path` line each); the slots set with
//! [`Adapter::set_file`](crate::Adapter::set_file) are added to that list, so they are carried
//! even if the listing were incomplete.
//!
//! Each slot is copied with `IORING_OP_MSG_RING` / `IORING_MSG_SEND_FD`, submitted on the old
//! ring (the only one that can name its fixed files), into the same slot of the new ring, which
//! nobody else can see yet. The transfers of a chunk are hard-linked, so they run one after the
//! other whatever fails, and end with a plain message to the new ring; when that message is in
//! the new ring's CQ, every transfer of the chunk has run, and each one that succeeded has left
//! its own CQE there (its `user_data` names the slot). All this happens with the ring owned and
//! before the swap, so the first operation on the new ring already finds the files.
//!
//! The transfers skip their CQE on the old ring when they succeed (`IOSQE_CQE_SKIP_SUCCESS`). A
//! failed one (a slot a close emptied after it was listed) posts its CQE there with an internal
//! `user_data` ([`is_internal`]), which the reap consumes and logs instead of routing it.
//!
//! Recent kernels (6.18 among them) print the fdinfo whole or not at all, as they can or cannot
//! take the ring's lock at once, and an absent listing is read again. Older ones printed the
//! `UserFiles:` header without the list when they could not take the lock; there a slot filled
//! by an accept could be missed under contention (the `set_file` slots are always carried).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::error::Error;
use crate::ring::{RingState, CANCEL_ALL, MESSAGE_BIT};

/// `user_data` of every CQE of a carry, on either ring: internal (bit 62 set, bit 63 clear,
/// like [`CANCEL_ALL`]), with the slot in the low 32 bits. Should a CQE meant for the carry
/// itself ever reach the new ring's CQ after the swap, the reap consumes it as well.
const CARRY: u64 = CANCEL_ALL | (1 << 32);
/// The slot field of the end-of-chunk message.
const END: u32 = u32::MAX;
/// SQEs in one chunk. A SQPOLL thread that serves several rings takes at most 8 SQEs of a ring
/// per pass (`IORING_SQPOLL_CAP_ENTRIES_VALUE`); a link chain must not straddle two passes.
const CHUNK: usize = 8;
/// How long a carry may take before the resize gives up.
const CARRY_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a CQE's `user_data` is one of the adapter's own (a transfer of a resize), which is
/// not routed to any work queue.
#[inline]
pub(in crate::ring) fn is_internal(user_data: u64) -> bool {
    user_data & (MESSAGE_BIT | CANCEL_ALL) == CANCEL_ALL
}

/// Consumes an internal CQE: a transfer that failed on the old ring of a resize (or a late
/// confirmation on the new ring, which the carry normally reads itself).
#[cold]
pub(in crate::ring) fn internal_cqe(cqe: &cqueue::Entry) {
    let slot = cqe.user_data() as u32;
    let error = io::Error::from_raw_os_error(-cqe.result());
    if cqe.result() >= 0 {
        tracing::debug!(slot, "a late confirmation of a fixed-file carry");
    } else if slot == END {
        tracing::warn!(%error, "the end-of-chunk message of a fixed-file carry failed");
    } else if cqe.result() == -libc::EBADF {
        // A slot set with `set_file` that a close on this ring emptied, or one a close emptied
        // after the kernel listed it: there is nothing to carry.
        tracing::debug!(
            slot,
            "an empty fixed-file slot was not carried to the resized ring"
        );
    } else {
        tracing::warn!(slot, %error, "a fixed file was not carried to the resized ring");
    }
}

impl<B> RingState<B> {
    /// Copies every occupied slot of the current ring's fixed-file table, and every slot of
    /// `known`, into the same slot of `to` (a new ring with a file table of the same size, not
    /// yet visible to any other thread). Returns the slots carried.
    ///
    /// Runs with the ring owned and nothing pending, and waits for the kernel (for the SQ to
    /// empty and for each chunk of transfers), up to [`CARRY_TIMEOUT`] in all.
    pub(in crate::ring) fn carry_files(
        &mut self,
        to: &mut IoUring,
        known: &[u32],
    ) -> Result<Vec<u32>, Error> {
        // The transfers go into the SQ behind the staging area's back: its room is recounted
        // on the next post, whatever happens here.
        self.room = 0;
        let deadline = Instant::now() + CARRY_TIMEOUT;
        // Every SQE submitted before has been issued once the SQ is empty, so a close that was
        // posted before the resize is seen by the listing.
        self.wait_sq_empty(deadline)?;
        let mut slots = occupied_slots(self.io.uring.as_raw_fd(), deadline)?;
        slots.extend_from_slice(known);
        slots.sort_unstable();
        slots.dedup();
        let mut carried = Vec::with_capacity(slots.len());
        if slots.is_empty() {
            return Ok(carried);
        }
        let per_chunk = self.io.uring.submission().capacity().min(CHUNK) - 1;
        if per_chunk == 0 {
            return Err(Error::Invalid(
                "carrying fixed files to a resized ring needs an SQ of at least 2 entries",
            ));
        }
        let target = types::Fd(to.as_raw_fd());
        let mut chain = Vec::with_capacity(CHUNK);
        for chunk in slots.chunks(per_chunk) {
            chain.clear();
            for &slot in chunk {
                let dest = types::DestinationSlot::try_from_slot_target(slot)
                    .map_err(|_| Error::Invalid("fixed-file slot out of range"))?;
                chain.push(
                    opcode::MsgRingSendFd::new(
                        target,
                        types::Fixed(slot),
                        dest,
                        CARRY | u64::from(slot),
                    )
                    .build()
                    .flags(squeue::Flags::IO_HARDLINK | squeue::Flags::SKIP_SUCCESS)
                    .user_data(CARRY | u64::from(slot)),
                );
            }
            chain.push(
                opcode::MsgRingData::new(target, 0, CARRY | u64::from(END), None)
                    .build()
                    .flags(squeue::Flags::SKIP_SUCCESS)
                    .user_data(CARRY | u64::from(END)),
            );
            // SAFETY: the SQEs point at no memory.
            if unsafe { self.io.uring.submission().push_multiple(&chain) }.is_err() {
                // Not reached: the SQ is empty and the chain fits in it.
                return Err(Error::Invalid("no room in the SQ to carry fixed files"));
            }
            self.io
                .flush_sq(&self.counters)
                .map_err(|source| Error::Sys {
                    what: "io_uring_enter (carrying fixed files)",
                    source,
                })?;
            wait_chunk(to, deadline, &mut carried)?;
            self.wait_sq_empty(deadline)?;
        }
        Ok(carried)
    }

    /// Hands the SQ to the kernel until the kernel has taken every SQE in it.
    fn wait_sq_empty(&mut self, deadline: Instant) -> Result<(), Error> {
        while !self.io.uring.submission().is_empty() {
            self.io
                .flush_sq(&self.counters)
                .map_err(|source| Error::Sys {
                    what: "io_uring_enter (before carrying fixed files)",
                    source,
                })?;
            if Instant::now() >= deadline {
                return Err(timed_out("the old ring's SQ did not empty"));
            }
            std::thread::yield_now();
        }
        Ok(())
    }
}

/// Waits for the end-of-chunk message on `to`, adding to `carried` the slot of each transfer of
/// the chunk that succeeded (their CQEs come before it: each transfer posts its CQE before the
/// next one runs).
fn wait_chunk(to: &mut IoUring, deadline: Instant, carried: &mut Vec<u32>) -> Result<(), Error> {
    loop {
        let mut done = false;
        for cqe in to.completion() {
            match cqe.user_data() as u32 {
                END => done = true,
                slot => carried.push(slot),
            }
        }
        if done {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out("the transfers did not complete"));
        }
        let ts = types::Timespec::from(left);
        let args = types::SubmitArgs::new().timespec(&ts);
        match to.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(source) => {
                return Err(Error::Sys {
                    what: "io_uring_enter (waiting for fixed files to reach the resized ring)",
                    source,
                })
            }
        }
    }
}

/// Warns about the fixed files of a retiring ring (`uring`) that are not among the slots
/// carried from it: an accept in flight at the resize put them there, out of reach, and they
/// are closed with the ring. Says nothing if the kernel does not list the table at once.
#[cold]
pub(in crate::ring) fn report_stranded(uring: &IoUring, carried: &[u32]) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", uring.as_raw_fd()))
    else {
        return;
    };
    let stranded: Vec<u32> = parse_user_files(&text)
        .unwrap_or_default()
        .into_iter()
        .filter(|slot| !carried.contains(slot))
        .collect();
    if !stranded.is_empty() {
        tracing::warn!(
            slots = ?stranded,
            "fixed files that accepts still in flight at a resize installed on the old ring are \
             closed with it; cancel accepts before a resize and post them again after it"
        );
    }
}

/// The occupied slots of the fixed-file table of the io_uring `fd`, as the kernel lists them in
/// its fdinfo. The kernel prints the listing only when it can take the ring's lock at once, so
/// a missing listing is read again.
fn occupied_slots(fd: RawFd, deadline: Instant) -> Result<Vec<u32>, Error> {
    let path = format!("/proc/self/fdinfo/{fd}");
    loop {
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Sys {
            what: "reading the io_uring's fdinfo (its fixed-file table)",
            source,
        })?;
        if let Some(slots) = parse_user_files(&text) {
            return Ok(slots);
        }
        if Instant::now() >= deadline {
            return Err(timed_out(
                "the kernel did not list the old ring's fixed files",
            ));
        }
        std::thread::yield_now();
    }
}

/// The slots listed under `UserFiles:` (one `"%5u: <path>"` line each, up to `UserBufs:`), or
/// `None` when there is no such section.
fn parse_user_files(fdinfo: &str) -> Option<Vec<u32>> {
    let mut lines = fdinfo.lines().skip_while(|l| !l.starts_with("UserFiles:"));
    lines.next()?;
    Some(
        lines
            .map_while(|l| {
                let (index, _) = l.trim_start().split_once(':')?;
                index.parse().ok()
            })
            .collect(),
    )
}

fn timed_out(why: &'static str) -> Error {
    Error::Sys {
        what: "carrying fixed files to the resized ring",
        source: io::Error::new(io::ErrorKind::TimedOut, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_is_read_up_to_the_next_section() {
        let fdinfo = "SqThread:\t-1\nUserFiles:\t16\n    3: /etc/hostname\n   11: socket:[42]\n\
                      UserBufs:\t1\n    0: 0x1000/4096\nPollList:\n";
        assert_eq!(parse_user_files(fdinfo), Some(vec![3, 11]));
        assert_eq!(
            parse_user_files("UserFiles:\t16\nUserBufs:\t0\n"),
            Some(vec![])
        );
        assert_eq!(parse_user_files("pos:\t0\nflags:\t02\n"), None);
    }

    #[test]
    fn only_the_adapters_own_user_data_is_internal() {
        assert!(is_internal(CARRY | 7));
        assert!(is_internal(CARRY | u64::from(END)));
        assert!(!is_internal(MESSAGE_BIT | CANCEL_ALL | 7), "a message");
        assert!(!is_internal(u64::from(u32::MAX)), "a slab index");
    }
}
