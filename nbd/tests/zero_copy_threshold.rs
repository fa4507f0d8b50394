//! The zero-copy threshold (`Server::set_zero_copy_min`): READ data at or above it goes out
//! with `SEND_ZC` (counted in the statistics), data below it is copied into the gathered
//! bytes; on a memory export and a file export, with simple and with structured replies, over
//! TCP; and a Unix socket copies whatever the threshold.

mod common;

use std::time::{Duration, Instant};

use common::{memory, pattern, start, Client, Harness};
use regio_nbd::proto::{Command, CommandFlags};
use regio_nbd::target::{Export, StatsLine, ZERO_COPY_MIN};
use regio_testkit::TempFile;

const MIB: u64 = 1 << 20;
const KIB: u32 = 1024;

/// The two kinds of export: sent from the export itself, or from the buffers a read filled.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    File,
}

/// A server of one 4 MiB export of `kind` whose first MiB holds `pattern(MIB, 5)`, with the
/// threshold at `zero_copy_min`; the file (if any) lives as long as the harness.
fn serve(kind: Kind, zero_copy_min: usize) -> Option<(Harness, Option<TempFile>, Vec<u8>)> {
    let (export, file) = match kind {
        Kind::Memory => (memory("", 4 * MIB), None),
        Kind::File => {
            let file = TempFile::filled("nbd-zc-threshold", 0, 4 * MIB as usize);
            (Export::file("", file.path(), false).unwrap(), Some(file))
        }
    };
    let h = start(vec![export], 8)?;
    assert_eq!(h.server.zero_copy_min(), ZERO_COPY_MIN, "the default");
    h.server.set_zero_copy_min(zero_copy_min);
    assert_eq!(h.server.zero_copy_min(), zero_copy_min);
    let data = pattern(MIB as usize, 5);
    let mut c = h.open("", false);
    for at in (0..MIB as usize).step_by(128 * KIB as usize) {
        let piece = &data[at..at + 128 * KIB as usize];
        let done = c.call(
            Command::Write,
            CommandFlags::empty(),
            at as u64,
            128 * KIB,
            piece,
        );
        assert_eq!(done.error, None);
    }
    Some((h, file, data))
}

/// Reads `len` bytes at `at` and checks them against `data`.
fn read<S: std::io::Read + std::io::Write>(c: &mut Client<S>, data: &[u8], at: u64, len: u32) {
    let got = c.call(Command::Read, CommandFlags::empty(), at, len, &[]);
    assert_eq!(got.error, None, "{at}+{len}");
    let want = &data[at as usize..at as usize + len as usize];
    assert!(got.data == want, "{at}+{len}: the data read back");
}

/// The statistics once their zero-copy bytes reach `before`'s plus `bytes` (a send is counted
/// once the socket took its bytes, which the worker may learn after the client read the reply;
/// a bounded wait, nothing is timed).
fn settled(h: &Harness, before: &StatsLine, bytes: u64) -> StatsLine {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = h.server.stats();
        if stats.zero_copy_bytes - before.zero_copy_bytes >= bytes {
            return stats;
        }
        assert!(Instant::now() < deadline, "{stats}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// With the threshold at 0, a 512-byte and a 4 KiB READ (at an odd offset too) go out with
/// `SEND_ZC` and read right.
fn every_read_goes_zero_copy(kind: Kind) {
    let Some((h, _file, data)) = serve(kind, 0) else {
        return;
    };
    for structured in [false, true] {
        let mut c = h.open("", structured);
        let before = h.server.stats();
        let reads = [(0, 512), (4096, 4 * KIB), (1000, 4 * KIB), (70_000, 512)];
        for (at, len) in reads {
            read(&mut c, &data, at, len);
        }
        let bytes: u64 = reads.iter().map(|&(_, len)| u64::from(len)).sum();
        let after = settled(&h, &before, bytes);
        assert_eq!(
            after.zero_copy_bytes - before.zero_copy_bytes,
            bytes,
            "{kind:?} structured={structured}"
        );
        assert_eq!(after.zero_copy_sends - before.zero_copy_sends, 4);
        let from_export = after.export_zero_copy_sends - before.export_zero_copy_sends;
        let expected = match kind {
            Kind::Memory => 4,
            Kind::File => 0,
        };
        assert_eq!(
            from_export, expected,
            "{kind:?}: sent from the export itself"
        );
    }
    h.assert_pool_full();
    h.stop();
}

/// With the threshold at 64 KiB, small READs are copied: after them, a 128 KiB READ is all the
/// zero-copy counters see (the writer counts each send before it makes the next, so a
/// zero-copy send of the small ones would be counted by then).
fn small_reads_are_copied_below_the_threshold(kind: Kind) {
    let threshold = 64 * KIB;
    let Some((h, _file, data)) = serve(kind, threshold as usize) else {
        return;
    };
    for structured in [false, true] {
        let mut c = h.open("", structured);
        let before = h.server.stats();
        for (at, len) in [(0, 512), (4096, 4 * KIB), (1000, threshold - 1)] {
            read(&mut c, &data, at, len);
        }
        read(&mut c, &data, 256 * 1024, 2 * threshold);
        let after = settled(&h, &before, u64::from(2 * threshold));
        assert_eq!(
            after.zero_copy_bytes - before.zero_copy_bytes,
            u64::from(2 * threshold),
            "{kind:?} structured={structured}: only the large READ went out zero-copy"
        );
    }
    h.assert_pool_full();
    h.stop();
}

#[test]
fn at_threshold_zero_every_read_of_a_memory_export_goes_zero_copy() {
    every_read_goes_zero_copy(Kind::Memory);
}

#[test]
fn at_threshold_zero_every_read_of_a_file_export_goes_zero_copy() {
    every_read_goes_zero_copy(Kind::File);
}

#[test]
fn below_the_threshold_reads_of_a_memory_export_are_copied() {
    small_reads_are_copied_below_the_threshold(Kind::Memory);
}

#[test]
fn below_the_threshold_reads_of_a_file_export_are_copied() {
    small_reads_are_copied_below_the_threshold(Kind::File);
}

/// The reply's size decides, not its buffers': at a threshold of 96 KiB, a 128 KiB READ of a
/// file export (two 64 KiB pool buffers) goes out zero-copy whole, one send per buffer.
#[test]
fn a_reply_at_the_threshold_goes_zero_copy_whatever_its_buffers() {
    let Some((h, _file, data)) = serve(Kind::File, 96 * 1024) else {
        return;
    };
    let mut c = h.open("", false);
    let before = h.server.stats();
    read(&mut c, &data, 0, 128 * KIB);
    let after = settled(&h, &before, u64::from(128 * KIB));
    assert_eq!(after.zero_copy_bytes - before.zero_copy_bytes, 128 * 1024);
    assert!(
        after.zero_copy_sends - before.zero_copy_sends >= 2,
        "{after}"
    );
    drop(c);
    h.assert_pool_full();
    h.stop();
}

/// A file export over TCP answers READs that span several pool buffers (256 KiB, what nbdcopy
/// asks for, or the largest request the test's small pool allows: several 64 KiB buffers, one
/// zero-copy send each) many times in a row, at the default
/// threshold and at 0, with the right data, and every buffer comes back. The writer sends each
/// buffer once the socket took the one before, without waiting for the client's
/// acknowledgement of it (which a client that delays its ACKs sends tens of milliseconds later:
/// that wait, per buffer, was the bottleneck of such reads).
#[test]
fn reads_across_several_buffers_of_a_file_export_go_zero_copy_in_a_row() {
    const READS: u64 = 48;
    for threshold in [ZERO_COPY_MIN, 0] {
        let Some((h, _file, data)) = serve(Kind::File, threshold) else {
            return;
        };
        let len = h.server.max_payload().min(256 * KIB);
        let buffers = u64::from(len.div_ceil(64 * KIB));
        assert!(buffers >= 3, "a READ of {len} bytes");
        for structured in [false, true] {
            let mut c = h.open("", structured);
            let before = h.server.stats();
            for i in 0..READS {
                // Odd offsets too: a reply's buffers need not be whole.
                let at = (i * 12_345) % (MIB - u64::from(len));
                read(&mut c, &data, at, len);
            }
            let bytes = READS * u64::from(len);
            let after = settled(&h, &before, bytes);
            assert_eq!(after.zero_copy_bytes - before.zero_copy_bytes, bytes);
            assert!(
                after.zero_copy_sends - before.zero_copy_sends >= buffers * READS,
                "threshold {threshold}, structured={structured}: {after}"
            );
        }
        h.assert_pool_full();
        h.stop();
    }
}

/// A threshold above the largest request sends nothing zero-copy, and a new threshold applies
/// to connections that start after it only.
#[test]
fn a_threshold_above_every_request_sends_nothing_zero_copy() {
    let Some((h, _file, data)) = serve(Kind::File, usize::MAX) else {
        return;
    };
    let max = h.server.max_payload();
    let mut before_change = h.open("", true);
    h.server.set_zero_copy_min(0);
    let stats = h.server.stats();
    read(&mut before_change, &data, 0, max.min(MIB as u32));
    read(&mut before_change, &data, 512, 512);
    // A later connection sends zero-copy; its count arriving means the earlier sends are done.
    let mut after_change = h.open("", true);
    read(&mut after_change, &data, 0, 512);
    let after = settled(&h, &stats, 512);
    assert_eq!(after.zero_copy_bytes - stats.zero_copy_bytes, 512);
    drop((before_change, after_change));
    h.assert_pool_full();
    h.stop();
}

/// A Unix socket has no zero-copy sends: at threshold 0 its reads (of both kinds of export)
/// are copied, and read right.
#[test]
fn at_threshold_zero_a_unix_socket_copies() {
    for kind in [Kind::Memory, Kind::File] {
        let Some((mut h, _file, data)) = serve(kind, 0) else {
            return;
        };
        let path = std::env::temp_dir().join(format!(
            "regio-nbd-zc-threshold-{}-{kind:?}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        h.listen_unix(&path);
        for structured in [false, true] {
            let mut u = Client::connect_unix(&path);
            u.go("", structured);
            let before = h.server.stats();
            for (at, len) in [(0, 512), (4096, 4 * KIB), (0, 128 * KIB), (9, 4 * KIB)] {
                read(&mut u, &data, at, len);
            }
            assert_eq!(h.server.stats().zero_copy_sends, before.zero_copy_sends);
        }
        h.assert_pool_full();
        h.stop();
        std::fs::remove_file(&path).unwrap();
    }
}

/// Left unset, the threshold gives a loopback client copies, whatever the size (the kernel
/// copies a loopback zero-copy send anyway); set, it applies to loopback clients too, from
/// their next connection on.
#[test]
fn a_loopback_client_gets_copies_until_the_threshold_is_set() {
    let Some(h) = common::start_unset(vec![memory("", 4 * MIB)], 8) else {
        return;
    };
    assert_eq!(h.server.zero_copy_min(), ZERO_COPY_MIN);
    let data = pattern(128 * KIB as usize, 9);
    let mut c = h.open("", false);
    let done = c.call(
        Command::Write,
        CommandFlags::empty(),
        0,
        data.len() as u32,
        &data,
    );
    assert_eq!(done.error, None);
    let before = h.server.stats();
    read(&mut c, &data, 0, 128 * KIB);
    read(&mut c, &data, 64 * KIB as u64, 64 * KIB);
    assert_eq!(
        h.server.stats().zero_copy_sends,
        before.zero_copy_sends,
        "no zero-copy send to a loopback client by default"
    );
    h.server.set_zero_copy_min(ZERO_COPY_MIN);
    let mut next = h.open("", false);
    let before = h.server.stats();
    read(&mut next, &data, 0, 64 * KIB);
    let after = settled(&h, &before, 64 * u64::from(KIB));
    assert!(after.zero_copy_sends > before.zero_copy_sends);
    h.stop();
}

/// A listener bound to `listen` and a client of it from `connect` (an address of the same
/// family, or an IPv4 one for a dual-stack `[::]` listener): the server's end, or `None`
/// (skipped) where this host cannot bind or reach them.
fn accepted(listen: &str, connect: &str) -> Option<(std::net::TcpStream, std::net::TcpStream)> {
    let listener = match std::net::TcpListener::bind(listen) {
        Ok(listener) => listener,
        Err(e) => {
            regio_testkit::skip(&format!("cannot listen on {listen}: {e}"));
            return None;
        }
    };
    let port = listener.local_addr().unwrap().port();
    let ip: std::net::IpAddr = connect.parse().unwrap();
    let client = match std::net::TcpStream::connect((ip, port)) {
        Ok(client) => client,
        Err(e) => {
            regio_testkit::skip(&format!("cannot reach {listen} from {connect}: {e}"));
            return None;
        }
    };
    Some((client, listener.accept().unwrap().0))
}

/// Every form of a loopback peer is one: 127.0.0.1 and the rest of 127.0.0.0/8, `::1`, and
/// an IPv4 loopback client of a dual-stack listener (`::ffff:127.0.0.3`). A Unix socket is
/// none (it has no zero-copy sends at all).
#[test]
fn every_form_of_a_loopback_peer_is_one() {
    use regio_nbd::target::Connection;
    let Some(h) = common::start_unset(vec![memory("", MIB)], 8) else {
        return;
    };
    let cases = [
        ("127.0.0.1:0", "127.0.0.1"),
        ("127.0.0.2:0", "127.0.0.2"),
        ("[::1]:0", "::1"),
        ("[::]:0", "127.0.0.3"),
    ];
    h.rt.block_on(async {
        for (listen, connect) in cases {
            let Some((client, server)) = accepted(listen, connect) else {
                continue;
            };
            let peer = server.peer_addr().unwrap();
            let stream = regio_runtime::net::TcpStream::from_std(server).unwrap();
            assert!(
                stream.peer_is_loopback(),
                "{listen} from {connect}: {peer} is on the loopback interface"
            );
            drop(client);
        }
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let unix = regio_runtime::net::UnixStream::from_std(a).unwrap();
        assert!(!unix.peer_is_loopback());
    });
    h.stop();
}

/// Left unset, the threshold gives copies to loopback clients of every form (from `::1`, and
/// from 127.0.0.2 to a dual-stack listener); set, it applies to them all.
#[test]
fn loopback_clients_of_every_form_get_copies_until_the_threshold_is_set() {
    let Some(mut h) = common::start_unset(vec![memory("", 4 * MIB)], 8) else {
        return;
    };
    let mut addrs = Vec::new();
    for (listen, ip) in [("[::1]:0", "::1"), ("[::]:0", "127.0.0.2")] {
        match h.listen_tcp(listen) {
            Ok(bound) => addrs.push(std::net::SocketAddr::new(ip.parse().unwrap(), bound.port())),
            Err(e) => regio_testkit::skip(&format!("cannot listen on {listen}: {e}")),
        }
    }
    let data = pattern(128 * KIB as usize, 13);
    let mut c = h.open("", false);
    let done = c.call(Command::Write, CommandFlags::empty(), 0, 128 * KIB, &data);
    assert_eq!(done.error, None);
    let before = h.server.stats();
    for &addr in &addrs {
        let mut c = Client::connect(addr, 3);
        c.go("", false);
        read(&mut c, &data, 0, 128 * KIB);
        read(&mut c, &data, 4096, 64 * KIB);
    }
    h.server.set_zero_copy_min(ZERO_COPY_MIN);
    for &addr in &addrs {
        let mut c = Client::connect(addr, 3);
        c.go("", false);
        read(&mut c, &data, 0, 64 * KIB);
    }
    let bytes = 64 * u64::from(KIB) * addrs.len() as u64;
    let after = settled(&h, &before, bytes);
    assert_eq!(
        after.zero_copy_bytes - before.zero_copy_bytes,
        bytes,
        "only the reads after the threshold was set went out zero-copy"
    );
    drop(c);
    h.assert_pool_full();
    h.stop();
}

/// Moves the calling thread (and the threads and processes it starts from now on) into a
/// network namespace of its own, whose loopback interface is up and also has 10.11.12.13: an
/// address of this host outside 127.0.0.0/8. `false` (skipped) where that cannot be done (no
/// privilege, no `ip`).
fn own_network_with_another_local_address() -> bool {
    // SAFETY: unshare takes no pointers; CLONE_NEWNET moves the calling thread alone.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        regio_testkit::skip(&format!("cannot make a network namespace: {e}"));
        return false;
    }
    for args in [
        &["link", "set", "lo", "up"][..],
        &["addr", "add", "10.11.12.13/32", "dev", "lo"],
    ] {
        match std::process::Command::new("ip").args(args).status() {
            Ok(status) if status.success() => {}
            other => {
                regio_testkit::skip(&format!("ip {args:?}: {other:?}"));
                return false;
            }
        }
    }
    true
}

/// A client of this host that reaches the server at another of its addresses than a
/// 127.0.0.0/8 one (the host's own LAN address, say) is on the loopback interface too: the
/// kernel routes a host's traffic to itself through it whatever the address, and copies the
/// bytes of zero-copy sends there as on 127.0.0.1. Such a connection's two ends have the
/// same address.
#[test]
fn a_client_of_this_host_at_another_of_its_addresses_is_on_loopback() {
    use regio_nbd::target::Connection;
    // In a thread of its own: the namespace stays with the thread.
    std::thread::spawn(|| {
        if !own_network_with_another_local_address() {
            return;
        }
        let Some(h) = common::start_unset(vec![memory("", MIB)], 8) else {
            return;
        };
        h.rt.block_on(async {
            let (client, server) = accepted("10.11.12.13:0", "10.11.12.13").unwrap();
            let peer = server.peer_addr().unwrap();
            let stream = regio_runtime::net::TcpStream::from_std(server).unwrap();
            assert!(stream.peer_is_loopback(), "{peer} is this host");
            drop(client);
        });
        h.stop();
    })
    .join()
    .unwrap();
}
