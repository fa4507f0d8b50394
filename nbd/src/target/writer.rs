//! The writer: the one task of a connection that writes to its socket. Request tasks queue
//! their [`Reply`]s; the writer sends them in the order they come, whatever order the requests
//! came in. Reply headers are copied into the connection's control buffer, several per send
//! when they queue up together. Small READ data, below the connection's zero-copy threshold
//! ([`Server::set_zero_copy_min`](super::Server::set_zero_copy_min)) and below [`GATHER_MAX`],
//! is gathered whole, header and data, in a data buffer borrowed for the batch when the pool
//! has one free: one send for the batch rather than two per reply. Data at or above the
//! threshold goes out with `SEND_ZC` from the buffers the reads filled, or, for a registered
//! memory export, from the export itself (data below it is copied straight from the export
//! into the gathered bytes); data between the two is sent, copied by the kernel, from the
//! buffers the reads filled.
//!
//! The writer never waits for a zero-copy send's notification (the kernel's word that it let
//! go of the memory, which on TCP comes only with the client's acknowledgement, tens of
//! milliseconds later from a client that delays its ACKs): each send resolves once the socket
//! took its bytes, and the next one queues behind them. The memory stays the kernel's until
//! the notification all the same: the runtime gives a buffer back to the pool, or drops its
//! lease on the export's region, only then. The first zero-copy send of buffers on a
//! connection is the exception: it waits for its buffer back, which it needs to copy the
//! data where the socket turns out to have no zero-copy sends (a Unix socket).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use regio_pool::{BufKey, Message};
use regio_runtime::region::Region;

use super::buffers::Buffers;
use super::export::Export;
use super::stats::Stats;
use super::stream::SendHalf;
use super::sync::{Permit, Receiver, Signal};

/// READ data in pool buffers below this many bytes (and below the zero-copy threshold) is
/// gathered with its header, and with the replies around it, in one send; larger data is sent
/// from the buffers it was read into (the kernel copies it once, where a gather would copy it
/// twice).
const GATHER_MAX: usize = 16 * 1024;

/// One reply, ready to send: its header bytes, then its data.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The simple reply, or the chunk header (and payload, for error and block status chunks).
    pub(crate) head: Vec<u8>,
    /// The data that follows the header (a READ's).
    pub(crate) data: Data,
    /// The request's in-flight slot, given back once the reply is sent.
    pub(crate) slot: InFlight,
}

/// The data of a reply.
#[derive(Debug)]
pub(crate) enum Data {
    /// None.
    None,
    /// Buffers a read filled, each buffer's descriptor naming its bytes.
    Buffers(Vec<Message>),
    /// `len` bytes of a registered memory export from `offset`, sent from the export itself.
    Export {
        export: Arc<Export>,
        offset: u64,
        len: usize,
    },
}

/// A request in flight: its slot in the connection's limit and in the statistics, released
/// when dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    _permit: Permit,
    /// The request's part of its connection's share of the data buffers.
    share: Option<Permit>,
    stats: Arc<Stats>,
}

impl InFlight {
    pub(crate) fn new(permit: Permit, stats: Arc<Stats>) -> Self {
        stats.started();
        Self {
            _permit: permit,
            share: None,
            stats,
        }
    }

    /// Keeps `share` until the reply is sent (its buffers are given back by then).
    pub(crate) fn hold(&mut self, share: Permit) {
        self.share = Some(share);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.finished();
    }
}

/// How long a send may wait for a client that does not read, and what to raise then.
pub(crate) struct Stall {
    /// The longest a send may take, and the longest the client may acknowledge nothing of
    /// what was sent while the writer has nothing to send.
    pub(crate) timeout: Duration,
    /// Raised when a send took longer, or failed: the connection is cut.
    pub(crate) cut: Arc<Signal>,
}

/// Sends every reply of `replies` on `out` until the queue ends (the reader and every request
/// task are done), then closes the connection. After a failed send the rest are dropped (their
/// buffers go back to the pool) and `stall.cut` is raised: the client is gone, or cannot get
/// replies. A send that waits longer than the `stall` timeout (a client that stopped reading
/// its replies holds its buffers meanwhile) fails too, and raises `stall.cut`, as does a client that acknowledges none of the bytes sent
/// to it for that long while there is nothing more to send (on a connection that sends
/// zero-copy). READ data of `zero_copy_min` bytes or more goes out with
/// `SEND_ZC`.
pub(crate) async fn run<W: SendHalf>(
    out: W,
    mut replies: Receiver<Reply>,
    control: Message,
    buffers: Buffers,
    stats: Arc<Stats>,
    stall: Stall,
    zero_copy_min: usize,
) {
    let mut writer = Writer {
        out,
        control: Some(Gather::new(control)),
        staging: None,
        buffers,
        stats,
        broken: false,
        zero_copy: ZeroCopy::Untried,
        zero_copy_min,
        stall,
    };
    while let Some(reply) = writer.next_reply(&mut replies).await {
        writer.put(reply).await;
        // Whatever queued meanwhile goes in the same sends.
        while let Some(reply) = replies.try_pop() {
            writer.put(reply).await;
        }
        writer.flush().await;
        // The staging buffer goes back to the pool between batches.
        writer.staging = None;
    }
    writer.await_acknowledgement().await;
    if let Err(e) = writer.out.close().await {
        tracing::debug!(error = %e, "closing a connection");
    }
}

/// A buffer that bytes are gathered in, then sent at once.
struct Gather {
    buf: Message,
    whole: BufKey,
    filled: usize,
}

impl Gather {
    fn new(buf: Message) -> Self {
        let whole = buf.key();
        Self {
            buf,
            whole,
            filled: 0,
        }
    }

    fn room(&self) -> usize {
        self.whole.len as usize - self.filled
    }

    /// Copies as much of `bytes` as fits; returns how much.
    fn push(&mut self, bytes: &[u8]) -> usize {
        let take = bytes.len().min(self.room());
        self.buf.as_mut_slice()[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
        self.filled += take;
        take
    }

    /// The next `len` bytes of room (at most [`room`](Self::room)), counted as filled.
    fn claim(&mut self, len: usize) -> &mut [u8] {
        let at = self.filled;
        self.filled += len;
        &mut self.buf.as_mut_slice()[at..at + len]
    }
}

struct Writer<W> {
    out: W,
    /// The connection's control buffer; `None` only while it is being sent.
    control: Option<Gather>,
    /// A data buffer borrowed for one batch, where small replies are gathered whole (header
    /// and data), so a batch of small reads costs one send rather than two per reply.
    staging: Option<Gather>,
    buffers: Buffers,
    stats: Arc<Stats>,
    broken: bool,
    /// Whether the socket takes `SEND_ZC` (a Unix socket does not).
    zero_copy: ZeroCopy,
    /// Data of this many bytes or more goes out with `SEND_ZC` (where the socket takes it).
    zero_copy_min: usize,
    stall: Stall,
}

/// What the writer knows of its socket's zero-copy sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZeroCopy {
    /// None was tried yet: the next send of buffers waits for its buffer back, to copy the
    /// data if the socket refuses.
    Untried,
    /// One went out: the socket takes them.
    Works,
    /// The socket refused one (`EOPNOTSUPP`): data is copied from now on.
    Unsupported,
}

/// What a client left unacknowledged at the last look, while the writer sends nothing: the
/// count only goes down as the client reads.
#[derive(Default)]
struct Progress {
    /// `None` before the first look.
    left: Option<usize>,
}

impl Progress {
    /// Whether the client acknowledged something since the last look (or has nothing left to
    /// acknowledge, or this is the first look), given what it leaves unacknowledged now.
    fn made(&mut self, left: usize) -> bool {
        let made = left == 0 || self.left.is_none_or(|before| left < before);
        self.left = Some(left);
        made
    }
}

/// `op`, unless it takes longer than `limit` (then it is dropped, which cancels it).
async fn within<T>(limit: Duration, op: impl Future<Output = T>) -> Option<T> {
    regio_runtime::time::timeout(limit, op).await.ok()
}

impl<W: SendHalf> Writer<W> {
    /// Waits for the next reply. Each time the writer has waited the stall timeout with
    /// nothing to send, on a connection that sends zero-copy, it checks that the client
    /// acknowledged what it sent: a client that stopped reading before its replies filled the
    /// socket never stalls a send, yet the zero-copy sends the socket queues for it keep their
    /// memory (pool buffers, the export's region) until it reads them, or its connection is
    /// reset. Its connection is cut once a whole stall timeout passed in which the client
    /// acknowledged nothing (nothing is sent meanwhile, so the bytes left unacknowledged only
    /// go down as it reads): a client on a slow link that keeps reading is left alone,
    /// however long its queue. (Copied replies hold none of the server's memory.)
    async fn next_reply(&mut self, replies: &mut Receiver<Reply>) -> Option<Reply> {
        let mut progress = Progress::default();
        loop {
            if let Some(next) = within(self.stall.timeout, replies.pop()).await {
                return next;
            }
            if self.broken || self.zero_copy != ZeroCopy::Works {
                continue;
            }
            match self.out.unacknowledged() {
                Ok(left) if !progress.made(left) => self.stalled(),
                Ok(_) => {}
                Err(e) => self.fail(&e),
            }
        }
    }

    /// Before the connection closes: its zero-copy sends resolved once the socket took their
    /// bytes, and the socket holds their memory (pool buffers, the export's region) until the
    /// client acknowledges them. A client that stopped reading may never do so, and a closed
    /// socket would keep its bytes queued for it: wait for the acknowledgement as long as the
    /// client acknowledges something in each stall timeout, else cut the connection (a reset
    /// drops the queued bytes and lets go of the memory).
    async fn await_acknowledgement(&mut self) {
        if self.broken || self.zero_copy != ZeroCopy::Works {
            return;
        }
        let mut progress = Progress::default();
        let mut deadline = std::time::Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            let now = std::time::Instant::now();
            match self.out.unacknowledged() {
                Ok(0) => return,
                Ok(left) if progress.made(left) => deadline = now + self.stall.timeout,
                Ok(_) if now >= deadline => return self.stalled(),
                Ok(_) => {}
                Err(e) => return self.fail(&e),
            }
            regio_runtime::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn put(&mut self, reply: Reply) {
        let Reply { head, data, slot } = reply;
        match data {
            Data::None => self.append(&head).await,
            Data::Buffers(bufs) => self.put_buffers(&head, bufs).await,
            Data::Export {
                export,
                offset,
                len,
            } => self.put_export(&head, &export, offset, len).await,
        }
        drop(slot);
    }

    async fn put_buffers(&mut self, head: &[u8], data: Vec<Message>) {
        let data_len: usize = data.iter().map(|buf| buf.descriptor().len()).sum();
        let zero_copy = data_len >= self.zero_copy_min;
        let small = data_len > 0 && data_len < GATHER_MAX && !zero_copy;
        if small && self.staging.is_none() {
            self.stage();
        }
        self.append(head).await;
        if small && self.staging.is_some() {
            for buf in &data {
                let len = buf.descriptor().len();
                self.append(&buf.as_slice()[..len]).await;
            }
        } else if data_len > 0 {
            // The reply's size decides, not each buffer's: a reply at the threshold goes out
            // zero-copy whole (its last buffer may carry a few bytes only).
            self.flush().await;
            for buf in data {
                if self.broken {
                    break;
                }
                self.send_data(buf, zero_copy).await;
            }
        }
    }

    /// A READ of a memory export: below the threshold (or where the socket has no zero-copy
    /// sends), data below [`GATHER_MAX`] is copied from the export into the gathered bytes and
    /// larger data sent from the export's registered region with a copy the kernel makes; at
    /// or above the threshold it goes out with `SEND_ZC` from the region. An export the
    /// server could not register (no region) is always gathered.
    async fn put_export(&mut self, head: &[u8], export: &Export, offset: u64, len: usize) {
        let copy = len < self.zero_copy_min || self.zero_copy == ZeroCopy::Unsupported;
        let region = export.region().filter(|_| !copy || len >= GATHER_MAX);
        let Some(region) = region else {
            if self.staging.is_none() {
                self.stage();
            }
            self.append(head).await;
            return self.append_export(export, offset, len).await;
        };
        self.append(head).await;
        self.flush().await;
        if self.broken {
            return;
        }
        // The range was validated against the export, which the region covers whole.
        let at = offset as usize;
        if copy {
            return self.send_region_copied(region, at, len).await;
        }
        match within(self.stall.timeout, self.out.send_region(region, at, len)).await {
            None => self.stalled(),
            Some(Ok(())) => {
                self.zero_copy = ZeroCopy::Works;
                self.stats.sent_zero_copy_from_export(len as u64);
            }
            // The socket's family has no zero-copy send: copy from now on. Nothing was sent.
            Some(Err(e)) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.zero_copy = ZeroCopy::Unsupported;
                self.send_region_copied(region, at, len).await;
            }
            Some(Err(e)) => self.fail(&e),
        }
    }

    /// Sends `len` bytes of a memory export's `region` from `at`, copied by the kernel.
    async fn send_region_copied(&mut self, region: &Region, at: usize, len: usize) {
        let sent = within(
            self.stall.timeout,
            self.out.send_region_copied(region, at, len),
        )
        .await;
        self.settle(sent);
    }

    /// Acts on how a copied send within the stall timeout ended: `None` if it took longer.
    fn settle(&mut self, sent: Option<std::io::Result<()>>) {
        match sent {
            None => self.stalled(),
            Some(Ok(())) => {}
            Some(Err(e)) => self.fail(&e),
        }
    }

    /// Borrows a staging buffer if the pool has one free now (never waits: the writer must
    /// not hold replies, and their buffers, while it waits for more), and moves what the
    /// control buffer gathered into it.
    fn stage(&mut self) {
        let Some(buf) = self.buffers.try_staging() else {
            return;
        };
        let mut staging = Gather::new(buf);
        if let Some(control) = self.control.as_mut() {
            let pending = control.filled;
            if pending <= staging.room() {
                staging.push(&control.buf.as_slice()[..pending]);
                control.filled = 0;
                self.staging = Some(staging);
            }
        }
    }

    /// Gathers `bytes` (a header, or a small reply's data), sending as the buffer fills.
    async fn append(&mut self, bytes: &[u8]) {
        self.gather(bytes.len(), |done, room| {
            room.copy_from_slice(&bytes[done..done + room.len()]);
            Ok(())
        })
        .await;
    }

    /// Gathers `len` bytes of `export` from `offset`, copied straight from it.
    async fn append_export(&mut self, export: &Export, offset: u64, len: usize) {
        self.gather(len, |done, room| {
            export.copy_out(offset + done as u64, room)
        })
        .await;
    }

    /// Gathers `len` bytes that `fill` writes (given how many came before, and the room for
    /// the next ones), sending as the buffer fills. A failed fill (a range the export does not
    /// have, which validation rules out) breaks the connection: the header is out already.
    async fn gather(
        &mut self,
        len: usize,
        mut fill: impl FnMut(usize, &mut [u8]) -> Result<(), crate::proto::Errno>,
    ) {
        let mut done = 0;
        while done < len && !self.broken {
            let target = match (self.staging.as_mut(), self.control.as_mut()) {
                (Some(staging), _) => staging,
                (None, Some(control)) => control,
                (None, None) => return,
            };
            let take = (len - done).min(target.room());
            if let Err(errno) = fill(done, target.claim(take)) {
                tracing::error!(?errno, "a reply's data cannot be copied");
                self.broken = true;
                return;
            }
            done += take;
            if done < len {
                self.flush().await;
            }
        }
    }

    /// Sends what is gathered.
    async fn flush(&mut self) {
        if self.broken {
            return;
        }
        let staged = self.staging.is_some();
        let slot = if staged {
            &mut self.staging
        } else {
            &mut self.control
        };
        let Some(mut gather) = slot.take() else {
            return;
        };
        if gather.filled > 0 {
            let mut key = gather.whole;
            key.len = gather.filled as u32;
            gather
                .buf
                .descriptor_mut()
                .set_slices(&[key])
                .expect("one slice");
            let Some((result, back)) =
                within(self.stall.timeout, self.out.send_all(gather.buf)).await
            else {
                // The gathered buffer went with the cancelled send.
                return self.stalled();
            };
            gather.buf = back;
            gather
                .buf
                .descriptor_mut()
                .set_slices(&[gather.whole])
                .expect("one slice");
            gather.filled = 0;
            if let Err(e) = result {
                self.fail(&e);
            }
        }
        let slot = if staged {
            &mut self.staging
        } else {
            &mut self.control
        };
        *slot = Some(gather);
    }

    /// Sends a buffer of READ data, with `SEND_ZC` if `zero_copy` (and the socket takes it).
    /// A zero-copy send does not wait for the kernel to let go of the buffer (see the module
    /// docs), but on a socket not known to take them.
    async fn send_data(&mut self, buf: Message, zero_copy: bool) {
        let limit = self.stall.timeout;
        match (zero_copy, self.zero_copy) {
            (false, _) | (true, ZeroCopy::Unsupported) => self.send_copied(buf).await,
            (true, ZeroCopy::Untried) => self.send_first_zero_copy(buf).await,
            (true, ZeroCopy::Works) => match within(limit, self.out.send_zc_all(buf)).await {
                None => self.stalled(),
                Some(Ok(n)) => self.stats.sent_zero_copy(n as u64),
                Some(Err(e)) => self.fail(&e),
            },
        }
    }

    /// Sends a buffer of READ data with a copy.
    async fn send_copied(&mut self, buf: Message) {
        let sent = within(self.stall.timeout, self.out.send_all(buf)).await;
        self.settle(sent.map(|(result, _)| result));
    }

    /// The first zero-copy send of buffers on the connection: it waits for the buffer back,
    /// and copies what the socket did not take (all of it if the socket has no zero-copy
    /// sends, which are then off for the connection).
    async fn send_first_zero_copy(&mut self, buf: Message) {
        let len = buf.descriptor().len();
        let limit = self.stall.timeout;
        let whole = buf.descriptor().slices()[0];
        let Some((sent, mut buf)) = within(limit, self.out.send_zc(buf)).await else {
            return self.stalled();
        };
        let rest = match sent {
            Ok(n) if n >= len => {
                self.zero_copy = ZeroCopy::Works;
                return self.stats.sent_zero_copy(n as u64);
            }
            Ok(n) => {
                // Partly sent without a copy (if at all); the rest is copied.
                if n > 0 {
                    self.zero_copy = ZeroCopy::Works;
                    self.stats.sent_zero_copy(n as u64);
                }
                let mut rest = whole;
                rest.offset += n as u32;
                rest.len -= n as u32;
                rest
            }
            // The socket's family has no zero-copy send: copy from now on. Nothing was sent.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.zero_copy = ZeroCopy::Unsupported;
                whole
            }
            Err(e) => return self.fail(&e),
        };
        buf.descriptor_mut().set_slices(&[rest]).expect("one slice");
        self.send_copied(buf).await;
    }

    /// A send waited longer than the stall timeout: the client stopped reading. Its replies
    /// are dropped from now on and the connection is cut.
    fn stalled(&mut self) {
        tracing::info!(
            timeout = ?self.stall.timeout,
            "cutting a connection whose client stopped reading its replies"
        );
        self.broken = true;
        // What the cut sends queued would otherwise wait in the socket for the client to read
        // it, holding the memory of the zero-copy sends among them (a registered export).
        self.out.abort();
        self.stall.cut.raise();
    }

    /// A send failed: the client went away, or can no longer get replies (a Unix client that
    /// shut its reading side down). Its replies are dropped from now on and the connection is
    /// cut, so that the reader stops executing requests whose replies nobody gets.
    fn fail(&mut self, e: &std::io::Error) {
        tracing::debug!(error = %e, "a client went away; its remaining replies are dropped");
        self.broken = true;
        // A reset connection has nothing left to drop; another still queues what was sent.
        self.out.abort();
        self.stall.cut.raise();
    }
}
