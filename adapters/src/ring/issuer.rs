//! Single-issuer mode ([`Config::single_issuer`](crate::Config::single_issuer)): one owner
//! thread per ring.
//!
//! The ring is set up with `IORING_SETUP_R_DISABLED` (plus `SINGLE_ISSUER` and `DEFER_TASKRUN`
//! or `COOP_TASKRUN` where the kernel has them), so it has no submitter task until a thread
//! binds it ([`RingShared::bind_owner`]): `IORING_REGISTER_ENABLE_RINGS` makes the calling thread the
//! kernel's `submitter_task`, and from then on the kernel refuses submission, task-work runs
//! and every `io_uring_register` call from any other thread with `EEXIST`.
//!
//! So here only the owner thread ever takes the ring's combiner lock ([`RingShared::try_own`]). Any
//! other thread leaves its post in the inbox ([`RingShared::post_foreign`]) and then writes the
//! ring's CQ eventfd, which the owner sleeps on ([`Ring::wait`],
//! [`CqSet::wait`]). The owner drains the eventfd, then looks at the inbox (every reap drains
//! it), and only then sleeps: a post pushed before the drain is in the inbox when the owner
//! looks, and one pushed after it leaves the eventfd readable, so the sleep returns at once. No
//! wake-up is lost; `tests/loom.rs` models the pair and fails without the signal.
//!
//! [`Ring::wait`]: crate::Ring::wait
//! [`CqSet::wait`]: crate::CqSet::wait
//!
//! Why the eventfd and not `IORING_OP_MSG_RING`: the owner already sleeps on the eventfd (in
//! `poll` or `epoll_wait`, with any other CQs of a `CqSet`), and the kernel signals it when it
//! queues deferred task work for the owner (`io_req_local_work_add` on an empty list), so one
//! sleep covers completions, task work and foreign posts. A write is one system call from any
//! thread, and works before the ring is enabled. A MSG_RING needs a source ring that the poster
//! may submit to (a poster has none of its own here, and a shared helper ring would need its own
//! lock), fails with `EBADFD` on a target not yet enabled, and would add a CQE to filter out.
//!
//! # Synchronization
//!
//! - `owner` is written once, by the bind, with the tables' write lock and the combiner lock
//!   held; it is read Relaxed. A thread compares it with its own token: only the thread that
//!   stored its token can read that value, and it reads its own store (program order). The
//!   registration paths read it with the tables' write lock held, which orders them after a
//!   completed bind.
//! - The eventfd write and read are system calls on one kernel object: the poster's inbox push
//!   (under the inbox mutex) happens before its write, and the owner's read of a signalled
//!   eventfd happens after that write, so the owner's later inbox check sees the push.

use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Post, RingShared, RingState, ENTER_GETEVENTS};
use crate::error::Error;
use regio_sync::CombinerGuard;

/// The calling thread's token: a process-wide unique number, never 0, given on first use.
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: Cell<u64> = const { Cell::new(0) };
    }
    TOKEN.with(|t| {
        if t.get() == 0 {
            // Relaxed: only uniqueness matters, which the RMW gives.
            t.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        t.get()
    })
}

impl<B> RingShared<B> {
    /// Whether the calling thread is this ring's bound owner.
    pub(crate) fn owned_here(&self) -> bool {
        // Relaxed: module docs (a thread can only read its own token from its own store).
        self.owner.load(Ordering::Relaxed) == thread_token()
    }

    /// Whether the calling thread may make registration calls on this ring: always in the
    /// default mode; in single-issuer mode, while the ring has no owner or when it is the owner.
    pub(crate) fn may_register(&self) -> bool {
        // Relaxed: module docs; callers hold the tables' write lock, as the bind does.
        !self.single_issuer || self.owner.load(Ordering::Relaxed) == 0 || self.owned_here()
    }

    /// Takes the ring if nobody has it (see [`Combiner::try_lock`](regio_sync::Combiner::try_lock)); in
    /// single-issuer mode, only on the owner thread. The default mode pays one `bool` test.
    #[inline(always)]
    pub(crate) fn try_own(&self) -> Option<CombinerGuard<'_, RingState<B>, Post<B>>> {
        if self.single_issuer && !self.owned_here() {
            return None;
        }
        self.combiner.try_lock()
    }

    /// Takes the ring like [`try_own`](Self::try_own); if another thread owns it, asks that
    /// owner to signal the CQ eventfd if the CQ holds completions when it lets go, and tries
    /// once more ([`Combiner::try_lock_or_ask`](regio_sync::Combiner::try_lock_or_ask)). For a waiter that has reset
    /// the eventfd (the `wait` module). In single-issuer mode only the owner takes the ring, so
    /// there is nobody to ask.
    pub(crate) fn try_own_or_ask(&self) -> Option<CombinerGuard<'_, RingState<B>, Post<B>>> {
        if self.single_issuer {
            return self.try_own();
        }
        self.combiner.try_lock_or_ask()
    }

    /// A post from a thread that does not own this single-issuer ring: into the inbox, then a
    /// wake-up for the owner (module docs).
    #[cold]
    pub(crate) fn post_foreign(&self, post: Post<B>) {
        self.combiner.push(post);
        // A full counter (a write refused with EAGAIN) is signalled already.
        crate::sys::eventfd_signal(self.eventfd.as_raw_fd());
    }

    /// Makes the calling thread this single-issuer ring's owner: enables the ring, which makes
    /// the thread the kernel's submitter task, then pushes and submits what waits in the inbox.
    /// Binding again from the owner does nothing.
    pub(crate) fn bind_owner(&self) -> Result<(), Error> {
        if !self.single_issuer {
            return Err(Error::Invalid(
                "bind_owner needs an adapter built with Config::single_issuer",
            ));
        }
        let _w = self.tables.write_lock();
        let me = thread_token();
        // Relaxed: written only under the write lock held here.
        match self.owner.load(Ordering::Relaxed) {
            0 => {}
            o if o == me => return Ok(()),
            _ => return Err(Error::NotOwner),
        }
        // Nobody else takes an unbound ring's lock but the registration calls, which hold the
        // write lock we hold.
        let mut g = self.combiner.try_lock().ok_or(Error::Invalid(
            "bind_owner found the ring owned by another thread",
        ))?;
        g.with(|s| s.io.uring.submitter().register_enable_rings())
            .map_err(|source| Error::Sys {
                what: "IORING_REGISTER_ENABLE_RINGS",
                source,
            })?;
        // Relaxed: module docs; the combiner lock and the write lock order it for the others.
        self.owner.store(me, Ordering::Relaxed);
        g.with(|s| s.auto_submit = true);
        tracing::debug!(parent: &self.span, "single-issuer ring bound to its owner thread");
        // Dropping the guard pushes the inbox and submits it, now from the submitter task.
        drop(g);
        Ok(())
    }

    /// Before a reap by the owner: with `IORING_SETUP_TASKRUN_FLAG`, runs the task work the
    /// kernel queued for this thread (with `DEFER_TASKRUN`, completions reach the CQ only then).
    #[inline(always)]
    pub(crate) fn run_task_work(
        &self,
        g: &mut CombinerGuard<'_, RingState<B>, Post<B>>,
    ) -> Result<(), Error> {
        if !self.taskrun_flag {
            return Ok(());
        }
        g.with(RingState::run_task_work)
            .map_err(|source| Error::Sys {
                what: "io_uring_enter (run task work)",
                source,
            })
    }
}

impl<B> RingState<B> {
    /// Enters the kernel to run its pending task work if `IORING_SQ_TASKRUN` is set.
    fn run_task_work(&mut self) -> io::Result<()> {
        // `taskrun` is an Acquire load of the SQ flags, which the kernel sets when it queues
        // task work on an empty list (and signals the CQ eventfd at the same moment).
        if self.io.uring.submission().taskrun() {
            return self.io.enter(&self.counters, 0, ENTER_GETEVENTS);
        }
        Ok(())
    }
}
