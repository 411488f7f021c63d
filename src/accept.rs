//! Accepting client connections within the process's file descriptor limit: the limit raised at
//! start-up, a budget of client connections that keeps descriptors for the controller, and
//! listeners that refuse clients (closing them at once, with a rate-limited log line) instead of
//! spinning or stalling when descriptors run out.
//!
//! Touches the process's `RLIMIT_NOFILE`, `/proc/self/fd` once at start-up, and the listening
//! sockets it is given.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::FutureExt;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::net::{TcpListener, TcpStream};

/// Descriptors a proxied client may hold: its own and one to the server.
const PER_CONNECTION: u64 = 2;
/// How often a listener logs that it refuses clients.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How long a listener waits before trying again when descriptors are short and no client
/// could be refused (none waited, or no spare descriptor was left to do it with).
const BACKOFF: Duration = Duration::from_millis(50);

/// The descriptor limit as the process found and left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// The soft limit before it was raised.
    pub before: u64,
    /// The soft limit now (the hard limit, when raising worked).
    pub limit: u64,
    /// Descriptors kept for the controller: probes, journal and status writes, the admin
    /// endpoint's few clients, spec files.
    pub reserved: u64,
    /// Client connections all proxies together admit.
    pub connections: u64,
}

impl Capacity {
    /// The budget for a limit, given the descriptors already open.
    pub fn for_limit(before: u64, limit: u64, open: u64) -> Self {
        let reserved = (limit / 4).max(256);
        let connections = limit.saturating_sub(open + reserved) / PER_CONNECTION;
        Self {
            before,
            limit,
            reserved,
            connections,
        }
    }
}

static CAPACITY: OnceLock<Capacity> = OnceLock::new();

/// A number of client connections open at once, shared by the listeners that draw on it.
#[derive(Debug)]
pub struct Budget {
    /// Named in the log when it refuses a client.
    what: &'static str,
    open: AtomicUsize,
    max: AtomicUsize,
}

impl Budget {
    const fn new(what: &'static str, max: usize) -> Self {
        Self {
            what,
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        }
    }

    /// Take a place, if one is free.
    fn admit(&'static self) -> Option<Admitted> {
        let max = self.max.load(Ordering::Relaxed);
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| Admitted(self))
    }

    /// Connections holding a place now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Every proxy's clients together: set from the descriptor limit at start-up (unbounded
/// until then, when only the operating system's limit applies).
pub static PROXY_CLIENTS: Budget = Budget::new("the proxies' connection budget", usize::MAX);
/// The admin endpoint's clients (scrapes, health checks): a few, so that nobody who can reach
/// it can use up the descriptors the controller's probes need.
pub static ADMIN_CLIENTS: Budget = Budget::new("the admin endpoint's connection budget", 64);

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (once per process), work out how many
/// client connections fit, and log it.
pub fn raise_descriptor_limit() -> Capacity {
    *CAPACITY.get_or_init(|| {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
        let limit = match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the file descriptor limit");
                soft
            }
        };
        let open = std::fs::read_dir("/proc/self/fd").map_or(16, |d| d.count() as u64);
        let capacity = Capacity::for_limit(soft, limit, open);
        PROXY_CLIENTS
            .max
            .store(capacity.connections as usize, Ordering::Relaxed);
        tracing::info!(
            limit = capacity.limit,
            raised_from = capacity.before,
            reserved_for_controller = capacity.reserved,
            client_connections = capacity.connections,
            admin_connections = ADMIN_CLIENTS.max.load(Ordering::Relaxed),
            "file descriptors: proxies admit up to {} client connections",
            capacity.connections
        );
        capacity
    })
}

/// A place in a [`Budget`], given back on drop.
#[derive(Debug)]
pub struct Admitted(&'static Budget);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE
    )
}

/// A listener that refuses clients rather than failing when descriptors are short.
pub struct Acceptor {
    listener: TcpListener,
    /// What it serves, for the log: a virtual name, or "admin".
    what: String,
    /// The budget its clients draw on.
    budget: &'static Budget,
    /// An open descriptor given up to accept, and close, a client when there is no other.
    spare: Option<std::fs::File>,
    /// Clients refused since the last log line.
    refused: u64,
    logged_at: Option<Instant>,
}

impl Acceptor {
    pub fn new(listener: TcpListener, what: impl Into<String>, budget: &'static Budget) -> Self {
        Self {
            listener,
            what: what.into(),
            budget,
            spare: spare(),
            refused: 0,
            logged_at: None,
        }
    }

    /// The next client to serve, with its place in the budget. Clients beyond the budget, or
    /// arriving when no descriptor is left, are closed here.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, Admitted) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    if self.spare.is_none() {
                        self.spare = spare();
                    }
                    match self.budget.admit() {
                        Some(admitted) => return (stream, peer, admitted),
                        None => {
                            drop(stream);
                            self.refused(self.budget.what);
                        }
                    }
                }
                Err(e) if out_of_descriptors(&e) => {
                    // Linux allocates the descriptor before it looks at the queue, so this comes
                    // whether or not a client waits. Give up the spare descriptor to take a
                    // client that already waits and close it: it learns at once instead of
                    // hanging until it times out. Never wait for one here: that would take
                    // the next client, arriving once descriptors are back, for this one.
                    let mut closed = false;
                    if let Some(given_up) = self.spare.take() {
                        drop(given_up);
                        if let Some(Ok((stream, _))) = self.listener.accept().now_or_never() {
                            drop(stream);
                            closed = true;
                        }
                        self.spare = spare();
                    }
                    if closed {
                        self.refused("no file descriptor is left");
                    } else {
                        tokio::time::sleep(BACKOFF).await;
                    }
                }
                // A client that gave up while queued, and the like: nothing to do.
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }

    /// Count a refusal and log, at most once per [`LOG_EVERY`], how many there were.
    fn refused(&mut self, why: &str) {
        self.refused += 1;
        if self.logged_at.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return;
        }
        self.logged_at = Some(Instant::now());
        let refused = std::mem::take(&mut self.refused);
        tracing::warn!(
            listener = %self.what,
            refused,
            why,
            open = self.budget.open(),
            budget = self.budget.max.load(Ordering::Relaxed),
            descriptor_limit = CAPACITY.get().map(|c| c.limit),
            "refusing new clients (closed at once; connections already open carry on)"
        );
    }
}

fn spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// A client connection holding its place in the budget until it closes.
pub struct AdmittedStream {
    stream: TcpStream,
    _admitted: Admitted,
}

impl tokio::io::AsyncRead for AdmittedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for AdmittedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The admin endpoint's listener: axum serves what it accepts.
impl axum::serve::Listener for Acceptor {
    type Io = AdmittedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, peer, admitted) = Acceptor::accept(self).await;
        let stream = AdmittedStream {
            stream,
            _admitted: admitted,
        };
        (stream, peer)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::Capacity;

    #[test]
    fn the_budget_keeps_a_quarter_of_the_descriptors_for_the_controller() {
        let big = Capacity::for_limit(1024, 1 << 20, 40);
        assert_eq!(big.reserved, 1 << 18);
        assert_eq!(big.connections, ((1 << 20) - 40 - (1 << 18)) / 2);
        // Small limits keep at least 256.
        let small = Capacity::for_limit(1024, 1024, 30);
        assert_eq!(
            (small.reserved, small.connections),
            (256, (1024 - 30 - 256) / 2)
        );
        assert_eq!(Capacity::for_limit(64, 64, 30).connections, 0);
    }
}
