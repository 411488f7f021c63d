//! Several `replicant run --coordinator` hosts over a real three-member etcd and real
//! redis-servers, each host on its own loopback address. Faults: the leader killed in the
//! middle of a failover, the leader frozen past its lease, one etcd member killed, all of etcd
//! frozen, and a host cut off from etcd. After each, the chaos invariants: one writable master,
//! the others following it, the names on it, and in sync mode nothing acknowledged lost.

mod support;

use std::time::{Duration, Instant};

use replicant_testkit::writer::{Route, Writer, WriterOptions};
use support::{
    hosts::{Hosts, LEASE, orders, settled},
    *,
};
use tokio::io::AsyncReadExt;

const FAILOVER: &str = "    standby: b\n    detectAfter: 1s\n    cooldown: 5s";

/// Each scenario runs three hosts, three etcd members and three servers: one at a time, so that
/// timing on a small machine is the system's, not the neighbours'.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Hosts 0..count over a sync-mode cluster with `a` as primary; host 0 starts first, with
/// `env`, and leads.
async fn started(
    count: usize,
    env: &[(&str, &str)],
) -> Option<(Hosts, tokio::sync::MutexGuard<'static, ()>)> {
    started_with(count, env, LEASE).await
}

/// As [`started`], with `--lease lease`.
async fn started_with(
    count: usize,
    env: &[(&str, &str)],
    lease: Duration,
) -> Option<(Hosts, tokio::sync::MutexGuard<'static, ()>)> {
    if !support::etcd::available() {
        return None;
    }
    let turn = ONE_AT_A_TIME.lock().await;
    let mut hosts = Hosts::new(count).await;
    hosts.lease = lease;
    hosts
        .bed
        .write_spec("orders.yaml", &sync_spec(&hosts.bed, "a", FAILOVER));
    hosts.start(0, env);
    hosts
        .wait_for("host 0 to lead a ready cluster", 30, |o| {
            o.leader.as_deref() == Some("h0") && settled(o, 1, &["a", "b", "c"])
        })
        .await;
    for i in 1..count {
        hosts.start(i, &[]);
    }
    hosts
        .wait_for("every host present", 30, |o| o.instances.len() == count)
        .await;
    Some((hosts, turn))
}

/// Host 1 or 2 leads, and has finished a failover away from the lost `a`.
fn taken_over(overview: &replicant::runtime::etcd::status::Overview) -> bool {
    matches!(overview.leader.as_deref(), Some("h1" | "h2"))
        && orders(overview).is_some_and(|r| !r.status.history.is_empty())
        && settled(overview, 2, &["b", "c"])
}

fn writer(address: String, prefix: &str) -> Writer {
    Writer::start(WriterOptions {
        route: Route::Direct(address),
        prefix: prefix.into(),
        wait_replicas: Some(1),
        timeout: Duration::from_millis(300),
        postgres_password: None,
    })
}

/// The role of whatever the proxy at `address` sends a new connection to.
async fn role_through(address: &str) -> Option<String> {
    let mut conn = tokio::time::timeout(Duration::from_secs(1), connect(address))
        .await
        .ok()?
        .ok()?;
    let reply: redis::Value = tokio::time::timeout(
        Duration::from_secs(1),
        redis::cmd("ROLE").query_async(&mut conn),
    )
    .await
    .ok()?
    .ok()?;
    match reply {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::BulkString(role)) => Some(String::from_utf8_lossy(role).into()),
            _ => None,
        },
        _ => None,
    }
}

/// Every host's read-write proxy in `on` sends new connections to the master.
async fn assert_proxies_on_master(hosts: &Hosts, on: &[usize]) {
    for &i in on {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if role_through(&hosts.rw(i)).await.as_deref() == Some("master") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "host {i}'s proxy reaches the master"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_killed_mid_failover_is_resumed_by_another_host() {
    let Some((mut hosts, _turn)) = started(3, &[("REPLICANT_CRASH_AT", "after-promote")]).await
    else {
        return;
    };
    assert_proxies_on_master(&hosts, &[0, 1, 2]).await;
    let w = writer(hosts.rw(1), "leader-kill:");
    tokio::time::sleep(Duration::from_millis(300)).await;
    hosts.bed.server("a").kill();
    hosts
        .host(0)
        .wait_for_exit(20, "the leader's crash after promoting")
        .await;
    let target = hosts.journaled_target().await;
    assert!(
        !target.is_empty(),
        "the failover is journaled before its steps"
    );
    let overview = hosts
        .wait_for("another host to finish the failover", 30, taken_over)
        .await;
    assert_failed_over_once(&hosts, &overview, &target, w, "leader-kill:", &[1, 2]).await;

    // `replicant status` from etcd, as from any host.
    let coordinator = hosts.direct_coordinator();
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_replicant"))
        .args(["status", "--coordinator", &coordinator])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}");
    let leader = overview.leader.clone().unwrap();
    assert!(text.contains(&format!("Leader: {leader}")), "{text}");
    assert!(text.contains("h1 (proxies on 127.0.0.3)"), "{text}");
    assert!(text.contains("orders"), "{text}");
    assert!(text.contains(&target), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_frozen_past_its_lease_acts_on_nothing_when_it_resumes() {
    let Some((mut hosts, _turn)) = started(3, &[("REPLICANT_FREEZE_AT", "before-promote")]).await
    else {
        return;
    };
    let w = writer(hosts.rw(1), "leader-freeze:");
    tokio::time::sleep(Duration::from_millis(300)).await;
    hosts.bed.server("a").kill();
    // The leader journals the failover, then stops itself just before promoting.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !hosts.host(0).log_text().contains("REPLICANT_FREEZE_AT") {
        assert!(
            Instant::now() < deadline,
            "the leader reached the freeze point"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let target = hosts.journaled_target().await;
    let token_before = hosts.leader_token().await;
    let overview = hosts
        .wait_for("another host to finish the failover", 30, taken_over)
        .await;
    assert!(
        hosts.leader_token().await > token_before,
        "a newer fencing token"
    );
    let history = orders(&overview).unwrap().status.history.clone();

    // Resumed, the old leader must not take the step it stopped before, nor write the journal.
    hosts.host(0).thaw();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = |log: &str| {
        log.contains("cannot confirm it still leads") || log.contains("no longer leads")
    };
    while !refused(&hosts.host(0).log_text()) {
        assert!(
            Instant::now() < deadline,
            "the resumed leader's step is refused:\n{}",
            hosts.host(0).log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let overview = hosts
        .wait_for("the old leader back as a follower", 30, |o| {
            settled(o, 3, &["b", "c"])
        })
        .await;
    let report = orders(&overview).unwrap();
    assert_eq!(report.status.history, history, "no second failover");
    assert_ne!(overview.leader.as_deref(), Some("h0"));
    assert_failed_over_once(&hosts, &overview, &target, w, "leader-freeze:", &[0, 1, 2]).await;
}

/// After `a` was lost: the primary is the journaled `target` after exactly one promotion, the
/// servers hold the invariants, the proxies of `routing` hosts reach the master, and nothing
/// the writer (over `prefix`) saw acknowledged is lost.
async fn assert_failed_over_once(
    hosts: &Hosts,
    overview: &replicant::runtime::etcd::status::Overview,
    target: &str,
    writer: Writer,
    prefix: &str,
    routing: &[usize],
) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acks = writer.finish().await;
    let report = orders(overview).unwrap();
    assert_eq!(report.status.current_primary.as_deref(), Some(target));
    assert_eq!(
        report.status.epoch, 1,
        "one promotion: resumed, never repeated"
    );
    let primary = check_servers(&hosts.bed, report, &["b", "c"]).await;
    assert_proxies_on_master(hosts, routing).await;
    assert_nothing_lost(&primary, prefix, &acks).await;
}

/// A connection through a proxy that records when the proxy closes it.
async fn held_connection(address: &str) -> tokio::task::JoinHandle<Instant> {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn one_etcd_member_killed_changes_no_leader_and_drops_no_client() {
    // etcd elects a new leader when its leader is the member lost, which takes a second or two
    // with its default timings: the default lease of 5s rides it out, as the README advises.
    let lease = Duration::from_secs(5);
    let Some((mut hosts, _turn)) = started_with(3, &[], lease).await else {
        return;
    };
    assert_proxies_on_master(&hosts, &[0, 1, 2]).await;
    let token = hosts.leader_token().await;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(held_connection(&hosts.rw(i)).await);
    }
    let w = writer(hosts.rw(2), "etcd-member:");
    hosts.etcd.members[0].kill();
    tokio::time::sleep(lease * 3).await;
    for (i, connection) in held.iter().enumerate() {
        assert!(
            !connection.is_finished(),
            "host {i}'s proxy kept its client"
        );
    }
    let acks = w.finish().await;
    // The test's own client may have used the killed member too.
    hosts.client = etcd_client::Client::connect(hosts.etcd.endpoints()[1..].to_vec(), None)
        .await
        .unwrap();
    assert_eq!(hosts.leader_token().await, token, "no change of leader");
    let overview = hosts
        .wait_for("the cluster as it was", 10, |o| {
            settled(o, 3, &["a", "b", "c"])
        })
        .await;
    assert_eq!(overview.leader.as_deref(), Some("h0"));
    let report = orders(&overview).unwrap();
    assert_eq!(report.status.epoch, 0, "no failover");
    let primary = check_servers(&hosts.bed, report, &["a", "b", "c"]).await;
    assert_nothing_lost(&primary, "etcd-member:", &acks).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn all_of_etcd_frozen_demotes_no_server_and_everything_resumes() {
    let Some((hosts, _turn)) = started(3, &[]).await else {
        return;
    };
    assert_proxies_on_master(&hosts, &[0, 1, 2]).await;

    // A second process under a live host's name is refused, and serves nothing.
    let coordinator = hosts.direct_coordinator();
    let specs = hosts.bed.specs();
    let impostor = Controller::spawn(
        &["run"],
        &[
            "--specs",
            specs.to_str().unwrap(),
            "--coordinator",
            &coordinator,
            "--identity",
            "h0",
            "--proxy-host",
            "127.0.0.9",
        ],
        &[],
        hosts.bed.dir.path().join("impostor.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !impostor
        .log_text()
        .contains("another live process is registered as h0")
    {
        assert!(Instant::now() < deadline, "{}", impostor.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let overview = hosts.overview().await.unwrap();
    assert_eq!(overview.instances.len(), 3);
    assert!(
        overview
            .instances
            .iter()
            .all(|h| h.proxy_host.as_deref() != Some("127.0.0.9"))
    );
    assert_eq!(
        role_through(&format!("127.0.0.9:{}", hosts.bed.rw_port)).await,
        None
    );
    drop(impostor);

    let journal_before = hosts.journal().await;
    for member in &hosts.etcd.members {
        member.freeze();
    }
    tokio::time::sleep(LEASE + Duration::from_secs(2)).await;
    // Nobody may act or route, but the master is not demoted: clients that reach it directly
    // still write.
    let master = hosts.bed.address("a");
    assert_eq!(role(&master).await, "master");
    set(&master, "during-etcd-freeze", "1").await.unwrap();
    for i in 0..3 {
        assert_eq!(
            role_through(&hosts.rw(i)).await,
            None,
            "host {i}'s proxy stopped routing, unable to confirm its lease"
        );
    }
    for member in &hosts.etcd.members {
        member.thaw();
    }
    let overview = hosts
        .wait_for("a leader and a ready cluster again", 30, |o| {
            settled(o, 3, &["a", "b", "c"])
        })
        .await;
    let report = orders(&overview).unwrap();
    assert_eq!(report.status.epoch, 0, "no failover");
    assert_eq!(hosts.journal().await["epoch"], journal_before["epoch"]);
    check_servers(&hosts.bed, report, &["a", "b", "c"]).await;
    assert_proxies_on_master(&hosts, &[0, 1, 2]).await;
    assert_eq!(
        value(&master, "during-etcd-freeze").await.as_deref(),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_cut_off_stops_routing_before_the_new_primary_takes_writes() {
    let Some((mut hosts, _turn)) = started(3, &[]).await else {
        return;
    };
    assert_proxies_on_master(&hosts, &[0, 1, 2]).await;
    let cut_host_client = held_connection(&hosts.rw(2)).await;
    // Host 2 loses etcd while its proxy still reaches the master; then the master stalls, so
    // the others fail over. Host 2's proxy must have let go of the old master first.
    hosts.cut(2);
    hosts.bed.server("a").freeze();
    let frozen_at = Instant::now();
    let first_new_write = tokio::spawn({
        let address = hosts.rw(0);
        async move {
            let mut n = 0u64;
            loop {
                n += 1;
                // A write acknowledged after the freeze can only come from the new primary.
                if tokio::time::timeout(
                    Duration::from_millis(300),
                    set(&address, &format!("after-cut:{n}"), "1"),
                )
                .await
                .is_ok_and(|r| r.is_ok())
                {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let first_new_write = tokio::time::timeout(Duration::from_secs(30), first_new_write)
        .await
        .expect("the new primary takes writes")
        .unwrap();
    assert!(
        cut_host_client.is_finished(),
        "the cut-off host's proxy still held its client when the new primary took a write"
    );
    let stopped = cut_host_client.await.unwrap();
    assert!(
        stopped < first_new_write,
        "the cut-off proxy stopped {:?} after the freeze, the new primary wrote at {:?}",
        stopped - frozen_at,
        first_new_write - frozen_at
    );
    assert_eq!(
        role_through(&hosts.rw(2)).await,
        None,
        "nothing routed while cut off"
    );
    println!(
        "cut-off proxy stopped {:?} after the master froze; the new primary took its first write at {:?}",
        stopped - frozen_at,
        first_new_write - frozen_at
    );

    hosts.bed.server("a").thaw();
    hosts.heal(2);
    let overview = hosts
        .wait_for("the cluster settled with host 2 back", 40, |o| {
            settled(o, 3, &["a", "b", "c"]) && orders(o).is_some_and(|r| r.status.epoch == 1)
        })
        .await;
    check_servers(&hosts.bed, orders(&overview).unwrap(), &["a", "b", "c"]).await;
    assert_proxies_on_master(&hosts, &[0, 1, 2]).await;
}
