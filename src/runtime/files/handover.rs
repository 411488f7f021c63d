//! Restarts that refuse no client: a running `replicant run` passes its listening sockets to
//! its successor over a unix socket in the state directory, and a process started by systemd
//! adopts the sockets it was given. Touches the state directory's `lock` and `handover.sock`.
//!
//! The hand-over, successor first:
//! 1. The successor connects and asks to take over.
//! 2. The predecessor stops reconciling, lets go of the state directory's lock, and passes a
//!    duplicate of every listening socket (each virtual name's, and the admin endpoint's) with
//!    where each name points.
//! 3. The successor takes the lock, serves every name from the sockets it got, pointing where
//!    they pointed, and says so.
//! 4. The predecessor stops accepting and lets its open connections finish, within a grace.
//!
//! The sockets are the same kernel sockets throughout, so clients that connect meanwhile queue
//! and are accepted by one process or the other: none is refused. A successor that fails before
//! step 3 leaves the predecessor accepting; it takes its lock back, unless the successor holds
//! it, and reconciles again (else it drains and exits).

use std::{
    fs::File,
    io::{self, IoSlice, IoSliceMut, Read, Write},
    net::TcpListener,
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    path::{Path, PathBuf},
    time::Duration,
};

use nix::{
    fcntl::{Flock, FlockArg},
    sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, sockopt},
};
use serde::{Deserialize, Serialize};

use crate::proxy::PassedName;

const LOCK_FILE: &str = "lock";
const SOCKET_FILE: &str = "handover.sock";
/// Descriptors per message: the kernel takes at most 253 at once.
const BATCH: usize = 200;
/// The largest message either side reads.
const MAX_MESSAGE: u32 = 4 << 20;
/// How long either side waits for the other at each step.
const STEP: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error(
        "state directory {path}: another replicant run ({holder}) uses it and does not hand over; stop it first"
    )]
    InUse { path: String, holder: String },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("hand-over with {peer}: {source}")]
    Exchange {
        peer: &'static str,
        source: io::Error,
    },
    #[error("hand-over with {peer}: {reason}")]
    Protocol { peer: &'static str, reason: String },
}

const PREDECESSOR: &str = "the process being replaced";
const SUCCESSOR: &str = "the successor";

/// What the two processes say to each other; each message a length and JSON.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
enum Message {
    TakeOver {
        pid: u32,
    },
    /// Followed by one descriptor per name, in order, then the admin endpoint's if `admin`.
    Listeners {
        names: Vec<PassedName>,
        admin: bool,
    },
    Serving,
}

/// This process's hold on a state directory: one `replicant run` reconciles from it at a time.
pub struct StateLock {
    _file: Flock<File>,
}

impl StateLock {
    /// The lock, unless another process holds it.
    pub fn try_acquire(state: &Path) -> Result<Option<Self>, HandoverError> {
        let path = state.join(LOCK_FILE);
        let io_error = |source| HandoverError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut file) => {
                // Who holds it, for the error another process shows.
                file.set_len(0).map_err(io_error)?;
                writeln!(*file, "pid {}", std::process::id()).map_err(io_error)?;
                Ok(Some(Self { _file: file }))
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(io_error(errno.into())),
        }
    }

    /// The lock, waiting up to `within` for the process that holds it to let go.
    pub async fn acquire(state: &Path, within: Duration) -> Result<Self, HandoverError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(lock) = Self::try_acquire(state)? {
                return Ok(lock);
            }
            if tokio::time::Instant::now() >= deadline {
                let holder = std::fs::read_to_string(state.join(LOCK_FILE))
                    .map(|text| text.trim().to_string())
                    .unwrap_or_default();
                return Err(HandoverError::InUse {
                    path: state.display().to_string(),
                    holder: if holder.is_empty() {
                        "process unknown".into()
                    } else {
                        holder
                    },
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The process this one replaces, once it has passed its listeners.
pub struct Predecessor {
    stream: UnixStream,
    pub names: Vec<(PassedName, TcpListener)>,
    pub admin: Option<TcpListener>,
}

impl Predecessor {
    /// Take over from the `replicant run` serving from `state`, if one answers there.
    pub async fn take_over(state: &Path) -> Result<Option<Self>, HandoverError> {
        let path = state.join(SOCKET_FILE);
        let stream = match UnixStream::connect(&path) {
            Ok(stream) => stream,
            // Nobody there, or a socket a stopped process left behind.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None);
            }
            Err(source) => {
                return Err(HandoverError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        blocking(PREDECESSOR, move || Self::receive(stream))
            .await
            .map(Some)
    }

    fn receive(mut stream: UnixStream) -> Result<Self, HandoverError> {
        let exchange = |source| HandoverError::Exchange {
            peer: PREDECESSOR,
            source,
        };
        check_peer(&stream, PREDECESSOR)?;
        stream.set_write_timeout(Some(STEP)).map_err(exchange)?;
        // The predecessor first stops reconciling, which may take a round's act.
        stream.set_read_timeout(Some(STEP * 3)).map_err(exchange)?;
        send(
            &mut stream,
            &Message::TakeOver {
                pid: std::process::id(),
            },
        )
        .map_err(exchange)?;
        let (names, admin) = match receive(&mut stream).map_err(exchange)? {
            Message::Listeners { names, admin } => (names, admin),
            other => {
                return Err(HandoverError::Protocol {
                    peer: PREDECESSOR,
                    reason: format!("expected its listeners, got {other:?}"),
                });
            }
        };
        let mut listeners = receive_descriptors(&stream, names.len() + usize::from(admin))
            .map_err(exchange)?
            .into_iter()
            .map(TcpListener::from);
        let names = names
            .into_iter()
            .zip(listeners.by_ref())
            .collect::<Vec<_>>();
        let admin = listeners.next();
        Ok(Self {
            stream,
            names,
            admin,
        })
    }

    /// Tell the predecessor that this process serves every name now: it stops accepting and
    /// lets its connections finish.
    pub async fn serving(self) -> Result<(), HandoverError> {
        let mut stream = self.stream;
        blocking(PREDECESSOR, move || {
            send(&mut stream, &Message::Serving).map_err(|source| HandoverError::Exchange {
                peer: PREDECESSOR,
                source,
            })
        })
        .await
    }
}

/// Where a successor finds this process: `handover.sock` in the state directory.
pub struct HandoverPoint {
    listener: tokio::net::UnixListener,
    path: PathBuf,
}

impl HandoverPoint {
    /// Listen for a successor. Call it holding the state lock: a socket file there is from a
    /// process that no longer serves.
    pub fn bind(state: &Path) -> Result<Self, HandoverError> {
        let path = state.join(SOCKET_FILE);
        let io_error = |source| HandoverError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(e)),
            _ => {}
        }
        let listener = tokio::net::UnixListener::bind(&path).map_err(io_error)?;
        // Whoever connects can stop this process's reconciling: the owner only.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_error)?;
        Ok(Self { listener, path })
    }

    /// The next process that asks to take over.
    pub async fn successor(&self) -> Successor {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, path = %self.path.display(), "hand-over socket");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let asked = async {
                let mut stream = stream
                    .into_std()
                    .map_err(|source| HandoverError::Exchange {
                        peer: SUCCESSOR,
                        source,
                    })?;
                blocking(SUCCESSOR, move || {
                    Successor::asked(&mut stream).map(|pid| (stream, pid))
                })
                .await
            };
            match asked.await {
                Ok((stream, pid)) => return Successor { stream, pid },
                Err(error) => {
                    tracing::warn!(%error, "ignored a connection to the hand-over socket")
                }
            }
        }
    }
}

/// A process that asked to take over.
pub struct Successor {
    stream: UnixStream,
    pub pid: u32,
}

impl Successor {
    fn asked(stream: &mut UnixStream) -> Result<u32, HandoverError> {
        let exchange = |source| HandoverError::Exchange {
            peer: SUCCESSOR,
            source,
        };
        stream.set_nonblocking(false).map_err(exchange)?;
        check_peer(stream, SUCCESSOR)?;
        stream.set_read_timeout(Some(STEP)).map_err(exchange)?;
        stream.set_write_timeout(Some(STEP)).map_err(exchange)?;
        match receive(stream).map_err(exchange)? {
            Message::TakeOver { pid } => Ok(pid),
            other => Err(HandoverError::Protocol {
                peer: SUCCESSOR,
                reason: format!("expected a request to take over, got {other:?}"),
            }),
        }
    }

    /// Pass `names` and `admin`, then wait for the successor to serve them.
    pub async fn pass(
        self,
        names: Vec<(PassedName, TcpListener)>,
        admin: Option<TcpListener>,
    ) -> Result<(), HandoverError> {
        let mut stream = self.stream;
        blocking(SUCCESSOR, move || {
            let exchange = |source| HandoverError::Exchange {
                peer: SUCCESSOR,
                source,
            };
            let (names, listeners): (Vec<_>, Vec<_>) = names.into_iter().unzip();
            let message = Message::Listeners {
                admin: admin.is_some(),
                names,
            };
            send(&mut stream, &message).map_err(exchange)?;
            let descriptors: Vec<RawFd> = listeners
                .iter()
                .chain(admin.iter())
                .map(|l| l.as_raw_fd())
                .collect();
            send_descriptors(&stream, &descriptors).map_err(exchange)?;
            match receive(&mut stream).map_err(exchange)? {
                Message::Serving => Ok(()),
                other => Err(HandoverError::Protocol {
                    peer: SUCCESSOR,
                    reason: format!("expected it to serve, got {other:?}"),
                }),
            }
        })
        .await
    }
}

/// Run one step of the exchange with `peer` (blocking socket calls, each under a timeout) off
/// the async threads.
async fn blocking<T: Send + 'static>(
    peer: &'static str,
    step: impl FnOnce() -> Result<T, HandoverError> + Send + 'static,
) -> Result<T, HandoverError> {
    tokio::task::spawn_blocking(step)
        .await
        .map_err(|e| HandoverError::Protocol {
            peer,
            reason: e.to_string(),
        })?
}

/// Only a process of this user may take over (or hand over).
fn check_peer(stream: &UnixStream, peer: &'static str) -> Result<(), HandoverError> {
    let credentials = socket::getsockopt(stream, sockopt::PeerCredentials).map_err(|e| {
        HandoverError::Exchange {
            peer,
            source: e.into(),
        }
    })?;
    let own = nix::unistd::geteuid().as_raw();
    if credentials.uid() != own {
        return Err(HandoverError::Protocol {
            peer,
            reason: format!(
                "it runs as uid {}, this process as {own}",
                credentials.uid()
            ),
        });
    }
    Ok(())
}

fn send(stream: &mut UnixStream, message: &Message) -> io::Result<()> {
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    let length = u32::try_from(body.len()).map_err(io::Error::other)?;
    stream.write_all(&length.to_be_bytes())?;
    stream.write_all(&body)
}

fn receive(stream: &mut UnixStream) -> io::Result<Message> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length)?;
    let length = u32::from_be_bytes(length);
    if length > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message of {length} bytes (at most {MAX_MESSAGE})"),
        ));
    }
    let mut body = vec![0u8; length as usize];
    stream.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Send `descriptors` in batches, each carried by one byte.
fn send_descriptors(stream: &UnixStream, descriptors: &[RawFd]) -> io::Result<()> {
    for batch in descriptors.chunks(BATCH) {
        let rights = [ControlMessage::ScmRights(batch)];
        socket::sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(b"F")],
            &rights,
            MsgFlags::empty(),
            None,
        )?;
    }
    Ok(())
}

/// Receive `count` descriptors sent by [`send_descriptors`].
fn receive_descriptors(stream: &UnixStream, count: usize) -> io::Result<Vec<OwnedFd>> {
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        let mut byte = [0u8; 1];
        let mut space = nix::cmsg_space!([RawFd; BATCH]);
        let mut iov = [IoSliceMut::new(&mut byte)];
        let message = socket::recvmsg::<()>(
            stream.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        if message.bytes == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut got = 0;
        for control in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = control {
                got += fds.len();
                // SAFETY: the kernel has just opened these descriptors for this process.
                received.extend(
                    fds.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a batch without descriptors",
            ));
        }
    }
    if received.len() != count {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} descriptors, {count} announced", received.len()),
        ));
    }
    Ok(received)
}

/// The listening sockets systemd passed this process (socket activation), if any: descriptors
/// 3 onwards, `LISTEN_FDS` of them, when `LISTEN_PID` is this process.
pub fn systemd_listeners() -> Vec<TcpListener> {
    let passed = passed_by_systemd(
        std::env::var("LISTEN_PID").ok().as_deref(),
        std::env::var("LISTEN_FDS").ok().as_deref(),
        std::process::id(),
    );
    passed
        .filter_map(|fd| {
            // SAFETY: systemd opened these descriptors for this process, and each is taken
            // once: this runs once, at start-up.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // Only sockets that listen are for the proxies; anything else is closed.
            if socket::getsockopt(&fd, sockopt::AcceptConn) != Ok(true) {
                tracing::warn!(
                    fd = fd.as_raw_fd(),
                    "systemd passed a descriptor that is not a listening socket; closed"
                );
                return None;
            }
            let _ = nix::fcntl::fcntl(
                &fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            Some(TcpListener::from(fd))
        })
        .collect()
}

/// The descriptors systemd's `LISTEN_PID` and `LISTEN_FDS` pass to process `pid`.
fn passed_by_systemd(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    pid: u32,
) -> std::ops::Range<RawFd> {
    const FIRST: RawFd = 3;
    let for_us = listen_pid.and_then(|p| p.trim().parse::<u32>().ok()) == Some(pid);
    let count = listen_fds
        .and_then(|n| n.trim().parse::<RawFd>().ok())
        .filter(|&n| for_us && (0..=1024).contains(&n))
        .unwrap_or(0);
    FIRST..FIRST + count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_passes_descriptors_only_to_the_process_it_names() {
        assert_eq!(passed_by_systemd(Some("42"), Some("2"), 42), 3..5);
        assert_eq!(passed_by_systemd(Some("41"), Some("2"), 42), 3..3);
        assert_eq!(passed_by_systemd(None, Some("2"), 42), 3..3);
        assert_eq!(passed_by_systemd(Some("42"), None, 42), 3..3);
        assert_eq!(passed_by_systemd(Some("42"), Some("many"), 42), 3..3);
        assert_eq!(passed_by_systemd(Some("42"), Some("100000"), 42), 3..3);
    }

    #[tokio::test]
    async fn listeners_pass_to_a_successor_and_stay_the_same_sockets() {
        let state = tempfile::tempdir().unwrap();
        let lock = StateLock::try_acquire(state.path()).unwrap().expect("free");
        assert!(StateLock::try_acquire(state.path()).unwrap().is_none());
        let point = HandoverPoint::bind(state.path()).unwrap();
        let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").unwrap();
        let (proxy_address, admin_address) =
            (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
        let passed = PassedName {
            name: "default/rw".into(),
            listen: proxy_address.to_string(),
            shape: crate::proxy::ProxyShape {
                balancing: Default::default(),
                mode: Default::default(),
                preferred_zones: Vec::new(),
            },
            endpoints: Some(Vec::new()),
        };
        let expected = passed.clone();
        let predecessor = tokio::spawn(async move {
            let successor = point.successor().await;
            assert_eq!(successor.pid, std::process::id());
            drop(lock);
            successor.pass(vec![(passed, proxy)], Some(admin)).await
        });
        let taken = Predecessor::take_over(state.path())
            .await
            .unwrap()
            .expect("a predecessor answers");
        assert_eq!(taken.names.len(), 1);
        assert_eq!(taken.names[0].0, expected);
        assert_eq!(taken.names[0].1.local_addr().unwrap(), proxy_address);
        assert_eq!(
            taken.admin.as_ref().unwrap().local_addr().unwrap(),
            admin_address
        );
        // The predecessor let go of the lock before passing.
        let _lock = StateLock::try_acquire(state.path()).unwrap().expect("free");
        taken.serving().await.unwrap();
        predecessor.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn no_predecessor_is_no_hand_over() {
        let state = tempfile::tempdir().unwrap();
        assert!(
            Predecessor::take_over(state.path())
                .await
                .unwrap()
                .is_none()
        );
        // A socket left by a process that is gone.
        drop(std::os::unix::net::UnixListener::bind(state.path().join(SOCKET_FILE)).unwrap());
        assert!(
            Predecessor::take_over(state.path())
                .await
                .unwrap()
                .is_none()
        );
    }
}
