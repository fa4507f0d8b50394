//! A raw NBD client over a socket: it speaks the fixed newstyle handshake and simple replies
//! byte by byte, and can send what libnbd never would (unknown options and commands, wrong magic,
//! truncated headers, oversized requests, abrupt closes). The protocol numbers come from
//! `regio_nbd::proto`; the encoding here is written independently of its codec.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use regio_nbd::proto::consts::*;
use regio_nbd::proto::{ClientFlags, HandshakeFlags};

use super::server::Address;

/// How long a raw client waits for any reply before failing the test.
pub const REPLY_LIMIT: Duration = Duration::from_secs(60);

/// A connected socket of either family.
pub enum Stream {
    /// A Unix socket.
    Unix(UnixStream),
    /// A TCP connection.
    Tcp(TcpStream),
}

impl Stream {
    /// Connects to `address`, with reads bounded by [`REPLY_LIMIT`].
    pub fn connect(address: &Address) -> Stream {
        let stream = match address {
            Address::Unix(path) => Stream::Unix(UnixStream::connect(path).expect("connect")),
            Address::Tcp(addr) => {
                let s = TcpStream::connect(addr).expect("connect");
                s.set_nodelay(true).expect("TCP_NODELAY");
                Stream::Tcp(s)
            }
        };
        stream.set_read_timeout(REPLY_LIMIT);
        stream
    }

    fn set_read_timeout(&self, limit: Duration) {
        match self {
            Stream::Unix(s) => s.set_read_timeout(Some(limit)),
            Stream::Tcp(s) => s.set_read_timeout(Some(limit)),
        }
        .expect("SO_RCVTIMEO");
    }

    /// Closes the sending half: the server reads end of file after what was sent.
    pub fn shutdown_write(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One option reply of the handshake.
#[derive(Debug)]
pub struct OptionReply {
    /// The option it answers.
    pub option: u32,
    /// `NBD_REP_*`.
    pub kind: u32,
    /// Its payload.
    pub data: Vec<u8>,
}

/// What `NBD_OPT_GO` told about an export.
#[derive(Clone, Copy, Debug)]
pub struct Export {
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: u16,
    /// The maximum payload from `NBD_INFO_BLOCK_SIZE`, if the server sent one.
    pub max_payload: Option<u32>,
    /// The minimum, preferred and maximum block sizes of `NBD_INFO_BLOCK_SIZE`, if sent.
    pub block_sizes: Option<(u32, u32, u32)>,
}

/// How a wait for the server to close a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closing {
    /// End of file or a reset: the server closed the connection.
    Closed,
    /// The connection was still open after [`REPLY_LIMIT`].
    StillOpen,
}

/// A raw NBD client.
pub struct RawClient {
    /// The socket, for tests that write bytes of their own.
    pub stream: Stream,
    /// Whether structured replies were negotiated.
    structured: bool,
}

/// A request sent and not answered yet, as [`RawClient::next_reply`] needs to know it.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    /// `NBD_CMD_*`.
    pub command: u16,
    /// The request's offset.
    pub offset: u64,
    /// The request's length.
    pub len: u32,
}

/// One reply, simple or structured.
#[derive(Debug)]
pub struct Reply {
    /// The cookie it echoes.
    pub cookie: u64,
    /// Its NBD error (0: success).
    pub error: u32,
    /// A successful READ's data.
    pub data: Vec<u8>,
}

impl RawClient {
    /// Connects to `address` and reads the greeting; fails the test unless it is a fixed
    /// newstyle greeting.
    pub fn connect(address: &Address) -> (RawClient, u16) {
        let mut client = RawClient {
            stream: Stream::connect(address),
            structured: false,
        };
        let greeting = client.read_exact(18);
        assert_eq!(be64(&greeting[0..8]), NBDMAGIC, "greeting magic");
        assert_eq!(be64(&greeting[8..16]), IHAVEOPT, "newstyle magic");
        let flags = be16(&greeting[16..18]);
        assert!(
            flags & HandshakeFlags::FIXED_NEWSTYLE.bits() != 0,
            "the greeting lacks FIXED_NEWSTYLE: {flags:#x}"
        );
        (client, flags)
    }

    /// Connects, sends the client flags `FIXED_NEWSTYLE | NO_ZEROES` and goes into transmission
    /// on export `name` with `NBD_OPT_GO`, with simple replies.
    pub fn open(address: &Address, name: &str) -> (RawClient, Export) {
        RawClient::open_with(address, name, false)
    }

    /// Like [`RawClient::open`], first negotiating structured replies when `structured`.
    pub fn open_with(address: &Address, name: &str, structured: bool) -> (RawClient, Export) {
        let (mut client, _) = RawClient::connect(address);
        client.send_client_flags((ClientFlags::C_FIXED_NEWSTYLE | ClientFlags::C_NO_ZEROES).bits());
        if structured {
            client.send_option(NBD_OPT_STRUCTURED_REPLY, &[]);
            let reply = client.option_reply();
            assert_eq!(
                (reply.option, reply.kind),
                (NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK),
                "structured replies refused"
            );
            client.structured = true;
        }
        let export = client
            .go(name)
            .unwrap_or_else(|e| panic!("NBD_OPT_GO {name:?} failed: {e:#x}"));
        (client, export)
    }

    /// Sends the 32-bit client flags.
    pub fn send_client_flags(&mut self, flags: u32) {
        self.send(&flags.to_be_bytes());
    }

    /// Sends option `option` with `payload`.
    pub fn send_option(&mut self, option: u32, payload: &[u8]) {
        let mut msg = Vec::with_capacity(16 + payload.len());
        msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
        msg.extend_from_slice(&option.to_be_bytes());
        msg.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        msg.extend_from_slice(payload);
        self.send(&msg);
    }

    /// Reads one option reply, checking its magic.
    pub fn option_reply(&mut self) -> OptionReply {
        let head = self.read_exact(20);
        assert_eq!(
            be64(&head[0..8]),
            NBD_OPTION_REPLY_MAGIC,
            "option reply magic"
        );
        let len = be32(&head[16..20]) as usize;
        OptionReply {
            option: be32(&head[8..12]),
            kind: be32(&head[12..16]),
            data: self.read_exact(len),
        }
    }

    /// Sends `NBD_OPT_GO` for `name`, asking for `NBD_INFO_BLOCK_SIZE`, and reads the replies up
    /// to the ACK. An error reply's type is returned as the error.
    pub fn go(&mut self, name: &str) -> Result<Export, u32> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&(name.len() as u32).to_be_bytes());
        payload.extend_from_slice(name.as_bytes());
        payload.extend_from_slice(&1u16.to_be_bytes());
        payload.extend_from_slice(&NBD_INFO_BLOCK_SIZE.to_be_bytes());
        self.send_option(NBD_OPT_GO, &payload);
        let mut export = None;
        let mut block_sizes = None;
        loop {
            let reply = self.option_reply();
            assert_eq!(reply.option, NBD_OPT_GO, "a reply to another option");
            match reply.kind {
                NBD_REP_ACK => break,
                NBD_REP_INFO => {
                    let info = be16(&reply.data[0..2]);
                    if info == NBD_INFO_EXPORT {
                        export = Some((be64(&reply.data[2..10]), be16(&reply.data[10..12])));
                    } else if info == NBD_INFO_BLOCK_SIZE {
                        assert_eq!(reply.data.len(), 14, "the length of NBD_INFO_BLOCK_SIZE");
                        let d = &reply.data;
                        block_sizes = Some((be32(&d[2..6]), be32(&d[6..10]), be32(&d[10..14])));
                    }
                }
                kind if kind & NBD_REP_FLAG_ERROR != 0 => return Err(kind),
                kind => panic!("unexpected reply {kind:#x} to NBD_OPT_GO"),
            }
        }
        let (size, flags) = export.expect("NBD_INFO_EXPORT before the ACK of NBD_OPT_GO");
        Ok(Export {
            size,
            flags,
            max_payload: block_sizes.map(|(_, _, max)| max),
            block_sizes,
        })
    }

    /// Sends a request header.
    pub fn send_request(&mut self, flags: u16, command: u16, cookie: u64, offset: u64, len: u32) {
        self.send(&request_header(flags, command, cookie, offset, len));
    }

    /// Sends a request of no payload and reads its reply; returns its error (0: success) and,
    /// for a successful READ, the data.
    pub fn call(&mut self, flags: u16, command: u16, offset: u64, len: u32) -> (u32, Vec<u8>) {
        let cookie = 0x0123_4567_89ab_cdef ^ offset ^ u64::from(command);
        self.send_request(flags, command, cookie, offset, len);
        self.finish(cookie, command, offset, len)
    }

    /// Sends a WRITE of `data` at `offset` and reads its reply's error (0: success).
    pub fn write(&mut self, flags: u16, offset: u64, data: &[u8]) -> u32 {
        let cookie = 0xfeed_0000_0000_0000 | offset;
        let len = data.len() as u32;
        let mut msg = request_header(flags, NBD_CMD_WRITE, cookie, offset, len);
        msg.extend_from_slice(data);
        self.send(&msg);
        self.finish(cookie, NBD_CMD_WRITE, offset, len).0
    }

    /// Reads `len` bytes at `offset`; fails the test on an error reply.
    pub fn read(&mut self, offset: u64, len: u32) -> Vec<u8> {
        let (error, data) = self.call(0, NBD_CMD_READ, offset, len);
        assert_eq!(error, 0, "READ of {len} at {offset} failed");
        data
    }

    /// Reads the reply to request `cookie` (`command` of `len` bytes at `offset`): its error
    /// (0: success) and data.
    fn finish(&mut self, cookie: u64, command: u16, offset: u64, len: u32) -> (u32, Vec<u8>) {
        let reply = self.next_reply(|c| {
            assert_eq!(c, cookie, "the reply echoes another cookie");
            Pending {
                command,
                offset,
                len,
            }
        });
        (reply.error, reply.data)
    }

    /// Reads the next reply, simple or structured; `pending` tells the request its cookie
    /// answers (it fails the test for a cookie that was not sent).
    pub fn next_reply(&mut self, mut pending: impl FnMut(u64) -> Pending) -> Reply {
        let head = self.read_exact(16);
        match be32(&head[0..4]) {
            NBD_SIMPLE_REPLY_MAGIC => {
                let (error, cookie) = (be32(&head[4..8]), be64(&head[8..16]));
                let request = pending(cookie);
                if self.structured {
                    assert_ne!(
                        request.command, NBD_CMD_READ,
                        "a simple reply to a READ after structured replies were negotiated"
                    );
                }
                let data = if error == 0 && request.command == NBD_CMD_READ {
                    self.read_exact(request.len as usize)
                } else {
                    Vec::new()
                };
                Reply {
                    cookie,
                    error,
                    data,
                }
            }
            NBD_STRUCTURED_REPLY_MAGIC => {
                assert!(
                    self.structured,
                    "a structured reply that was not negotiated"
                );
                self.structured_reply(head, &mut pending)
            }
            magic => panic!("a reply with magic {magic:#x}"),
        }
    }

    /// Reads the chunks of a structured reply, `head` holding its first 16 bytes.
    fn structured_reply(
        &mut self,
        mut head: Vec<u8>,
        pending: &mut impl FnMut(u64) -> Pending,
    ) -> Reply {
        let cookie = be64(&head[8..16]);
        let request = pending(cookie);
        let mut data = vec![0; request.len as usize];
        let mut error = 0;
        loop {
            head.extend_from_slice(&self.read_exact(4));
            let (flags, kind) = (be16(&head[4..6]), be16(&head[6..8]));
            assert_eq!(
                be64(&head[8..16]),
                cookie,
                "chunks of one reply echo one cookie"
            );
            let payload = self.read_exact(be32(&head[16..20]) as usize);
            assert!(
                kind == NBD_REPLY_TYPE_OFFSET_DATA || payload.len() <= 1000,
                "a chunk of type {kind:#x} of {} bytes: qemu drops the connection over 1000",
                payload.len()
            );
            let mut place = |at: u64, bytes: &[u8]| {
                let start = at
                    .checked_sub(request.offset)
                    .filter(|s| s + bytes.len() as u64 <= u64::from(request.len))
                    .unwrap_or_else(|| panic!("a chunk at {at} outside the request {request:?}"));
                data[start as usize..start as usize + bytes.len()].copy_from_slice(bytes);
            };
            match kind {
                NBD_REPLY_TYPE_NONE => {}
                NBD_REPLY_TYPE_OFFSET_DATA => place(be64(&payload[0..8]), &payload[8..]),
                NBD_REPLY_TYPE_OFFSET_HOLE => place(
                    be64(&payload[0..8]),
                    &vec![0; be32(&payload[8..12]) as usize],
                ),
                NBD_REPLY_TYPE_ERROR | NBD_REPLY_TYPE_ERROR_OFFSET => {
                    error = be32(&payload[0..4]);
                    assert_ne!(error, 0, "an error chunk with error 0");
                    let message_len = be16(&payload[4..6]) as usize;
                    assert!(
                        6 + message_len <= payload.len(),
                        "an error chunk's message overruns it"
                    );
                }
                kind => panic!("an unexpected chunk type {kind:#x}"),
            }
            if flags & 1 != 0 {
                break;
            }
            head = self.read_exact(16);
            assert_eq!(
                be32(&head[0..4]),
                NBD_STRUCTURED_REPLY_MAGIC,
                "the next chunk of a structured reply"
            );
        }
        if error != 0 || request.command != NBD_CMD_READ {
            data.clear();
        }
        Reply {
            cookie,
            error,
            data,
        }
    }

    /// Sends `NBD_CMD_DISC`; the server closes without replying.
    pub fn disconnect(&mut self) {
        self.send_request(0, NBD_CMD_DISC, 0, 0, 0);
    }

    /// Writes `bytes` to the socket; a failure fails the test.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to the server");
    }

    /// Writes `bytes`, tolerating a server that already closed the connection.
    pub fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Reads exactly `len` bytes; fails the test on end of file or after [`REPLY_LIMIT`].
    pub fn read_exact(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.stream
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("reading {len} bytes from the server: {e}"));
        buf
    }

    /// Reads and discards whatever the server sends until it closes the connection (end of file
    /// or reset), at most [`REPLY_LIMIT`].
    pub fn wait_closed(&mut self) -> Closing {
        self.read_until_closed().1
    }

    /// Reads whatever the server sends until it closes the connection (end of file or reset),
    /// at most [`REPLY_LIMIT`]: the bytes, and how it ended.
    pub fn read_until_closed(&mut self) -> (Vec<u8>, Closing) {
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return (got, Closing::Closed),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return (got, Closing::StillOpen)
                }
                Err(_) => return (got, Closing::Closed),
            }
        }
    }
}

/// A 28-byte request header.
pub fn request_header(flags: u16, command: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut msg = Vec::with_capacity(28);
    msg.extend_from_slice(&NBD_REQUEST_MAGIC.to_be_bytes());
    msg.extend_from_slice(&flags.to_be_bytes());
    msg.extend_from_slice(&command.to_be_bytes());
    msg.extend_from_slice(&cookie.to_be_bytes());
    msg.extend_from_slice(&offset.to_be_bytes());
    msg.extend_from_slice(&len.to_be_bytes());
    msg
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes(b.try_into().expect("2 bytes"))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().expect("4 bytes"))
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}
