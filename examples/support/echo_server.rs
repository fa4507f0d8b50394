//! The echo server of `examples/echo.rs`, shared with the echo benchmark (`benches/echo.rs`),
//! which runs it in a child process: connections come from one multishot accept
//! (`Listener::incoming`), and every connection gets a task that receives into a registered pool
//! buffer and sends the same buffer back. The runtime installs each connection in a fixed-file
//! slot on its first receive (while slots are free), so its receives and sends name the slot.

use std::io;
use std::time::Duration;

use regio::runtime::net::{TcpListener, TcpStream};
use regio::runtime::{self};

/// How long the SQPOLL kernel thread of the server's `RingMode::SqPoll` spins without work
/// before it sleeps.
pub const SQPOLL_IDLE: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` for ever, each served by a task of its own.
pub async fn serve(listener: TcpListener) {
    let mut incoming = listener.incoming();
    loop {
        match incoming.accept().await {
            // Detached: the connection's task ends with the connection.
            Ok(stream) => drop(runtime::spawn(serve_connection(stream))),
            // Out of descriptors, a connection reset before it was taken, ...: the listener
            // goes on.
            Err(e) => eprintln!("echo: accept: {e}"),
        }
    }
}

/// Echoes what `stream` receives until the peer closes or the connection fails.
async fn serve_connection(stream: TcpStream) {
    if let Err(e) = echo(&stream).await {
        eprintln!("echo: connection: {e}");
    }
}

async fn echo(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let pool = runtime::pool();
    loop {
        // Waits for a free buffer if every one is in use.
        let msg = pool.acquire().await;
        let (n, mut msg) = stream.recv(msg).await;
        let n = n?;
        if n == 0 {
            return Ok(());
        }
        msg.descriptor_mut().truncate(n);
        stream.send_all(msg).await.0?;
    }
}
