//! [`Runtime`]: the workers, started by a [`Builder`](crate::Builder), and what a program does
//! with them: `block_on`, `spawn`, statistics, shutdown.

use std::future::Future;
use std::pin::pin;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use regio_adapters::WorkQueue;
use regio_pool::{Message, MessagePool};

use crate::adapter::{AdapterError, AdapterHandle};
use crate::context::{self, BlockOnGuard};
use crate::error::BuildError;
use crate::remote::Mail;
use crate::shared::Shared;
use crate::spec::RingMode;
use crate::stats::{RingStats, WorkerStats};
use crate::task::JoinHandle;
use crate::worker::{self, Start};
use crate::Builder;

/// How long dropping a runtime waits for its workers' operations to come back from the kernel.
const DROP_DRAIN: Duration = Duration::from_secs(1);

/// A regio runtime: thread-per-core workers, each with its own ring of each of the runtime's
/// adapters, and a message pool registered with every ring.
///
/// Tasks never move between workers (a task's operations live on its worker's rings):
/// [`spawn`](Self::spawn) places each task on a worker, round-robin between the less loaded
/// of two, and it stays there.
///
/// Dropping the runtime shuts it down as [`shutdown`](Self::shutdown) does, with a one-second
/// drain.
pub struct Runtime {
    shared: Arc<Shared>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.shared.workers.len())
            .field("adapters", &self.adapter_modes())
            .finish_non_exhaustive()
    }
}

/// Wakes a thread parked in `block_on`.
struct Unparker(Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

impl Runtime {
    /// A runtime with the default settings ([`Builder::new`]).
    ///
    /// # Errors
    ///
    /// As for [`Builder::build`].
    pub fn new() -> Result<Self, BuildError> {
        Builder::new().build()
    }

    /// A builder, to choose the settings.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// Starts one thread per worker and waits until each runs (or one fails).
    pub(crate) fn start(
        shared: Arc<Shared>,
        controls: Vec<Vec<WorkQueue<Message>>>,
        cpus: Option<Vec<usize>>,
    ) -> Result<Self, BuildError> {
        let mut runtime = Self {
            shared: Arc::clone(&shared),
            threads: Vec::with_capacity(controls.len()),
        };
        let (ready, started) = mpsc::channel();
        for (index, controls) in controls.into_iter().enumerate() {
            let start = Start {
                shared: Arc::clone(&shared),
                index,
                controls,
                cpu: cpus.as_ref().map(|c| c[index]),
            };
            let ready = ready.clone();
            let thread = thread::Builder::new()
                .name(format!("regio-worker-{index}"))
                .spawn(move || worker::main(start, ready))
                .map_err(|source| BuildError::Thread {
                    worker: index,
                    source,
                })?;
            runtime.threads.push(thread);
        }
        drop(ready);
        for _ in 0..runtime.threads.len() {
            match started.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvError) => {
                    return Err(BuildError::Invalid("a worker thread died while starting"))
                }
            }
        }
        Ok(runtime)
    }

    /// Runs `future` to completion on the calling thread, and returns its output.
    ///
    /// The future need not be `Send`. Tasks it spawns go to the workers; operations and timers
    /// it awaits itself run on a worker as small tasks (a cross-thread hop each), so for I/O
    /// heavy work spawn a task and await its handle. Nested calls, from inside a future run by
    /// `block_on`, are allowed.
    ///
    /// # Panics
    ///
    /// On a worker thread of any regio runtime: blocking a worker would stall every task on it
    /// (and a `block_on` waiting for one of them would never return). `.await` the future
    /// instead.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        assert!(
            !context::on_worker(),
            "cannot block_on inside a regio worker: it would stall every task on this worker; \
             .await the future instead (or spawn it and await its JoinHandle)"
        );
        let _runtime = BlockOnGuard::enter(Arc::clone(&self.shared));
        let waker = Waker::from(Arc::new(Unparker(thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            thread::park();
        }
    }

    /// Spawns a task on a worker and returns its handle.
    ///
    /// After a shutdown has begun, the task is dropped at once, and the handle gives
    /// [`JoinError::is_cancelled`](crate::JoinError::is_cancelled).
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.shared.spawn(future)
    }

    /// Each worker's counters, in worker order (the I/O counters summed over the adapters;
    /// [`ring_stats`](Self::ring_stats) has them by adapter).
    pub fn stats(&self) -> Vec<WorkerStats> {
        self.shared
            .workers
            .iter()
            .map(|w| w.counters.snapshot(w.index))
            .collect()
    }

    /// The counters of each worker's ring of each adapter, adapter by adapter and, within
    /// one, worker by worker: what the worker did with the ring, and the adapter's own
    /// counters of it.
    ///
    /// ```
    /// let rt = regio_runtime::Runtime::builder().worker_threads(2).build()?;
    /// rt.block_on(rt.spawn(async { regio_runtime::nop().await })).unwrap()?;
    /// let rings = rt.ring_stats();
    /// assert_eq!(rings.len(), 2); // one adapter, two workers
    /// assert_eq!(rings.iter().map(|r| r.completions).sum::<u64>(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ring_stats(&self) -> Vec<RingStats> {
        let mut all = Vec::with_capacity(self.shared.adapters.len() * self.shared.workers.len());
        for (a, rt) in self.shared.adapters.iter().enumerate() {
            for w in self.shared.workers.iter() {
                let ring = rt
                    .adapter
                    .ring(w.index)
                    .map(|cq| cq.stats())
                    .unwrap_or_default();
                all.push(w.counters.rings[a].snapshot(a, w.index, ring));
            }
        }
        all
    }

    /// The runtime's message pool, registered with every ring of every adapter. Buffers taken
    /// from it can be used by every operation on any worker and adapter.
    pub fn pool(&self) -> &MessagePool {
        &self.shared.pool
    }

    /// The counters of the runtime's adapters, summed over all their rings
    /// ([`ring_stats`](Self::ring_stats) has them ring by ring).
    ///
    /// The adapters themselves are not handed out: their completion queues are the workers'
    /// own, and a thread that reaped one would take that worker's completions (their
    /// operations would never finish), one that held a ring's batch would stall the worker.
    /// They cannot be reached:
    ///
    /// ```compile_fail
    /// let rt = regio_runtime::Runtime::builder().worker_threads(1).build().unwrap();
    /// let cq = rt.adapter(0).unwrap().ring(0).unwrap();
    /// ```
    ///
    /// ```
    /// let rt = regio_runtime::Runtime::builder().worker_threads(1).build()?;
    /// rt.block_on(rt.spawn(async { regio_runtime::nop().await })).unwrap()?;
    /// assert!(rt.adapter_stats().completed >= 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn adapter_stats(&self) -> regio_adapters::Stats {
        self.shared
            .adapters
            .iter()
            .map(|a| a.adapter.stats())
            .fold(regio_adapters::Stats::default(), |a, b| a + b)
    }

    /// The number of adapters.
    pub fn adapters(&self) -> usize {
        self.shared.adapters.len()
    }

    /// Adapter `index`, to run I/O on it ([`AdapterHandle::scope`]).
    ///
    /// # Errors
    ///
    /// [`AdapterError::OutOfRange`] if the runtime has no such adapter.
    pub fn adapter(&self, index: usize) -> Result<AdapterHandle, AdapterError> {
        AdapterHandle::checked(index, self.shared.adapters.len())
    }

    /// Each adapter's mode as its rings were set up: the one asked for, or
    /// [`RingMode::Interrupt`] where the kernel refused SQPOLL.
    pub fn adapter_modes(&self) -> Vec<RingMode> {
        self.shared.adapters.iter().map(|a| a.mode).collect()
    }

    /// How many fixed-file slots are taken, summed over the adapters: one per socket or file
    /// that a worker has used and that got a slot of its adapter's table (see
    /// [`net`](crate::net#descriptors-and-fixed-file-slots)). Each adapter's count is at most
    /// its [`max_files`](crate::AdapterSpec::max_files), and 0 for an adapter in
    /// [`RingMode::SingleIssuer`](crate::RingMode::SingleIssuer). A slot comes back once its
    /// socket or file is dropped and its last operation has completed.
    /// [`fixed_files_in_use_by_adapter`](Self::fixed_files_in_use_by_adapter) gives each
    /// adapter's count.
    ///
    /// ```
    /// let rt = regio_runtime::Runtime::builder().worker_threads(1).build()?;
    /// let path = std::env::temp_dir().join(format!("regio-slots-doc-{}", std::process::id()));
    /// let file = regio_runtime::fs::File::create(&path)?;
    /// rt.block_on(file.sync_all())?;
    /// assert_eq!(rt.fixed_files_in_use(), 1);
    /// assert!(file.fixed_slot().is_some());
    /// # drop(file);
    /// # std::fs::remove_file(path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fixed_files_in_use(&self) -> usize {
        self.fixed_files_in_use_by_adapter().iter().sum()
    }

    /// How many slots of each adapter's fixed-file table are taken, by adapter index (see
    /// [`fixed_files_in_use`](Self::fixed_files_in_use)).
    pub fn fixed_files_in_use_by_adapter(&self) -> Vec<usize> {
        self.shared
            .adapters
            .iter()
            .map(|a| a.file_slots.capacity() as usize - a.file_slots.available())
            .collect()
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// Shuts the runtime down, letting the kernel take up to `timeout` to give back the
    /// operations in flight (`Duration::MAX`: as long as they take):
    ///
    /// 1. spawns are refused from now on (their handles give a cancellation);
    /// 2. each worker drops all its tasks (their handles give a cancellation), which cancels
    ///    their operations in the kernel and their timers, and then cancels the operations of
    ///    futures held off the workers (an [`Incoming`](crate::net::Incoming) returned by its
    ///    task), which can never be polled there again;
    /// 3. each worker submits the cancels and reaps all its rings (one of every adapter) until
    ///    the kernel has finished all its operations, or `timeout` passes (then each adapter
    ///    cancels them again when its rings close, and leaks what the kernel may still write
    ///    rather than freeing it);
    /// 4. the worker threads are joined. Every buffer of a finished operation is back in the
    ///    pool.
    ///
    /// Called on one of this runtime's own workers (from a task), it cannot wait for that
    /// worker: it starts the shutdown and returns at once, and the workers finish it on their
    /// own (the task that called it is dropped at its worker's next turn).
    pub fn shutdown(mut self, timeout: Duration) {
        self.stop(timeout);
    }

    fn stop(&mut self, timeout: Duration) {
        if self.threads.is_empty() {
            return;
        }
        let deadline = crate::time::deadline_after(Instant::now(), timeout);
        self.shared.close();
        for worker in self.shared.workers.iter() {
            // A refusal: that worker has stopped already.
            let _ = worker.send(Mail::Shutdown(deadline));
        }
        let threads = std::mem::take(&mut self.threads);
        let ours = context::with_worker(|local| Arc::ptr_eq(&local.shared, &self.shared));
        if ours == Some(true) {
            tracing::debug!("runtime shut down from one of its workers: not joining them");
            return;
        }
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
        // Spawns that reached an inbox after its worker stopped reading it.
        for worker in self.shared.workers.iter() {
            for mail in worker.close() {
                if let Mail::Spawn(task) = mail {
                    task.cancel();
                }
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop(DROP_DRAIN);
    }
}
