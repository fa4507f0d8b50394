//! A worker: one thread, one ring of each adapter, its tasks, its operations and its timers.
//!
//! Each loop turn:
//!
//! 1. **Mail**: if the park word says something came, drain the inbox: adopt spawned tasks,
//!    queue woken ones, abandon operations dropped on other threads, or stop.
//! 2. **Run**: poll the tasks that were ready when the step began (one poll each; tasks woken
//!    meanwhile wait for the next turn, so I/O is never starved by a busy task set). The rings
//!    are held as batches meanwhile: each operation a task starts is written into the SQ of its
//!    adapter's ring at once.
//! 3. **Submit and reap**: post what waits in the staging queue (cancels, the backlog), submit
//!    with one `io_uring_enter` per ring that got operations (none with SQPOLL while its thread
//!    is awake), reap every completion queue and route each completion to its operation by
//!    cookie, waking its task.
//! 4. **Quiescent state** of the RCU domain that all the runtime's adapters share (the worker is
//!    a registered QSBR reader).
//! 5. **Timers**: wake the tasks whose deadlines have passed.
//! 6. **Idle**: after a turn with nothing done, keep turning for the configured spin time, then
//!    park (module `park`): sleep on the eventfds of all its rings, offline for RCU, until a
//!    completion on any of them, a ring from another thread, or the next timer deadline.
//!
//! Shutdown (a [`Mail::Shutdown`]) closes the inbox, drops every task (their operations
//! abandon themselves: cancels are staged), drops the timers, then submits and reaps until the
//! kernel has given back every operation, on every adapter, or the deadline passes. What is
//! still in flight then stays with its adapter, which cancels it again when the ring closes and
//! leaks (never frees) a buffer the kernel may still write.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use regio_adapters::{Ring, WorkQueue};
use regio_pool::Message;
use regio_sync::QsbrReader;

use crate::adapter::OnAdapter;
use crate::context::WorkerGuard;
use crate::error::BuildError;
use crate::op::{open_batches, Io, Posting};
use crate::park::{self, Doorbell};
use crate::remote::{self, Mail, Remote};
use crate::shared::Shared;
use crate::spec::{RingMode, MAX_ADAPTERS};
use crate::stats::Counters;
use crate::task::{JoinHandle, Registry, Task, TaskRef};
use crate::time::Timers;

/// How long a worker waits for its operations at shutdown when it panicked before being told.
const PANIC_DRAIN: Duration = Duration::from_secs(1);
/// The longest single sleep while draining at shutdown (the deadline is checked in between).
const DRAIN_STEP: Duration = Duration::from_millis(10);

/// A worker's own state, reached by its tasks' futures and wakers through the thread-local
/// context (module `context`). Used on the worker thread only.
pub(crate) struct Local {
    /// The worker's process-wide id (its `Remote`'s).
    pub(crate) uid: u64,
    pub(crate) shared: Arc<Shared>,
    pub(crate) remote: Arc<Remote>,
    run_queue: RefCell<VecDeque<TaskRef>>,
    pub(crate) io: RefCell<Io>,
    /// The worker's completion queues by adapter (also in `io`), to hold as batches during a
    /// run step.
    cqs: Rc<[Ring<Message>]>,
    pub(crate) timers: RefCell<Timers>,
    tasks: RefCell<Registry>,
}

/// What a worker thread is started with.
pub(crate) struct Start {
    pub(crate) shared: Arc<Shared>,
    pub(crate) index: usize,
    /// The worker's own queue on each adapter, in adapter order.
    pub(crate) controls: Vec<WorkQueue<Message>>,
    /// The CPU to pin the thread to.
    pub(crate) cpu: Option<usize>,
}

/// The worker thread's body. Reports on `ready` once it runs (or why it could not start).
pub(crate) fn main(start: Start, ready: mpsc::Sender<Result<(), BuildError>>) {
    let Start {
        shared,
        index,
        controls,
        cpu,
    } = start;
    if let Err(e) = block_sigpipe() {
        tracing::warn!(worker = index, error = %e, "could not block SIGPIPE on the worker");
    }
    if let Some(cpu) = cpu {
        if let Err(e) = pin_to(cpu) {
            tracing::warn!(worker = index, cpu, error = %e, "could not pin the worker");
        }
    }
    for (adapter, (control, rt)) in controls.iter().zip(shared.adapters.iter()).enumerate() {
        if rt.mode != RingMode::SingleIssuer {
            continue;
        }
        if let Err(source) = control.ring().bind_owner() {
            let _ = ready.send(Err(BuildError::Worker {
                worker: index,
                adapter,
                source,
            }));
            return;
        }
    }
    let remote = Arc::clone(&shared.workers[index]);
    // Every adapter of the runtime shares one RCU domain: one reader covers them all.
    let mut reader = shared.adapters[0].adapter.domain().register();
    let reap_max = shared.adapters.iter().map(|a| a.reap_max).collect();
    let io = Io::new(controls, reap_max);
    let local = Local {
        uid: remote.uid,
        cqs: io.rings(),
        io: RefCell::new(io),
        shared,
        remote,
        run_queue: RefCell::new(VecDeque::new()),
        timers: RefCell::new(Timers::default()),
        tasks: RefCell::new(Registry::default()),
    };
    let guard = WorkerGuard::enter(&local);
    remote::publish(&local.remote);
    let _ = ready.send(Ok(()));
    let deadline = match catch_unwind(AssertUnwindSafe(|| local.run(&mut reader))) {
        Ok(deadline) => deadline,
        Err(_) => {
            tracing::error!(worker = index, "the worker loop panicked; shutting it down");
            Instant::now() + PANIC_DRAIN
        }
    };
    local.shutdown(&mut reader, deadline);
    remote::withdraw(local.uid);
    drop(guard);
}

impl Local {
    /// Queues a task of this worker for a poll (its `NOTIFIED` bit is set).
    pub(crate) fn push_ready(&self, task: TaskRef) {
        self.run_queue.borrow_mut().push_back(task);
    }

    /// Takes a new task (queued already) into this worker's registry and run queue.
    pub(crate) fn adopt(&self, task: TaskRef) {
        let live = {
            let mut tasks = self.tasks.borrow_mut();
            tasks.insert(Arc::clone(&task));
            tasks.len()
        };
        Counters::set(&self.remote.counters.live_tasks, live as u64);
        self.push_ready(task);
    }

    /// Lets go of a finished task.
    pub(crate) fn forget_task(&self, slot: usize) {
        let (task, live) = {
            let mut tasks = self.tasks.borrow_mut();
            (tasks.remove(slot), tasks.len())
        };
        Counters::set(&self.remote.counters.live_tasks, live as u64);
        drop(task);
    }

    /// The current adapter (module `adapter`) if this worker's runtime has it, else `ENODEV`
    /// for the operation that asked.
    pub(crate) fn current_adapter(&self) -> Result<usize, i32> {
        let adapter = crate::adapter::current_adapter();
        if adapter < self.shared.adapters.len() {
            Ok(adapter)
        } else {
            Err(libc::ENODEV)
        }
    }

    /// Spawns a task that stays on this worker (`spawn_local`), with the caller's current
    /// adapter.
    pub(crate) fn spawn_local<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let (task, handle) = Task::new(OnAdapter::inherit(future), Arc::clone(&self.remote));
        task.mark_queued();
        if self.shared.is_open() {
            Counters::bump(&self.remote.counters.local_spawns, 1);
            self.adopt(task);
        } else {
            crate::task::cancel_refused(task);
        }
        handle
    }

    /// The loop; returns the shutdown deadline when told to stop.
    fn run(&self, reader: &mut QsbrReader) -> Instant {
        let counters = &self.remote.counters;
        let spin = self.shared.config.spin;
        let mut mail = VecDeque::new();
        let mut due = Vec::new();
        let mut idle_since: Option<Instant> = None;
        loop {
            if self.remote.park.take_notification() {
                if let Some(deadline) = self.read_mail(&mut mail) {
                    return deadline;
                }
            }
            let (ran, reaped) = self.run_and_submit(counters);
            reader.quiescent();
            let fired = self.fire_timers(&mut due);
            let pending = !self.run_queue.borrow().is_empty() || self.io.borrow().has_work();
            if ran + reaped + fired > 0 || pending {
                idle_since = None;
                continue;
            }
            let now = Instant::now();
            if now.duration_since(*idle_since.get_or_insert(now)) < spin {
                std::hint::spin_loop();
                continue;
            }
            idle_since = None;
            let timeout = self
                .timers
                .borrow()
                .next_deadline()
                .map(|d| d.saturating_duration_since(now));
            reader.offline_while(|| {
                park::idle(
                    &self.remote.park,
                    &self.remote.bell,
                    || self.io.borrow_mut().submit_and_reap(counters) > 0 || self.timers_due(),
                    || Counters::bump(&counters.parks, 1),
                    timeout,
                )
            });
            if let Some(deadline) = self.read_mail(&mut mail) {
                return deadline;
            }
        }
    }

    /// The run and submit steps: polls the ready tasks with the rings held as batches, so that
    /// the operations they start go straight into the SQs, then submits and reaps. Returns how
    /// many tasks ran and how many completions were reaped.
    fn run_and_submit(&self, counters: &Counters) -> (usize, usize) {
        let ready = !self.run_queue.borrow().is_empty();
        let io_busy = {
            let io = self.io.borrow();
            io.has_work() || io.in_kernel() > 0
        };
        if !ready && !io_busy {
            return (0, 0);
        }
        // A ring that another thread holds for a moment has no batch: its operations are
        // staged meanwhile.
        let mut batches = [const { None }; MAX_ADAPTERS];
        open_batches(&self.cqs, &mut batches);
        let ran = {
            let _posting = Posting::open(&self.io, &mut batches);
            self.run_ready(counters)
        };
        let reaped = self.io.borrow_mut().finish_turn(&mut batches, counters);
        (ran, reaped)
    }

    /// Handles the mail that came in; returns the shutdown deadline if told to stop.
    fn read_mail(&self, mail: &mut VecDeque<Mail>) -> Option<Instant> {
        self.remote.drain_into(mail);
        let counters = &self.remote.counters;
        let mut stop = None;
        for item in mail.drain(..) {
            match item {
                Mail::Spawn(task) => {
                    Counters::bump(&counters.inbox_spawns, 1);
                    self.adopt(task);
                }
                Mail::Wake(task) => {
                    Counters::bump(&counters.remote_wakes, 1);
                    self.push_ready(task);
                }
                Mail::Abandon(cookie) => self.io.borrow_mut().abandon(cookie),
                Mail::Shutdown(deadline) => stop = Some(deadline),
            }
        }
        stop
    }

    /// Polls the tasks queued when the step began; returns how many.
    fn run_ready(&self, counters: &Counters) -> usize {
        let n = self.run_queue.borrow().len();
        for _ in 0..n {
            let Some(task) = self.run_queue.borrow_mut().pop_front() else {
                break;
            };
            Counters::bump(&counters.tasks_polled, 1);
            task.run(self);
        }
        n
    }

    /// Whether a timer is due now.
    fn timers_due(&self) -> bool {
        self.timers
            .borrow()
            .next_deadline()
            .is_some_and(|d| d <= Instant::now())
    }

    /// Wakes the tasks whose timers are due; returns how many.
    fn fire_timers(&self, due: &mut Vec<std::task::Waker>) -> usize {
        {
            let mut timers = self.timers.borrow_mut();
            if timers.is_empty() {
                return 0;
            }
            timers.fire(Instant::now(), due);
        }
        let n = due.len();
        Counters::bump(&self.remote.counters.timers_fired, n as u64);
        for waker in due.drain(..) {
            crate::contain::wake(waker);
        }
        n
    }

    /// Stops: refuses mail, drops every task and timer, and waits for the kernel to give back
    /// every operation until `deadline`.
    fn shutdown(&self, reader: &mut QsbrReader, deadline: Instant) {
        for item in self.remote.close() {
            match item {
                Mail::Spawn(task) => task.cancel(),
                Mail::Abandon(cookie) => self.io.borrow_mut().abandon(cookie),
                Mail::Wake(_) | Mail::Shutdown(_) => {}
            }
        }
        // Dropping a task's future may spawn or wake others: repeat until none is left.
        loop {
            let tasks = self.tasks.borrow_mut().take_all();
            if tasks.is_empty() {
                break;
            }
            for task in tasks {
                task.cancel();
            }
            let woken = std::mem::take(&mut *self.run_queue.borrow_mut());
            drop(woken);
        }
        Counters::set(&self.remote.counters.live_tasks, 0);
        let timers = self.timers.borrow_mut().clear();
        drop(timers);
        // What is left belongs to futures held off the workers, which no one can poll here
        // any more: waiting for them (a multishot accept never ends) would stall the shutdown.
        self.io.borrow_mut().abandon_all();
        let counters = &self.remote.counters;
        loop {
            self.remote.bell.clear();
            let mut io = self.io.borrow_mut();
            io.submit_and_reap(counters);
            if io.is_idle() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    worker = self.remote.index,
                    in_kernel = io.in_kernel(),
                    "operations outlived the shutdown deadline; the adapter cancels them when \
                     the ring closes, and leaks their buffers if the kernel still has them then"
                );
                return;
            }
            drop(io);
            let step = (deadline - now).min(DRAIN_STEP);
            reader.offline_while(|| self.remote.bell.wait(Some(step)));
        }
    }
}

/// Blocks `SIGPIPE` on the calling thread (a worker).
///
/// Before Linux 7.2 a send with flags 0 is a fixed-buffer `write(2)` on the socket (see the
/// adapters' `ops::net` docs), which on a broken connection raises `SIGPIPE` on the thread
/// that carries it out: without SQPOLL, the worker that submits it or runs its task work. A
/// program that keeps the signal's default action (a C host, `#[unix_sigpipe = "sig_dfl"]`)
/// would die of a peer that goes away. Blocked, the signal stays pending on the worker, which
/// never unblocks it, and the send fails with `EPIPE` as it should. The registered-buffer
/// sends stay as they are: no flag, no per-operation cost.
fn block_sigpipe() -> std::io::Result<()> {
    // SAFETY: a zeroed sigset_t is a valid set for sigemptyset and sigaddset to fill; both
    // write inside it only.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        set
    };
    // SAFETY: a valid signal set, and no old set asked for (null).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it (the caller's
    // cpu comes from the process's own affinity mask, below CPU_SETSIZE).
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    };
    // SAFETY: a valid cpu_set_t of the size passed, for the calling thread (pid 0).
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The CPUs this process may run on, in order (for pinning).
pub(crate) fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled by the kernel for pid 0.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `i` is below CPU_SETSIZE, the set's capacity.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect())
}
