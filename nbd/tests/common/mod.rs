//! An in-process server on a loopback port, and a small blocking NBD client over the codec.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regio_nbd::proto::{
    BlockSizes, ChunkHeader, ClientOption, Command, CommandFlags, Cookie, Errno, ExportRequest,
    Info, MetaContextRequest, OptionReply, OptionReplyHeader, ReplyFlags, Request, SimpleReply,
    TransmissionFlags, CHUNK_HEADER_LEN, OPTION_REPLY_HEADER_LEN, REQUEST_HEADER_LEN,
    SIMPLE_REPLY_LEN,
};
use regio_nbd::target::{Export, Server, StatsLine};
use regio_runtime::net::{TcpListener, UnixListener};
use regio_runtime::{JoinHandle, Runtime};

/// A writable memory export named `name` of `size` bytes.
pub fn memory(name: &str, size: u64) -> Export {
    Export::memory(name, size, false).unwrap()
}

/// `len` bytes of a pattern that differs with `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Waits until `done()` (a bounded wait of 20 s; nothing is timed), failing with `what()`.
pub fn wait_for(what: impl Fn() -> String, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{}", what());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A server on 127.0.0.1, port chosen by the kernel, on a runtime of its own.
pub struct Harness {
    pub rt: Runtime,
    pub server: Server,
    pub addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
    /// The tasks serving the other listeners ([`Harness::listen_unix`], [`Harness::listen_tcp`]).
    more: Vec<JoinHandle<()>>,
}

/// The server's pool classes, each count divided by `shrink` (a small pool runs dry sooner).
/// The zero-copy threshold is set to its default explicitly, so that these loopback clients
/// get zero-copy sends as remote ones do.
pub fn start(exports: Vec<Export>, shrink: u32) -> Option<Harness> {
    let h = start_unset(exports, shrink)?;
    h.server.set_zero_copy_min(regio_nbd::target::ZERO_COPY_MIN);
    Some(h)
}

/// As [`start`], with the zero-copy threshold left unset (loopback clients get copies).
pub fn start_unset(exports: Vec<Export>, shrink: u32) -> Option<Harness> {
    let builder = regio_nbd::target::pool_classes()
        .iter()
        .fold(Runtime::builder().worker_threads(2), |b, &(size, count)| {
            b.pool_class(size, (count / shrink).max(2))
        })
        .pool_cache(0);
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) if e.is_io_uring_disabled() => {
            regio_testkit::skip(&e.to_string());
            return None;
        }
        Err(e) => panic!("cannot start the runtime: {e}"),
    };
    let server = Server::new(exports, rt.pool().clone()).unwrap();
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let accept = rt.spawn({
        let server = server.clone();
        async move {
            server
                .serve(|| {
                    let accept = listener.accept();
                    async move { accept.await.map(|(stream, _)| stream) }
                })
                .await
        }
    });
    Some(Harness {
        rt,
        server,
        addr,
        accept: Some(accept),
        more: Vec::new(),
    })
}

impl Harness {
    /// Serves on a Unix socket at `path` too.
    pub fn listen_unix(&mut self, path: &std::path::Path) {
        let listener = Arc::new(UnixListener::bind(path).unwrap());
        self.serve_on(move || {
            let accept = listener.accept();
            async move { accept.await.map(|(stream, _)| stream) }
        });
    }

    /// Serves on TCP at `addr` too (`[::]:0`, `127.0.0.2:0`, ...); returns the address bound,
    /// or the error binding it.
    pub fn listen_tcp(&mut self, addr: &str) -> std::io::Result<SocketAddr> {
        let listener = Arc::new(TcpListener::bind(addr)?);
        let bound = listener.local_addr()?;
        self.serve_on(move || {
            let accept = listener.accept();
            async move { accept.await.map(|(stream, _)| stream) }
        });
        Ok(bound)
    }

    /// Serves the connections `accept` gives, on a task kept until [`stop`](Self::stop).
    fn serve_on<C, F>(&mut self, accept: impl FnMut() -> F + Send + 'static)
    where
        C: regio_nbd::target::Connection,
        F: std::future::Future<Output = std::io::Result<C>> + Send,
    {
        let server = self.server.clone();
        self.more
            .push(self.rt.spawn(async move { server.serve(accept).await }));
    }

    /// A connected, greeted client (fixed newstyle, no zeroes).
    pub fn connect(&self) -> Client {
        Client::connect(self.addr, 3)
    }

    /// A client in transmission on `name`, with structured replies and `base:allocation` if
    /// `structured`.
    pub fn open(&self, name: &str, structured: bool) -> Client {
        let mut client = self.connect();
        client.go(name, structured);
        client
    }

    /// A client that writes `data` (one maximum-size payload) at offset 0 and then asks for 64
    /// maximum-size reads of it whose replies it never reads: far more reply bytes than the
    /// sockets hold, so the server's sends stall.
    pub fn stalled_client(&self, data: &[u8]) -> Client {
        let none = CommandFlags::empty();
        let max = self.server.max_payload();
        let mut client = self.open("", true);
        assert_eq!(client.call(Command::Write, none, 0, max, data).error, None);
        for i in 0..64 {
            client.request(Command::Read, none, i, 0, max, &[]);
        }
        client
    }

    /// Waits until `done` holds of the server's statistics (a bounded wait; nothing is timed),
    /// failing with `what` and the statistics.
    pub fn wait_for_stats(&self, what: &str, done: impl Fn(&StatsLine) -> bool) {
        wait_for(
            || format!("{what}: {}", self.server.stats()),
            || done(&self.server.stats()),
        );
    }

    /// Waits until every pool buffer is back (a bounded wait; nothing is timed).
    pub fn assert_pool_full(&self) {
        let pool = self.rt.pool().clone();
        let full = || (0..pool.classes()).all(|c| pool.available(c) == pool.capacity(c));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !full() {
            assert!(
                Instant::now() < deadline,
                "buffers still out: {}",
                self.server.stats()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Shuts the server down gracefully and waits for the end.
    pub fn stop(self) {
        drop(self.stop_keeping_runtime());
    }

    /// [`stop`](Self::stop), then drops the server (and its exports) but gives the runtime
    /// back, still running.
    pub fn stop_keeping_runtime(mut self) -> Runtime {
        self.server.shutdown();
        let more = std::mem::take(&mut self.more);
        for accept in self.accept.take().into_iter().chain(more) {
            self.rt.block_on(accept).unwrap();
        }
        self.rt.block_on(self.server.finish()).unwrap();
        self.rt
    }
}

/// One reply, as the client read it.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub cookie: u64,
    /// The error, if the reply (or one of its chunks) carried one.
    pub error: Option<Errno>,
    /// A READ's data (from offset data chunks, at their offsets; holes as zeroes).
    pub data: Vec<u8>,
    /// Block status descriptors: (length, flags).
    pub extents: Vec<(u32, u32)>,
    /// How many chunks a structured reply had.
    pub chunks: usize,
    /// How many of them were OFFSET_HOLE chunks.
    pub holes: usize,
}

/// A blocking NBD client, over TCP or a Unix socket.
pub struct Client<S = TcpStream> {
    pub stream: S,
    pub structured: bool,
    pub flags: TransmissionFlags,
    pub size: u64,
    pub block_sizes: Option<BlockSizes>,
    /// Expected data lengths of simple READ replies, by cookie.
    reads: std::collections::HashMap<u64, (u64, u32)>,
}

impl Client {
    /// Connects and answers the greeting with `client_flags`.
    pub fn connect(addr: SocketAddr, client_flags: u32) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client::greeted(stream, client_flags)
    }

    /// Another handle to the same connection, to read replies on one thread while this one
    /// sends requests on another (as real clients do).
    pub fn other_half(&self) -> Client {
        Client {
            stream: self.stream.try_clone().unwrap(),
            structured: self.structured,
            flags: self.flags,
            size: self.size,
            block_sizes: self.block_sizes,
            reads: Default::default(),
        }
    }
}

impl Client<UnixStream> {
    /// Connects to a Unix socket and answers the greeting (fixed newstyle, no zeroes).
    pub fn connect_unix(path: &std::path::Path) -> Self {
        let stream = UnixStream::connect(path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client::greeted(stream, 3)
    }
}

impl<S: Read + Write> Client<S> {
    /// A client on `stream`, past the greeting, having sent `client_flags`.
    pub fn greeted(mut stream: S, client_flags: u32) -> Self {
        let mut greeting = [0; 18];
        stream.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"NBDMAGICIHAVEOPT\x00\x03");
        stream.write_all(&client_flags.to_be_bytes()).unwrap();
        Client {
            stream,
            structured: false,
            flags: TransmissionFlags::empty(),
            size: 0,
            block_sizes: None,
            reads: Default::default(),
        }
    }

    /// Sends an option.
    pub fn send_option(&mut self, option: &ClientOption) {
        let mut bytes = Vec::new();
        option.encode(&mut bytes);
        self.stream.write_all(&bytes).unwrap();
    }

    /// Reads one option reply: (option, reply type, payload).
    pub fn option_reply(&mut self) -> (u32, u32, Vec<u8>) {
        let mut head = [0; OPTION_REPLY_HEADER_LEN];
        self.stream.read_exact(&mut head).unwrap();
        let header = OptionReplyHeader::decode(&head).unwrap();
        let mut payload = vec![0; header.length as usize];
        self.stream.read_exact(&mut payload).unwrap();
        (header.option, header.reply_type, payload)
    }

    /// Sends an option and reads its replies up to the final one (an ACK or an error).
    pub fn ask(&mut self, option: &ClientOption) -> Vec<(u32, Vec<u8>)> {
        self.send_option(option);
        let mut replies = Vec::new();
        loop {
            let (answered, reply_type, payload) = self.option_reply();
            assert_eq!(answered, option.code());
            let last = reply_type == 1 || reply_type & (1 << 31) != 0;
            replies.push((reply_type, payload));
            if last {
                return replies;
            }
        }
    }

    /// Negotiates (structured replies and `base:allocation` if `structured`) and enters
    /// transmission on `name` with `NBD_OPT_GO`, asking for block sizes.
    pub fn go(&mut self, name: &str, structured: bool) {
        if structured {
            let acked = self.ask(&ClientOption::StructuredReply);
            assert_eq!(acked, [(1, vec![])]);
            let set = self.ask(&ClientOption::SetMetaContext(MetaContextRequest {
                export: name.into(),
                queries: vec!["base:allocation".into()],
            }));
            assert_eq!(set.len(), 2, "one context and the ACK: {set:?}");
        }
        let replies = self.ask(&ClientOption::Go(ExportRequest {
            name: name.into(),
            info_requests: vec![3],
        }));
        for (reply_type, payload) in &replies {
            match OptionReply::decode(*reply_type, payload).unwrap() {
                OptionReply::Info(Info::Export { size, flags }) => {
                    self.size = size;
                    self.flags = flags;
                }
                OptionReply::Info(Info::BlockSize(sizes)) => self.block_sizes = Some(sizes),
                OptionReply::Ack => {}
                other => panic!("unexpected reply to GO: {other:?}"),
            }
        }
        assert!(self.size > 0, "no export info: {replies:?}");
        self.structured = structured;
    }

    /// Sends a request (and a WRITE's payload).
    pub fn request(
        &mut self,
        command: Command,
        flags: CommandFlags,
        cookie: u64,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) {
        let mut head = [0; REQUEST_HEADER_LEN];
        Request {
            flags,
            command,
            cookie: Cookie(cookie),
            offset,
            length,
        }
        .encode(&mut head);
        if command == Command::Read {
            self.reads.insert(cookie, (offset, length));
        }
        self.stream.write_all(&head).unwrap();
        self.stream.write_all(payload).unwrap();
    }

    /// Reads one whole reply.
    pub fn reply(&mut self) -> Reply {
        let mut magic = [0; 4];
        self.stream.read_exact(&mut magic).unwrap();
        if u32::from_be_bytes(magic) == 0x6744_6698 {
            let mut rest = [0; SIMPLE_REPLY_LEN];
            rest[..4].copy_from_slice(&magic);
            self.stream.read_exact(&mut rest[4..]).unwrap();
            let reply = SimpleReply::decode(&rest).unwrap();
            let cookie = reply.cookie.0;
            let mut data = Vec::new();
            if let (None, Some((_, len))) = (reply.error, self.reads.remove(&cookie)) {
                data = vec![0; len as usize];
                self.stream.read_exact(&mut data).unwrap();
            }
            return Reply {
                cookie,
                error: reply.error,
                data,
                extents: Vec::new(),
                chunks: 0,
                holes: 0,
            };
        }
        self.structured_reply(magic)
    }

    fn structured_reply(&mut self, mut magic: [u8; 4]) -> Reply {
        let mut reply = Reply {
            cookie: 0,
            error: None,
            data: Vec::new(),
            extents: Vec::new(),
            chunks: 0,
            holes: 0,
        };
        loop {
            let mut head = [0; CHUNK_HEADER_LEN];
            head[..4].copy_from_slice(&magic);
            self.stream.read_exact(&mut head[4..]).unwrap();
            let header = ChunkHeader::decode(&head).unwrap();
            let mut payload = vec![0; header.length as usize];
            self.stream.read_exact(&mut payload).unwrap();
            reply.cookie = header.cookie.0;
            reply.chunks += 1;
            // A read this client did not send (its other half did) starts at its first chunk.
            let first = payload
                .get(..8)
                .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
            let start = self.reads.entry(reply.cookie).or_insert((first, 0)).0;
            match header.chunk_type {
                0 => {}
                1 => {
                    let offset = u64::from_be_bytes(payload[..8].try_into().unwrap());
                    let at = (offset - start) as usize;
                    let data = &payload[8..];
                    if reply.data.len() < at + data.len() {
                        reply.data.resize(at + data.len(), 0);
                    }
                    reply.data[at..at + data.len()].copy_from_slice(data);
                }
                2 => {
                    reply.holes += 1;
                    let offset = u64::from_be_bytes(payload[..8].try_into().unwrap());
                    let len = u32::from_be_bytes(payload[8..12].try_into().unwrap());
                    let end = (offset - start) as usize + len as usize;
                    if reply.data.len() < end {
                        reply.data.resize(end, 0);
                    }
                }
                5 => {
                    for pair in payload[4..].chunks(8) {
                        reply.extents.push((
                            u32::from_be_bytes(pair[..4].try_into().unwrap()),
                            u32::from_be_bytes(pair[4..].try_into().unwrap()),
                        ));
                    }
                }
                t if t & 0x8000 != 0 => {
                    let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                    assert_ne!(code, 0, "an error chunk carries an error");
                    let message_len = u16::from_be_bytes(payload[4..6].try_into().unwrap());
                    assert!(message_len < 1000, "short messages only (qemu's limit)");
                    reply.error = Errno::from_code(code).or(Some(Errno::EINVAL));
                }
                other => panic!("unknown chunk type {other}"),
            }
            if header.flags.contains(ReplyFlags::DONE) {
                self.reads.remove(&reply.cookie);
                return reply;
            }
            self.stream.read_exact(&mut magic).unwrap();
        }
    }

    /// A request and its reply, alone on the connection.
    pub fn call(
        &mut self,
        command: Command,
        flags: CommandFlags,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> Reply {
        self.request(command, flags, 0x5eed, offset, length, payload);
        let reply = self.reply();
        assert_eq!(reply.cookie, 0x5eed);
        reply
    }

    /// Whether the server closed the connection (a read sees the end of the stream).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

/// Writes `data` (one maximum-size payload) through `other` at eight offsets from 1 MiB on,
/// and reads each back.
pub fn large_writes_read_back(other: &mut Client, data: &[u8]) {
    let none = CommandFlags::empty();
    let max = data.len() as u32;
    for i in 0..8_u64 {
        let offset = (1 << 20) + i * u64::from(max);
        assert_eq!(
            other.call(Command::Write, none, offset, max, data).error,
            None
        );
        assert!(other.call(Command::Read, none, offset, max, &[]).data == data);
    }
}

/// Sets `SO_RCVBUF` on `stream`.
pub fn set_receive_buffer(stream: &std::net::TcpStream, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: the option value is a live c_int of the size passed; the descriptor is open.
    let done = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(done, 0, "{}", std::io::Error::last_os_error());
}

/// The process's pinned memory, in KiB.
pub fn pinned_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmPin:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .map(|kib| kib.trim().parse().unwrap())
        .expect("a VmPin line in /proc/self/status")
}
