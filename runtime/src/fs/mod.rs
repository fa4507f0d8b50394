//! Files: [`File`], with owned-buffer reads and writes on the runtime's registered pool
//! messages (and [`read_full_at`](File::read_full_at) and [`write_all_at`](File::write_all_at),
//! which go on after a short read or write); [`OpenOptions`] (with
//! [`direct`](OpenOptions::direct) for `O_DIRECT`), and the whole-file helpers
//! [`read`](fn@read) and [`write`](fn@write).
//!
//! A file is opened with the standard library (`open(2)` on the calling thread), then used
//! through io_uring: each worker that touches it gets a work queue for it on its own ring
//! (made on first use), and reads and writes are `READ_FIXED` / `WRITE_FIXED` on the
//! message's registered buffer. The operations take the message and give it back with the
//! result, as monoio's do: the kernel owns the buffer while the operation runs.
//!
//! # Fixed-file slots
//!
//! A file keeps its descriptor ([`File::as_std`] for `metadata`, `set_len` and the like) and,
//! from its first operation on a worker, a slot of the fixed-file table of its adapter (the one
//! current then) too: the descriptor is installed in that slot on every worker's ring of that
//! adapter, and `read_at`, `write_at`, the syncs,
//! `fallocate` and `fadvise` name the slot (`IOSQE_FIXED_FILE`), which spares the kernel an
//! atomic reference count on the file per operation. A [`File::from_std`], an
//! [`OpenOptions::open`] (`O_DIRECT` included) and a [`File::open`] all get one; two handles
//! of one path (a buffered and an `O_DIRECT` one) get one each. The slot is emptied on every
//! ring and given back once the file is dropped and its last operation has had its final
//! completion. With no free slot, on an adapter in the single-issuer ring mode, and on one
//! with no table ([`AdapterSpec::max_files(0)`](crate::AdapterSpec::max_files) or
//! [`Builder::max_files(0)`](crate::Builder::max_files)), a file names its plain descriptor
//! (each worker's queue then holds a duplicate). [`File::fixed_slot`] tells which; the
//! [`net`](crate::net#descriptors-and-fixed-file-slots) module docs give the details.
//!
//! # Synchronization
//!
//! A file's per-worker queues are found without a lock (each worker sets its own once; see
//! the `queues` module). Operations hold the queues (not the file handle): a file dropped
//! while an operation is in flight keeps its descriptor open, its slot taken and its queues
//! registered until that operation's final completion.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use regio_adapters::Op;
use regio_pool::Message;

use crate::buf::{IoBuf, Lent};
use crate::op::{Build, Completed, Route, Submit};
use crate::queues::FdQueues;

mod exact;
mod options;
mod whole;

pub use options::OpenOptions;
pub use whole::{read, write, DEPTH};

/// An open file, for positioned reads and writes through the workers' rings.
///
/// ```
/// use regio_runtime::{fs::File, Runtime};
///
/// let rt = Runtime::builder().worker_threads(1).pool_class(4096, 8).build()?;
/// let path = std::env::temp_dir().join(format!("regio-fs-doc-{}", std::process::id()));
/// let pool = rt.pool().clone();
/// let text = rt.block_on(rt.spawn({
///     let path = path.clone();
///     async move {
///         let file = File::create(&path)?;
///         let mut msg = pool.try_acquire().expect("a free buffer");
///         msg.as_mut_slice()[..5].copy_from_slice(b"hello");
///         msg.descriptor_mut().truncate(5);
///         let (written, msg) = file.write_at(msg, 0).await;
///         assert_eq!(written?, 5);
///         drop(msg);
///         let (read, msg) = file.read_at(pool.try_acquire().unwrap(), 0).await;
///         let n = read?;
///         Ok::<_, std::io::Error>(String::from_utf8_lossy(&msg.as_slice()[..n]).into_owned())
///     }
/// }))??;
/// assert_eq!(text, "hello");
/// # std::fs::remove_file(path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct File {
    queues: Arc<FdQueues<std::fs::File>>,
}

impl File {
    /// Opens `path` for reading.
    ///
    /// # Errors
    ///
    /// As for [`std::fs::File::open`].
    pub fn open(path: impl AsRef<Path>) -> io::Result<File> {
        std::fs::File::open(path).map(File::from_std)
    }

    /// Creates (or truncates) `path` for reading and writing.
    ///
    /// # Errors
    ///
    /// As for [`std::fs::OpenOptions::open`].
    pub fn create(path: impl AsRef<Path>) -> io::Result<File> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map(File::from_std)
    }

    /// Wraps a file opened with the standard library. It is bound to the runtime whose worker
    /// first uses it. [`OpenOptions`] opens one with more choices (`O_DIRECT` among them).
    pub fn from_std(file: std::fs::File) -> File {
        File {
            queues: Arc::new(FdQueues::fixed(file)),
        }
    }

    /// The file's queues, as operations hold them.
    pub(crate) fn erased(&self) -> Arc<FdQueues> {
        let queues: Arc<FdQueues<crate::queues::AnyFd>> = self.queues.clone();
        queues
    }

    fn submit<B: Build>(&self, buf: Option<Message>, build: B) -> Submit<B> {
        Submit::new(Route::Fd(self.queues.clone()), buf, build)
    }

    /// Reads into `buf` (the slice its descriptor names: the whole buffer for a fresh message)
    /// from offset `pos`; gives back the byte count and the buffer. The descriptor is left as it
    /// was: truncate it to the count to pass on just the data read. An empty descriptor
    /// (`truncate(0)`) reads nothing and completes with 0; a `pos` above `i64::MAX` fails with
    /// `EINVAL`, as for `pread(2)`.
    ///
    /// A plain [`IoBuf`] (`Vec<u8>`, `Box<[u8]>`, `BytesMut`) is read into a pool message and
    /// copied out of it: its whole length is the bytes asked for, up to one pool buffer's
    /// worth ([`buf`](crate::buf) module).
    pub fn read_at<B: IoBuf>(&self, buf: B, pos: u64) -> Lent<B, ReadAt, usize> {
        let queues = self.erased();
        Lent::one(buf, true, move |msg| {
            ReadAt(Submit::new(
                Route::Fd(queues),
                Some(msg),
                FileIo(FileIoKind::Read(pos)),
            ))
        })
    }

    /// Writes `buf` (the slice its descriptor names) at offset `pos`; gives back the byte count
    /// and the buffer. An empty descriptor (`truncate(0)`) writes nothing and completes with 0;
    /// a `pos` above `i64::MAX` fails with `EINVAL`, as for `pwrite(2)`.
    ///
    /// A plain [`IoBuf`] is copied into a pool message first, up to one pool buffer's worth.
    pub fn write_at<B: IoBuf>(&self, buf: B, pos: u64) -> Lent<B, WriteAt, usize> {
        let queues = self.erased();
        Lent::one(buf, false, move |msg| {
            WriteAt(Submit::new(
                Route::Fd(queues),
                Some(msg),
                FileIo(FileIoKind::Write(pos)),
            ))
        })
    }

    /// Flushes the file's data and metadata to the device (`fsync`).
    pub fn sync_all(&self) -> FileSync {
        FileSync(self.submit(None, FileIo(FileIoKind::SyncAll)))
    }

    /// Flushes the file's data, and the metadata needed to read it back (`fdatasync`).
    pub fn sync_data(&self) -> FileSync {
        FileSync(self.submit(None, FileIo(FileIoKind::SyncData)))
    }

    /// `fallocate(2)`: with `mode` 0, allocates `len` bytes from `offset`; with
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`, deallocates them (they read as zeroes);
    /// with `FALLOC_FL_ZERO_RANGE`, zeroes them. A file system without the mode fails with
    /// `EOPNOTSUPP`.
    pub fn fallocate(&self, mode: i32, offset: u64, len: u64) -> FileSync {
        FileSync(self.submit(None, FileIo(FileIoKind::Fallocate { mode, offset, len })))
    }

    /// `posix_fadvise(2)` on `len` bytes from `offset` (0: to the end of the file):
    /// `POSIX_FADV_WILLNEED` starts reading them into the page cache, `POSIX_FADV_DONTNEED`
    /// drops them from it.
    pub fn fadvise(&self, advice: i32, offset: u64, len: u32) -> FileSync {
        FileSync(self.submit(
            None,
            FileIo(FileIoKind::Fadvise {
                advice,
                offset,
                len,
            }),
        ))
    }

    /// The fixed-file slot its operations name (with `IOSQE_FIXED_FILE`), once a worker has
    /// used it; `None` before, and when it names its plain descriptor (no slot was free). See
    /// [the module docs](self#fixed-file-slots).
    pub fn fixed_slot(&self) -> Option<u32> {
        self.queues.fixed_slot()
    }

    /// The underlying standard file.
    pub fn as_std(&self) -> &std::fs::File {
        self.queues.handle()
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.queues.handle().as_raw_fd()
    }
}

/// The builder of a [`File`]'s operations (the type parameter of their [`Submit`]).
#[derive(Debug)]
pub struct FileIo(FileIoKind);

#[derive(Debug)]
enum FileIoKind {
    Read(u64),
    Write(u64),
    SyncAll,
    SyncData,
    Fallocate { mode: i32, offset: u64, len: u64 },
    Fadvise { advice: i32, offset: u64, len: u32 },
}

impl Build for FileIo {
    #[inline(always)]
    fn build(self, buf: Option<Message>, cookie: u64) -> Op<Message> {
        match (self.0, buf) {
            // The adapters read an empty descriptor as the whole first buffer: a read or write
            // of no bytes must not reach the file.
            (FileIoKind::Read(_) | FileIoKind::Write(_), Some(buf))
                if buf.descriptor().is_empty() =>
            {
                Op::nop_carrying(buf, cookie)
            }
            (FileIoKind::Read(pos), Some(buf)) => Op::read_fixed(buf, positioned(pos), cookie),
            (FileIoKind::Write(pos), Some(buf)) => Op::write_fixed(buf, positioned(pos), cookie),
            (FileIoKind::SyncAll, _) => Op::fsync(cookie),
            (FileIoKind::SyncData, _) => Op::fdatasync(cookie),
            (FileIoKind::Fallocate { mode, offset, len }, _) => {
                Op::fallocate(mode, offset, len, cookie)
            }
            (
                FileIoKind::Fadvise {
                    advice,
                    offset,
                    len,
                },
                _,
            ) => Op::fadvise(advice, offset, len, cookie),
            (FileIoKind::Read(_) | FileIoKind::Write(_), None) => {
                unreachable!("reads and writes are made with their buffer")
            }
        }
    }
}

/// The offset to hand the kernel for a read or write at `pos`. The kernel reads an offset of
/// -1 (`u64::MAX`) as "the file's current position", which `read_at`/`write_at` must never
/// mean: every offset above `i64::MAX` becomes `i64::MIN`, which it refuses with `EINVAL`, as
/// `pread(2)` and `pwrite(2)` refuse them all.
#[inline(always)]
fn positioned(pos: u64) -> u64 {
    if pos > i64::MAX as u64 {
        i64::MIN as u64
    } else {
        pos
    }
}

/// The count and the buffer of a read or write.
fn with_buffer(done: Completed) -> (io::Result<usize>, Message) {
    let result = done.io_result().map(|n| n as usize);
    let buf = done.buf.unwrap_or_else(|| {
        panic!("the runtime shut down while this file operation was in flight; its buffer went back to the pool")
    });
    (result, buf)
}

impl Lent<Message, ReadAt, usize> {
    /// The operation, to cancel it explicitly ([`Submit::cancel`] gives back the buffer).
    pub fn into_submit(self) -> Submit<FileIo> {
        self.into_op().into_submit()
    }
}

impl Lent<Message, WriteAt, usize> {
    /// The operation, to cancel it explicitly ([`Submit::cancel`] gives back the buffer).
    pub fn into_submit(self) -> Submit<FileIo> {
        self.into_op().into_submit()
    }
}

/// The future of [`File::read_at`] on a message.
#[must_use = "futures do nothing unless polled; a dropped read is cancelled"]
#[derive(Debug)]
pub struct ReadAt(Submit<FileIo>);

impl ReadAt {
    /// The operation, to cancel it explicitly ([`Submit::cancel`] gives back the buffer).
    pub fn into_submit(self) -> Submit<FileIo> {
        self.0
    }
}

impl Future for ReadAt {
    type Output = (io::Result<usize>, Message);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(with_buffer)
    }
}

/// The future of [`File::write_at`] on a message.
#[must_use = "futures do nothing unless polled; a dropped write is cancelled"]
#[derive(Debug)]
pub struct WriteAt(Submit<FileIo>);

impl WriteAt {
    /// The operation, to cancel it explicitly ([`Submit::cancel`] gives back the buffer).
    pub fn into_submit(self) -> Submit<FileIo> {
        self.0
    }
}

impl Future for WriteAt {
    type Output = (io::Result<usize>, Message);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(with_buffer)
    }
}

/// The future of [`File::sync_all`], [`File::sync_data`], [`File::fallocate`] and
/// [`File::fadvise`]: the result alone.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct FileSync(Submit<FileIo>);

impl Future for FileSync {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|done| done.io_result().map(drop))
    }
}
