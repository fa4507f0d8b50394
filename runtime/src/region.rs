//! [`Region`]: memory of the caller's registered with the runtime's rings as fixed buffers, and
//! zero-copy sends of its bytes on stream sockets ([`Stream::send_region`]).
//!
//! A pool [`Message`] is registered memory that an operation owns while it
//! runs. Some memory is the program's own and lives as long as the program wants: a disk image
//! kept in memory, a file mapped once. [`Region::register`] registers such memory (any type that
//! implements the unsafe [`Memory`] trait, shared through an [`Arc`]) on every ring of every
//! adapter of the current runtime, in chunks of at most [`MAX_CHUNK`] bytes (the kernel's limit
//! for one fixed buffer). Registering pins the memory: the kernel faults in every page and keeps
//! it resident until the region is gone, and without `CAP_IPC_LOCK` the pinned bytes count
//! against `RLIMIT_MEMLOCK` once per adapter. A send names the registration of the adapter its
//! socket belongs to. A runtime with a single-issuer adapter refuses regions: its rings take
//! registrations only on their owner thread, and a region's last lease may drop on any thread.
//!
//! [`Stream::send_region`] sends a range of the region with `IORING_OP_SEND_ZC` from the fixed
//! buffer: no copy is made. The future resolves once the socket took every byte (the first
//! completion of each send), not when the kernel lets go of the pages: that is each send's
//! `F_NOTIF` notification, which on TCP comes only when the peer acknowledged the bytes, and
//! each send keeps its lease on the region until then (see Ownership). A range that spans
//! chunks is sent as one send per chunk, in order; a short send is followed by a send of the
//! rest. A send posted on the same socket after the future resolved goes out after these
//! bytes.
//!
//! # Ownership
//!
//! Each send holds a clone of the region (a lease) until its final completion (its
//! notification), whether its future resolved, was dropped (the send is cancelled, and the
//! lease waits for the final completion) or the runtime shuts down. The region is
//! unregistered when the last clone goes: after the last send that used it has completed,
//! never before, and the memory (the `Arc` it was registered with) is released only after
//! that. The kernel thus never reads memory that the region does not own. It only ever reads it: sends are the only operations on a region,
//! so the owner may keep writing the memory (a reader then gets the bytes of the moment they
//! are sent: up to the notification, which may come after the future resolved, the NIC may
//! read them, for a retransmission too).
//!
//! ```
//! use std::sync::Arc;
//! use regio_runtime::net::{TcpListener, TcpStream};
//! use regio_runtime::region::Region;
//! use regio_runtime::Runtime;
//!
//! let rt = Runtime::builder().worker_threads(1).pool_class(4096, 16).build()?;
//! let got = rt.block_on(async {
//!     let image: Arc<Box<[u8]>> = Arc::new((0..=255u8).cycle().take(1 << 16).collect());
//!     let region = Region::register(Arc::clone(&image))?;
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let client = TcpStream::connect(listener.local_addr()?).await?;
//!     let (server, _) = listener.accept().await?;
//!     server.send_region(&region, 1000, 3)?.await?;
//!     let (n, msg) = client.recv(regio_runtime::pool().try_acquire().unwrap()).await;
//!     Ok::<_, Box<dyn std::error::Error>>(msg.as_slice()[..n?].to_vec())
//! })?;
//! assert_eq!(got, [1000 % 256, 1001 % 256, 1002 % 256].map(|b| b as u8));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::any::Any;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use regio_adapters::{BufKey, Op, RegionId, RegionSlice, WeakAdapter};
use regio_pool::Message;

use crate::net::{Stream, StreamSocket};
use crate::op::{Build, Route, Submit};
use crate::queues::FdQueues;

/// The largest fixed buffer the kernel registers (`SZ_1G`): a region is registered in chunks
/// of this size.
pub const MAX_CHUNK: usize = 1 << 30;

/// Memory a [`Region`] can register.
///
/// # Safety
///
/// `as_ptr()..as_ptr() + len()` must be one allocation, readable, at the same address and of
/// the same length for as long as the value lives (the region keeps the value alive while the
/// kernel may read it). It may be written by its owner meanwhile; the kernel only reads it.
pub unsafe trait Memory: Send + Sync + 'static {
    /// The first byte.
    fn as_ptr(&self) -> *const u8;
    /// The length in bytes.
    fn len(&self) -> usize;
    /// Whether it has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// SAFETY: a boxed slice's bytes are one heap allocation that does not move or change length
// while the box lives; shared through an `Arc`, nobody can replace it.
unsafe impl Memory for Box<[u8]> {
    fn as_ptr(&self) -> *const u8 {
        <[u8]>::as_ptr(self)
    }

    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
}

/// Why a region could not be registered or a range of it sent.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// [`Region::register`] was called outside a regio runtime.
    #[error("Region::register called outside a regio runtime: call it from a task or inside Runtime::block_on")]
    NoRuntime,
    /// The memory has no bytes.
    #[error("a region needs at least one byte")]
    Empty,
    /// The rings refused the registration: [`regio_adapters::Error::MemlockTooLow`] when the
    /// pinned bytes would pass `RLIMIT_MEMLOCK`, [`regio_adapters::Error::Invalid`] when the
    /// fixed-buffer table is full, [`regio_adapters::Error::NotOwner`] when an adapter is in
    /// single-issuer mode (whatever the thread). Nothing stays registered.
    #[error("registering a region of {len} bytes: {source}")]
    Register {
        /// The region's length.
        len: usize,
        /// The adapter's error.
        source: regio_adapters::Error,
    },
    /// A range that does not lie inside the region (or whose end overflows).
    #[error("the range {offset}+{len} is outside the region of {size} bytes")]
    OutOfRange {
        /// Its start.
        offset: usize,
        /// Its length.
        len: usize,
        /// The region's length.
        size: usize,
    },
}

impl From<RegionError> for io::Error {
    fn from(e: RegionError) -> Self {
        let kind = match e {
            RegionError::OutOfRange { .. } | RegionError::Empty => io::ErrorKind::InvalidInput,
            RegionError::NoRuntime | RegionError::Register { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Memory registered with the runtime's rings: see the [module docs](self). Cloning gives
/// another lease on the same registration; it is unregistered when the last one goes.
#[derive(Clone)]
pub struct Region {
    inner: Arc<Registered>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("len", &self.inner.len)
            .field("adapters", &self.inner.adapters.len())
            .finish()
    }
}

/// One fixed buffer of a region.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    index: RegionId,
    generation: u32,
}

/// A registration: its chunks on each adapter, and the memory they cover.
struct Registered {
    /// By adapter index, as the runtime numbers its adapters.
    adapters: Vec<OnAdapter>,
    /// The length of each chunk but the last ([`MAX_CHUNK`] but in unit tests).
    chunk_len: usize,
    len: usize,
    /// Kept until every chunk is unregistered (fields drop after `Drop::drop`).
    _memory: Arc<dyn Memory>,
}

/// A region's chunks on one adapter.
struct OnAdapter {
    /// Weak: a region outliving its runtime must not keep the rings open. An adapter that
    /// goes first waits for the final completion of every send in flight (whose leases drop
    /// then) and takes its registrations with its rings.
    adapter: WeakAdapter<Message>,
    chunks: Vec<Chunk>,
}

impl Drop for OnAdapter {
    fn drop(&mut self) {
        // Every send that used a chunk held a lease on the registration until its final
        // completion, so none is in flight now.
        let Some(adapter) = self.adapter.upgrade() else {
            return;
        };
        for chunk in &self.chunks {
            if let Err(e) = adapter.unregister_region(chunk.index) {
                tracing::warn!(index = chunk.index.0, error = %e, "unregistering a region failed");
            }
        }
    }
}

impl Region {
    /// Registers `memory` on every ring of every adapter of the current runtime (see the
    /// [module docs](self)):
    /// its pages are faulted in and pinned until the last clone of the region is dropped.
    ///
    /// # Errors
    ///
    /// [`RegionError::NoRuntime`] outside a runtime, [`RegionError::Empty`] for no bytes,
    /// [`RegionError::Register`] when the rings refuse it (then nothing stays registered).
    pub fn register<M: Memory>(memory: Arc<M>) -> Result<Region, RegionError> {
        Self::register_in_chunks(memory, MAX_CHUNK)
    }

    /// [`register`](Self::register) in chunks of `chunk_len` bytes (at most [`MAX_CHUNK`]).
    fn register_in_chunks<M: Memory>(
        memory: Arc<M>,
        chunk_len: usize,
    ) -> Result<Region, RegionError> {
        let runtime = crate::context::runtime().ok_or(RegionError::NoRuntime)?;
        let len = memory.len();
        if len == 0 {
            return Err(RegionError::Empty);
        }
        // A single-issuer ring takes registrations only on its owner thread, and a region's
        // last lease may drop on any thread: its chunks could not be unregistered there, and
        // would keep their slots and pinned pages for the life of the runtime.
        if runtime
            .adapters
            .iter()
            .any(|rt| rt.mode == crate::RingMode::SingleIssuer)
        {
            return Err(RegionError::Register {
                len,
                source: regio_adapters::Error::NotOwner,
            });
        }
        let base = memory.as_ptr();
        let mut registered = Registered {
            adapters: Vec::with_capacity(runtime.adapters.len()),
            chunk_len,
            len,
            _memory: memory,
        };
        for rt in runtime.adapters.iter() {
            registered.adapters.push(OnAdapter {
                adapter: rt.adapter.downgrade(),
                chunks: Vec::with_capacity(len.div_ceil(chunk_len)),
            });
            let on = registered.adapters.last_mut().expect("just pushed");
            for start in (0..len).step_by(chunk_len) {
                let this_len = chunk_len.min(len - start);
                // SAFETY: `start..start + this_len` lies inside the memory (`Memory`'s contract:
                // one allocation of `len` bytes), which `registered` keeps alive until its
                // chunks are unregistered (its `adapters` drop before `_memory`); the kernel is
                // only ever asked to read it (sends).
                let done = unsafe {
                    rt.adapter
                        .register_region(base.add(start).cast_mut(), this_len)
                };
                // On an error, dropping `registered` unregisters the chunks done so far.
                let done = done.map_err(|source| RegionError::Register { len, source })?;
                on.chunks.push(Chunk {
                    index: done.index,
                    generation: done.generation,
                });
            }
        }
        Ok(Region {
            inner: Arc::new(registered),
        })
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Whether it has no bytes (never: registration refuses that).
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// Checks that `offset..offset + len` lies inside the region.
    ///
    /// # Errors
    ///
    /// [`RegionError::OutOfRange`] otherwise (an end past `usize::MAX` included).
    fn check(&self, offset: usize, len: usize) -> Result<(), RegionError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.inner.len => Ok(()),
            _ => Err(RegionError::OutOfRange {
                offset,
                len,
                size: self.inner.len,
            }),
        }
    }

    /// The piece of `at..end` that lies in one chunk of adapter `adapter`'s registration, with
    /// a lease: the first send of it. For an adapter the region is not registered on (the
    /// socket belongs to another runtime), the piece names adapter 0's registration, which that
    /// adapter rejects (a registration's generation is unique in the process): the send fails.
    fn piece(&self, adapter: usize, at: usize, end: usize) -> RegionSlice {
        let size = self.inner.chunk_len;
        let on = self
            .inner
            .adapters
            .get(adapter)
            .unwrap_or(&self.inner.adapters[0]);
        let chunk = on.chunks[at / size];
        let within = at % size;
        let len = (end - at).min(size - within);
        let key = BufKey {
            region: chunk.index,
            // Both at most 2^30: a chunk is at most `MAX_CHUNK` long.
            offset: within as u32,
            len: len as u32,
        };
        let lease: Arc<dyn Any + Send + Sync> = self.inner.clone();
        // SAFETY: the lease keeps the registration (and so the chunk, with this generation, and
        // its memory) alive: `Registered` unregisters and releases only in its drop. `key` lies
        // inside the chunk (`check` bounded the range, and `len` stops at the chunk's end).
        unsafe { RegionSlice::new(key, chunk.generation, lease) }
    }
}

impl<S: StreamSocket> Stream<S> {
    /// Sends the `len` bytes of `region` from `offset` without copying them (see the
    /// [`region`](crate::region) module); the future resolves once the socket took every
    /// byte (each send's own completion), without waiting for the kernel to let go of the
    /// pages: each send keeps its lease on the region until its `F_NOTIF` notification. A send
    /// posted on this socket after the future resolved goes out after these bytes.
    ///
    /// # Errors
    ///
    /// [`RegionError::OutOfRange`] at once for a range outside the region. The future's error
    /// is a failed send's (`EOPNOTSUPP` on a socket without zero-copy sends, such as a Unix
    /// socket: nothing was sent then), or [`io::ErrorKind::WriteZero`] if the socket took no
    /// bytes; the bytes sent before an error are not counted.
    pub fn send_region(
        &self,
        region: &Region,
        offset: usize,
        len: usize,
    ) -> Result<SendRegion, RegionError> {
        self.send_region_as(region, offset, len, true)
    }

    /// Sends the `len` bytes of `region` from `offset`, copied by the kernel while each send
    /// runs, as [`send_all`](Self::send_all) does a buffer's: for a socket where a zero-copy
    /// send would cost more than the copy it saves (the loopback interface, where the kernel
    /// copies zero-copy sends anyway, and small sends). The future resolves once the socket
    /// took every byte; each send keeps its lease on the region until its completion.
    ///
    /// # Errors
    ///
    /// As [`send_region`](Self::send_region)'s, `EOPNOTSUPP` aside.
    pub fn send_region_copied(
        &self,
        region: &Region,
        offset: usize,
        len: usize,
    ) -> Result<SendRegion, RegionError> {
        self.send_region_as(region, offset, len, false)
    }

    fn send_region_as(
        &self,
        region: &Region,
        offset: usize,
        len: usize,
        zero_copy: bool,
    ) -> Result<SendRegion, RegionError> {
        region.check(offset, len)?;
        Ok(SendRegion {
            queues: self.erased(),
            region: region.clone(),
            at: offset,
            end: offset + len,
            zero_copy,
            send: None,
        })
    }
}

/// The builder of one send of `at..end` of a region (of its piece in one chunk), zero-copy or
/// copied.
struct RegionSend {
    region: Region,
    at: usize,
    end: usize,
    zero_copy: bool,
}

impl Build for RegionSend {
    /// The send on the runtime's first adapter; the runtime calls [`build_on`](Self::build_on).
    #[inline(always)]
    fn build(self, buf: Option<Message>, cookie: u64) -> Op<Message> {
        self.build_on(0, buf, cookie)
    }

    #[inline(always)]
    fn build_on(self, adapter: usize, buf: Option<Message>, cookie: u64) -> Op<Message> {
        drop(buf);
        let piece = self.region.piece(adapter, self.at, self.end);
        if self.zero_copy {
            Op::send_zc_region(piece, 0, cookie)
        } else {
            Op::send_region(piece, cookie)
        }
    }
}

/// The future of [`Stream::send_region`] and [`Stream::send_region_copied`]: resolves once the
/// socket took every byte, while the kernel may still read the region after a zero-copy send
/// (each keeps its lease until its notification). Dropping it cancels the send in flight; that
/// send keeps its lease on the region until its final completion.
#[must_use = "futures do nothing unless polled; a dropped send is cancelled"]
pub struct SendRegion {
    queues: Arc<FdQueues>,
    region: Region,
    at: usize,
    end: usize,
    zero_copy: bool,
    send: Option<Submit<RegionSend>>,
}

impl std::fmt::Debug for SendRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendRegion")
            .field("at", &self.at)
            .field("end", &self.end)
            .finish()
    }
}

impl Future for SendRegion {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            let send = match &mut this.send {
                Some(send) => send,
                None if this.at >= this.end => return Poll::Ready(Ok(())),
                None => {
                    let piece = RegionSend {
                        region: this.region.clone(),
                        at: this.at,
                        end: this.end,
                        zero_copy: this.zero_copy,
                    };
                    let route = Route::Fd(Arc::clone(&this.queues));
                    this.send.insert(Submit::new(route, None, piece))
                }
            };
            // The piece's own completion: its lease stays with the operation until the
            // notification, which the future does not wait for.
            let result = ready!(send.poll_first(cx));
            this.send = None;
            match result {
                0 => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the socket took no bytes",
                    )))
                }
                n if n < 0 => return Poll::Ready(Err(io::Error::from_raw_os_error(-n))),
                n => this.at += n as usize,
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::net::{TcpListener, TcpStream};

    /// A runtime of one worker, or `None` (skipped) where io_uring is disabled.
    fn runtime() -> Option<crate::Runtime> {
        regio_testkit::ok_or_skip(
            crate::Runtime::builder()
                .worker_threads(1)
                .pool_class(4096, 16)
                .build(),
            crate::BuildError::is_io_uring_disabled,
        )
    }

    /// A range across three chunks goes out as one send per chunk, in order, zero-copy or
    /// copied.
    #[test]
    fn a_range_across_chunks_is_sent_chunk_by_chunk() {
        let Some(rt) = runtime() else {
            return;
        };
        let bytes: Box<[u8]> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let image = Arc::new(bytes);
        for zero_copy in [true, false] {
            let got = rt.block_on(send_across_chunks(&image, zero_copy));
            assert_eq!(got, image[100..39_100], "zero_copy={zero_copy}");
        }
    }

    /// 39 000 bytes of `image` from offset 100, registered in chunks of 16 KiB, sent over a
    /// loopback TCP connection; what the peer received.
    async fn send_across_chunks(image: &Arc<Box<[u8]>>, zero_copy: bool) -> Vec<u8> {
        let region = Region::register_in_chunks(Arc::clone(image), 16384).unwrap();
        assert_eq!(region.inner.adapters[0].chunks.len(), 3);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let reader = crate::spawn(async move {
            let (got, buf) = client.recv_exact(vec![0; 39_000]).await;
            got.unwrap();
            buf
        });
        let send = if zero_copy {
            server.send_region(&region, 100, 39_000)
        } else {
            server.send_region_copied(&region, 100, 39_000)
        };
        send.unwrap().await.unwrap();
        reader.await.unwrap()
    }

    /// A copied send of a range across many chunks whose peer takes a few chunks' worth, then
    /// resets its connection: the send fails, what arrived is the region's bytes in order
    /// (across the chunk boundaries), and every lease goes with the final completions: the
    /// memory comes back. Over a Unix socket whose peer closes, the same.
    #[test]
    fn a_copied_send_across_chunks_cut_by_its_peer_gives_the_region_back() {
        let Some(rt) = runtime() else {
            return;
        };
        let image: Arc<Box<[u8]>> = Arc::new((0..32 << 20).map(|i| (i % 253) as u8).collect());
        for unix in [false, true] {
            let (got, result) = rt.block_on(cut_across_chunks(&image, unix));
            assert!(got == image[100..100 + got.len()], "unix={unix}");
            let err = result.unwrap_err();
            assert!(
                matches!(
                    err.raw_os_error(),
                    Some(libc::ECONNRESET) | Some(libc::EPIPE)
                ),
                "unix={unix}: {err}"
            );
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while Arc::strong_count(&image) > 1 {
                assert!(std::time::Instant::now() < deadline, "unix={unix}: leased");
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    }

    /// Sends `image` (32 MiB, far more than the socket buffers hold) from offset 100 copied,
    /// registered in chunks of 1 MiB, to a peer that reads 3 MiB (into the fourth chunk) and
    /// then resets (or, on a Unix socket, closes); what the peer read, and how the send ended.
    async fn cut_across_chunks(image: &Arc<Box<[u8]>>, unix: bool) -> (Vec<u8>, io::Result<()>) {
        use std::io::Read;
        let region = Region::register_in_chunks(Arc::clone(image), 1 << 20).unwrap();
        let len = image.len() - 100;
        let (peer, send): (Box<dyn Read + Send>, _) =
            if unix {
                let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
                let ours = crate::net::UnixStream::from_std(ours).unwrap();
                let send = crate::spawn(async move {
                    ours.send_region_copied(&region, 100, len).unwrap().await
                });
                (Box::new(theirs), send)
            } else {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let theirs = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                let (ours, _) = listener.accept().await.unwrap();
                let send = crate::spawn(async move {
                    ours.send_region_copied(&region, 100, len).unwrap().await
                });
                (Box::new(theirs), send)
            };
        // The peer reads, then closes with bytes unread (a TCP socket resets the connection).
        let reader = std::thread::spawn(move || {
            let mut peer = peer;
            let mut got = vec![0; 3 << 20];
            peer.read_exact(&mut got).unwrap();
            got
        });
        let result = send.await.unwrap();
        (reader.join().unwrap(), result)
    }

    /// A region of more chunks than the fixed-buffer table has free slots is refused with a
    /// clear error, and the chunks registered before the table ran full are given back: a
    /// region that fits is registered afterwards, over and over.
    #[test]
    fn a_region_past_the_table_is_refused_and_gives_its_chunks_back() {
        let Some(rt) = runtime() else {
            return;
        };
        let image: Arc<Box<[u8]>> = Arc::new(vec![7; 200 * 4096].into_boxed_slice());
        rt.block_on(async {
            for _ in 0..3 {
                let refused = Region::register_in_chunks(Arc::clone(&image), 4096);
                assert!(
                    matches!(
                        refused,
                        Err(RegionError::Register {
                            source: regio_adapters::Error::Invalid(_),
                            ..
                        })
                    ),
                    "{refused:?}"
                );
                let half: Arc<Box<[u8]>> = Arc::new(vec![7; 32 * 4096].into_boxed_slice());
                let fits = Region::register_in_chunks(half, 4096).unwrap();
                assert_eq!(fits.inner.adapters[0].chunks.len(), 32);
            }
        });
        assert_eq!(Arc::strong_count(&image), 1);
    }
}
