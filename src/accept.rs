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
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::net::{TcpListener, TcpStream};

/// Descriptors a proxied client may hold: its own and one to the server.
const PER_CONNECTION: u64 = 2;
/// How often a listener logs that it refuses clients.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How long a listener waits before accepting again when it could not even refuse a client.
const BACKOFF: Duration = Duration::from_millis(50);

/// The descriptor limit as the process found and left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// The soft limit before it was raised.
    pub before: u64,
    /// The soft limit now (the hard limit, when raising worked).
    pub limit: u64,
    /// Descriptors kept for the controller: probes, journal and status writes, the admin
    /// endpoint, spec files.
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
static OPEN_CLIENTS: AtomicUsize = AtomicUsize::new(0);

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
        tracing::info!(
            limit = capacity.limit,
            raised_from = capacity.before,
            reserved_for_controller = capacity.reserved,
            client_connections = capacity.connections,
            "file descriptors: proxies admit up to {} client connections",
            capacity.connections
        );
        capacity
    })
}

/// A place in the budget of client connections, given back on drop.
#[derive(Debug)]
pub struct Admitted(());

impl Drop for Admitted {
    fn drop(&mut self) {
        OPEN_CLIENTS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Take a place in the budget, if one is free. Without a budget (the limit was never looked
/// at), everything is admitted and only the operating system's limit applies.
fn admit() -> Option<Admitted> {
    let budget = CAPACITY
        .get()
        .map_or(usize::MAX, |c| c.connections as usize);
    OPEN_CLIENTS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
            (open < budget).then_some(open + 1)
        })
        .ok()
        .map(|_| Admitted(()))
}

/// Client connections open now, across every proxy.
pub fn open_clients() -> usize {
    OPEN_CLIENTS.load(Ordering::Relaxed)
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
    /// Whether clients count against the proxies' budget (the admin endpoint does not).
    budgeted: bool,
    /// An open descriptor given up to accept, and close, a client when there is no other.
    spare: Option<std::fs::File>,
    /// Clients refused since the last log line.
    refused: u64,
    logged_at: Option<Instant>,
}

impl Acceptor {
    pub fn new(listener: TcpListener, what: impl Into<String>, budgeted: bool) -> Self {
        Self {
            listener,
            what: what.into(),
            budgeted,
            spare: spare(),
            refused: 0,
            logged_at: None,
        }
    }

    /// The next client to serve, and its place in the budget (for budgeted listeners). Clients
    /// beyond the budget, or arriving when no descriptor is left, are closed here.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, Option<Admitted>) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    if self.spare.is_none() {
                        self.spare = spare();
                    }
                    if !self.budgeted {
                        return (stream, peer, None);
                    }
                    match admit() {
                        Some(admitted) => return (stream, peer, Some(admitted)),
                        None => {
                            drop(stream);
                            self.refused("the proxies' connection budget is spent");
                        }
                    }
                }
                Err(e) if out_of_descriptors(&e) => {
                    // Give up the spare descriptor to take the waiting client off the queue
                    // and close it: it learns at once, instead of hanging until it times out.
                    match self.spare.take() {
                        Some(given_up) => {
                            drop(given_up);
                            if let Ok((stream, _)) = self.listener.accept().await {
                                drop(stream);
                            }
                            self.spare = spare();
                        }
                        None => tokio::time::sleep(BACKOFF).await,
                    }
                    self.refused("no file descriptor is left");
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
        let capacity = CAPACITY.get();
        tracing::warn!(
            listener = %self.what,
            refused,
            why,
            open_clients = open_clients(),
            client_connections = capacity.map(|c| c.connections),
            descriptor_limit = capacity.map(|c| c.limit),
            "refusing new clients (closed at once; connections already open carry on)"
        );
    }
}

fn spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

impl axum::serve::Listener for Acceptor {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, peer, _) = Acceptor::accept(self).await;
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
