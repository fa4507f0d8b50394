//! Hostile and broken clients against the in-process server: each test is an attack that once
//! broke it (its doc comment says how), kept as a regression test.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{start, Harness};
use regio_nbd::proto::{Command, CommandFlags};
use regio_nbd::target::Export;

const MIB: u64 = 1 << 20;

fn memory(size: u64) -> Export {
    Export::memory("", size, false).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

/// Shuts `h` down, giving connections a second before they are cut, and waits (a generous
/// bound, not a timing) for the end; panics if it does not come.
fn shut_down(h: &Harness) {
    h.server.shutdown();
    let finished = h.rt.block_on(regio_runtime::time::timeout(
        Duration::from_secs(120),
        h.server.finish_within(Duration::from_secs(1)),
    ));
    assert!(
        matches!(finished, Ok(Ok(()))),
        "finish did not end: {finished:?} ({})",
        h.server.stats()
    );
}

/// A client that stops reading its replies must not hold a graceful shutdown forever: its
/// writer is stuck in a send the client never drains. Before the fix `finish` never returned
/// (the CLI gave up after its grace period and exited without flushing the exports).
#[test]
fn shutdown_ends_with_a_client_that_stopped_reading() {
    let Some(h) = start(vec![memory(8 * MIB)], 8) else {
        return;
    };
    let none = CommandFlags::empty();
    let max = h.server.max_payload();
    let mut stalled = h.open("", true);
    let data = pattern(max as usize, 1);
    assert_eq!(
        stalled.call(Command::Write, none, 0, max, &data).error,
        None
    );
    // Far more reply bytes than the sockets hold, never read.
    for i in 0..64 {
        stalled.request(Command::Read, none, i, 0, max, &[]);
    }
    // Some of those replies are stuck in a send: the server has read every request.
    let mut other = h.open("", false);
    assert_eq!(other.call(Command::Flush, none, 0, 0, &[]).error, None);
    shut_down(&h);
    assert!(other.is_closed());
    // The server closed the connection: what it had sent, then the end.
    let mut rest = Vec::new();
    let end = std::io::Read::read_to_end(&mut stalled.stream, &mut rest);
    assert!(
        end.is_ok() || end.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the cut connection ends"
    );
    drop(stalled);
    h.assert_pool_full();
}

/// A client that sends a WRITE's header and half its payload, then neither sends nor closes,
/// must not hold a graceful shutdown forever: the reader waits for the rest of the payload.
/// Before the fix `finish` never returned.
#[test]
fn shutdown_ends_with_a_write_payload_cut_off() {
    let Some(h) = start(vec![memory(8 * MIB)], 8) else {
        return;
    };
    let max = h.server.max_payload();
    let mut cut = h.open("", false);
    cut.request(
        Command::Write,
        CommandFlags::empty(),
        1,
        0,
        max,
        &vec![5; max as usize / 2],
    );
    cut.stream.flush().unwrap();
    // The server is serving (and has taken the half payload, or will).
    let mut other = h.open("", false);
    assert_eq!(
        other
            .call(Command::Flush, CommandFlags::empty(), 0, 0, &[])
            .error,
        None
    );
    shut_down(&h);
    assert!(cut.is_closed());
    h.assert_pool_full();
}
