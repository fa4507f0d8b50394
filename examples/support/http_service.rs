//! The HTTP service of `examples/hyper_server.rs`, shared with its test (`tests/hyper.rs`):
//! hyper 1.x serving HTTP/1.1 on regio's TCP streams through `regio::runtime::compat`.
//!
//! - `GET /` answers `hello from regio`;
//! - `POST /echo` answers the request's body;
//! - anything else is a 404.

use std::io;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use regio::runtime::compat::Compat;
use regio::runtime::net::{TcpListener, TcpStream};

/// The answer to `GET /`.
pub const HELLO: &str = "hello from regio\n";

/// Accepts connections on `listener` and serves each on a task of its own: `limit`
/// connections, then waits for them all to end and returns how many failed (each failure is
/// printed); without a limit, until an accept fails.
pub async fn serve(listener: TcpListener, limit: Option<usize>) -> io::Result<usize> {
    let mut connections = Vec::new();
    for _ in 0..limit.unwrap_or(usize::MAX) {
        let (stream, _peer) = listener.accept().await?;
        let connection = regio::runtime::spawn(async move {
            serve_connection(stream)
                .await
                .inspect_err(|e| eprintln!("a connection failed: {e:?}"))
        });
        // Without a limit the tasks are detached: each ends with its connection.
        if limit.is_some() {
            connections.push(connection);
        }
    }
    let mut failed = 0;
    for connection in connections {
        if !matches!(connection.await, Ok(Ok(()))) {
            failed += 1;
        }
    }
    Ok(failed)
}

/// Serves one connection until the client closes it. hyper reads and writes through the
/// `Compat` (tokio's I/O traits, which hyper-util's `TokioIo` turns into hyper's).
async fn serve_connection(stream: TcpStream) -> Result<(), hyper::Error> {
    stream.set_nodelay(true).ok();
    let io = TokioIo::new(Compat::new(stream).await);
    hyper::server::conn::http1::Builder::new()
        .serve_connection(io, hyper::service::service_fn(respond))
        .await
}

async fn respond(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => Response::new(Full::new(Bytes::from_static(HELLO.as_bytes()))),
        (&Method::POST, "/echo") => {
            let body = req.into_body().collect().await?.to_bytes();
            Response::new(Full::new(body))
        }
        _ => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    };
    Ok(response)
}
