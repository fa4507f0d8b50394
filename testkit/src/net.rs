//! Sockets on the loopback interface.

use std::net::{TcpListener, TcpStream};

/// A connected TCP pair on 127.0.0.1: (client, server).
///
/// # Panics
///
/// If the loopback interface refuses the connection.
pub fn loopback() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind on loopback");
    let client = TcpStream::connect(listener.local_addr().expect("local address"))
        .expect("connect on loopback");
    let (server, _) = listener.accept().expect("accept on loopback");
    (client, server)
}
