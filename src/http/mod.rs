//! The metrics listener of `rsmld serve --metrics-listen ADDR`: Prometheus metrics at
//! `GET /metrics`, the lease table as JSON at `GET /status.json` and a live status page at
//! `GET /` ([`routes`]), all read from the server's [`MetricsSink`].
//!
//! HTTP/1.1 with one request per connection (`Connection: close`), GET only: what a
//! Prometheus scraper, `curl` and a browser need. The request head is parsed by `httparse`
//! (hyper's parser); the connection handling is here, because it is where the server must
//! stay robust and the small sync server crates are not: `tiny_http` 0.12 reads a header
//! line with no length bound, sets no socket timeout and starts one more thread for every
//! connection that stalls. Here:
//!
//! - a request head is at most [`MAX_HEAD`] bytes (431 past it), read within
//!   [`IO_TIMEOUT`] in all (408 after it), and the answer written within the same time in
//!   all (each socket call's timeout is the time left, so a trickling peer gains nothing);
//! - [`CONNECTION_THREADS`] threads answer, fed by a bounded queue; a connection that finds
//!   the queue full is closed at once, so a flood of clients costs neither memory nor
//!   threads;
//! - nothing here takes a lock the leases wait on for long: a scrape or a status snapshot
//!   reads atomics under the metrics' read locks, whose only writers are lease start and end.
//!
//! A failing bind is a start-up error of the server. The bound address is logged at info
//! (`--metrics-listen 127.0.0.1:0` picks a free port, and tests read it there).

pub mod routes;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TrySendError};

use crate::metrics::MetricsSink;
use routes::{Context, Response};

/// The longest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;

/// How long a client has to send its request head, and the server to write its answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Threads that answer connections.
pub const CONNECTION_THREADS: usize = 4;

/// Accepted connections waiting for a thread; more are closed unanswered.
const QUEUE: usize = 64;

/// Headers parsed per request (more: 431).
const MAX_HEADERS: usize = 64;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address cannot be bound (in use, not this host's, a privileged port).
    #[error("--metrics-listen {addr}: cannot listen: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A thread of the listener could not start.
    #[error("--metrics-listen: cannot start a thread: {0}")]
    Thread(io::Error),
}

/// A running listener; dropping it stops it (after the answers in progress).
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl MetricsServer {
    /// The bound address (the port chosen when the one asked for was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`; a wildcard address is reached on
        // the loopback of its family.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, IO_TIMEOUT);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::warn!("a metrics listener thread panicked");
            }
        }
    }
}

/// Binds `addr` and answers on it from `metrics` until the returned server is dropped.
pub fn start(addr: SocketAddr, metrics: Arc<MetricsSink>) -> Result<MetricsServer, HttpError> {
    let listener = TcpListener::bind(addr).map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    let ctx = Arc::new(Context::new(metrics));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = crossbeam_channel::bounded::<TcpStream>(QUEUE);
    let mut threads = Vec::with_capacity(CONNECTION_THREADS + 1);
    for i in 0..CONNECTION_THREADS {
        let (rx, ctx) = (rx.clone(), ctx.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("rsmld-http-{i}"))
                .spawn(move || answer_loop(&rx, &ctx))
                .map_err(HttpError::Thread)?,
        );
    }
    let accept_stop = stop.clone();
    threads.push(
        std::thread::Builder::new()
            .name("rsmld-http-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if accept_stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(c) => match tx.try_send(c) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => {
                                log::debug!(
                                    "metrics listener busy: closed a connection unanswered"
                                );
                            }
                            Err(TrySendError::Disconnected(_)) => break,
                        },
                        Err(e) => {
                            // Out of descriptors, say: this one is lost, the next may work.
                            log::warn!("metrics listener: accepting: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })
            .map_err(HttpError::Thread)?,
    );
    log::info!("metrics and status page on http://{bound}/ (GET /metrics, /status.json, /)");
    Ok(MetricsServer {
        addr: bound,
        stop,
        threads,
    })
}

fn answer_loop(rx: &Receiver<TcpStream>, ctx: &Context) {
    for conn in rx {
        answer(conn, ctx);
    }
}

/// Why no request could be read.
#[derive(Debug)]
enum HeadError {
    /// The client closed before a whole head (nothing to answer).
    Closed,
    /// Not within [`IO_TIMEOUT`].
    Timeout,
    /// Longer than [`MAX_HEAD`].
    TooLarge,
    /// Any other read error (nothing to answer).
    Io,
}

/// Answers one connection: one request, one response, close.
fn answer(conn: TcpStream, ctx: &Context) {
    let mut request = Deadline::new(&conn, IO_TIMEOUT);
    let deadline = request.at;
    let response = match read_head(&mut request, deadline) {
        Ok(head) => match parse(&head) {
            Ok((method, target)) => routes::respond(&method, &target, ctx),
            Err(r) => r,
        },
        Err(HeadError::Timeout) => Response::text(408, "request timeout\n"),
        Err(HeadError::TooLarge) => Response::text(431, "request head too large\n"),
        Err(HeadError::Closed | HeadError::Io) => return,
    };
    if let Err(e) = Deadline::new(&conn, IO_TIMEOUT).write_all(&response.to_bytes()) {
        log::debug!("metrics listener: writing an answer: {e}");
        return;
    }
    // Closing with unread input (a body, a pipelined request) would reset the connection
    // and could lose the answer on the client's side: say the end, then read what is left
    // (at most 64 KiB, for at most a second) until the client closes.
    let _ = conn.shutdown(Shutdown::Write);
    let _ = io::copy(
        &mut Deadline::new(&conn, Duration::from_secs(1)).take(64 * 1024),
        &mut io::sink(),
    );
}

/// A connection whose reads and writes all end by one deadline (each call's socket timeout
/// is the time left), however slowly the peer trickles bytes.
struct Deadline<'a> {
    conn: &'a TcpStream,
    at: Instant,
}

impl<'a> Deadline<'a> {
    fn new(conn: &'a TcpStream, within: Duration) -> Self {
        Deadline {
            conn,
            at: Instant::now() + within,
        }
    }

    /// Sets the socket timeouts to the time left; `TimedOut` when none is.
    fn arm(&self) -> io::Result<()> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.conn.set_read_timeout(Some(left))?;
        self.conn.set_write_timeout(Some(left))
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        self.conn.read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        self.conn.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads up to the end of the request head (`\r\n\r\n`), at most [`MAX_HEAD`] bytes, by
/// `deadline`.
fn read_head(conn: &mut impl Read, deadline: Instant) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        if Instant::now() >= deadline {
            return Err(HeadError::Timeout);
        }
        let n = match conn.read(&mut buf) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HeadError::Timeout)
            }
            Err(_) => return Err(HeadError::Io),
        };
        // Only the new bytes and the three before them can complete the terminator.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = memchr::memmem::find(&head[from..], b"\r\n\r\n") {
            head.truncate(from + end + 4);
            return Ok(head);
        }
        if head.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// The method and target of a whole request head, or the error answer.
fn parse(head: &[u8]) -> Result<(String, String), Response> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => match (req.method, req.path) {
            (Some(m), Some(p)) => Ok((m.to_owned(), p.to_owned())),
            _ => Err(Response::text(400, "bad request\n")),
        },
        Ok(httparse::Status::Partial) => Err(Response::text(400, "bad request\n")),
        Err(httparse::Error::TooManyHeaders) => {
            Err(Response::text(431, "too many request headers\n"))
        }
        Err(e) => Err(Response::text(400, &format!("bad request: {e}\n"))),
    }
}

#[cfg(test)]
mod tests;
