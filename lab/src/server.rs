//! The lab's backend server: TCP and UDP, answers every request with its own name, holds
//! connections open as long as the client wants. It runs inside each backend namespace
//! (`xdplb-lab-server --name backend-1 --tcp 80 --udp 53`) and listens on all addresses, IPv4
//! and IPv6, so it serves the VIPs and the backend's own address alike.
//!
//! The protocol is line based, so a person can try it with `nc`:
//! - TCP, any line `L` → `<name> L`. The client driver sends `<seq> <padding>` lines and checks
//!   that the name never changes and the sequence number comes back.
//! - TCP, `SINK` → the server reads and discards everything up to the client's end of stream, then
//!   answers `<name> <bytes read>` (single-stream throughput).
//! - UDP, any datagram `D` → `<name> D`.
//! - Connected UDP (`--udp-connected`, on the VIPs): the same answers, but as a QUIC server
//!   keeps its clients: the first datagram of a new client (address and port) arrives at the
//!   listening socket, which opens a socket of its own for that client, bound to the same
//!   address and port and connected to the client; the client's later datagrams arrive there.
//!   That socket is what the redirector's UDP second chance looks for. It closes after
//!   [`CONNECTED_IDLE`] without a datagram.
//! - TCP, `GET <path> HTTP/1.1` as the first line → an HTTP/1.1 200 answer whose body is the
//!   name, then the connection closes (the directors' `http` health check).
//! - TCP, `CONNS` → `<name> <n>`: how many connections the server is serving now, counting a
//!   connection from its first ordinary line to its end (health checks, `SINK` and `CONNS`
//!   itself are not counted). The lab's load exporter ([`crate::load`]) reads it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

/// What the server serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The name it answers with (the backend's name).
    pub name: String,
    /// TCP port, on every address.
    pub tcp_port: u16,
    /// UDP port, on every address.
    pub udp_port: u16,
    /// UDP port with a connected socket per client, on the VIPs (0: none).
    pub udp_connected_port: u16,
    /// The VIPs this backend serves (UDP answers from them need a socket bound to each).
    pub vips: Vec<IpAddr>,
}

/// A connected client socket without a datagram for this long is closed.
pub const CONNECTED_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// The longest request line the server accepts; longer lines close the connection.
const MAX_LINE: usize = 64 * 1024;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listening socket could not be set up.
    #[error("listen on {proto} port {port}")]
    Listen {
        /// tcp or udp.
        proto: &'static str,
        /// The port.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
    /// Receiving on the UDP socket failed.
    #[error("udp receive: {0}")]
    Udp(std::io::Error),
}

fn socket(proto: &'static str, addr: SocketAddr) -> Result<socket2::Socket, ServerError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let port = addr.port();
    let err = |source| ServerError::Listen {
        proto,
        port,
        source,
    };
    let (ty, p) = match proto {
        "tcp" => (Type::STREAM, Protocol::TCP),
        _ => (Type::DGRAM, Protocol::UDP),
    };
    let s = Socket::new(Domain::for_address(addr), ty, Some(p)).map_err(err)?;
    if addr.is_ipv6() {
        // `::` takes IPv4 too; a specific IPv6 address only itself.
        s.set_only_v6(!addr.ip().is_unspecified()).map_err(err)?;
        s.set_freebind_ipv6(true).map_err(err)?;
    } else {
        s.set_freebind(true).map_err(err)?;
    }
    // Lets the VIP sockets share the port with the wildcard one (the most specific wins).
    s.set_reuse_address(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    Ok(s)
}

/// Runs the server until the process is killed.
pub async fn run(cfg: ServerConfig) -> Result<(), ServerError> {
    let any = SocketAddr::from((Ipv6Addr::UNSPECIFIED, cfg.tcp_port));
    let tcp = socket("tcp", any)?;
    let listen_err = |source| ServerError::Listen {
        proto: "tcp",
        port: cfg.tcp_port,
        source,
    };
    tcp.listen(1024).map_err(listen_err)?;
    let tcp = TcpListener::from_std(tcp.into()).map_err(listen_err)?;

    // UDP answers must leave from the address the request went to. A socket bound to `::`
    // would answer from the backend's own address, so each VIP gets a socket of its own
    // (freebind: the VIP may be configured on the host after the server starts).
    let mut udp = JoinSet::new();
    let mut binds = vec![SocketAddr::from((Ipv6Addr::UNSPECIFIED, cfg.udp_port))];
    binds.extend(cfg.vips.iter().map(|ip| SocketAddr::new(*ip, cfg.udp_port)));
    for addr in binds {
        let s = socket("udp", addr)?;
        let s = UdpSocket::from_std(s.into()).map_err(|source| ServerError::Listen {
            proto: "udp",
            port: cfg.udp_port,
            source,
        })?;
        udp.spawn(serve_udp(s, cfg.name.clone()));
    }
    if cfg.udp_connected_port != 0 {
        for ip in &cfg.vips {
            let addr = SocketAddr::new(*ip, cfg.udp_connected_port);
            let s = udp_socket(addr)?;
            udp.spawn(serve_udp_connected(s, addr, cfg.name.clone()));
        }
    }
    eprintln!(
        "{}: listening on tcp port {} and udp port {}",
        cfg.name, cfg.tcp_port, cfg.udp_port
    );
    let serving = Arc::new(AtomicU64::new(0));
    loop {
        tokio::select! {
            accepted = tcp.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_tcp(stream, cfg.name.clone(), serving.clone()));
                }
            }
            Some(done) = udp.join_next() => return done.unwrap_or(Ok(())),
        }
    }
}

/// Counts one connection in `serving` while it lives (from [`Served::start`] on).
struct Served {
    serving: Arc<AtomicU64>,
    counted: bool,
}

impl Served {
    fn start(&mut self) {
        if !self.counted {
            self.counted = true;
            self.serving.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.counted {
            self.serving.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn serve_tcp(stream: TcpStream, name: String, serving: Arc<AtomicU64>) {
    let mut served = Served {
        serving,
        counted: false,
    };
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut r).take(MAX_LINE as u64).read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let req = line.trim_end_matches(['\r', '\n']);
        if req.starts_with("GET ") && req.ends_with(" HTTP/1.1") {
            // A health check: read the headers to the blank line (closing with unread data
            // would reset the connection under the answer), answer with the name as the
            // body, then close.
            loop {
                line.clear();
                match (&mut r).take(MAX_LINE as u64).read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) if line.trim_end_matches(['\r', '\n']).is_empty() => break,
                    Ok(_) => {}
                }
            }
            let body = format!("{name}\n");
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = w.write_all(reply.as_bytes()).await;
            return;
        }
        let reply = if req == "CONNS" {
            format!("{name} {}\n", served.serving.load(Ordering::Relaxed))
        } else if req == "SINK" {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = r.buffer().len() as u64;
            r.consume(r.buffer().len());
            let inner = r.get_mut();
            loop {
                match inner.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            format!("{name} {total}\n")
        } else {
            served.start();
            format!("{name} {req}\n")
        };
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn udp_socket(addr: SocketAddr) -> Result<UdpSocket, ServerError> {
    let s = socket("udp", addr)?;
    UdpSocket::from_std(s.into()).map_err(|source| ServerError::Listen {
        proto: "udp",
        port: addr.port(),
        source,
    })
}

fn answer(name: &str, req: &[u8]) -> Vec<u8> {
    let mut reply = Vec::with_capacity(name.len() + 1 + req.len());
    reply.extend_from_slice(name.as_bytes());
    reply.push(b' ');
    reply.extend_from_slice(req);
    reply
}

/// The listening socket of a connected-UDP port: a new client gets a connected socket of its
/// own (see the module docs); datagrams that still reach the listener from a known client
/// (queued before its socket existed) are answered from here.
async fn serve_udp_connected(
    listener: UdpSocket,
    local: SocketAddr,
    name: String,
) -> Result<(), ServerError> {
    let clients = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = listener
            .recv_from(&mut buf)
            .await
            .map_err(ServerError::Udp)?;
        let reply = answer(&name, &buf[..n]);
        if !clients.lock().unwrap().insert(peer) {
            let _ = listener.send_to(&reply, peer).await;
            continue;
        }
        let conn = match udp_socket(local) {
            Ok(c) => c,
            Err(_) => {
                clients.lock().unwrap().remove(&peer);
                let _ = listener.send_to(&reply, peer).await;
                continue;
            }
        };
        if conn.connect(peer).await.is_err() {
            clients.lock().unwrap().remove(&peer);
            let _ = listener.send_to(&reply, peer).await;
            continue;
        }
        let _ = conn.send(&reply).await;
        let (clients, name) = (clients.clone(), name.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(Ok(n)) = tokio::time::timeout(CONNECTED_IDLE, conn.recv(&mut buf)).await {
                let _ = conn.send(&answer(&name, &buf[..n])).await;
            }
            clients.lock().unwrap().remove(&peer);
        });
    }
}

async fn serve_udp(sock: UdpSocket, name: String) -> Result<(), ServerError> {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = sock.recv_from(&mut buf).await.map_err(ServerError::Udp)?;
        let mut reply = Vec::with_capacity(name.len() + 1 + n);
        reply.extend_from_slice(name.as_bytes());
        reply.push(b' ');
        reply.extend_from_slice(&buf[..n]);
        // Best effort, like any UDP server: a lost answer is the client's to count.
        let _ = sock.send_to(&reply, peer).await;
    }
}
