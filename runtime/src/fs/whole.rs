//! [`read`] and [`write`]: a whole file in one call, as the standard library's helpers, through
//! the rings: the file is cut into chunks of the pool's largest buffer size, and up to
//! [`DEPTH`] chunks are in flight at once, each on a pool message of its own; the bytes are
//! copied between the messages and the caller's `Vec` or slice.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use regio_pool::{Message, MessagePool};

use super::File;
use crate::buf::largest_class;

/// Chunks in flight at once.
pub const DEPTH: usize = 4;

/// Reads the whole file at `path`, as [`std::fs::read`] does, with up to [`DEPTH`] reads in
/// flight. A file whose size changes meanwhile gives what the reads found; a file that
/// reports no size (`/proc` files) is read until a read finds its end.
///
/// ```
/// let rt = regio_runtime::Runtime::builder().worker_threads(1).build()?;
/// let path = std::env::temp_dir().join(format!("regio-read-doc-{}", std::process::id()));
/// let back = rt.block_on(async {
///     regio_runtime::fs::write(&path, b"hello, file").await?;
///     regio_runtime::fs::read(&path).await
/// })?;
/// assert_eq!(back, b"hello, file");
/// # std::fs::remove_file(path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// As for [`File::open`]; [`io::ErrorKind::InvalidInput`] for anything but a regular file (a
/// device such as `/dev/zero` has no end, a directory no bytes); [`io::ErrorKind::OutOfMemory`]
/// for a file larger than the memory to hold it; the first failed read's error;
/// outside a regio runtime, an error that says so.
pub async fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let file = open_regular(path.as_ref())?;
    let size = file.as_std().metadata()?.len();
    let (pool, class) = largest_class()?;
    let chunk = pool.buf_size(class) as u64;
    let mut out = Vec::new();
    // A file larger than memory (a sparse one of terabytes) is an error, not an abort.
    out.try_reserve_exact(usize::try_from(size).unwrap_or(usize::MAX))
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("no memory for the {size} bytes of the file: {e}"),
            )
        })?;
    let mut window = Window::default();
    let mut next = 0u64;
    let mut end: Option<u64> = None;
    loop {
        // The whole window up to the size the file reported; past it, one read at a time
        // until one finds the end.
        while end.is_none() && window.len() < DEPTH && (next < size || window.is_empty()) {
            window.push(read_chunk(&file, &pool, class, next));
            next += chunk;
        }
        let Some(done) = window.next().await else {
            break;
        };
        let (pos, msg, filled) = done?;
        let at = pos as usize;
        if out.len() < at + filled {
            out.resize(at + filled, 0);
        }
        out[at..at + filled].copy_from_slice(&msg.as_slice()[..filled]);
        if (filled as u64) < chunk {
            let found = pos + filled as u64;
            end = Some(end.map_or(found, |e| e.min(found)));
        }
    }
    out.truncate(end.unwrap_or(out.len() as u64) as usize);
    Ok(out)
}

/// Opens `path` for reading if it is a regular file, else [`io::ErrorKind::InvalidInput`]: a
/// device or pipe may never end (`/dev/zero` would grow the `Vec` until the allocation aborts
/// the process). It is opened with `O_NONBLOCK`, so that a FIFO with no writer does not hold
/// the worker in `open(2)`, which is then cleared: io_uring would hand a regular file's reads
/// that must wait for the disk back as `EAGAIN` instead of waiting.
fn open_regular(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file: devices and pipes may have no end to read to",
                path.display()
            ),
        ));
    }
    // SAFETY: F_SETFL with an integer argument on a descriptor `file` owns.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(File::from_std(file))
}

/// Creates (or truncates) the file at `path` and writes `contents` into it, as
/// [`std::fs::write`] does, with up to [`DEPTH`] writes in flight (one at a time, in order, into
/// a FIFO or device, which has no positions).
///
/// # Errors
///
/// As for [`File::create`], or the first failed write's error
/// ([`io::ErrorKind::WriteZero`] for a write that took no bytes); outside a regio runtime, an
/// error that says so.
pub async fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
    let file = File::create(path)?;
    // A pipe or device has no positions: chunks written side by side would reach it in the
    // order they happen to run, so there they go one at a time.
    let depth = if file.as_std().metadata()?.is_file() {
        DEPTH
    } else {
        1
    };
    let contents = contents.as_ref();
    let (pool, class) = largest_class()?;
    let mut chunks = contents.chunks(pool.buf_size(class)).enumerate();
    let mut window = Window::default();
    loop {
        while window.len() < depth {
            let Some((i, bytes)) = chunks.next() else {
                break;
            };
            let pos = (i * pool.buf_size(class)) as u64;
            window.push(write_chunk(&file, &pool, class, pos, bytes));
        }
        match window.next().await {
            Some(done) => done?,
            None => return Ok(()),
        }
    }
}

/// Reads the chunk at `pos` into a message of `class`, again after a short read, until it is
/// full or a read finds the end: the position, the message and the bytes in it.
async fn read_chunk(
    file: &File,
    pool: &MessagePool,
    class: usize,
    pos: u64,
) -> io::Result<(u64, Message, usize)> {
    let msg = pool.acquire_class(class).await;
    let want = msg.capacity();
    let (filled, msg) = file.read_full_at(msg, want, pos).await;
    Ok((pos, msg, filled?))
}

/// Writes `bytes` at `pos` through a message of `class`, again after a short write.
async fn write_chunk(
    file: &File,
    pool: &MessagePool,
    class: usize,
    pos: u64,
    bytes: &[u8],
) -> io::Result<()> {
    let mut msg = pool.acquire_class(class).await;
    msg.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
    file.write_all_at(msg, bytes.len(), pos).await.0
}

/// Futures of one kind in flight together, their outputs taken in the order they come.
/// Dropping it drops (cancels) those still running.
struct Window<F> {
    running: Vec<Pin<Box<F>>>,
}

impl<F> Default for Window<F> {
    fn default() -> Self {
        Self {
            running: Vec::new(),
        }
    }
}

impl<F: Future> Window<F> {
    fn push(&mut self, future: F) {
        self.running.push(Box::pin(future));
    }

    fn len(&self) -> usize {
        self.running.len()
    }

    fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// The output of the next future to finish; `None` when none runs.
    fn next(&mut self) -> impl Future<Output = Option<F::Output>> + '_ {
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            if self.running.is_empty() {
                return Poll::Ready(None);
            }
            for i in 0..self.running.len() {
                if let Poll::Ready(out) = self.running[i].as_mut().poll(cx) {
                    drop(self.running.swap_remove(i));
                    return Poll::Ready(Some(out));
                }
            }
            Poll::Pending
        })
    }
}
