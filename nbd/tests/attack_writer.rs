//! Attacks on the writer's stall and acknowledgement logic: clients that half-close, stop
//! reading, or read slowly while replies are queued, over zero-copy and copied sends. After
//! each, the server goes on serving and every buffer comes back.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::{memory, pattern, start, Client, Harness};
use regio_nbd::proto::{Command, CommandFlags, REQUEST_HEADER_LEN};
use regio_nbd::target::Export;
use regio_testkit::TempFile;

const MIB: u64 = 1 << 20;
const KIB: u32 = 1024;
const NONE: CommandFlags = CommandFlags::empty();

/// The two kinds of export: sent from the export itself, or from the buffers a read filled.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    File,
}

/// A server of one 4 MiB export of `kind` that sends every READ zero-copy, whose first MiB
/// holds `pattern(MIB, 7)`; the file (if any) lives as long as the harness.
fn serve(kind: Kind) -> Option<(Harness, Option<TempFile>, Vec<u8>)> {
    let (export, file) = match kind {
        Kind::Memory => (memory("", 4 * MIB), None),
        Kind::File => {
            let file = TempFile::filled("nbd-attack-writer", 0, 4 * MIB as usize);
            (Export::file("", file.path(), false).unwrap(), Some(file))
        }
    };
    let h = start(vec![export], 8)?;
    h.server.set_zero_copy_min(0);
    let data = pattern(MIB as usize, 7);
    let mut c = h.open("", false);
    for at in (0..MIB as usize).step_by(128 * KIB as usize) {
        let piece = &data[at..at + 128 * KIB as usize];
        let done = c.call(Command::Write, NONE, at as u64, 128 * KIB, piece);
        assert_eq!(done.error, None);
    }
    Some((h, file, data))
}

/// A client in transmission whose first zero-copy READ was read (the writer waits for the
/// first one's buffer back; later ones resolve once the socket took them).
fn zero_copy_client(h: &Harness, data: &[u8]) -> Client {
    let mut c = h.open("", false);
    let first = c.call(Command::Read, NONE, 0, 64 * KIB, &[]);
    assert!(first.error.is_none() && first.data == data[..64 * KIB as usize]);
    c
}

/// After an attack: the connections are gone, every buffer is back, and a new client is
/// served.
fn still_serves(h: &Harness, data: &[u8]) {
    h.wait_for_stats("the attacking connection ended", |s| s.connections == 0);
    h.assert_pool_full();
    let mut c = h.open("", true);
    let got = c.call(Command::Read, NONE, 4096, 128 * KIB, &[]);
    assert!(got.error.is_none() && got.data == data[4096..4096 + 128 * KIB as usize]);
    drop(c);
    h.assert_pool_full();
}

/// Whether the server closed (or reset) `stream`, reading what is left of it.
fn closed_by_the_server(stream: &mut std::net::TcpStream) -> bool {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// A client that sends its READs, shuts its sending side down (`shutdown(SHUT_WR)`: the
/// server's reader sees the end of the requests) and then reads: every reply arrives, right,
/// then the end of the connection.
#[test]
fn a_client_that_half_closes_gets_every_reply_then_the_end() {
    for kind in [Kind::Memory, Kind::File] {
        let Some((h, _file, data)) = serve(kind) else {
            return;
        };
        let mut c = zero_copy_client(&h, &data);
        let reads: Vec<(u64, u32)> = (0..12).map(|i| (i * 70_001, 40 * KIB + i as u32)).collect();
        for (cookie, &(at, len)) in reads.iter().enumerate() {
            c.request(Command::Read, NONE, cookie as u64, at, len, &[]);
        }
        c.stream.shutdown(Shutdown::Write).unwrap();
        for _ in &reads {
            let reply = c.reply();
            let (at, len) = reads[reply.cookie as usize];
            assert_eq!(reply.error, None, "{kind:?}");
            assert!(
                reply.data == data[at as usize..at as usize + len as usize],
                "{kind:?}: {at}+{len}"
            );
        }
        assert!(
            c.is_closed(),
            "{kind:?}: the server closes after the last reply"
        );
        still_serves(&h, &data);
        h.stop();
    }
}

/// A client that sends its READs, shuts its sending side down and never reads: the replies
/// it leaves unacknowledged keep their memory until its connection is cut, after the stall
/// timeout; then every buffer is back.
#[test]
fn a_client_that_half_closes_and_never_reads_is_cut() {
    for kind in [Kind::Memory, Kind::File] {
        let Some((h, _file, data)) = serve(kind) else {
            return;
        };
        h.server.set_stall_timeout(Duration::from_secs(1));
        let mut c = zero_copy_client(&h, &data);
        common::set_receive_buffer(&c.stream, 4096);
        for i in 0..8_u64 {
            c.request(Command::Read, NONE, i, i * 100_000, 128 * KIB, &[]);
        }
        c.stream.shutdown(Shutdown::Write).unwrap();
        still_serves(&h, &data);
        assert!(closed_by_the_server(&mut c.stream), "{kind:?}");
        h.stop();
    }
}

/// A client that stops in the middle of a WRITE's payload and shuts its sending side down,
/// with READ replies queued for it: the connection ends, nothing is written, every buffer
/// comes back.
#[test]
fn a_client_that_half_closes_in_the_middle_of_a_write_payload() {
    for kind in [Kind::Memory, Kind::File] {
        let Some((h, _file, data)) = serve(kind) else {
            return;
        };
        let mut c = zero_copy_client(&h, &data);
        for i in 0..4_u64 {
            c.request(Command::Read, NONE, i, i * 100_000, 64 * KIB, &[]);
        }
        let mut head = [0; REQUEST_HEADER_LEN];
        regio_nbd::proto::Request {
            flags: NONE,
            command: Command::Write,
            cookie: regio_nbd::proto::Cookie(9),
            offset: 2 * MIB,
            length: 128 * KIB,
        }
        .encode(&mut head);
        c.stream.write_all(&head).unwrap();
        c.stream.write_all(&[0xaa; 1000]).unwrap();
        c.stream.shutdown(Shutdown::Write).unwrap();
        for _ in 0..4 {
            assert_eq!(c.reply().error, None, "{kind:?}");
        }
        assert!(closed_by_the_server(&mut c.stream), "{kind:?}");
        still_serves(&h, &data);
        let mut check = h.open("", false);
        let there = check.call(Command::Read, NONE, 2 * MIB, 1000, &[]);
        assert!(
            there.data.iter().all(|&b| b == 0),
            "{kind:?}: a cut WRITE wrote"
        );
        drop(check);
        h.stop();
    }
}

/// Asks for 16 READs of 24 KiB, sends `then` (a DISC, or nothing), and reads the replies
/// 4 KiB at a time, 100 ms apart (a client on a slow link): far less than the stall timeout
/// (2 s) between two reads, far more than it to read them all. Every reply arrives, right.
fn read_slowly(h: &Harness, data: &[u8], then: Option<Command>) {
    h.server.set_stall_timeout(Duration::from_secs(2));
    let mut c = zero_copy_client(h, data);
    common::set_receive_buffer(&c.stream, 4096);
    let reads: Vec<(u64, u32)> = (0..16).map(|i| (i * 50_000, 24 * KIB)).collect();
    for (cookie, &(at, len)) in reads.iter().enumerate() {
        c.request(Command::Read, NONE, cookie as u64, at, len, &[]);
    }
    if let Some(command) = then {
        c.request(command, NONE, 99, 0, 0, &[]);
    }
    let total: usize = reads.iter().map(|&(_, len)| 16 + len as usize).sum();
    let mut got = Vec::new();
    let mut piece = [0; 4096];
    while got.len() < total {
        let n = c
            .stream
            .read(&mut piece)
            .unwrap_or_else(|e| panic!("cut after {} of {total} bytes: {e}", got.len()));
        assert!(n > 0, "closed after {} of {total} bytes", got.len());
        got.extend_from_slice(&piece[..n]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut at = 0;
    for &(offset, len) in &reads {
        let body = &got[at + 16..at + 16 + len as usize];
        assert!(body == &data[offset as usize..offset as usize + len as usize]);
        at += 16 + len as usize;
    }
}

/// A client on a slow link that keeps reading while its replies wait in the server's socket
/// (the writer has nothing more to send): its bytes are acknowledged bit by bit, and its
/// connection is not cut while it makes progress. (The writer cut a connection whose client
/// left any bytes unacknowledged for the stall timeout while it had nothing to send, which
/// a client slower than the socket's queue over the stall timeout always did.)
#[test]
fn a_client_that_reads_slowly_but_steadily_is_not_cut() {
    let Some((h, _file, data)) = serve(Kind::Memory) else {
        return;
    };
    read_slowly(&h, &data, None);
    still_serves(&h, &data);
    h.stop();
}

/// As above, with a DISC after the READs: before it closes, the writer waits for the client
/// to acknowledge its replies, and a client that keeps reading gets them all. (The writer
/// reset the connection once the stall timeout passed, whatever the client acknowledged
/// meanwhile.)
#[test]
fn a_client_that_disconnects_and_reads_its_last_replies_slowly_gets_them_all() {
    let Some((h, _file, data)) = serve(Kind::Memory) else {
        return;
    };
    read_slowly(&h, &data, Some(Command::Disc));
    still_serves(&h, &data);
    h.stop();
}

/// A client on a Unix socket that shuts its reading side down (which, unlike TCP's, the server
/// sees: its sends fail with `EPIPE`) and goes on sending requests: its replies cannot be
/// sent, so the server ends the connection rather than go on executing requests whose
/// replies it drops, for as long as the client keeps it open.
#[test]
fn a_client_that_can_no_longer_get_replies_is_disconnected() {
    let Some((mut h, _file, data)) = serve(Kind::Memory) else {
        return;
    };
    let path = std::env::temp_dir().join(format!(
        "regio-nbd-attack-writer-{}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    h.listen_unix(&path);
    let mut c = Client::connect_unix(&path);
    c.go("", false);
    let read = c.call(Command::Read, NONE, 0, 4096, &[]);
    assert!(read.error.is_none() && read.data == data[..4096]);
    c.stream.shutdown(Shutdown::Read).unwrap();
    c.request(Command::Read, NONE, 1, 0, 4096, &[]);
    h.wait_for_stats("the connection whose replies fail ended", |s| {
        s.connections == 0
    });
    let mut head = [0; REQUEST_HEADER_LEN];
    regio_nbd::proto::Request {
        flags: NONE,
        command: Command::Read,
        cookie: regio_nbd::proto::Cookie(2),
        offset: 0,
        length: 4096,
    }
    .encode(&mut head);
    assert!(
        c.stream.write_all(&head).is_err(),
        "the server still reads the requests of a client it cannot answer"
    );
    still_serves(&h, &data);
    h.stop();
    std::fs::remove_file(&path).unwrap();
}
