//! The database outlives its controller: a healthy PostgreSQL cluster under real node agents
//! keeps committing while `replicant run` is killed for a minute (async and sync) or frozen,
//! and so does a Redis cluster in sync mode; the controller that returns changes nothing: no
//! failover, the same epoch, nothing lost. Under `--coordinator`, the leading host killed alone
//! hands over without touching postgres. A writer commits straight into the primary's port
//! throughout, so neither the proxy nor the controller stands between it and the database. `REPLICANT_AWAY_SECS` sets how long the
//! controller stays away (60 by default).

mod support;

use std::time::{Duration, Instant};

use replicant_testkit::{
    postgres::PASSWORD,
    writer::{Route, Writer, WriterOptions, count_missing_rows},
};
use support::{
    Controller,
    away::{assert_no_failed_write, away, writes_go_on},
    pg::available,
    pg_bed::PgBed,
};

async fn ready(bed: &PgBed, mode: &str) -> Controller {
    let ctl = bed.controller(&bed.spec("a", mode), &[]);
    bed.wait_for("a primary, b and c streaming", &ctl, 90, |r| {
        r.status.ready_members.as_deref() == Some("3/3")
            && support::condition(r, "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
    ctl
}

/// A writer into a's own port. A commit that takes 5s counts as failed.
fn writer(bed: &PgBed, prefix: &str) -> Writer {
    Writer::start(WriterOptions {
        route: Route::Direct(bed.address("a")),
        prefix: prefix.into(),
        wait_replicas: None,
        timeout: Duration::from_secs(5),
        postgres_password: Some(PASSWORD.into()),
    })
}

/// Stop the writer: every attempt was acknowledged and every acknowledged row is on a. Returns
/// the commits and the longest wait between two acknowledgements.
async fn finish(bed: &PgBed, w: Writer, prefix: &str, what: &str) -> (usize, Duration) {
    let acks = w.finish().await;
    let gap = assert_no_failed_write(&acks, what);
    let lost = count_missing_rows(&bed.address("a"), PASSWORD, prefix, &acks)
        .await
        .unwrap();
    assert_eq!(lost, 0, "{what}: acknowledged commits lost");
    (acks.len(), gap)
}

/// The returning controller found the cluster as it was: a primary, at epoch 0, with no
/// failover in its history, all three members ready.
async fn assert_untouched(bed: &PgBed, ctl: &Controller, what: &str) {
    bed.wait_for("the returning controller's report", ctl, 30, |r| {
        r.status.ready_members.as_deref() == Some("3/3")
    })
    .await;
    // Long enough for a failover to have started, had the controller wanted one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = bed.wait_for("the report", ctl, 5, |_| true).await;
    assert_eq!(
        report.status.current_primary.as_deref(),
        Some("a"),
        "{what}"
    );
    assert_eq!(report.status.epoch, 0, "{what}: no promotion");
    assert!(
        report.status.history.is_empty(),
        "{what}: no failover: {:?}",
        report.status.history
    );
}

async fn controller_killed_for_a_while(mode: &str) {
    let bed = PgBed::new();
    let mut ctl = ready(&bed, mode).await;
    let w = writer(&bed, "away:");
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctl.kill();
    let killed = Instant::now();
    writes_go_on(&w, killed, mode, || bed.agent_logs()).await;
    let ctl = bed.controller(&bed.spec("a", mode), &[]);
    assert_untouched(&bed, &ctl, mode).await;
    let (commits, gap) = finish(&bed, w, "away:", mode).await;
    eprintln!(
        "{mode}: controller away {}s: {commits} commits, none failed, none lost, longest gap {}ms",
        away().as_secs(),
        gap.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn async_commits_go_on_while_the_controller_is_killed_and_its_return_changes_nothing() {
    if !available() {
        return;
    }
    controller_killed_for_a_while("async").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_commits_go_on_while_the_controller_is_killed_and_its_return_changes_nothing() {
    if !available() {
        return;
    }
    controller_killed_for_a_while("sync").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_frozen_for_5s_stops_nothing_and_fails_nothing_over_when_it_wakes() {
    if !available() {
        return;
    }
    let bed = PgBed::new();
    let ctl = ready(&bed, "sync").await;
    let w = writer(&bed, "frozen:");
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctl.freeze();
    tokio::time::sleep(Duration::from_secs(5)).await;
    ctl.thaw();
    assert_untouched(&bed, &ctl, "frozen").await;
    let (commits, gap) = finish(&bed, w, "frozen:", "frozen").await;
    eprintln!(
        "frozen 5s: {commits} commits, none failed, none lost, longest gap {}ms",
        gap.as_millis()
    );
}

/// Redis in sync mode: a writer straight into the master, each write waiting for a replica,
/// goes on while the controller is killed, and the returning controller changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn redis_writes_go_on_while_the_controller_is_killed_and_its_return_changes_nothing() {
    use support::{Bed, assert_nothing_lost, ready, sync_spec};
    let bed = Bed::new(3);
    let spec = sync_spec(&bed, "a", "    standby: b\n    detectAfter: 1s");
    let mut ctl = bed.started(&spec).await;
    let epoch = bed
        .wait_for("the report", &ctl, 5, |_| true)
        .await
        .status
        .epoch;
    let w = Writer::start(WriterOptions {
        route: Route::Direct(bed.address("a")),
        prefix: "away:".into(),
        wait_replicas: Some(1),
        timeout: Duration::from_secs(5),
        postgres_password: None,
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctl.kill();
    let killed = Instant::now();
    writes_go_on(&w, killed, "redis", String::new).await;
    let ctl = bed.controller();
    bed.wait_for("the returning controller's report", &ctl, 30, ready)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = bed.wait_for("the report", &ctl, 5, |_| true).await;
    assert_eq!(report.status.current_primary.as_deref(), Some("a"));
    assert_eq!(report.status.epoch, epoch, "redis: no promotion");
    assert!(
        report.status.history.is_empty(),
        "redis: no failover: {:?}",
        report.status.history
    );
    let acks = w.finish().await;
    let gap = assert_no_failed_write(&acks, "redis");
    assert_nothing_lost(&bed.address("a"), "away:", &acks).await;
    eprintln!(
        "redis: controller away {}s: {} writes, none failed, none lost, longest gap {}ms",
        away().as_secs(),
        acks.len(),
        gap.as_millis()
    );
}

/// Under `--coordinator`, the leading host's process killed alone while PostgreSQL is healthy:
/// the other host takes the lead and touches nothing. No failover, the same epoch, and the
/// writer straight into the primary never fails. (`Hosts` brings Redis servers of its own,
/// unused here: the spec is PostgreSQL's.)
#[tokio::test(flavor = "multi_thread")]
async fn a_coordinated_leader_killed_alone_hands_over_without_touching_postgres() {
    use support::{
        hosts::{Hosts, orders},
        node::TOKEN,
    };
    if !available() || !support::etcd::available() {
        return;
    }
    let mut bed = PgBed::new();
    let mut hosts = Hosts::new(2).await;
    hosts.bed.write_spec("orders.yaml", &bed.spec("a", "async"));
    let env = [("PG_PASSWORD", PASSWORD), ("AGENT_TOKEN", TOKEN)];
    hosts.start(0, &env);
    let ready = |o: &replicant::runtime::etcd::status::Overview| {
        orders(o)
            .is_some_and(|r| r.status.ready_members.as_deref() == Some("3/3") && support::ready(r))
    };
    hosts
        .wait_for("host 0 to lead a ready cluster", 90, |o| {
            o.leader.as_deref() == Some("h0") && ready(o)
        })
        .await;
    hosts.start(1, &env);
    let overview = hosts
        .wait_for("both hosts present", 30, |o| o.instances.len() == 2)
        .await;
    let epoch = orders(&overview).unwrap().status.epoch;

    let w = writer(&bed, "leader:");
    tokio::time::sleep(Duration::from_millis(500)).await;
    hosts.host(0).kill();
    hosts
        .wait_for("host 1 to lead", 30, |o| o.leader.as_deref() == Some("h1"))
        .await;
    // Past the lease that host 0's renewals granted, and long enough for a failover to have
    // started, had host 1 wanted one.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let overview = hosts
        .wait_for("host 1's report", 30, |o| {
            o.leader.as_deref() == Some("h1") && ready(o)
        })
        .await;
    let report = orders(&overview).unwrap();
    assert_eq!(report.status.current_primary.as_deref(), Some("a"));
    assert_eq!(report.status.epoch, epoch, "no promotion");
    assert!(
        report.status.history.is_empty(),
        "no failover: {:?}",
        report.status.history
    );
    let host = bed.node("a").status();
    assert_eq!(
        (&host["fenced"], &host["running"]),
        (&false.into(), &true.into()),
        "{host}"
    );
    let (commits, gap) = finish(&bed, w, "leader:", "leader killed").await;
    eprintln!(
        "coordinated leader killed: {commits} commits, none failed, none lost, longest gap {}ms",
        gap.as_millis()
    );
}
