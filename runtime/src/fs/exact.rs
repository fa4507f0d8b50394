//! [`File::read_full_at`] and [`File::write_all_at`]: positioned reads and writes of a
//! message's first `len` bytes that go on after a short read or write.

use std::future::Future;
use std::io;

use regio_pool::Message;

use super::File;
use crate::buf::name;

impl File {
    /// Reads into bytes `0..len` of `msg`'s buffer from offset `pos` on, again after a short
    /// read, until they are full or a read finds the end of the file; gives back the bytes read
    /// (fewer than `len` only at the end of the file) and the message, whose
    /// [`as_slice`](Message::as_slice) holds them first. The descriptor is left naming the
    /// last read's part of the buffer.
    ///
    /// ```
    /// use regio_runtime::fs::File;
    ///
    /// let rt = regio_runtime::Runtime::builder().worker_threads(1).build()?;
    /// let path = std::env::temp_dir().join(format!("regio-full-doc-{}", std::process::id()));
    /// std::fs::write(&path, b"0123456789")?;
    /// let (n, msg) = rt.block_on(rt.spawn(async move {
    ///     let file = File::open(&path)?;
    ///     let msg = regio_runtime::pool().acquire().await;
    ///     let (n, msg) = file.read_full_at(msg, 8, 4).await;
    ///     std::fs::remove_file(&path)?;
    ///     Ok::<_, std::io::Error>((n?, msg))
    /// }))??;
    /// assert_eq!((n, &msg.as_slice()[..n]), (6, &b"456789"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a `len` above the message's capacity, else the first
    /// failed read's error (the bytes read before it are in the buffer, uncounted).
    pub async fn read_full_at(
        &self,
        msg: Message,
        len: usize,
        pos: u64,
    ) -> (io::Result<usize>, Message) {
        until_done(msg, len, pos, |msg, at| self.read_at(msg, at)).await
    }

    /// Writes bytes `0..len` of `msg`'s buffer at offset `pos`, again after a short write,
    /// until all are written; gives back the message. The descriptor is left naming the last
    /// write's part of the buffer.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a `len` above the message's capacity,
    /// [`io::ErrorKind::WriteZero`] for a write that took no bytes, else the first failed
    /// write's error (the bytes written before it stay in the file).
    pub async fn write_all_at(
        &self,
        msg: Message,
        len: usize,
        pos: u64,
    ) -> (io::Result<()>, Message) {
        let (done, msg) = until_done(msg, len, pos, |msg, at| self.write_at(msg, at)).await;
        let written = done.and_then(|done| {
            if done < len {
                Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the file took no bytes",
                ))
            } else {
                Ok(())
            }
        });
        (written, msg)
    }
}

/// Runs `op` (a read or a write at a position) on the rest of bytes `0..len` of `msg`'s buffer
/// from `pos` on, again after a short one, until all are done or one does no bytes: the bytes
/// done and the message.
async fn until_done<F>(
    mut msg: Message,
    len: usize,
    pos: u64,
    op: impl Fn(Message, u64) -> F,
) -> (io::Result<usize>, Message)
where
    F: Future<Output = (io::Result<usize>, Message)>,
{
    if let Err(e) = within_capacity(&msg, len) {
        return (Err(e), msg);
    }
    let mut done = 0;
    while done < len {
        name(&mut msg, done, len);
        let (n, back) = op(msg, pos + done as u64).await;
        msg = back;
        match n {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) => return (Err(e), msg),
        }
    }
    (Ok(done), msg)
}

/// An error unless `len` bytes fit in `msg`'s buffer.
fn within_capacity(msg: &Message, len: usize) -> io::Result<()> {
    if len <= msg.capacity() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{len} bytes do not fit in a message of {}", msg.capacity()),
        ))
    }
}
