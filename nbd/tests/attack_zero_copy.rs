//! Attacks on a registered memory export's zero-copy READs: writes, trims and zeroes racing
//! reads of the same pages, and a client that stops reading its zero-copy replies but keeps its
//! connection open.

mod common;

use std::process::Command as Process;
use std::time::Duration;

use common::{memory, pattern, pinned_kib, start, start_unset, wait_for, Client};
use regio_nbd::proto::{Command, CommandFlags};

const MIB: u64 = 1 << 20;
const KIB: u32 = 1024;
const CHILD_ENV: &str = "REGIO_NBD_ATTACK_ZC_CHILD";

/// Two clients write two patterns, trim and zero the same 1 MiB while two others read it in
/// large (zero-copy) and small (copied) pieces, up to the maximum payload. NBD lets a read overlapping a write in flight
/// see either, so every byte read must be one of the two patterns' or zero: never another
/// memory's. Nothing fails, and every buffer comes back.
#[test]
fn writes_trims_and_zeroes_racing_zero_copy_reads_of_the_same_pages() {
    let Some(h) = start(vec![memory("", 4 * MIB)], 8) else {
        return;
    };
    // Registered once the server serves: by the time a client is in transmission.
    drop(h.open("", false));
    assert!(h.server.exports().next().unwrap().is_zero_copy());
    let none = CommandFlags::empty();
    let (a, b) = (pattern(MIB as usize, 11), pattern(MIB as usize, 200));
    let addr = h.addr;
    let piece = 128 * KIB;
    let max = h.server.max_payload();
    std::thread::scope(|scope| {
        for (writer, data) in [&a, &b].into_iter().enumerate() {
            scope.spawn(move || {
                let mut c = Client::connect(addr, 3);
                c.go("", writer == 1);
                for round in 0..24_u32 {
                    for at in (0..MIB).step_by(piece as usize) {
                        let bytes = &data[at as usize..(at + u64::from(piece)) as usize];
                        let done = match (round + writer as u32) % 3 {
                            0 => c.call(Command::Write, none, at, piece, bytes),
                            1 => c.call(Command::Trim, none, at, piece, &[]),
                            _ => c.call(Command::WriteZeroes, none, at + 100, piece - 200, &[]),
                        };
                        assert_eq!(done.error, None, "writer {writer} round {round} at {at}");
                    }
                }
            });
        }
        for reader in 0..2_u8 {
            let (a, b) = (&a, &b);
            scope.spawn(move || {
                let mut c = Client::connect(addr, 3);
                c.go("", reader == 1);
                for round in 0..24 {
                    for (at, len) in [(0, max), (MIB - 150_000, 150_000), (77, 5000), (MIB - 1, 1)]
                    {
                        let got = c.call(Command::Read, none, at, len, &[]);
                        assert_eq!(got.error, None, "{at}+{len} of max {max}");
                        assert_eq!(got.data.len(), len as usize);
                        for (i, &byte) in got.data.iter().enumerate() {
                            let k = at as usize + i;
                            assert!(
                                byte == 0 || byte == a[k] || byte == b[k],
                                "reader {reader} round {round}: byte {k} is {byte}"
                            );
                        }
                    }
                }
            });
        }
    });
    h.assert_pool_full();
    h.stop();
}

/// In a process of its own (`VmPin` counts the whole process): a client asks for many large
/// reads, never reads a reply, and never closes. Its connection is cut, by the stall timeout
/// (`cut_by_stall`) or by the end of a shutdown's grace; the sends from the export that were
/// under way (zero-copy, or `copied` by the kernel as a loopback client gets them by default)
/// must then let go of it, so that the server, once stopped, unregisters (and unpins) it
/// though that client is still connected.
fn stalled_child(cut_by_stall: bool, copied: bool) {
    let exports = vec![memory("", 16 * MIB)];
    let started = if copied {
        start_unset(exports, 8)
    } else {
        start(exports, 8)
    };
    let Some(h) = started else {
        panic!("the parent saw io_uring work");
    };
    if cut_by_stall {
        h.server.set_stall_timeout(Duration::from_millis(300));
    }
    drop(h.open("", false));
    assert!(h.server.exports().next().unwrap().is_zero_copy());
    let data = pattern(h.server.max_payload() as usize, 4);
    let stalled = h.stalled_client(&data);
    if cut_by_stall {
        // Its connection ends, its buffers come back.
        wait_for(
            || format!("the stalled connection was not cut: {}", h.server.stats()),
            || h.server.stats().connections == 0,
        );
        h.assert_pool_full();
    } else {
        h.server.shutdown();
        let finished =
            h.rt.block_on(h.server.finish_within(Duration::from_millis(300)));
        assert_eq!(finished, Ok(()));
    }
    let serving = pinned_kib();
    let rt = h.stop_keeping_runtime();
    wait_for(
        || format!("{} KiB pinned, {serving} KiB while serving", pinned_kib()),
        || pinned_kib() + 16 * 1024 <= serving,
    );
    drop((stalled, rt));
    println!("CHILD-OK: unpinned");
}

#[test]
fn a_client_that_never_reads_nor_closes_does_not_keep_the_export_pinned() {
    if let Some(how) = std::env::var_os(CHILD_ENV) {
        let how = how.to_string_lossy();
        stalled_child(how.starts_with("stall"), how.ends_with("copied"));
        return;
    }
    // Whether io_uring works is decided here, where a skip is reported.
    let Some(h) = start(vec![memory("", MIB)], 8) else {
        return;
    };
    h.stop();
    for how in ["stall", "shutdown", "stall-copied", "shutdown-copied"] {
        let out = Process::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_client_that_never_reads_nor_closes_does_not_keep_the_export_pinned",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, how)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("CHILD-OK: unpinned"),
            "child ({how}) failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A flood of connections that never say a word (each finding every control pair taken asks
/// the oldest handshake to close) never closes a connection already in transmission: its
/// zero-copy reads go on, and once the flood is gone a new client is served.
#[test]
fn a_connect_flood_evicts_handshakes_but_never_a_connection_in_transmission() {
    // A sixteenth of the pool: 64 control pairs.
    let Some(h) = start(vec![memory("", 4 * MIB)], 16) else {
        return;
    };
    let none = CommandFlags::empty();
    let max = h.server.max_payload();
    let data = pattern(max as usize, 21);
    let mut serving = h.open("", true);
    assert_eq!(
        serving.call(Command::Write, none, 0, max, &data).error,
        None
    );
    let mut flood = Vec::new();
    for wave in 0..4 {
        flood.extend((0..100).map(|_| std::net::TcpStream::connect(h.addr).unwrap()));
        let got = serving.call(Command::Read, none, 0, max, &[]);
        assert!(got.error.is_none() && got.data == data, "wave {wave}");
    }
    drop(flood);
    let mut late = h.open("", false);
    let got = late.call(Command::Read, none, 0, max, &[]);
    assert!(got.error.is_none() && got.data == data);
    drop((serving, late));
    h.assert_pool_full();
    h.stop();
}
