//! RIO-style raw queues without an executor: an adapter with two completion queues, a pool of
//! registered buffers, one work queue per socket, and a CqSet reaping both CQs.
//!
//! A client socket sends numbered messages to a server socket over loopback; the server echoes
//! each one back with a zero-copy send. Every buffer goes back to the pool with its operation's
//! final completion.
//!
//! Run: `cargo run -p regio-adapters --example rio_queues`

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use regio_adapters::{Adapter, Config, CqSet, Op, Target};
use regio_pool::{Message, MessagePool};

const ROUNDS: u64 = 8;
const RECV: u64 = 1 << 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let adapter = Adapter::<Message>::new(Config::default().rings(2))?;
    println!(
        "adapter up: sqpoll={} buffer cloning={}",
        adapter.sqpoll(),
        adapter.buffer_cloning()
    );
    let pool = MessagePool::builder().class(2048, 32).build()?;
    pool.attach(adapter.registrar())?;

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    // One request queue per socket (RIOCreateRequestQueue), on different completion queues.
    let cwq = adapter.work_queue(0, Target::Fd(client.as_raw_fd()), 8, 8)?;
    let swq = adapter.work_queue(1, Target::Fd(server.as_raw_fd()), 8, 8)?;
    let set = CqSet::new(adapter.rings())?;

    let mut echoed = 0;
    let mut out = Vec::new();
    for round in 0..ROUNDS {
        let mut msg = pool.try_acquire()?;
        let text = format!("message {round}");
        msg.as_mut_slice()[..text.len()].copy_from_slice(text.as_bytes());
        msg.descriptor_mut().truncate(text.len());
        cwq.post(Op::send(msg, 0, round))?;
        swq.post(Op::recv(pool.try_acquire()?, 0, RECV | round))?;
        // Reap both CQs until the echo for this round is back on the client side.
        let mut done = false;
        while !done {
            out.clear();
            set.wait(&mut out, 16, Some(Duration::from_secs(5)))?;
            for c in out.drain(..) {
                match (c.wq, c.cookie) {
                    (Some(wq), cookie) if wq == swq.id() && cookie & RECV != 0 => {
                        // The server received: echo the same registered buffer, zero-copy.
                        let mut buf = c.buf.expect("final completion");
                        buf.descriptor_mut().truncate(c.result as usize);
                        swq.post(Op::send_zc(buf, 0, cookie & !RECV))?;
                    }
                    (Some(wq), _) if wq == swq.id() && c.is_notification() => {
                        // F_NOTIF: the kernel is done with the echoed buffer; it goes back now.
                        drop(c.buf);
                        echoed += 1;
                        done = true;
                    }
                    _ => {}
                }
            }
        }
    }
    let mut echo = vec![0u8; 1024];
    let n = std::io::Read::read(&mut &client, &mut echo)?;
    println!(
        "echoed {echoed} messages; client read back {:?}...",
        String::from_utf8_lossy(&echo[..n.min(20)])
    );
    println!("stats: {:?}", adapter.stats());
    println!("pool: {} of 32 buffers free", pool.available(0));
    Ok(())
}
