//! [`IoBuf`]: the buffers that receives, sends, reads and writes take and give back.
//!
//! - A pool [`Message`] is the operation's buffer itself: its registered memory goes to the
//!   kernel, with no copy and no allocation. This is the fast path, and the generic entry
//!   points cost nothing more for it than the message-only API did.
//! - A plain buffer, `Vec<u8>`, `Box<[u8]>` or (cargo feature `bytes`) `bytes::BytesMut`, is
//!   copied through a pool message: for a send or a write its bytes are copied into the
//!   message first; for a receive or a read the bytes that came are copied out of it after.
//!   That is one `memcpy` of the bytes moved, each way they go, plus taking a message from the
//!   pool (waiting for one if none is free) and one small allocation for the operation's
//!   future. Pass a `Message` where that matters.
//!
//! A plain buffer names its bytes by its length, as a slice does for `std::io::Read::read`:
//! a receive fills `buf[..n]` and gives back `n`, and neither the length nor the capacity
//! changes (make the buffer with `vec![0; len]` to receive up to `len` bytes). One operation
//! moves at most one pool buffer's worth (the pool's largest buffer size for a larger plain
//! buffer), so `send`, `recv`, `read_at` and `write_at` may come back short, as they may for
//! any buffer; `send_all` and `recv_exact` go on until every byte is done.
//!
//! Dropping the future of a plain-buffer operation cancels the operation as for a message;
//! the pool message it borrowed goes back to the pool with the operation's final completion,
//! and the plain buffer is dropped with the future (the kernel never saw its memory).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use regio_pool::{BufKey, Message, MessagePool};

/// A buffer an operation can take: a pool [`Message`] (used as it is), or a `Vec<u8>`,
/// `Box<[u8]>` or `bytes::BytesMut` (copied through a pool message). See the
/// [module docs](self) for what each costs.
pub trait IoBuf: sealed::Lend {}

impl IoBuf for Message {}
impl IoBuf for Vec<u8> {}
impl IoBuf for Box<[u8]> {}
#[cfg(feature = "bytes")]
impl IoBuf for bytes::BytesMut {}

mod sealed {
    use std::convert::Infallible;

    use regio_pool::Message;

    /// How a buffer reaches an operation. Sealed: the runtime's choice of buffer types.
    pub trait Lend: Sized + Send + 'static {
        /// What a buffer that is its own message keeps aside while the operation runs:
        /// nothing for a message, and no value at all for a plain buffer (which is never one).
        type Direct: Send + Unpin + 'static;

        /// The buffer as the operation's message, or, for a plain buffer, itself back: it
        /// needs a pool message to copy through.
        fn lend(self) -> Result<(Message, Self::Direct), Self>;

        /// The buffer again from its message after the operation.
        fn restore(msg: Message, direct: Self::Direct) -> Self;

        /// A plain buffer's bytes.
        fn bytes(&self) -> &[u8];

        /// A plain buffer's bytes, to receive into.
        fn bytes_mut(&mut self) -> &mut [u8];
    }

    impl Lend for Message {
        type Direct = ();

        #[inline(always)]
        fn lend(self) -> Result<(Message, ()), Self> {
            Ok((self, ()))
        }

        #[inline(always)]
        fn restore(msg: Message, (): ()) -> Self {
            msg
        }

        fn bytes(&self) -> &[u8] {
            self.as_slice()
        }

        fn bytes_mut(&mut self) -> &mut [u8] {
            self.as_mut_slice()
        }
    }

    /// The plain buffers: their bytes are their slice.
    macro_rules! plain {
        ($($ty:ty),*) => {$(
            impl Lend for $ty {
                type Direct = Infallible;

                fn lend(self) -> Result<(Message, Infallible), Self> {
                    Err(self)
                }

                fn restore(_: Message, never: Infallible) -> Self {
                    match never {}
                }

                fn bytes(&self) -> &[u8] {
                    self
                }

                fn bytes_mut(&mut self) -> &mut [u8] {
                    self
                }
            }
        )*};
    }

    plain!(Vec<u8>, Box<[u8]>);
    #[cfg(feature = "bytes")]
    plain!(bytes::BytesMut);
}

/// The future of an operation on an [`IoBuf`]: the operation's result and the buffer. `F` is
/// the operation's future on a message, and `V` its value (a count, or `()`).
#[must_use = "futures do nothing unless polled; a dropped operation is cancelled"]
pub struct Lent<B: IoBuf, F, V> {
    state: State<B, F, V>,
}

/// A plain buffer's whole operation: the copies and the message's operation.
type Copied<B, V> = Pin<Box<dyn Future<Output = (io::Result<V>, B)> + Send>>;

enum State<B: IoBuf, F, V> {
    /// A message: its own operation.
    Direct { op: F, direct: Option<B::Direct> },
    /// A plain buffer: copied through a pool message.
    Copied(Copied<B, V>),
}

impl<B: IoBuf, F, V> std::fmt::Debug for Lent<B, F, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self.state {
            State::Direct { .. } => "on its message",
            State::Copied(_) => "copied through a pool message",
        };
        f.debug_struct("Lent").field("buffer", &how).finish()
    }
}

impl<B, F> Lent<B, F, usize>
where
    B: IoBuf,
    F: Future<Output = (io::Result<usize>, Message)> + Send + 'static,
{
    /// One operation (`start` makes it) on `buf`; with `receive`, the bytes it brings are
    /// copied into a plain buffer.
    pub(crate) fn one(
        buf: B,
        receive: bool,
        start: impl FnOnce(Message) -> F + Send + 'static,
    ) -> Self {
        let plain = match buf.lend() {
            Ok((msg, direct)) => return Self::direct(start(msg), direct),
            Err(plain) => plain,
        };
        Self {
            state: State::Copied(Box::pin(async move {
                let mut buf = plain;
                let mut msg = match acquire_for(buf.bytes().len()).await {
                    Ok(msg) => msg,
                    Err(e) => return (Err(e), buf),
                };
                let len = buf.bytes().len().min(msg.capacity());
                if !receive {
                    msg.as_mut_slice()[..len].copy_from_slice(&buf.bytes()[..len]);
                }
                name(&mut msg, 0, len);
                let (result, msg) = start(msg).await;
                if let (true, Ok(n)) = (receive, &result) {
                    buf.bytes_mut()[..*n].copy_from_slice(&msg.as_slice()[..*n]);
                }
                (result, buf)
            })),
        }
    }
}

impl<B, F> Lent<B, F, ()>
where
    B: IoBuf,
    F: Future<Output = (io::Result<()>, Message)> + Send + 'static,
{
    /// Operations (`start` makes each, given `on`) until every byte of `buf` is moved: one for
    /// a message (whose operation loops itself; `on` is moved, not cloned), one per pool
    /// buffer's worth for a plain buffer.
    pub(crate) fn all<C: Clone + Send + 'static>(
        buf: B,
        receive: bool,
        on: C,
        start: fn(C, Message) -> F,
    ) -> Self {
        let plain = match buf.lend() {
            Ok((msg, direct)) => return Self::direct(start(on, msg), direct),
            Err(plain) => plain,
        };
        Self {
            state: State::Copied(Box::pin(async move {
                let mut buf = plain;
                let total = buf.bytes().len();
                if total == 0 {
                    return (Ok(()), buf);
                }
                let mut msg = match acquire_for(total).await {
                    Ok(msg) => msg,
                    Err(e) => return (Err(e), buf),
                };
                let mut done = 0;
                while done < total {
                    let len = (total - done).min(msg.capacity());
                    let part = done..done + len;
                    if !receive {
                        msg.as_mut_slice()[..len].copy_from_slice(&buf.bytes()[part.clone()]);
                    }
                    name(&mut msg, 0, len);
                    let (result, back) = start(on.clone(), msg).await;
                    msg = back;
                    if let Err(e) = result {
                        return (Err(e), buf);
                    }
                    if receive {
                        buf.bytes_mut()[part].copy_from_slice(&msg.as_slice()[..len]);
                    }
                    done += len;
                }
                (Ok(()), buf)
            })),
        }
    }
}

impl<B: IoBuf, F, V> Lent<B, F, V> {
    #[inline(always)]
    fn direct(op: F, direct: B::Direct) -> Self {
        Self {
            state: State::Direct {
                op,
                direct: Some(direct),
            },
        }
    }
}

impl<F, V> Lent<Message, F, V> {
    /// The operation on the message itself (for its own methods, such as `into_submit` for an
    /// explicit cancel).
    pub fn into_op(self) -> F {
        match self.state {
            State::Direct { op, .. } => op,
            State::Copied(_) => unreachable!("a message is its own operation's buffer"),
        }
    }
}

impl<B, F, V> Future for Lent<B, F, V>
where
    B: IoBuf,
    F: Future<Output = (io::Result<V>, Message)> + Unpin,
{
    type Output = (io::Result<V>, B);

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Direct { op, direct } => {
                let (result, msg) = ready!(Pin::new(op).poll(cx));
                let direct = direct
                    .take()
                    .expect("an operation future was polled after it completed");
                Poll::Ready((result, B::restore(msg, direct)))
            }
            State::Copied(op) => op.as_mut().poll(cx),
        }
    }
}

/// The current runtime's pool, and its class of the largest buffers.
///
/// # Errors
///
/// Outside a regio runtime.
pub(crate) fn largest_class() -> io::Result<(MessagePool, usize)> {
    let shared = crate::context::runtime().ok_or_else(|| {
        io::Error::other("an operation on a plain buffer must run inside a regio runtime")
    })?;
    let pool = shared.pool.clone();
    let class = (0..pool.classes())
        .max_by_key(|&c| pool.buf_size(c))
        .expect("a pool has at least one class");
    Ok((pool, class))
}

/// A message to copy `len` bytes through: of the smallest class that holds them, else of
/// the largest; waits for one if none is free.
async fn acquire_for(len: usize) -> io::Result<Message> {
    let (pool, largest) = largest_class()?;
    let class = (0..pool.classes())
        .filter(|&c| pool.buf_size(c) >= len)
        .min_by_key(|&c| pool.buf_size(c))
        .unwrap_or(largest);
    Ok(pool.acquire_class(class).await)
}

/// Names bytes `from..to` of `msg`'s first buffer in its descriptor: no slice at all for no
/// bytes (the empty descriptor that operations complete at once; the adapters refuse a slice
/// of length 0).
pub(crate) fn name(msg: &mut Message, from: usize, to: usize) {
    let key = msg.key();
    let part = BufKey {
        region: key.region,
        offset: key.offset + from as u32,
        len: (to - from) as u32,
    };
    let slices: &[BufKey] = if from == to { &[] } else { &[part] };
    msg.descriptor_mut()
        .set_slices(slices)
        .expect("one slice always fits");
}
