//! `replicant node` against a real postgres: the token, the epoch, start and stop, status while
//! postgres is down, and the lease: it runs from a nonce of the agent's, and when it lapses
//! postgres is stopped and stays down, across a restart of the agent, until the lease is renewed.

mod support;

use std::{
    io::{Read, Write},
    path::Path,
    process::Command,
    time::Duration,
};

use replicant::core::engine::EngineError;
use replicant_testkit::postgres::{PASSWORD, PostgresProcess, empty_data, init_data, owned_dir};
use serde_json::{Value, json};
use support::{
    node::{Node, TOKEN},
    pg::*,
};

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_starts_stops_and_fences_its_postgres() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (data, pg_port) = init_data(dir.path()).unwrap();
    let address = format!("127.0.0.1:{pg_port}");
    let mut node = Node::start(dir.path(), &data, pg_port);

    assert_eq!(node.call("GET", "/v1/status", None, None).0, 401);
    assert_eq!(
        node.call("GET", "/v1/status", None, Some("wrong-token-0123456789"))
            .0,
        401
    );
    let down = node.status();
    assert_eq!(down["running"], false);
    assert_eq!(down["controlData"]["state"], "shut down", "{down}");

    let up = node.run("/v1/start", json!({"epoch": 1}));
    assert_eq!(
        (up["running"].clone(), up["lastError"].clone()),
        (json!(true), Value::Null),
        "{up}"
    );
    let p = probe(&address).await.unwrap();
    assert_eq!(
        p.system_identifier,
        up["controlData"]["systemIdentifier"].as_u64().unwrap()
    );
    let (code, stale) = node.post("/v1/start", json!({"epoch": 0}));
    assert_eq!(code, 409, "{stale}");
    assert!(
        stale["error"]
            .as_str()
            .unwrap()
            .contains("epoch 0 is older than 1")
    );

    // The lease lapses: postgres is stopped, and stays down.
    let (code, _) = node.lease(1, 300);
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fenced = node.status();
    assert_eq!(
        (fenced["running"].clone(), fenced["fenced"].clone()),
        (json!(false), json!(true)),
        "{fenced}"
    );
    assert!(matches!(
        probe(&address).await,
        Err(EngineError::Refused { .. })
    ));
    let (code, refused) = node.post("/v1/start", json!({"epoch": 1}));
    assert_eq!(code, 409, "{refused}");
    assert!(refused["error"].as_str().unwrap().starts_with("fenced"));

    // ... across a restart of the agent, which also remembers the epoch.
    let earlier_run = node.lease_nonce();
    node.stop_process();
    let node = Node::start(dir.path(), &data, pg_port);
    let again = node.status();
    assert_eq!(
        (again["fenced"].clone(), again["epoch"].clone()),
        (json!(true), json!(1)),
        "{again}"
    );
    assert_eq!(node.post("/v1/start", json!({"epoch": 1})).0, 409);

    // A lease runs from its nonce's issue on this agent's clock: a nonce of the earlier run,
    // or one from the future, is refused...
    let (code, refused) = node.post(
        "/v1/lease",
        json!({"epoch": 1, "ttlMs": 60000, "nonce": earlier_run}),
    );
    assert_eq!(code, 409, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("another run"));
    let mut future = node.lease_nonce();
    future["issuedMs"] = json!(u64::MAX);
    let (code, refused) = node.post(
        "/v1/lease",
        json!({"epoch": 1, "ttlMs": 60000, "nonce": future}),
    );
    assert_eq!(code, 409, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("future"));
    // ... and a renewal that arrives after its lease would have run out (held in a frozen
    // agent's socket, or late on the network) grants nothing: still fenced.
    let nonce = node.lease_nonce();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, late) = node.post(
        "/v1/lease",
        json!({"epoch": 1, "ttlMs": 300, "nonce": nonce}),
    );
    assert_eq!(code, 200, "{late}");
    assert_eq!(
        (late["fenced"].clone(), late["leaseRemainingMs"].clone()),
        (json!(true), Value::Null),
        "{late}"
    );
    assert_eq!(node.post("/v1/start", json!({"epoch": 1})).0, 409);

    // Renewed by a newer controller decision: postgres may run again.
    assert_eq!(node.lease(2, 60000).0, 200);
    let up = node.run("/v1/start", json!({"epoch": 2}));
    assert_eq!(up["running"], true, "{up}");
    sql(&address, "CREATE TABLE t (v int); INSERT INTO t VALUES (1)").await;
    assert_eq!(node.lease(1, 60000).0, 409);

    // A fast stop ends cleanly: status while down comes from pg_controldata.
    let (code, stopped) = node.post("/v1/stop", json!({"epoch": 2, "mode": "fast"}));
    assert_eq!(code, 200, "{stopped}");
    assert_eq!(stopped["running"], false);
    assert_eq!(stopped["controlData"]["state"], "shut down", "{stopped}");
    assert!(matches!(
        probe(&address).await,
        Err(EngineError::Refused { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_creates_a_data_set_only_in_an_empty_directory() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = owned_dir(dir.path(), "host").unwrap();
    let (data, pg_port) = empty_data(&host).unwrap();
    let address = format!("127.0.0.1:{pg_port}");

    // Without a superuser password the agent creates nothing, and says why.
    let mut node = Node::start(&host, &data, pg_port);
    let failed = node.run("/v1/initialize", json!({"epoch": 1}));
    assert!(
        failed["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("no superuser password")),
        "{failed}"
    );
    assert_eq!(failed["empty"], true, "{failed}");
    node.stop_process();

    // With one (from a file), a superuser named by --superuser, and a replication user other
    // than the superuser: the data set is created with checksums, started, and both users can
    // log in with their passwords.
    let password_file = host.join("superuser-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let node = Node::start_with(
        &host,
        &data,
        pg_port,
        &[
            "--superuser",
            "admin",
            "--superuser-password-file",
            password_file.to_str().unwrap(),
            "--replication-user",
            "replicator",
        ],
    );
    let up = node.run("/v1/initialize", json!({"epoch": 1}));
    assert_eq!(
        (up["running"].clone(), up["lastError"].clone()),
        (json!(true), Value::Null),
        "{up}"
    );
    assert_eq!(up["controlData"]["dataChecksums"], true, "{up}");
    // Callers at once (the controller, peers) each see postgres running: none is told "not
    // running" because another's report was reading the control file.
    std::thread::scope(|scope| {
        let reports: Vec<_> = (0..8).map(|_| scope.spawn(|| node.status())).collect();
        for report in reports {
            let report = report.join().unwrap();
            assert_eq!(report["running"], true, "{report}");
        }
    });
    let admin = try_connect_as(&address, "admin").await.unwrap();
    let is_superuser: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(is_superuser);
    let replicator = try_connect_as(&address, "replicator").await.unwrap();
    let can_replicate: bool = replicator
        .query_one(
            "SELECT rolreplication FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(can_replicate);
    let beside: Vec<String> = std::fs::read_dir(data.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !beside.iter().any(|name| name.contains("replicant-")),
        "the password file initdb read, and the directory it filled, are gone: {beside:?}"
    );

    // A directory that holds a data set is never initialized again.
    let (code, refused) = node.post("/v1/initialize", json!({"epoch": 2}));
    assert_eq!(code, 409, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("already holds a data set")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_clones_a_standby_and_never_copies_over_another_data_set() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let primary = PostgresProcess::primary(dir.path(), &[]).unwrap();
    sql(
        &primary.address(),
        "CREATE TABLE t (v int); INSERT INTO t VALUES (1)",
    )
    .await;
    let source = json!({"address": primary.address(), "applicationName": "b"});

    // An empty host: copied, swapped in, started as a standby streaming from the primary.
    let host_b = owned_dir(dir.path(), "host-b").unwrap();
    let (data_b, port_b) = empty_data(&host_b).unwrap();
    let node_b = Node::start(&host_b, &data_b, port_b);
    let up = node_b.run("/v1/clone", json!({"epoch": 1, "source": source}));
    assert_eq!(up["lastError"], Value::Null, "{up}");
    let b = format!("127.0.0.1:{port_b}");
    let streaming = probe_until(&b, |p| {
        p.receiver.as_ref().is_some_and(|r| r.status == "streaming")
    })
    .await;
    assert!(streaming.in_recovery);
    assert_eq!(
        streaming.system_identifier,
        probe(&primary.address()).await.unwrap().system_identifier
    );
    assert_eq!(number(&b, "SELECT count(*) FROM t").await, 1);
    assert!(!host_b.join(format!("pg-{port_b}.replicant-clone")).exists());

    // Stopped, then started again as a standby of the same primary with the data it has.
    assert_eq!(
        node_b
            .post("/v1/stop", json!({"epoch": 1, "mode": "fast"}))
            .0,
        200
    );
    let again = node_b.run("/v1/standby", json!({"epoch": 1, "source": source}));
    assert_eq!(again["lastError"], Value::Null, "{again}");
    probe_until(&b, |p| {
        p.receiver.as_ref().is_some_and(|r| r.status == "streaming")
    })
    .await;

    // A host holding another data set: refused, and its data left as it was.
    let host_c = owned_dir(dir.path(), "host-c").unwrap();
    let (data_c, port_c) = init_data(&host_c).unwrap();
    let node_c = Node::start(&host_c, &data_c, port_c);
    let before = node_c.status()["controlData"]["systemIdentifier"].clone();
    let refused = node_c.run("/v1/clone", json!({"epoch": 1, "source": source}));
    assert!(
        refused["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("not copied over"),
        "{refused}"
    );
    assert_eq!(refused["lastFailure"], "foreignData", "{refused}");
    assert_eq!(node_c.status()["controlData"]["systemIdentifier"], before);
    // Not asked again at once: a failing copy is not retried at every controller round.
    let (code, again) = node_c.post("/v1/clone", json!({"epoch": 1, "source": source}));
    assert_eq!(code, 409, "{again}");
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .contains("the last clone failed"),
        "{again}"
    );
}

/// Detach `standby` from the primary, write rows of -1 on the primary (which the standby never
/// gets), crash the primary with `crash`, promote the standby and write a row of -2 on it: the
/// old primary now holds WAL past where the new one's history left it.
async fn diverge(primary: &str, standby: &str, crash: impl FnOnce()) {
    use replicant::engine::postgres::actions::{detach, promote};
    sql(
        primary,
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await;
    let written = probe(primary).await.unwrap().durable;
    probe_until(standby, |p| p.applied >= written).await;
    let creds = superuser();
    detach(target(standby, &creds)).await.unwrap();
    sql(
        primary,
        "INSERT INTO t SELECT -1 FROM generate_series(1, 1000)",
    )
    .await;
    crash();
    promote(target(standby, &creds)).await.unwrap();
    sql(standby, "INSERT INTO t VALUES (-2)").await;
    // The new primary moves on, and recycles the WAL from before the fork: the old primary's
    // own copy of it is then the only one left.
    for _ in 0..3 {
        sql(standby, "SELECT pg_switch_wal()").await;
        sql(standby, "CHECKPOINT").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_diverged_old_primary_is_rewound_and_one_that_cannot_be_is_copied() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    // An old primary run by its agent (with wal_log_hints): rewound.
    let host_a = owned_dir(dir.path(), "host-a").unwrap();
    let (data_a, port_a) = init_data(&host_a).unwrap();
    let node_a = Node::start(&host_a, &data_a, port_a);
    assert_eq!(
        node_a.run("/v1/start", json!({"epoch": 1}))["running"],
        true
    );
    let a = format!("127.0.0.1:{port_a}");
    // Run as an agent runs it: a rewinds onto it below, and later rewinds again from its copy
    // of the control file, which must say that hints were logged.
    let standby =
        PostgresProcess::standby_of_port(port_a, dir.path(), &[("wal_log_hints", "on")]).unwrap();
    let pid = node_a.status()["pid"].as_u64().unwrap() as i32;
    diverge(&a, &standby.address(), || {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    })
    .await;
    let source = json!({"address": standby.address(), "applicationName": "a"});
    let rejoined = node_a.run("/v1/rewind", json!({"epoch": 2, "source": source}));
    assert_eq!(rejoined["rejoined"], "rewound", "{rejoined}");
    let back = probe_until(&a, |p| {
        p.receiver.as_ref().is_some_and(|r| r.status == "streaming")
    })
    .await;
    assert!(back.in_recovery && back.timeline == 2, "{back:?}");
    assert_eq!(
        number(&a, "SELECT count(*) FROM t WHERE v = -1").await,
        0,
        "its own writes gone"
    );
    assert_eq!(
        number(&a, "SELECT count(*) FROM t WHERE v = -2").await,
        1,
        "the new primary's there"
    );

    // Now a standby, a crashes in turn, and is asked to rewind again, with a fence sent while
    // that runs: the fence answers at once and stops nothing, since the operation makes a
    // standby. A standby that crashed cannot be recovered alone (single-user mode refuses
    // standby mode, and as a primary it would write a record of its own on the shared
    // branch): it is copied, and streams.
    let pid = node_a.status()["pid"].as_u64().unwrap() as i32;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    while node_a.status()["running"] == true {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Its children see the postmaster gone and leave the shared memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (code, begun) = node_a.post("/v1/rewind", json!({"epoch": 2, "source": source}));
    assert_eq!(code, 200, "{begun}");
    let (code, fenced) = node_a.post("/v1/stop", json!({"epoch": 2, "mode": "immediate"}));
    assert_eq!(code, 200, "{fenced}");
    assert_eq!(
        fenced["busy"], "rewind",
        "answered during the rewind: {fenced}"
    );
    let mut rejoined = node_a.status();
    while rejoined["busy"].is_string() {
        tokio::time::sleep(Duration::from_millis(25)).await;
        rejoined = node_a.status();
    }
    let reason = rejoined["rejoined"]["copied"]["rewindFailed"]
        .as_str()
        .unwrap_or_else(|| panic!("not copied: {rejoined}"));
    assert!(reason.contains("was a standby"), "{reason}");
    assert_eq!(
        rejoined["rejoined"]["copied"]["because"], "notRewindable",
        "{rejoined}"
    );
    assert_eq!(rejoined["running"], true, "{rejoined}");
    let back = probe_until(&a, |p| {
        p.receiver.as_ref().is_some_and(|r| r.status == "streaming")
    })
    .await;
    assert!(back.in_recovery && back.timeline == 2, "{back:?}");

    // An old primary that ran without wal_log_hints (outside any agent): pg_rewind refuses it,
    // so it is copied again.
    let host_b = owned_dir(dir.path(), "host-b").unwrap();
    let mut old = PostgresProcess::primary(&host_b, &[]).unwrap();
    let (data_b, port_b) = (old.data.clone(), old.port);
    let b = old.address();
    let standby_b = PostgresProcess::standby_of(&old, dir.path(), &[]).unwrap();
    diverge(&b, &standby_b.address(), || old.kill()).await;
    drop(old);
    let node_b = Node::start(&host_b, &data_b, port_b);
    let source = json!({"address": standby_b.address(), "applicationName": "b"});
    let rejoined = node_b.run("/v1/rewind", json!({"epoch": 2, "source": source}));
    let reason = rejoined["rejoined"]["copied"]["rewindFailed"]
        .as_str()
        .unwrap_or_else(|| panic!("not copied: {rejoined}"));
    assert!(reason.contains("wal_log_hints"), "{reason}");
    assert_eq!(
        rejoined["rejoined"]["copied"]["because"], "notRewindable",
        "{rejoined}"
    );
    probe_until(&b, |p| {
        p.receiver.as_ref().is_some_and(|r| r.status == "streaming")
    })
    .await;
    assert_eq!(number(&b, "SELECT count(*) FROM t WHERE v = -1").await, 0);
    assert_eq!(number(&b, "SELECT count(*) FROM t WHERE v = -2").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_served_over_tls_when_given_a_certificate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = owned_dir(dir.path(), "host").unwrap();
    let (data, pg_port) = init_data(&host).unwrap();
    let (cert, key) = support::node::certificate_for_loopback(&host);
    let node = Node::start_with(
        &host,
        &data,
        pg_port,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            // Given explicitly here, found on their own elsewhere.
            "--pg-bin",
            replicant_testkit::postgres::bin_dir()
                .unwrap()
                .to_str()
                .unwrap(),
        ],
    );

    // A client that trusts the certificate gets its answer over TLS.
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    roots
        .add(CertificateDer::from_pem_file(&cert).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let config = std::sync::Arc::new(config);
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", node.port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(
        format!("GET /v1/status HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap_or_default();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(response.contains("\"running\":false"), "{response}");

    // The controller's client speaks TLS to it too.
    let client = replicant::engine::postgres::agent::AgentClient::new(
        format!("127.0.0.1:{}", node.port),
        replicant::engine::Secret::new(TOKEN),
        Some(config),
        Duration::from_secs(5),
    );
    use replicant::engine::postgres::agent::AgentApi;
    assert!(!client.status().await.unwrap().running);

    // One whose bundle holds another certificate is refused before any request.
    let other = tempfile::tempdir().unwrap();
    let (stranger, _) = support::node::certificate_for_loopback(other.path());
    let untrusting = replicant::engine::postgres::agent::AgentClient::new(
        format!("127.0.0.1:{}", node.port),
        replicant::engine::Secret::new(TOKEN),
        Some(
            replicant::engine::postgres::agent::trusting(
                &std::fs::read_to_string(&stranger).unwrap(),
            )
            .unwrap(),
        ),
        Duration::from_secs(5),
    );
    let refused = untrusting.status().await.unwrap_err().to_string();
    assert!(
        refused.contains("TLS") && refused.contains("certificate"),
        "{refused}"
    );

    // Plain HTTP gets no answer.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The agent may drop the connection before the request is all written: that is a refusal too.
    let _ = write!(
        plain,
        "GET /v1/status HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(
        !reply.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_drives_the_agent_through_its_client() {
    use replicant::engine::{
        Secret,
        postgres::agent::{AgentApi, AgentClient},
    };
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = owned_dir(dir.path(), "host").unwrap();
    let (data, pg_port) = init_data(&host).unwrap();
    let mut node = Node::start(&host, &data, pg_port);
    let address = format!("127.0.0.1:{}", node.port);
    let agent = AgentClient::new(&address, Secret::new(TOKEN), None, Duration::from_secs(5));

    let down = agent.status().await.unwrap();
    assert!(!down.running);
    assert_eq!(down.control_data.unwrap().state, "shut down");
    let begun = agent.start(3).await.unwrap();
    assert!(begun.busy.is_some() && begun.epoch == 3, "{begun:?}");
    // A second start while the first is under way is refused as busy, or finds it running.
    let again = agent.start(3).await;
    assert!(
        again.as_ref().is_ok()
            || again
                .as_ref()
                .is_err_and(|e| e.to_string().contains("busy")),
        "{again:?}"
    );
    let mut up = agent.status().await.unwrap();
    for _ in 0..400 {
        if up.busy.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        up = agent.status().await.unwrap();
    }
    assert!(up.running && up.last_error.is_none(), "{up:?}");
    assert!(probe(&format!("127.0.0.1:{pg_port}")).await.is_ok());
    let nonce = agent.lease_nonce().await.unwrap();
    let leased = agent
        .renew_lease(3, Duration::from_secs(60), nonce, None)
        .await
        .unwrap();
    assert!(leased.lease_remaining_ms.unwrap() > 50_000);

    let stale = agent.stop(2, false).await.unwrap_err();
    assert!(
        matches!(&stale, EngineError::Command { message, .. } if message.contains("epoch 2 is older than 3")),
        "{stale}"
    );
    let intruder = AgentClient::new(
        &address,
        Secret::new("not-the-token-0123"),
        None,
        Duration::from_secs(5),
    );
    let refused = intruder.status().await.unwrap_err();
    assert!(matches!(refused, EngineError::Auth { .. }), "{refused}");
    assert!(!refused.to_string().contains("not-the-token"), "{refused}");

    let stopped = agent.stop(3, false).await.unwrap();
    assert!(!stopped.running);
    assert_eq!(stopped.control_data.unwrap().state, "shut down");

    node.stop_process();
    let gone = agent.status().await.unwrap_err();
    assert!(matches!(gone, EngineError::Refused { .. }), "{gone}");
}

/// Three agents: a's postgres running under a lease renewed once by a "controller", which
/// told it of b and c, and that they reach its postgres through a relay; b and c hold empty
/// data directories.
struct LeasedTrio {
    _dir: tempfile::TempDir,
    /// The way to a's postgres from b and c.
    relay: support::relay::Relay,
    nodes: Vec<Node>,
    clients: Vec<replicant::engine::postgres::agent::AgentClient>,
    /// a's postgres.
    port: u16,
    data: std::path::PathBuf,
    /// a's agent's log, with its postgres's.
    log: std::path::PathBuf,
    /// a's lease.
    ttl: Duration,
}

async fn leased_trio(ttl: Duration) -> LeasedTrio {
    use replicant::engine::{
        Secret,
        postgres::agent::{AgentApi, AgentClient, Peer, PeerView},
    };
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    let mut a_data = None;
    for name in ["a", "b", "c"] {
        let host = owned_dir(dir.path(), name).unwrap();
        let (data, port) = if name == "a" {
            init_data(&host).unwrap()
        } else {
            empty_data(&host).unwrap()
        };
        if name == "a" {
            a_data = Some((data.clone(), port));
        }
        nodes.push(Node::start(&host, &data, port));
    }
    let clients: Vec<AgentClient> = nodes
        .iter()
        .map(|node| {
            AgentClient::new(
                node.address(),
                Secret::new(TOKEN),
                None,
                Duration::from_secs(5),
            )
        })
        .collect();
    let a = &clients[0];
    a.start(0).await.unwrap();
    for _ in 0..400 {
        if a.status().await.unwrap().running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (data, port) = a_data.unwrap();
    let relay = support::relay::Relay::start(format!("127.0.0.1:{port}")).await;
    let view = PeerView {
        member: "a".into(),
        address: Some(relay.address()),
        peers: ["b", "c"]
            .iter()
            .zip(&nodes[1..])
            .map(|(name, node)| Peer {
                name: name.to_string(),
                agent: node.address(),
            })
            .collect(),
        ca_pem: None,
    };
    let nonce = a.lease_nonce().await.unwrap();
    a.renew_lease(0, ttl, nonce, Some(&view)).await.unwrap();
    let log = dir
        .path()
        .join("a")
        .join(format!("node-{}.log", nodes[0].port));
    LeasedTrio {
        _dir: dir,
        relay,
        nodes,
        clients,
        port,
        data,
        log,
        ttl,
    }
}

impl LeasedTrio {
    /// Why `peer` refuses to confirm a's lease at epoch 0 now.
    async fn refusal_by(&self, peer: &replicant::engine::postgres::agent::AgentClient) -> String {
        use replicant::engine::postgres::agent::AgentApi;
        peer.confirm(0, "a", Some(&self.relay.address()), self.ttl)
            .await
            .unwrap_err()
            .to_string()
    }
}

/// Poll `client`'s status until it reports its postgres fenced, for at most `limit`.
async fn fenced_within(
    client: &replicant::engine::postgres::agent::AgentClient,
    limit: Duration,
) -> (bool, Duration) {
    use replicant::engine::postgres::agent::AgentApi;
    let at = std::time::Instant::now();
    while at.elapsed() < limit {
        if client.status().await.is_ok_and(|s| s.fenced) {
            return (true, at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (false, at.elapsed())
}

/// While no controller renews it, a primary's agent keeps its lease through its peers' agents;
/// once a quorum of them is raised to a newer epoch, it can no longer, and the raises reported
/// how long their confirmations still ran.
#[tokio::test(flavor = "multi_thread")]
async fn the_peers_keep_the_primarys_lease_until_a_quorum_is_raised() {
    use replicant::engine::postgres::agent::AgentApi;
    if !available() {
        return;
    }
    let ttl = Duration::from_millis(600);
    let trio = leased_trio(ttl).await;
    let [a, b, c] = &trio.clients[..] else {
        unreachable!()
    };

    // Five leases' length with no controller: the peers renew it.
    tokio::time::sleep(ttl * 5).await;
    let held = a.status().await.unwrap();
    assert!(held.running && !held.fenced, "{held:?}");
    assert!(held.lease_remaining_ms.is_some_and(|ms| ms > 0), "{held:?}");

    // One peer raised: a and c are still a quorum.
    let raised = b.raise(1).await.unwrap();
    assert_eq!(raised.epoch, 1);
    assert!(
        raised.outstanding_ms > 0 && raised.outstanding_ms <= 600,
        "b confirmed a's lease of late: {raised:?}"
    );
    let refused = trio.refusal_by(b).await;
    assert!(refused.contains("newer than the lease's 0"), "{refused}");
    tokio::time::sleep(ttl * 3).await;
    let held = a.status().await.unwrap();
    assert!(held.running && !held.fenced, "{held:?}");

    // A quorum raised: the lease lapses within its length, and postgres stops.
    let raised = c.raise(1).await.unwrap();
    assert!(raised.outstanding_ms <= 600, "{raised:?}");
    let (fenced, after) = fenced_within(a, Duration::from_secs(10)).await;
    assert!(fenced, "{:?}", a.status().await);
    assert!(
        after < ttl + Duration::from_millis(raised.outstanding_ms) + Duration::from_secs(2),
        "lapsed {}ms after the raise",
        after.as_millis()
    );
    // A raise to an epoch older than one seen is refused: a newer decision stands.
    let stale = c.raise(0).await.unwrap_err().to_string();
    assert!(stale.contains("older than 1"), "{stale}");
}

/// A frozen peer answers no confirmation: the primary's lease is kept by the other, each
/// renewal extended as soon as a quorum has confirmed it, never held back waiting for the
/// frozen peer until the lease has run out. A stop then ends the lease, and the peers forget
/// what they confirmed of it: a promotion (a switchover's) waits nothing out.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_peer_costs_the_primary_nothing_and_a_stop_ends_its_lease() {
    use replicant::engine::postgres::agent::AgentApi;
    if !available() {
        return;
    }
    let ttl = Duration::from_millis(600);
    let trio = leased_trio(ttl).await;
    let [a, b, _] = &trio.clients[..] else {
        unreachable!()
    };
    trio.nodes[2].process.freeze_node();
    tokio::time::sleep(ttl * 6).await;
    let held = a.status().await;
    trio.nodes[2].process.thaw_node();
    let held = held.unwrap();
    assert!(
        held.running && !held.fenced && held.lease_remaining_ms.is_some(),
        "c frozen for six leases: {held:?}"
    );

    let stopped = a.stop(0, false).await.unwrap();
    assert!(!stopped.running, "{stopped:?}");
    assert!(
        stopped.fenced && stopped.lease_remaining_ms.is_none(),
        "the stop ended the lease: {stopped:?}"
    );
    // a told its peers it gave the lease up: b owes a promotion nothing, at once, and refuses
    // a confirmation of that lease arriving late. (Asked without a's address: b's pings of
    // the stopped postgres would refuse it too.)
    let late = b.confirm(0, "a", None, ttl).await.unwrap_err().to_string();
    assert!(late.contains("gave this lease up"), "{late}");
    let raised = b.raise(1).await.unwrap();
    assert_eq!(raised.outstanding_ms, 0, "{raised:?}");
    drop(trio.nodes);
}

/// Peers that no longer reach the primary's postgres stop confirming its lease, though its
/// agent still reaches theirs (a one-way cut, as when only the primary's inbound traffic is
/// lost): it lapses within about a lease, to be failed over, and the refusal says why.
#[tokio::test(flavor = "multi_thread")]
async fn peers_that_no_longer_reach_the_primary_let_its_lease_lapse() {
    use replicant::engine::postgres::agent::AgentApi;
    if !available() {
        return;
    }
    let ttl = Duration::from_millis(600);
    let trio = leased_trio(ttl).await;
    let [a, b, _] = &trio.clients[..] else {
        unreachable!()
    };
    tokio::time::sleep(ttl * 3).await;
    let held = a.status().await.unwrap();
    assert!(held.running && !held.fenced, "kept by its peers: {held:?}");

    // Cut: b and c no longer reach a's postgres; a's agent still reaches theirs.
    trio.relay.cut();
    let (fenced, after) = fenced_within(a, Duration::from_secs(10)).await;
    assert!(
        fenced,
        "peers that cannot reach a's postgres kept its lease: {:?}",
        a.status().await
    );
    // A ping sent up to a quarter of a lease after the cut fails half a lease later; the
    // confirmations given until then carry the lease one lease further.
    assert!(
        after < ttl * 2,
        "lapsed {}ms after the cut",
        after.as_millis()
    );
    let refused = trio.refusal_by(b).await;
    assert!(
        refused.contains("this host no longer reaches a's postgres"),
        "{refused}"
    );
    drop(trio.nodes);
}

/// The peers' agents reach a running postgres with a ping that needs no credentials, and not a
/// frozen one; and a frozen postgres is not kept running by its peers' confirmations: they
/// vouch for its host, its agent pings the server itself.
#[tokio::test(flavor = "multi_thread")]
async fn peers_reach_a_live_postgres_and_a_frozen_one_is_let_lapse() {
    use replicant::engine::postgres::agent::AgentApi;
    if !available() {
        return;
    }
    let ttl = Duration::from_millis(600);
    let trio = leased_trio(ttl).await;
    let [a, b, _] = &trio.clients[..] else {
        unreachable!()
    };
    let address = format!("127.0.0.1:{}", trio.port);
    let ping = Duration::from_millis(500);
    let reached = b.reach(&address, ping).await.unwrap();
    assert!(reached.reached, "{reached:?}");
    // A port bound and closed again: nothing listens there.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let refused = b.reach(&nobody, ping).await.unwrap();
    assert!(!refused.reached && refused.error.is_some(), "{refused:?}");

    // Kept by its peers for three leases' length, then the postmaster freezes.
    tokio::time::sleep(ttl * 3).await;
    assert!(!a.status().await.unwrap().fenced);
    // The pings, its agent's and b's, left no line in its log.
    let log = std::fs::read_to_string(&trio.log).unwrap();
    assert!(log.contains("ready to accept connections"), "{log}");
    for trace in ["cancel request", "startup packet", "SSL", "could not"] {
        assert!(
            !log.contains(trace),
            "a ping left {trace:?} in the log:\n{log}"
        );
    }
    let postmaster = std::fs::read_to_string(trio.data.join("postmaster.pid")).unwrap();
    let pid = nix::unistd::Pid::from_raw(postmaster.lines().next().unwrap().parse().unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let frozen = b.reach(&address, ping).await.unwrap();
    let (fenced, after) = fenced_within(a, Duration::from_secs(20)).await;
    // Whatever the outcome, the postmaster is let go on.
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    assert!(
        !frozen.reached,
        "a frozen postmaster answers no ping: {frozen:?}"
    );
    assert!(
        fenced,
        "the frozen postgres was kept under its lease: {:?}",
        a.status().await
    );
    assert!(
        after < ttl * 2,
        "lapsed {}ms after the freeze",
        after.as_millis()
    );
    drop(trio.nodes);
}

/// The flags that read files: a token shorter than 16 characters is refused, and a replication
/// password file that cannot be read is named.
#[test]
fn secrets_are_read_from_the_files_given() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short-token");
    std::fs::write(&short, "s3cret\n").unwrap();
    let long = dir.path().join("token");
    std::fs::write(&long, format!("{TOKEN}\n")).unwrap();
    let missing = dir.path().join("no-such-password");
    let node = |token: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_replicant"))
            .args(["node", "--data", "/nonexistent", "--listen", "127.0.0.1:1"])
            .args(["--state", "/nonexistent/state.json", "--token-file"])
            .arg(token)
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = node(&short, &[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("the token must be at least 16 characters"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let unread = node(
        &long,
        &["--replication-password-file", missing.to_str().unwrap()],
    );
    assert!(!unread.status.success());
    let stderr = String::from_utf8_lossy(&unread.stderr);
    assert!(stderr.contains("no-such-password"), "{stderr}");
    assert!(
        !stderr.contains(TOKEN),
        "the token is never printed: {stderr}"
    );
}
