//! [`Input`]: a connection's receiving side, buffered in its control buffer. One receive takes
//! whatever the client has sent, up to the buffer's size: when a client keeps many requests in
//! flight, several headers arrive together and cost one operation. A WRITE's payload goes
//! straight into its own pool buffers: the bytes already received are copied in, the rest is
//! received in place.

use std::io;

use regio_pool::{BufKey, Message};

use super::buffers::Buffers;
use super::stream::RecvHalf;

/// Buffered input from a connection.
pub(crate) struct Input<'a, R> {
    from: &'a R,
    /// The control buffer; `None` only while a receive into it is in flight.
    buf: Option<Message>,
    whole: BufKey,
    /// The received bytes not consumed yet: `start..end` of the buffer.
    start: usize,
    end: usize,
}

impl<'a, R: RecvHalf> Input<'a, R> {
    pub(crate) fn new(from: &'a R, control: Message) -> Self {
        let whole = control.key();
        Self {
            from,
            buf: Some(control),
            whole,
            start: 0,
            end: 0,
        }
    }

    fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The next `N` bytes (`N` at most the control buffer's size).
    pub(crate) async fn take<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        while self.buffered() < N {
            self.fill().await?;
        }
        let buf = self.buf.as_ref().expect("no receive in flight");
        let bytes = buf.as_slice()[self.start..self.start + N]
            .try_into()
            .expect("N bytes");
        self.start += N;
        Ok(bytes)
    }

    /// One receive into the free end of the buffer (moving what is buffered to the front
    /// first). The peer closing is `UnexpectedEof`.
    async fn fill(&mut self) -> io::Result<()> {
        let mut buf = self.buf.take().ok_or_else(|| {
            io::Error::other("the control buffer was lost with a cancelled receive")
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
        let (received, back) = self.from.recv(buf).await;
        self.buf = Some(back);
        match received? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }

    /// Fills `bufs` (each as its descriptor names) with the next bytes, in order.
    pub(crate) async fn payload(&mut self, bufs: Vec<Message>) -> io::Result<Vec<Message>> {
        let mut filled = Vec::with_capacity(bufs.len());
        for mut buf in bufs {
            let chunk = buf.descriptor().slices()[0];
            let len = chunk.len as usize;
            let copied = len.min(self.buffered());
            if copied > 0 {
                let control = self.buf.as_ref().expect("no receive in flight");
                buf.as_mut_slice()[..copied]
                    .copy_from_slice(&control.as_slice()[self.start..self.start + copied]);
                self.start += copied;
            }
            if copied < len {
                let mut rest = chunk;
                rest.offset += copied as u32;
                rest.len -= copied as u32;
                buf.descriptor_mut().set_slices(&[rest]).expect("one slice");
                let (received, back) = self.from.recv_exact(buf).await;
                buf = back;
                received?;
                buf.descriptor_mut()
                    .set_slices(&[chunk])
                    .expect("one slice");
            }
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
            buf.descriptor_mut().set_slices(&[key]).expect("one slice");
            let (received, back) = self.from.recv_exact(buf).await;
            received?;
            buf = back;
            left -= key.len as usize;
        }
        Ok(())
    }
}
