//! The scrape endpoint: a small HTTP/1.1 server on its own thread and tokio runtime, answering
//! `GET /metrics` (and `HEAD`) and nothing else. Hand-written on `httparse` rather than a
//! framework: the tree has hyper only as consulrs' client (0.14), and one path with one method
//! needs a request-head parser, limits and timeouts, which are all here.
//!
//! Limits, so that no client can stall scrapes or grow the daemon: a request head is at most
//! [`MAX_HEAD`] bytes (431) and must arrive within [`HEAD_TIMEOUT`] (408); an idle keep-alive
//! connection is closed after [`IDLE_TIMEOUT`]; writing an answer may take [`WRITE_TIMEOUT`];
//! at most [`MAX_CONNECTIONS`] connections are served at once (more wait in the listen
//! backlog). Concurrent scrapes share one render: a scrape that arrives while one is being
//! rendered waits for the next render, which starts after it arrived, so no answer is older
//! than its request.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Mutex, Semaphore};
use tracing::{debug, info, warn};

/// Longest request head (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers in a request.
const MAX_HEADERS: usize = 32;
/// From a request's first byte (or the connection's start) to its whole head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle keep-alive connection between two scrapes (Prometheus' default interval is 15 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Writing one answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// What a scrape renders: the whole text-format answer.
pub type Render = dyn Fn() -> String + Send + Sync;

/// A running endpoint; dropping it stops the server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Bind `addr` now (so a taken port is the caller's error at start) and serve from a thread
    /// of its own.
    pub fn start(addr: SocketAddr, render: Arc<Render>) -> io::Result<Server> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let local = std_listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(2)
            .thread_name("xdplb-metrics")
            .build()?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("xdplb-metrics".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            warn!(error = %e, "metrics endpoint: cannot serve");
                            return;
                        }
                    };
                    tokio::select! {
                        _ = serve(listener, render) => {}
                        _ = stop_rx => {}
                    }
                });
            })?;
        info!(addr = %local, "metrics endpoint listening");
        Ok(Server {
            addr: local,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The last render and when it started.
type Cache = Mutex<Option<(Instant, Arc<String>)>>;

async fn serve(listener: TcpListener, render: Arc<Render>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let cache: Arc<Cache> = Arc::new(Mutex::new(None));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let render = render.clone();
        let cache = cache.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection(stream, &render, &cache).await {
                debug!(%peer, error = %e, "metrics connection ended");
            }
        });
    }
}

/// What a request asks for.
enum Asked {
    Metrics { head_only: bool, close: bool },
    Error(Status, &'static str),
}

#[derive(Clone, Copy)]
enum Status {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    Timeout,
    HeaderTooLarge,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::Timeout => "408 Request Timeout",
            Status::HeaderTooLarge => "431 Request Header Fields Too Large",
        }
    }
}

async fn connection(mut s: TcpStream, render: &Arc<Render>, cache: &Cache) -> io::Result<()> {
    let _ = s.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut first = true;
    loop {
        let asked = match read_head(&mut s, &mut buf, first).await? {
            None => return Ok(()),
            Some(a) => a,
        };
        first = false;
        match asked {
            Asked::Error(status, why) => {
                let body = format!("{}: {why}\n", status.line());
                let mut extra = "";
                if let Status::MethodNotAllowed = status {
                    extra = "Allow: GET, HEAD\r\n";
                }
                let head = format!(
                    "HTTP/1.1 {}\r\nContent-Type: text/plain; charset=utf-8\r\n{extra}\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    status.line(),
                    body.len()
                );
                write_all(&mut s, &[head.as_bytes(), body.as_bytes()]).await?;
                let _ = s.shutdown().await;
                return Ok(());
            }
            Asked::Metrics { head_only, close } => {
                let body = rendered(render, cache).await?;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n",
                    super::CONTENT_TYPE,
                    body.len(),
                    if close { "Connection: close\r\n" } else { "" }
                );
                let parts: [&[u8]; 2] = [
                    head.as_bytes(),
                    if head_only { b"" } else { body.as_bytes() },
                ];
                write_all(&mut s, &parts).await?;
                if close {
                    let _ = s.shutdown().await;
                    return Ok(());
                }
            }
        }
    }
}

async fn write_all(s: &mut TcpStream, parts: &[&[u8]]) -> io::Result<()> {
    let w = async {
        for p in parts {
            s.write_all(p).await?;
        }
        s.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, w).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

/// The next request's head: `None` when the client closed (or stayed idle) between requests.
/// Bytes after the head stay in `buf` (pipelining).
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>, first: bool) -> io::Result<Option<Asked>> {
    let mut deadline = if first || !buf.is_empty() {
        Some(tokio::time::Instant::now() + HEAD_TIMEOUT)
    } else {
        None
    };
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = head_end(buf) {
            let asked = parse(&buf[..end]);
            buf.drain(..end);
            return Ok(Some(asked));
        }
        if buf.len() > MAX_HEAD {
            return Ok(Some(Asked::Error(
                Status::HeaderTooLarge,
                "the request head is over 8 KiB",
            )));
        }
        let read = match deadline {
            Some(d) => match tokio::time::timeout_at(d, s.read(&mut chunk)).await {
                Ok(r) => r?,
                Err(_) => {
                    return Ok(Some(Asked::Error(
                        Status::Timeout,
                        "the request head did not arrive in time",
                    )))
                }
            },
            None => match tokio::time::timeout(IDLE_TIMEOUT, s.read(&mut chunk)).await {
                Ok(r) => r?,
                Err(_) => return Ok(None),
            },
        };
        if read == 0 {
            return Ok(None);
        }
        if deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + HEAD_TIMEOUT);
        }
        // Never hold more than one head's worth plus one read.
        let room = (MAX_HEAD + 1).saturating_sub(buf.len()).min(read);
        buf.extend_from_slice(&chunk[..room]);
    }
}

/// Where the head ends (after its blank line), if it is all there.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn parse(head: &[u8]) -> Asked {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Asked::Error(Status::BadRequest, "the request head is incomplete")
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Asked::Error(Status::HeaderTooLarge, "more than 32 headers")
        }
        Err(_) => return Asked::Error(Status::BadRequest, "not an HTTP/1.x request"),
    }
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Asked::Error(Status::BadRequest, "not an HTTP/1.x request");
    };
    let mut close = version == 0;
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
        if h.name.eq_ignore_ascii_case("connection") {
            if value.split(',').any(|t| t.trim() == "close") {
                close = true;
            } else if value.split(',').any(|t| t.trim() == "keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && value.trim() != "0")
        {
            return Asked::Error(Status::BadRequest, "a scrape has no request body");
        }
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Asked::Error(Status::MethodNotAllowed, "only GET and HEAD are served"),
    };
    let path = path.split('?').next().unwrap_or(path);
    if path != "/metrics" {
        return Asked::Error(Status::NotFound, "the only path is /metrics");
    }
    Asked::Metrics { head_only, close }
}

/// A render that started after this request arrived: the one running when it started, or a
/// new one.
async fn rendered(render: &Arc<Render>, cache: &Cache) -> io::Result<Arc<String>> {
    let arrived = Instant::now();
    let mut c = cache.lock().await;
    if let Some((started, text)) = c.as_ref() {
        if *started >= arrived {
            return Ok(text.clone());
        }
    }
    let started = Instant::now();
    // Reading the maps is many system calls: off the thread that serves connections.
    let r = render.clone();
    let text = Arc::new(
        tokio::task::spawn_blocking(move || r())
            .await
            .map_err(io::Error::other)?,
    );
    *c = Some((started, text.clone()));
    Ok(text)
}
