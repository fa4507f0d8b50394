//! `send_file`: a file's bytes to a stream socket without a copy through user space, as two
//! io_uring `SPLICE`s per round: file → pipe (the page cache's pages are referenced by the
//! pipe, not copied), then pipe → socket.
//!
//! # The pipe
//!
//! Each call makes its own pipe (`pipe2`, grown to the length asked for, up to 1 MiB, when the
//! kernel allows), closed when the call ends. A pipe shared by the calls of one worker would
//! save that system call and the pipe's work queue, but a call that is dropped or fails midway
//! leaves bytes in its pipe, and splices the kernel may still be running on it: a shared pipe
//! would have to be drained or thrown away in those cases, and two calls on one worker would
//! have to take turns for it. A pipe of its own per call has none of that, for a cost that is
//! small next to the bytes a `send_file` is worth calling for.
//!
//! # Ownership
//!
//! Each splice holds its output descriptor (the pipe's write end, or the socket) until its final
//! completion ([`Op::splice_into`]), and its work queue holds its input (the file, or the pipe's
//! read end): a `send_file` dropped midway cancels the splice in flight, and every descriptor
//! closes once that splice's final completion has come.
//!
//! Every splice holds both ends of the pipe, not only the one it names: a splice into a socket
//! holds the pipe's lock while it waits for room in the socket, and closing an end of the pipe
//! takes that lock. Were the worker to close an end while such a splice runs (a dropped call's
//! pipe), it would block in `close(2)` before it could submit the cancel that ends the wait.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use regio_adapters::Op;
use regio_pool::Message;

use crate::op::{Build, Route, Submit};
use crate::queues::FdQueues;

/// The largest pipe a call asks for (the default `/proc/sys/fs/pipe-max-size`).
const MAX_PIPE: u64 = 1 << 20;

/// A descriptor an operation holds open.
type Held = Arc<dyn AsRawFd + Send + Sync>;

/// Sends `len` bytes of `file` from `offset` on `socket`; the bytes sent.
pub(crate) async fn send_file(
    file: Arc<FdQueues>,
    socket: Held,
    offset: u64,
    len: u64,
) -> io::Result<u64> {
    let invalid = |why| io::Error::new(io::ErrorKind::InvalidInput, why);
    let end = offset
        .checked_add(len)
        .filter(|&end| end <= i64::MAX as u64)
        .ok_or_else(|| invalid("the file range ends past the largest file offset (i64::MAX)"))?;
    if len == 0 {
        return Ok(0);
    }
    let pipe = Pipe::new(len)?;
    let into_pipe: Held = pipe.ends.clone();
    let into_socket: Held = Arc::new(IntoSocket {
        socket,
        _pipe: Arc::clone(&pipe.ends),
    });
    let mut sent = 0u64;
    while offset + sent < end {
        let want = (end - offset - sent).min(pipe.capacity) as u32;
        let filled = splice(
            Arc::clone(&file),
            (offset + sent) as i64,
            into_pipe.clone(),
            want,
        )
        .await?;
        if filled == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file ends {sent} bytes after offset {offset}, before the {len} bytes \
                     asked for (those {sent} bytes were sent)"
                ),
            ));
        }
        let mut left = filled;
        while left > 0 {
            let moved = splice(pipe.read.clone(), -1, into_socket.clone(), left).await?;
            if moved == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("the socket took no bytes after {sent} were sent"),
                ));
            }
            left -= moved;
            sent += u64::from(moved);
        }
    }
    Ok(sent)
}

/// One splice of up to `len` bytes from the descriptor of `input` (at `off_in`, or its
/// position for -1) into `out`; the bytes moved.
async fn splice(input: Arc<FdQueues>, off_in: i64, out: Held, len: u32) -> io::Result<u32> {
    let done = Submit::new(Route::Fd(input), None, SpliceIo { off_in, out, len }).await;
    done.io_result()
}

/// The builder of a splice (the type parameter of its [`Submit`]).
struct SpliceIo {
    off_in: i64,
    out: Held,
    len: u32,
}

impl Build for SpliceIo {
    fn build(self, buf: Option<Message>, cookie: u64) -> Op<Message> {
        drop(buf);
        Op::splice_into(self.off_in, self.out, -1, self.len, cookie)
    }
}

/// Both ends of a call's pipe; as a splice's output, the write end.
struct PipeEnds {
    /// Held, never read: closed only when no splice holds the pipe.
    _read: Arc<OwnedFd>,
    write: OwnedFd,
}

impl AsRawFd for PipeEnds {
    fn as_raw_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }
}

/// The socket as the output of a splice out of the pipe, holding the pipe too.
struct IntoSocket {
    socket: Held,
    _pipe: Arc<PipeEnds>,
}

impl AsRawFd for IntoSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// A call's pipe: its ends, the work queues of its read end (the input of the splices into
/// the socket), and its capacity.
struct Pipe {
    ends: Arc<PipeEnds>,
    read: Arc<FdQueues>,
    capacity: u64,
}

impl Pipe {
    /// A pipe for sending `len` bytes: grown towards `len` (up to [`MAX_PIPE`]) if the kernel
    /// lets it.
    fn new(len: u64) -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: two new descriptors, owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let want = len.min(MAX_PIPE) as libc::c_int;
        // SAFETY: fcntl on a descriptor this function owns, with an integer argument. A
        // refusal (over the user's pipe quota) keeps the default size, read back below.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
        // SAFETY: as above, with no argument.
        let capacity = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        if capacity <= 0 {
            return Err(io::Error::last_os_error());
        }
        let read = Arc::new(read);
        let queues: Arc<FdQueues<Arc<OwnedFd>>> = Arc::new(FdQueues::new(Arc::clone(&read)));
        Ok(Self {
            ends: Arc::new(PipeEnds { _read: read, write }),
            read: queues,
            capacity: capacity as u64,
        })
    }
}
