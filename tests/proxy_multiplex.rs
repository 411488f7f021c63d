//! The multiplexing proxy (`proxyMode: multiplex`) against real redis-servers and a real
//! `replicant run`: many pipelining clients get exactly their own replies over a few shared server
//! connections; connection state pins a client; WAIT is refused; a failed shared connection or a
//! failover closes only what it must.

mod support;

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use support::*;

const FAST: &str = "    detectAfter: 1s\n    cooldown: 1m";

/// A reply, as far as these tests need one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
    /// RESP3 only: keys and values in order.
    Map(Vec<Reply>),
    /// RESP3 only: an out-of-band message (pub/sub).
    Push(Vec<Reply>),
}

impl Reply {
    fn text(&self) -> String {
        match self {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Status(s) | Reply::Error(s) => s.clone(),
            other => format!("{other:?}"),
        }
    }
}

/// A raw RESP client: what it sends is exactly what the test says, nothing added on connect.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    fn encode(args: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
        }
        out
    }

    async fn send(&mut self, commands: &[&[&str]]) {
        let bytes: Vec<u8> = commands.iter().flat_map(|c| Self::encode(c)).collect();
        self.stream.write_all(&bytes).await.unwrap();
    }

    /// The next reply, or None when the proxy closed the connection.
    async fn reply(&mut self) -> Option<Reply> {
        loop {
            if let Some((reply, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(reply);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("a reply within 10 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn call(&mut self, args: &[&str]) -> Reply {
        self.send(&[args]).await;
        self.reply().await.expect("the connection stays open")
    }
}

fn parse(buf: &[u8]) -> Option<(Reply, usize)> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..line_end]).unwrap().to_string();
    let rest = line_end + 2;
    match buf[0] {
        b'+' => Some((Reply::Status(line), rest)),
        b'-' => Some((Reply::Error(line), rest)),
        b':' => Some((Reply::Int(line.parse().unwrap()), rest)),
        b'$' => {
            let len: i64 = line.parse().unwrap();
            if len < 0 {
                return Some((Reply::Bulk(None), rest));
            }
            let end = rest + len as usize;
            (buf.len() >= end + 2).then(|| (Reply::Bulk(Some(buf[rest..end].to_vec())), end + 2))
        }
        b'_' => Some((Reply::Bulk(None), rest)),
        b'#' | b',' => Some((Reply::Status(line), rest)),
        b'*' | b'%' | b'>' => {
            let count: i64 = line.parse().unwrap();
            if count < 0 {
                return Some((Reply::Array(None), rest));
            }
            let elements = if buf[0] == b'%' { count * 2 } else { count };
            let (mut items, mut used) = (Vec::new(), rest);
            for _ in 0..elements {
                let (item, n) = parse(&buf[used..])?;
                items.push(item);
                used += n;
            }
            let reply = match buf[0] {
                b'%' => Reply::Map(items),
                b'>' => Reply::Push(items),
                _ => Reply::Array(Some(items)),
            };
            Some((reply, used))
        }
        other => panic!("unexpected reply type {:?}", other as char),
    }
}

/// A redis-rs connection through the proxy. redis-rs sends `CLIENT SETINFO` on connect, and
/// `HELLO 3` first when asked for RESP3, as most current client libraries do.
async fn library_client(port: u16, resp3: bool) -> redis::aio::MultiplexedConnection {
    let query = if resp3 { "?protocol=resp3" } else { "" };
    redis::Client::open(format!("redis://127.0.0.1:{port}/{query}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// `bed.spec` with the read-write name in multiplex mode.
fn multiplexed(bed: &Bed, primary: &str) -> String {
    let spec = bed.spec(primary, &[], FAST);
    let from = format!("listen: \"127.0.0.1:{}\"}}", bed.rw_port);
    assert!(spec.contains(&from));
    spec.replacen(
        &from,
        &format!(
            "listen: \"127.0.0.1:{}\", proxyMode: multiplex}}",
            bed.rw_port
        ),
        1,
    )
}

async fn connected_clients(address: &str) -> usize {
    info(address, "clients").await["connected_clients"]
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelining_clients_get_exactly_their_own_replies_over_shared_connections() {
    let bed = Bed::new(2);
    let _ctl = bed.started(&multiplexed(&bed, "a")).await;
    let (port, clients, rounds) = (bed.rw_port, 40, 30);

    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(Raw::connect(port).await);
    }
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(c, mut raw)| {
            tokio::spawn(async move {
                let mut checked = 0;
                for round in 0..rounds {
                    // A burst of SETs and GETs of this client's own keys, sent as one write.
                    // Depths from 1 to 20, different for each client and round.
                    let depth = 1 + (c * 7 + round * 13) % 20;
                    let keys: Vec<String> =
                        (0..depth).map(|i| format!("k:{c}:{round}:{i}")).collect();
                    let values: Vec<String> =
                        keys.iter().map(|k| format!("value of {k}")).collect();
                    let mut commands: Vec<Vec<&str>> = Vec::new();
                    for (k, v) in keys.iter().zip(&values) {
                        commands.push(vec!["SET", k, v]);
                        commands.push(vec!["GET", k]);
                    }
                    let refs: Vec<&[&str]> = commands.iter().map(Vec::as_slice).collect();
                    raw.send(&refs).await;
                    for v in &values {
                        assert_eq!(raw.reply().await, Some(Reply::Status("OK".into())));
                        assert_eq!(raw.reply().await.map(|r| r.text()), Some(v.clone()));
                        checked += 1;
                    }
                }
                (raw, checked)
            })
        })
        .collect();
    let mut idle = Vec::new();
    let mut checked = 0;
    for task in tasks {
        let (raw, n) = task.await.unwrap();
        idle.push(raw);
        checked += n;
    }
    assert!(checked >= clients * rounds, "{checked} values checked");

    // Forty clients are still connected, yet the server sees only the proxy's shared
    // connections (one per proxy thread) and the controller's probes.
    let served = connected_clients(&bed.address("a")).await;
    assert!(
        served < 12,
        "{served} server connections for {clients} proxy clients"
    );
    assert_eq!(idle.len(), clients);
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_state_pins_a_client_and_wait_is_refused_in_order() {
    let bed = Bed::new(2);
    let _ctl = bed.started(&multiplexed(&bed, "a")).await;
    let port = bed.rw_port;

    let mut shared = Raw::connect(port).await;
    assert_eq!(shared.call(&["SET", "x", "zero"]).await.text(), "OK");

    // SELECT gives the client a connection of its own; the shared ones stay on database 0.
    let mut selecting = Raw::connect(port).await;
    assert_eq!(selecting.call(&["GET", "x"]).await.text(), "zero");
    assert_eq!(selecting.call(&["SELECT", "1"]).await.text(), "OK");
    assert_eq!(selecting.call(&["SET", "x", "one"]).await.text(), "OK");
    assert_eq!(selecting.call(&["GET", "x"]).await.text(), "one");
    assert_eq!(shared.call(&["GET", "x"]).await.text(), "zero");

    // A transaction on a pinned connection.
    let mut tx = Raw::connect(port).await;
    tx.send(&[&["MULTI"], &["INCR", "n"], &["INCR", "n"], &["EXEC"]])
        .await;
    assert_eq!(tx.reply().await.unwrap().text(), "OK");
    assert_eq!(tx.reply().await.unwrap().text(), "QUEUED");
    assert_eq!(tx.reply().await.unwrap().text(), "QUEUED");
    assert_eq!(
        tx.reply().await,
        Some(Reply::Array(Some(vec![Reply::Int(1), Reply::Int(2)])))
    );

    // A blocked client blocks nobody else: shared clients keep being served, and the push
    // that wakes it goes over a shared connection.
    let mut blocked = Raw::connect(port).await;
    blocked.send(&[&["BLPOP", "queue", "0"]]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..50 {
        assert_eq!(
            shared.call(&["SET", "during", &i.to_string()]).await.text(),
            "OK"
        );
    }
    assert_eq!(shared.call(&["RPUSH", "queue", "job"]).await, Reply::Int(1));
    assert_eq!(
        blocked.reply().await.map(|r| match r {
            Reply::Array(Some(items)) => items.iter().map(Reply::text).collect::<Vec<_>>(),
            other => vec![other.text()],
        }),
        Some(vec!["queue".to_string(), "job".to_string()])
    );

    // Pub/sub pins the subscriber; PUBLISH is shared.
    let mut subscriber = Raw::connect(port).await;
    subscriber.send(&[&["SUBSCRIBE", "news"]]).await;
    assert!(matches!(
        subscriber.reply().await,
        Some(Reply::Array(Some(_)))
    ));
    assert_eq!(
        shared.call(&["PUBLISH", "news", "hello"]).await,
        Reply::Int(1)
    );
    let message = subscriber.reply().await.unwrap();
    assert_eq!(
        message,
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"message".to_vec())),
            Reply::Bulk(Some(b"news".to_vec())),
            Reply::Bulk(Some(b"hello".to_vec())),
        ]))
    );

    // WAIT cannot be answered truthfully over a shared connection: refused, in its place in
    // the pipeline, and the client carries on.
    shared
        .send(&[&["SET", "y", "1"], &["WAIT", "0", "0"], &["GET", "y"]])
        .await;
    assert_eq!(shared.reply().await.unwrap().text(), "OK");
    let refused = shared.reply().await.unwrap();
    assert!(
        matches!(&refused, Reply::Error(e) if e.contains("passthrough")),
        "{refused:?}"
    );
    assert_eq!(shared.reply().await.unwrap().text(), "1");
    assert_eq!(shared.call(&["GET", "x"]).await.text(), "zero");

    // A HELLO the proxy cannot read as credentials is the server's to answer.
    let mut odd = Raw::connect(port).await;
    let answer = odd.call(&["HELLO", "3", "SETNAME", "a", "b"]).await;
    assert!(matches!(answer, Reply::Error(_)), "{answer:?}");
    assert_eq!(odd.call(&["PING"]).await.text(), "PONG");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_shared_connection_is_replaced_for_idle_clients() {
    let bed = Bed::new(2);
    let _ctl = bed.started(&multiplexed(&bed, "a")).await;
    let mut client = Raw::connect(bed.rw_port).await;
    assert_eq!(client.call(&["SET", "k", "before"]).await.text(), "OK");

    // The server drops every normal connection, the proxy's shared ones among them.
    let mut admin = connect(&bed.address("a")).await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 1, "the shared connection existed");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The client had nothing in flight, so it is still connected and served by a new one.
    assert_eq!(client.call(&["GET", "k"]).await.text(), "before");
    assert_eq!(client.call(&["SET", "k", "after"]).await.text(), "OK");
    assert_eq!(
        value(&bed.address("a"), "k").await.as_deref(),
        Some("after")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_closes_multiplexed_clients_and_new_ones_reach_the_new_master() {
    let mut bed = Bed::new(3);
    let ctl = bed.started(&multiplexed(&bed, "a")).await;
    let mut old = Raw::connect(bed.rw_port).await;
    assert_eq!(old.call(&["SET", "k", "v"]).await.text(), "OK");
    eventually("k on the replicas", 10, async || {
        value(&bed.address("b"), "k").await.as_deref() == Some("v")
            && value(&bed.address("c"), "k").await.as_deref() == Some("v")
    })
    .await;

    bed.server("a").kill();
    let report = bed
        .wait_for("failover", &ctl, 30, |r| {
            r.status
                .current_primary
                .as_deref()
                .is_some_and(|p| p != "a")
                && endpoints(r, "orders-rw").iter().all(|e| *e != "a")
                && !endpoints(r, "orders-rw").is_empty()
        })
        .await;
    let primary = report.status.current_primary.clone().unwrap();

    // The old client was closed rather than left talking to nobody.
    let closed = old.reply().await;
    assert_eq!(closed, None, "the old client is closed");

    // A new client lands on the new master, over a shared connection.
    let mut fresh = Raw::connect(bed.rw_port).await;
    assert_eq!(fresh.call(&["GET", "k"]).await.text(), "v");
    // Until a replica has reconnected to the new master, its guard refuses writes with
    // NOREPLICAS, as it should; any other answer fails.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = fresh.call(&["SET", "k", "w"]).await.text();
        if reply == "OK" {
            break;
        }
        assert!(
            reply.starts_with("NOREPLICAS") && std::time::Instant::now() < deadline,
            "{reply}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        value(&bed.address(&primary), "k").await.as_deref(),
        Some("w")
    );
    let role = fresh.call(&["ROLE"]).await;
    assert!(
        matches!(&role, Reply::Array(Some(items)) if items.first().map(Reply::text).as_deref() == Some("master")),
        "{role:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_libraries_handshakes_keep_them_on_shared_connections_in_resp2_and_resp3() {
    let bed = Bed::new(2);
    let _ctl = bed.started(&multiplexed(&bed, "a")).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push((i, library_client(bed.rw_port, i % 2 == 1).await));
    }
    for (i, conn) in &mut clients {
        let key = format!("lib:{i}");
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg("client")
            .arg(*i)
            .query_async(conn)
            .await
            .unwrap();
    }
    for (i, conn) in &mut clients {
        // RESP3 clients get a map, RESP2 clients an array: both decode to the same pairs.
        let fields: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(format!("lib:{i}"))
            .query_async(conn)
            .await
            .unwrap();
        assert_eq!(fields.get("client"), Some(&(*i as i64)), "client {i}");
    }
    // Twenty library clients, and only shared connections (one per thread and protocol
    // version) and the controller's probes on the server.
    let served = connected_clients(&bed.address("a")).await;
    assert!(
        served < 12,
        "{served} server connections for 20 library clients"
    );

    // On the wire: a switch to RESP3 waits for the replies before it, and what follows it
    // is answered in RESP3.
    let mut raw = Raw::connect(bed.rw_port).await;
    raw.send(&[
        &["HSET", "h", "f", "v"],
        &["HELLO", "3"],
        &["HGETALL", "h"],
        &["HELLO", "2"],
        &["HGETALL", "h"],
    ])
    .await;
    assert_eq!(raw.reply().await, Some(Reply::Int(1)));
    let hello = raw.reply().await.unwrap();
    assert!(
        matches!(&hello, Reply::Map(items) if items.iter().any(|i| i.text() == "proto")),
        "{hello:?}"
    );
    let pair = vec![
        Reply::Bulk(Some(b"f".to_vec())),
        Reply::Bulk(Some(b"v".to_vec())),
    ];
    assert_eq!(raw.reply().await, Some(Reply::Map(pair.clone())), "RESP3");
    assert!(
        matches!(raw.reply().await, Some(Reply::Array(Some(_)))),
        "HELLO 2"
    );
    assert_eq!(raw.reply().await, Some(Reply::Array(Some(pair))), "RESP2");

    // A RESP3 client that pins gets a connection of its own that speaks RESP3 too.
    let mut subscriber = Raw::connect(bed.rw_port).await;
    assert!(matches!(
        subscriber.call(&["HELLO", "3"]).await,
        Reply::Map(_)
    ));
    subscriber.send(&[&["SUBSCRIBE", "news3"]]).await;
    assert!(matches!(subscriber.reply().await, Some(Reply::Push(_))));
    assert_eq!(raw.call(&["PUBLISH", "news3", "hi"]).await, Reply::Int(1));
    assert_eq!(
        subscriber.reply().await,
        Some(Reply::Push(vec![
            Reply::Bulk(Some(b"message".to_vec())),
            Reply::Bulk(Some(b"news3".to_vec())),
            Reply::Bulk(Some(b"hi".to_vec())),
        ]))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_values_cross_shared_connections_intact() {
    let bed = Bed::new(2);
    let _ctl = bed.started(&multiplexed(&bed, "a")).await;
    let mut raw = Raw::connect(bed.rw_port).await;
    // Values far larger than any read buffer, pipelined between small requests.
    let big: String = (0..3_000_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    raw.send(&[
        &["SET", "small", "1"],
        &["SET", "big", &big],
        &["GET", "big"],
        &["GET", "small"],
    ])
    .await;
    assert_eq!(raw.reply().await.unwrap().text(), "OK");
    assert_eq!(raw.reply().await.unwrap().text(), "OK");
    assert!(
        raw.reply().await.unwrap().text() == big,
        "the big value intact"
    );
    assert_eq!(raw.reply().await.unwrap().text(), "1");
    assert_eq!(
        value(&bed.address("a"), "big").await.map(|v| v.len()),
        Some(big.len())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn authenticated_clients_share_connections_only_with_the_same_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        replicant_testkit::RedisProcess::start(dir.path(), &["--requirepass", "pw-mux"]).unwrap();
    let mut admin = redis::Client::open(format!("redis://:pw-mux@{}/", server.address()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "app", "on", ">app-pw", "~*", "+@all"])
        .query_async(&mut admin)
        .await
        .unwrap();
    let port = replicant_testkit::free_port().unwrap();
    let specs = dir.path().join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    std::fs::write(
        specs.join("c.yaml"),
        format!(
            "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {{name: orders}}\nspec:\n  engine: redis\n  primary: a\n  members:\n    - {{name: a, address: \"{}\"}}\n  credentials: {{passwordEnv: ORDERS_PW}}\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {{name: orders-rw}}\nspec: {{cluster: orders, target: primary, listen: \"127.0.0.1:{port}\", proxyMode: multiplex}}\n",
            server.address()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let ctl = Controller::start(&specs, &state, &[("ORDERS_PW", "pw-mux")]);
    eventually("the proxy to route", 30, async || {
        replicant::runtime::files::state::read_reports(&state)
            .unwrap_or_default()
            .first()
            .is_some_and(|r| ready(r) && !endpoints(r, "orders-rw").is_empty())
    })
    .await;

    // No credentials, or wrong ones: exactly what the server says to such a client.
    let mut anonymous = Raw::connect(port).await;
    let refused = anonymous.call(&["GET", "k"]).await;
    assert!(
        matches!(&refused, Reply::Error(e) if e.starts_with("NOAUTH")),
        "{refused:?}"
    );
    let mut wrong = Raw::connect(port).await;
    let refused = wrong.call(&["AUTH", "nope"]).await;
    assert!(
        matches!(&refused, Reply::Error(e) if e.starts_with("WRONGPASS")),
        "{refused:?}"
    );
    let refused = wrong.call(&["GET", "k"]).await;
    assert!(
        matches!(&refused, Reply::Error(e) if e.starts_with("NOAUTH")),
        "{refused:?}"
    );

    let connected = async |admin: &mut redis::aio::MultiplexedConnection| -> usize {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(admin)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let anonymous_only = connected(&mut admin).await;

    // Authenticated clients are served over shared connections of their own user.
    let mut clients = Vec::new();
    for i in 0..10 {
        let mut raw = Raw::connect(port).await;
        assert_eq!(raw.call(&["AUTH", "pw-mux"]).await.text(), "OK");
        assert_eq!(raw.call(&["SET", &format!("k{i}"), "v"]).await.text(), "OK");
        clients.push(raw);
    }
    let mut app = Raw::connect(port).await;
    assert_eq!(app.call(&["AUTH", "app", "app-pw"]).await.text(), "OK");
    assert_eq!(app.call(&["GET", "k3"]).await.text(), "v");
    let mut app3 = Raw::connect(port).await;
    assert!(matches!(
        app3.call(&["HELLO", "3", "AUTH", "app", "app-pw"]).await,
        Reply::Map(_)
    ));
    assert_eq!(app3.call(&["HSET", "h", "f", "v"]).await, Reply::Int(1));
    assert!(matches!(app3.call(&["HGETALL", "h"]).await, Reply::Map(_)));
    // Authenticating again, already speaking RESP3.
    assert_eq!(app3.call(&["AUTH", "app", "app-pw"]).await.text(), "OK");
    assert!(matches!(app3.call(&["HGETALL", "h"]).await, Reply::Map(_)));
    let served = connected(&mut admin).await;
    assert!(
        served < 12,
        "{served} server connections for 14 proxy clients"
    );

    // Pinned, a client keeps its user.
    assert_eq!(app.call(&["ACL", "WHOAMI"]).await.text(), "app");
    assert_eq!(clients[0].call(&["ACL", "WHOAMI"]).await.text(), "default");

    // Once the last client of a user has gone, so has that user's shared connection.
    drop((clients, app, app3));
    let mut left = 0;
    for _ in 0..100 {
        left = connected(&mut admin).await;
        if left <= anonymous_only {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        left <= anonymous_only,
        "{left} server connections left, {anonymous_only} before any client authenticated"
    );
    let log = ctl.log_text();
    assert!(!log.contains("pw-mux") && !log.contains("app-pw"), "{log}");
}
