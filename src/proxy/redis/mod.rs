//! The multiplexing relay (Redis only): stateless requests of many clients share one pipelined
//! server connection (a *lane*) per proxy thread and member; a client that uses connection state
//! is given a server connection of its own. Touches only the sockets it is handed or opens.
//!
//! Replies come back in request order on a connection, so each lane keeps a queue of who asked
//! next. A lane that fails fails every client with a request in flight on it (they are closed,
//! as their own connection would have been); clients with nothing in flight carry on over a
//! fresh lane.

pub mod resp;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

use super::{CONNECT_TIMEOUT, Connection, NameProxy};
use crate::core::routes::Endpoint;

/// Requests a client may have in flight before the proxy stops reading from it.
const MAX_IN_FLIGHT: usize = 4096;
/// How long the server may take to check a client's credentials.
const AUTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Requests for a lane: consecutive complete requests of one client, and where their replies go.
pub(super) struct Batch {
    requests: Bytes,
    count: usize,
    replies: mpsc::UnboundedSender<Replies>,
}

/// Replies for one client: `count` complete replies, or the news that its lane failed.
type Replies = Result<(Bytes, usize), LaneFailed>;

#[derive(Debug)]
struct LaneFailed;

pub(super) type LaneSender = mpsc::UnboundedSender<Batch>;

/// Relay one client connection in multiplex mode. Returns the bytes relayed each way.
pub(super) async fn relay(
    mut client: TcpStream,
    endpoint: &Endpoint,
    thread: usize,
    connection: &Connection,
) -> (u64, u64) {
    let mut session = Session {
        proxy: &connection.proxy,
        endpoint,
        thread,
        connection,
        lane: None,
        protocol: 2,
        identity: None,
        replies: mpsc::unbounded_channel(),
        input: BytesMut::with_capacity(16 * 1024),
        output: BytesMut::new(),
        scanner: resp::RequestScanner::default(),
        in_flight: 0,
        stop: None,
        client_closed: false,
        to_backend: 0,
        to_client: 0,
    };
    let pinned = session.shared(&mut client).await;
    let (mut to_backend, mut to_client) = (session.to_backend, session.to_client);
    if pinned {
        let leftover = std::mem::take(&mut session.input);
        let (up, down) = dedicated(
            &mut client,
            &endpoint.address,
            session.protocol,
            session.identity.as_deref(),
            &leftover,
        )
        .await;
        to_backend += up;
        to_client += down;
    }
    (to_backend, to_client)
}

/// Why a client stopped being served over the lane.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// Its next request needs a connection of its own.
    Pin,
    /// Its next request is answered by the proxy, once the replies before it are delivered.
    Answer(&'static str),
    /// Its next request (`HELLO`) switches to this protocol version, and so to the shared
    /// connection that speaks it, once the replies before it are delivered.
    Switch(u8),
    /// Its next request, of `len` bytes, authenticates: the server checks it once the replies
    /// before it are delivered.
    Authenticate {
        len: usize,
        credentials: resp::Credentials,
        version: Option<u8>,
    },
}

struct Session<'a> {
    proxy: &'a Arc<NameProxy>,
    endpoint: &'a Endpoint,
    thread: usize,
    connection: &'a Connection,
    /// This thread's lane to the endpoint, as last looked up.
    lane: Option<LaneSender>,
    /// The RESP version the client speaks (`HELLO` changes it).
    protocol: u8,
    /// Who the server accepted the client as (`AUTH` changes it); none for the default user.
    identity: Option<Arc<resp::Credentials>>,
    replies: (
        mpsc::UnboundedSender<Replies>,
        mpsc::UnboundedReceiver<Replies>,
    ),
    /// Bytes read from the client and not yet sent on; starts at a request boundary.
    input: BytesMut,
    output: BytesMut,
    scanner: resp::RequestScanner,
    in_flight: usize,
    /// Set when the request at the start of `input` cannot go over the lane.
    stop: Option<Stop>,
    client_closed: bool,
    to_backend: u64,
    to_client: u64,
}

impl Session<'_> {
    /// Serve the client over the lane until it closes (false) or must be pinned (true).
    async fn shared(&mut self, client: &mut TcpStream) -> bool {
        loop {
            if self.in_flight == 0 {
                match self.stop.take() {
                    Some(Stop::Pin) => return true,
                    // The request it stopped at can be dealt with now; then carry on.
                    Some(stop) => {
                        if !self.resume(client, stop).await || !self.dispatch() {
                            return false;
                        }
                        continue;
                    }
                    None if self.client_closed => return false,
                    None => {}
                }
            }
            let reading =
                self.stop.is_none() && !self.client_closed && self.in_flight < MAX_IN_FLIGHT;
            // Requests already handed on keep their part of the buffer alive: make room, or a
            // read would get the few bytes left.
            if reading && self.input.capacity() - self.input.len() < 4096 {
                self.input.reserve(16 * 1024);
            }
            tokio::select! {
                biased;
                replies = self.replies.1.recv() => {
                    let Some(Ok((bytes, count))) = replies else {
                        return false; // the lane failed with our requests in flight
                    };
                    if !self.deliver(client, bytes, count).await {
                        return false;
                    }
                }
                read = client.read_buf(&mut self.input), if reading => {
                    match read {
                        Ok(0) | Err(_) => self.client_closed = true,
                        Ok(_) => {
                            if !self.dispatch() {
                                return false;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Deal with the request `stop` was set for, all replies before it being delivered. False
    /// if the client is to be closed.
    async fn resume(&mut self, client: &mut TcpStream, stop: Stop) -> bool {
        match stop {
            Stop::Pin => true, // the caller hands the client a connection of its own
            Stop::Switch(version) => {
                self.protocol = version;
                self.lane = None;
                true
            }
            Stop::Answer(reply) => {
                self.to_client += reply.len() as u64;
                client.write_all(reply.as_bytes()).await.is_ok()
            }
            Stop::Authenticate {
                len,
                credentials,
                version,
            } => self.authenticate(client, len, credentials, version).await,
        }
    }

    /// Have the server check the authentication request of `len` bytes at the start of `input`
    /// and pass its answer on; once accepted, the client's shared connections are ones
    /// authenticated with the same credentials. False if the server could not be asked.
    async fn authenticate(
        &mut self,
        client: &mut TcpStream,
        len: usize,
        credentials: resp::Credentials,
        version: Option<u8>,
    ) -> bool {
        let request = self.input.split_to(len);
        self.to_backend += len as u64;
        let Some(reply) = verify(&self.endpoint.address, &request).await else {
            return false;
        };
        // Errors are `-` (or `!` in RESP3); a refused client keeps the identity it had.
        if !matches!(reply.first(), Some(b'-' | b'!')) {
            self.identity = Some(Arc::new(credentials));
            self.protocol = version.unwrap_or(self.protocol);
            self.lane = None;
        }
        self.to_client += reply.len() as u64;
        client.write_all(&reply).await.is_ok()
    }

    /// Write replies to the client: this batch and any others already waiting, in one write.
    async fn deliver(&mut self, client: &mut TcpStream, first: Bytes, count: usize) -> bool {
        self.in_flight -= count;
        let mut more = Vec::new();
        while let Ok(next) = self.replies.1.try_recv() {
            let Ok((bytes, count)) = next else {
                return false;
            };
            self.in_flight -= count;
            more.push(bytes);
        }
        let written = if more.is_empty() {
            self.to_client += first.len() as u64;
            client.write_all(&first).await
        } else {
            self.output.clear();
            self.output.extend_from_slice(&first);
            more.iter().for_each(|b| self.output.extend_from_slice(b));
            self.to_client += self.output.len() as u64;
            client.write_all(&self.output).await
        };
        written.is_ok()
    }

    /// Send every complete shareable request at the start of `input` to the lane, stopping at
    /// the first one that cannot go. False if no lane could take them.
    fn dispatch(&mut self) -> bool {
        let (mut end, mut count) = (0, 0);
        while self.stop.is_none() {
            match self.scanner.next(&self.input[end..]) {
                resp::Request::Complete { len, routing } => match routing {
                    // Replies still due in the old version are delivered first.
                    resp::Routing::Hello(version) if version != self.protocol => {
                        self.stop = Some(Stop::Switch(version));
                    }
                    resp::Routing::Shared | resp::Routing::Hello(_) => {
                        end += len;
                        count += 1;
                    }
                    resp::Routing::Pinned => self.stop = Some(Stop::Pin),
                    resp::Routing::Authenticate => {
                        // What the proxy cannot read as credentials, the server answers.
                        let request = &self.input[end..end + len];
                        self.stop = Some(match resp::authentication(request) {
                            Some((credentials, version)) => Stop::Authenticate {
                                len,
                                credentials,
                                version,
                            },
                            None => Stop::Pin,
                        });
                    }
                    resp::Routing::Answer(reply) => {
                        self.stop = Some(Stop::Answer(reply));
                        // The refused request is consumed here; its answer waits its turn.
                        if !self.send(end, count) {
                            return false;
                        }
                        self.input.advance(len);
                        return true;
                    }
                },
                resp::Request::Incomplete => break,
                // The server gets it verbatim, on a connection of the client's own.
                resp::Request::NotUnderstood => {
                    self.scanner = resp::RequestScanner::default();
                    self.stop = Some(Stop::Pin);
                }
            }
        }
        self.send(end, count)
    }

    /// Hand the first `len` bytes of `input` (`count` requests) to this thread's lane.
    fn send(&mut self, len: usize, count: usize) -> bool {
        if count == 0 {
            return true;
        }
        let mut batch = Batch {
            requests: self.input.split_to(len).freeze(),
            count,
            replies: self.replies.0.clone(),
        };
        self.to_backend += len as u64;
        // A lane that has just failed refuses the batch; a fresh one gets a single retry.
        for _ in 0..2 {
            let lane = match &self.lane {
                Some(lane) if !lane.is_closed() => lane,
                _ => self.lane.insert(self.proxy.lane(
                    self.thread,
                    self.endpoint,
                    self.protocol,
                    self.identity.clone(),
                    self.connection,
                )),
            };
            match lane.send(batch) {
                Ok(()) => {
                    self.in_flight += count;
                    return true;
                }
                Err(mpsc::error::SendError(returned)) => batch = returned,
            }
        }
        false
    }
}

/// The rest of the connection on a server connection of its own (speaking the client's
/// protocol version), starting with `leftover`.
async fn dedicated(
    client: &mut TcpStream,
    address: &str,
    protocol: u8,
    identity: Option<&resp::Credentials>,
    leftover: &[u8],
) -> (u64, u64) {
    let Some(mut backend) = open(address, protocol, identity).await else {
        return (0, 0);
    };
    if backend.write_all(leftover).await.is_err() {
        return (0, 0);
    }
    let (up, down) = tokio::io::copy_bidirectional(client, &mut backend)
        .await
        .unwrap_or((0, 0));
    (up + leftover.len() as u64, down)
}

/// A server connection speaking RESP `protocol` and, with `identity`, authenticated as it.
/// Version 3 is asked for with `HELLO 3` (with `AUTH` when there is an identity), whose reply is
/// read here; a server that refuses gives no connection.
async fn open(
    address: &str,
    protocol: u8,
    identity: Option<&resp::Credentials>,
) -> Option<TcpStream> {
    let connect = async {
        let mut backend = TcpStream::connect(address).await.ok()?;
        let _ = backend.set_nodelay(true);
        let greeting = match identity {
            Some(credentials) => resp::authenticate_request(credentials, protocol),
            None if protocol == 3 => b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n".to_vec(),
            None => return Some(backend),
        };
        let reply = exchange(&mut backend, &greeting).await?;
        // A map (HELLO 3) or +OK (AUTH); anything else, an error or more, leaves it unusable.
        let expected: &[u8] = if protocol == 3 { b"%" } else { b"+OK\r\n" };
        reply.starts_with(expected).then_some(backend)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .ok()
        .flatten()
}

/// Send one request and read exactly one reply (`None` if the server sends more, or fails).
async fn exchange(backend: &mut TcpStream, request: &[u8]) -> Option<Vec<u8>> {
    backend.write_all(request).await.ok()?;
    let (mut reply, mut scanner) = (Vec::new(), resp::Scanner::default());
    loop {
        if backend.read_buf(&mut reply).await.ok()? == 0 {
            return None;
        }
        if let Some(len) = scanner.value(&reply).ok()? {
            return (len == reply.len()).then_some(reply);
        }
    }
}

/// The server's own answer to an authentication request, asked on a fresh connection. That
/// connection stays RESP2: `HELLO 3` before authenticating is refused where a password is
/// required, and the answer to `AUTH` (or to `HELLO n AUTH`) does not depend on it.
async fn verify(address: &str, request: &[u8]) -> Option<Vec<u8>> {
    let ask = async {
        let mut backend = open(address, 2, None).await?;
        exchange(&mut backend, request).await
    };
    tokio::time::timeout(AUTH_TIMEOUT, ask).await.ok().flatten()
}

/// One lane's state. Dropping it (the lane ends, fails or is aborted on retarget) tells every
/// client still waiting that its requests' fate is unknown.
pub(super) struct Lane {
    batches: mpsc::UnboundedReceiver<Batch>,
    /// Who gets the next replies, in request order: (client, replies owed).
    owed: Mutex<VecDeque<(mpsc::UnboundedSender<Replies>, usize)>>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.batches.close();
        for (client, _) in self.owed.lock().expect("lock").drain(..) {
            let _ = client.send(Err(LaneFailed));
        }
        while let Ok(batch) = self.batches.try_recv() {
            let _ = batch.replies.send(Err(LaneFailed));
        }
    }
}

impl Lane {
    pub(super) fn new() -> (LaneSender, Lane) {
        let (sender, batches) = mpsc::unbounded_channel();
        let lane = Lane {
            batches,
            owed: Mutex::default(),
        };
        (sender, lane)
    }

    /// Connect to `address`, speaking RESP `protocol`, and carry requests and replies until the
    /// connection fails or every client handle is gone.
    pub(super) async fn run(
        mut self,
        address: String,
        protocol: u8,
        identity: Option<Arc<resp::Credentials>>,
    ) {
        let Some(mut backend) = open(address.as_str(), protocol, identity.as_deref()).await else {
            return;
        };
        let (mut from_server, mut to_server) = backend.split();
        let owed = &self.owed;
        let batches = &mut self.batches;
        let writer = async {
            let mut pending = Vec::new();
            while let Some(first) = batches.recv().await {
                // Everything queued since the lane last ran goes out in one write. Who is owed
                // the replies is recorded before the requests leave.
                let alone = {
                    let mut owed = owed.lock().expect("lock");
                    owed.push_back((first.replies, first.count));
                    match batches.try_recv() {
                        Err(_) => Some(first.requests),
                        Ok(second) => {
                            pending.clear();
                            pending.extend_from_slice(&first.requests);
                            let mut next = Some(second);
                            while let Some(batch) = next {
                                owed.push_back((batch.replies, batch.count));
                                pending.extend_from_slice(&batch.requests);
                                next = batches.try_recv().ok();
                            }
                            None
                        }
                    }
                };
                match alone {
                    Some(requests) => to_server.write_all(&requests).await?,
                    None => to_server.write_all(&pending).await?,
                }
            }
            Ok::<(), std::io::Error>(())
        };
        let reader = async {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            let mut scanner = resp::Scanner::default();
            loop {
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(64 * 1024);
                }
                if from_server.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
                if route_replies(&mut buf, &mut scanner, owed).is_err() {
                    return Ok(());
                }
            }
        };
        let _: std::io::Result<()> = tokio::select! {
            r = writer => r,
            r = reader => r,
        };
    }
}

/// Hand every complete reply at the start of `buf` to the client that asked for it. An error
/// means the stream cannot be trusted any more: a reply nobody asked for, or malformed bytes.
fn route_replies(
    buf: &mut BytesMut,
    scanner: &mut resp::Scanner,
    owed: &Mutex<VecDeque<(mpsc::UnboundedSender<Replies>, usize)>>,
) -> Result<(), ()> {
    let mut owed = owed.lock().expect("lock");
    while !buf.is_empty() {
        let Some((client, count)) = owed.front_mut() else {
            return Err(()); // a reply nobody asked for
        };
        let (mut end, mut complete) = (0, 0);
        while complete < *count {
            match scanner.value(&buf[end..]).map_err(|_| ())? {
                Some(len) => {
                    end += len;
                    complete += 1;
                }
                None => break,
            }
        }
        if complete == 0 {
            break;
        }
        let replies = buf.split_to(end).freeze();
        *count -= complete;
        // A client that has gone away just drops its replies.
        let _ = client.send(Ok((replies, complete)));
        if *count > 0 {
            break; // the rest of this client's replies have not arrived yet
        }
        owed.pop_front();
    }
    Ok(())
}
