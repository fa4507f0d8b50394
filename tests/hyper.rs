//! hyper 1.x serving HTTP/1.1 on regio through the compatibility layer (the service of
//! `examples/hyper_server.rs`), answered right to two real clients: curl, and hyper's own client
//! running on regio. curl missing is a skip, a failure under `REGIO_REQUIRE_ALL=1`.

#[path = "../examples/support/http_service.rs"]
mod http_service;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use regio::runtime::compat::Compat;
use regio::runtime::net::{TcpListener, TcpStream};
use regio::runtime::{JoinHandle, Runtime};

/// Prints a skip, or fails when REGIO_REQUIRE_ALL=1.
fn skip(reason: &str) {
    assert!(
        std::env::var("REGIO_REQUIRE_ALL").as_deref() != Ok("1"),
        "required test skipped: {reason}"
    );
    println!("SKIP: {reason}");
}

/// A two-worker runtime with a small pool, or `None` (skipped) where io_uring is disabled.
fn runtime() -> Option<Runtime> {
    match Runtime::builder()
        .worker_threads(2)
        .pool_class(4096, 64)
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) if e.is_io_uring_disabled() => {
            skip(&e.to_string());
            None
        }
        Err(e) => panic!("cannot start the regio runtime: {e}"),
    }
}

/// The example's server on a free loopback port, for `connections` connections: its address,
/// and its task, which gives the number of connections that failed.
fn start_server(
    rt: &Runtime,
    connections: usize,
) -> (SocketAddr, JoinHandle<std::io::Result<usize>>) {
    let listener = rt
        .block_on(rt.spawn(async { TcpListener::bind("127.0.0.1:0") }))
        .unwrap()
        .unwrap();
    let addr = listener.local_addr().unwrap();
    (
        addr,
        rt.spawn(http_service::serve(listener, Some(connections))),
    )
}

/// Waits (up to 10 s) until every buffer is back in the runtime's pool: each connection's
/// `Compat` holds two until the connection ends.
fn assert_buffers_come_back(rt: &Runtime) {
    let pool = rt.pool();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.available(0) != pool.capacity(0) {
        assert!(
            Instant::now() < deadline,
            "{} buffers never came back to the pool",
            pool.capacity(0) - pool.available(0)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs curl with `args` and the URL of `path` on `addr`: its standard output, or `None` when
/// curl is not installed.
fn curl(addr: SocketAddr, path: &str, args: &[&str]) -> Option<String> {
    let out = match Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "30"])
        .args(args)
        .arg(format!("http://{addr}{path}"))
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("running curl: {e}"),
    };
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("a UTF-8 answer"))
}

#[test]
fn curl_gets_the_right_answers_from_hyper_on_regio() {
    let Some(rt) = runtime() else { return };
    let (addr, server) = start_server(&rt, 3);
    let Some(hello) = curl(addr, "/", &[]) else {
        server.abort();
        skip("curl is not installed (apt-get install curl)");
        return;
    };
    assert_eq!(hello, http_service::HELLO);
    let body = "x".repeat(10_000);
    let echoed = curl(addr, "/echo", &["--data-binary", &body]).unwrap();
    assert_eq!(
        echoed, body,
        "a body larger than a pool buffer comes back whole"
    );
    let status = curl(
        addr,
        "/nothing",
        &["--output", "/dev/null", "--write-out", "%{http_code}"],
    );
    assert_eq!(status.unwrap(), "404");
    assert_eq!(
        rt.block_on(server).unwrap().unwrap(),
        0,
        "every connection ends cleanly"
    );
    assert_buffers_come_back(&rt);
    rt.shutdown(Duration::from_secs(5));
}

#[test]
fn hyper_client_on_regio_gets_the_right_answers() {
    let Some(rt) = runtime() else { return };
    let (addr, server) = start_server(&rt, 1);
    let answers = rt.block_on(rt.spawn(async move {
        let stream = TcpStream::connect(addr).await?;
        let io = TokioIo::new(Compat::new(stream).await);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(std::io::Error::other)?;
        let connection = regio::runtime::spawn(connection);
        let mut answers = Vec::new();
        // Three requests on one kept-alive connection.
        for (method, path, body) in [
            ("GET", "/", ""),
            ("POST", "/echo", "ping over regio"),
            ("GET", "/nothing", ""),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header("host", addr.to_string())
                .body(Full::new(Bytes::from(body)))
                .map_err(std::io::Error::other)?;
            // A kept-alive connection takes the next request once the last response is done.
            sender.ready().await.map_err(std::io::Error::other)?;
            let response = sender
                .send_request(request)
                .await
                .map_err(std::io::Error::other)?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            answers.push((status, String::from_utf8_lossy(&body).into_owned()));
        }
        drop(sender);
        connection
            .await
            .expect("the connection task")
            .map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(answers)
    }));
    let answers = answers.expect("the client task").expect("the requests");
    assert_eq!(
        answers,
        [
            (StatusCode::OK, http_service::HELLO.to_owned()),
            (StatusCode::OK, "ping over regio".to_owned()),
            (StatusCode::NOT_FOUND, "not found\n".to_owned()),
        ]
    );
    assert_eq!(
        rt.block_on(server).unwrap().unwrap(),
        0,
        "every connection ends cleanly"
    );
    assert_buffers_come_back(&rt);
    rt.shutdown(Duration::from_secs(5));
}
