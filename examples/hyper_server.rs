//! An HTTP server on regio: hyper 1.x over regio's TCP streams, through the compatibility layer
//! (`regio::runtime::compat`, which copies each byte once between hyper's buffers and the
//! registered ones). The service is in `support/http_service.rs`, which the test
//! `tests/hyper.rs` runs too.
//!
//! Run: `cargo run --release --example hyper_server [-- ADDRESS]` (default 127.0.0.1:8080),
//! then `curl http://127.0.0.1:8080/` or `curl --data-binary hi http://127.0.0.1:8080/echo`.

#[path = "support/http_service.rs"]
mod http_service;

use regio::runtime::net::TcpListener;

#[regio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listener = TcpListener::bind(addr.as_str())?;
    println!("serving http://{}/", listener.local_addr()?);
    http_service::serve(listener, None).await.map(drop)
}
