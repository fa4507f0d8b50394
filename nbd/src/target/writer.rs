//! The writer: the one task of a connection that writes to its socket. Request tasks queue
//! their [`Reply`]s; the writer sends them in the order they come, whatever order the requests
//! came in. Reply headers are copied into the connection's control buffer, several per send
//! when they queue up together; read data goes out from the buffers the reads filled, with
//! `SEND_ZC` when it is large enough to gain from it.

use std::sync::Arc;

use regio_pool::Message;

use super::stats::Stats;
use super::stream::SendHalf;
use super::sync::{Permit, Receiver};

/// Data buffers at least this large are sent with `SEND_ZC`; below it the copy costs less than
/// the notification.
const ZERO_COPY_MIN: usize = 16 * 1024;

/// One reply, ready to send: its header bytes, then its data buffers.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The simple reply, or the chunk header (and payload, for error and block status chunks).
    pub(crate) head: Vec<u8>,
    /// The data that follows the header (a READ's), each buffer's descriptor naming its bytes.
    pub(crate) data: Vec<Message>,
    /// The request's in-flight slot, given back once the reply is sent.
    pub(crate) slot: InFlight,
}

/// A request in flight: its slot in the connection's limit and in the statistics, released
/// when dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    _permit: Permit,
    stats: Arc<Stats>,
}

impl InFlight {
    pub(crate) fn new(permit: Permit, stats: Arc<Stats>) -> Self {
        stats.started();
        Self {
            _permit: permit,
            stats,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.finished();
    }
}

/// Sends every reply of `replies` on `out` until the queue ends (the reader and every request
/// task are done), then closes the connection. After a failed send the rest are dropped (their
/// buffers go back to the pool): the client is gone.
pub(crate) async fn run<W: SendHalf>(out: W, mut replies: Receiver<Reply>, control: Message) {
    let mut writer = Writer {
        out,
        whole: control
            .descriptor()
            .slices()
            .first()
            .copied()
            .unwrap_or(control.key()),
        control: Some(control),
        filled: 0,
        broken: false,
        zero_copy: true,
    };
    while let Some(reply) = replies.pop().await {
        writer.put(reply).await;
        // Whatever queued meanwhile goes in the same sends.
        while let Some(reply) = replies.try_pop() {
            writer.put(reply).await;
        }
        writer.flush().await;
    }
    if let Err(e) = writer.out.close().await {
        tracing::debug!(error = %e, "closing a connection");
    }
}

struct Writer<W> {
    out: W,
    control: Option<Message>,
    /// The control buffer's whole slice.
    whole: regio_pool::BufKey,
    /// Header bytes waiting in the control buffer.
    filled: usize,
    broken: bool,
    /// Whether the socket takes `SEND_ZC` (a Unix socket does not).
    zero_copy: bool,
}

impl<W: SendHalf> Writer<W> {
    async fn put(&mut self, reply: Reply) {
        let Reply { head, data, slot } = reply;
        if !self.broken {
            let mut head = &head[..];
            while !head.is_empty() && !self.broken {
                let cap = self.whole.len as usize;
                if self.filled == cap {
                    self.flush().await;
                }
                let Some(control) = self.control.as_mut() else {
                    break;
                };
                let take = head.len().min(cap - self.filled);
                control.as_mut_slice()[self.filled..self.filled + take]
                    .copy_from_slice(&head[..take]);
                self.filled += take;
                head = &head[take..];
            }
            if !data.is_empty() {
                self.flush().await;
            }
            for buf in data {
                if self.broken {
                    break;
                }
                self.send_data(buf).await;
            }
        }
        drop(slot);
    }

    /// Sends the header bytes gathered in the control buffer.
    async fn flush(&mut self) {
        if self.filled == 0 || self.broken {
            return;
        }
        let Some(mut control) = self.control.take() else {
            return;
        };
        let mut key = self.whole;
        key.len = self.filled as u32;
        control
            .descriptor_mut()
            .set_slices(&[key])
            .expect("one slice");
        let (result, mut control) = self.out.send_all(control).await;
        control
            .descriptor_mut()
            .set_slices(&[self.whole])
            .expect("one slice");
        self.control = Some(control);
        self.filled = 0;
        if let Err(e) = result {
            self.fail(&e);
        }
    }

    async fn send_data(&mut self, buf: Message) {
        let len = buf.descriptor().len();
        if len < ZERO_COPY_MIN || !self.zero_copy {
            if let (Err(e), _) = self.out.send_all(buf).await {
                self.fail(&e);
            }
            return;
        }
        let whole = buf.descriptor().slices()[0];
        let (sent, mut buf) = self.out.send_zc(buf).await;
        let rest = match sent {
            Ok(n) if n >= len => return,
            Ok(n) => {
                let mut rest = whole;
                rest.offset += n as u32;
                rest.len -= n as u32;
                rest
            }
            // The socket's family has no zero-copy send: copy from now on. Nothing was sent.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.zero_copy = false;
                whole
            }
            Err(e) => return self.fail(&e),
        };
        buf.descriptor_mut().set_slices(&[rest]).expect("one slice");
        if let (Err(e), _) = self.out.send_all(buf).await {
            self.fail(&e);
        }
    }

    fn fail(&mut self, e: &std::io::Error) {
        tracing::debug!(error = %e, "a client went away; its remaining replies are dropped");
        self.broken = true;
    }
}
