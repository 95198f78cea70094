//! A minimal HTTP/1.1 client on one keep-alive connection: hyper's connection API over a
//! `TcpStream`, with no pool in between, so that each bench client is exactly one connection.

use std::net::SocketAddr;

use ctxd::app::BoxError;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One connection to the server, opened on first use and again after a transport error.
pub struct Client {
    addr: SocketAddr,
    /// The open connection, or `None` until the next request opens one.
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Client { addr, sender: None }
    }

    /// Sends `request` and reads the whole response. The connection is kept only when the
    /// exchange succeeded.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), BoxError> {
        let mut sender = match self.sender.take() {
            Some(sender) => sender,
            None => connect(self.addr).await?,
        };
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        self.sender = Some(sender);
        Ok((status, body))
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    // Drives the connection; it ends when the sender is dropped or the server hangs up.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// A request to the server at `addr`, with a JSON body when `body` is not empty.
pub fn request(
    method: Method,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path).header(HOST, addr.to_string());
    if !body.is_empty() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::from(body))).expect("the bench builds valid requests")
}

/// How long `fetch` waits for an answer.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// One request on a connection of its own, for setup and metrics; fails unless the status is 2xx.
pub async fn fetch(
    method: Method,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Bytes, BoxError> {
    let request = request(method.clone(), addr, path, headers, body);
    // Bounded: a server that stopped answering (a failover, a hung node) fails the call rather
    // than the run.
    let answer = tokio::time::timeout(FETCH_TIMEOUT, Client::new(addr).send(request)).await;
    let (status, body) =
        answer.map_err(|_| format!("{method} {path}: no answer within {FETCH_TIMEOUT:?}"))??;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(format!("{method} {path}: {status}: {text}").into());
    }
    Ok(body)
}
