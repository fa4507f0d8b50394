//! [`Input`]: a connection's receiving side, buffered. One receive takes whatever the client
//! has sent, up to the buffer's size: when a client keeps many requests in flight, several
//! arrive together and cost one operation.
//!
//! The input is buffered in the connection's control buffer, which holds many request headers.
//! A WRITE's payload goes into pool buffers of its own: the bytes already received are copied
//! in, and the rest of a large payload is received in place, straight into them. The rest of a
//! small one (at most [`SMALL_PAYLOAD`]) is read ahead instead: the input moves to a buffer of
//! the pool's largest class, borrowed while one is free ([`Buffers::try_read_ahead`]), where one
//! receive takes the rest of this payload together with the requests the client sent after it
//! (a client writing 4 KiB blocks at depth 32 has 15 of them in 64 KiB). Their payloads are
//! copied out of it: a copy of a few KiB each, instead of two receives per WRITE. The input goes
//! back to the control buffer once what is left of what it received is less than a request
//! header (the client paused, between requests or in the middle of a header), so an idle
//! connection holds no read-ahead buffer.

use std::future::Future;
use std::io;
use std::time::Duration;

use regio_pool::{BufKey, Message};

use super::buffers::Buffers;
use super::stream::RecvHalf;
use super::sync::Permit;

/// The largest rest of a WRITE payload that is read ahead rather than received in place:
/// below it a copy costs less than a receive of its own.
pub(crate) const SMALL_PAYLOAD: usize = 16 * 1024;

/// Buffered input from a connection.
pub(crate) struct Input<'a, R> {
    from: &'a R,
    buffers: &'a Buffers,
    /// The buffer the input is in (the control buffer, or a read-ahead buffer); `None` only
    /// while a receive into it is in flight.
    buf: Option<Message>,
    whole: BufKey,
    /// The received bytes not consumed yet: `start..end` of the buffer.
    start: usize,
    end: usize,
    /// While the input is in a read-ahead buffer: the control buffer, set aside, and the
    /// permit that counts the read-ahead buffer.
    ahead: Option<(Message, Permit)>,
    /// The longest the rest of a request (a WRITE's payload) may keep a receive waiting with
    /// nothing received: then the client is taken for gone (see [`Input::payload`]).
    stall: Duration,
}

impl<'a, R: RecvHalf> Input<'a, R> {
    pub(crate) fn new(
        from: &'a R,
        buffers: &'a Buffers,
        control: Message,
        stall: Duration,
    ) -> Self {
        let whole = control.key();
        Self {
            from,
            buffers,
            buf: Some(control),
            whole,
            start: 0,
            end: 0,
            ahead: None,
            stall,
        }
    }

    fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The next `N` bytes (`N` at most the control buffer's size).
    pub(crate) async fn take<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        if self.buffered() < N {
            // The client may have paused (between requests, or in the middle of a header):
            // the few bytes buffered go back to the control buffer with the input.
            self.end_read_ahead();
        }
        while self.buffered() < N {
            self.fill(false).await?;
        }
        let buf = self.buf.as_ref().expect("no receive in flight");
        let bytes = buf.as_slice()[self.start..self.start + N]
            .try_into()
            .expect("N bytes");
        self.start += N;
        Ok(bytes)
    }

    /// Moves the input into a read-ahead buffer where it can receive `room` bytes, if it is
    /// not in one already and one is free. Nothing may be buffered. Returns whether the input
    /// is in a read-ahead buffer now.
    fn start_read_ahead(&mut self, room: usize) -> bool {
        debug_assert_eq!(self.buffered(), 0, "read ahead with bytes buffered");
        if self.ahead.is_some() {
            return room <= self.whole.len as usize;
        }
        // A receive in flight has the control buffer (only when one was cancelled).
        if self.buf.is_none() {
            return false;
        }
        let Some((buf, permit)) = self.buffers.try_read_ahead(room) else {
            return false;
        };
        self.whole = buf.key();
        let control = self.buf.replace(buf).expect("checked above");
        (self.start, self.end) = (0, 0);
        self.ahead = Some((control, permit));
        true
    }

    /// Moves the input back to the control buffer if it is in a read-ahead buffer, with the
    /// bytes buffered (fewer than the control buffer holds), and gives the read-ahead buffer
    /// back.
    fn end_read_ahead(&mut self) {
        // A receive in flight has the buffer (only when one was cancelled: the input is
        // dropped then).
        let Some(ahead) = self.buf.as_ref() else {
            return;
        };
        let Some((mut control, _permit)) = self.ahead.take() else {
            return;
        };
        let pending = self.buffered();
        debug_assert!(
            pending <= control.key().len as usize,
            "too much to move back"
        );
        control.as_mut_slice()[..pending].copy_from_slice(&ahead.as_slice()[self.start..self.end]);
        self.whole = control.key();
        self.buf = Some(control);
        (self.start, self.end) = (0, pending);
    }

    /// One receive into the free end of the buffer (moving what is buffered to the front
    /// first), within the stall timeout if it is `mid_request`. The peer closing is
    /// `UnexpectedEof`.
    async fn fill(&mut self, mid_request: bool) -> io::Result<()> {
        let mut buf = self.buf.take().ok_or_else(|| {
            io::Error::other("the input buffer was lost with a cancelled receive")
        })?;
        if self.start > 0 {
            buf.as_mut_slice().copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let mut free = self.whole;
        free.offset += self.end as u32;
        free.len -= self.end as u32;
        buf.descriptor_mut().set_slices(&[free]).expect("one slice");
        let (received, back) = if mid_request {
            self.within_stall(self.from.recv(buf)).await?
        } else {
            self.from.recv(buf).await
        };
        self.buf = Some(back);
        match received? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// Copies up to `into.len()` buffered bytes into `into`; returns how many.
    fn copy_buffered(&mut self, into: &mut [u8]) -> usize {
        let copied = into.len().min(self.buffered());
        if copied > 0 {
            let buf = self.buf.as_ref().expect("no receive in flight");
            into[..copied].copy_from_slice(&buf.as_slice()[self.start..self.start + copied]);
            self.start += copied;
        }
        copied
    }

    /// Fills `bufs` (each as its descriptor names) with the next bytes, in order: the bytes
    /// buffered are copied in, the rest of a small payload is read ahead (see the module
    /// docs), and that of a large one is received in place.
    pub(crate) async fn payload(&mut self, bufs: Vec<Message>) -> io::Result<Vec<Message>> {
        let mut filled = Vec::with_capacity(bufs.len());
        for mut buf in bufs {
            let chunk = buf.descriptor().slices()[0];
            let len = chunk.len as usize;
            let mut copied = self.copy_buffered(&mut buf.as_mut_slice()[..len]);
            let rest = len - copied;
            if rest > 0 && rest <= SMALL_PAYLOAD && self.start_read_ahead(rest) {
                while copied < len {
                    self.fill(true).await?;
                    copied += self.copy_buffered(&mut buf.as_mut_slice()[copied..len]);
                }
            }
            let mut rest = chunk;
            rest.offset += copied as u32;
            rest.len -= copied as u32;
            buf = self.receive(buf, rest).await?;
            buf.descriptor_mut()
                .set_slices(&[chunk])
                .expect("one slice");
            filled.push(buf);
        }
        Ok(filled)
    }

    /// Reads and drops the next `len` bytes (a refused WRITE's payload), through one data
    /// buffer at a time.
    pub(crate) async fn discard(&mut self, buffers: &Buffers, len: usize) -> io::Result<()> {
        let from_buffer = len.min(self.buffered());
        self.start += from_buffer;
        let mut left = len - from_buffer;
        if left == 0 {
            return Ok(());
        }
        let chunk = buffers.chunk_size(left);
        let mut buf = buffers.one(chunk).await;
        let whole = buf.key();
        while left > 0 {
            let mut key = whole;
            key.len = left.min(chunk) as u32;
            buf = self.receive(buf, key).await?;
            left -= key.len as usize;
        }
        Ok(())
    }

    /// Receives the bytes `key` names in `buf`, in place, each receive within the stall
    /// timeout (a client that keeps sending, however slowly, is waited for).
    async fn receive(&self, mut buf: Message, mut key: BufKey) -> io::Result<Message> {
        while key.len > 0 {
            buf.descriptor_mut().set_slices(&[key]).expect("one slice");
            let (received, back) = self.within_stall(self.from.recv(buf)).await?;
            buf = back;
            match received? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => {
                    key.offset += n as u32;
                    key.len -= n as u32;
                }
            }
        }
        Ok(buf)
    }

    /// `op`, a receive in the middle of a request, unless the stall timeout passes first:
    /// then the client is taken for gone (the receive is cancelled, with whatever it got).
    async fn within_stall<T>(&self, op: impl Future<Output = T>) -> io::Result<T> {
        regio_runtime::time::timeout(self.stall, op)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing more of a request it started for the stall timeout",
                )
            })
    }
}
