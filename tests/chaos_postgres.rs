//! Chaos suite for PostgreSQL: faults injected into real postgres servers under real node
//! agents and a real controller while a writer commits through the read-write name and records
//! every acknowledged commit. After each: one writable primary, every other member streaming
//! from it on its timeline, the read-write name on it, and in sync mode no acknowledged commit
//! lost. `REPLICANT_SOAK=N` repeats every scenario N times.

mod support;

use std::time::{Duration, Instant};

use replicant_testkit::{
    postgres::PASSWORD,
    writer::{Ack, Route, Writer, WriterOptions, count_missing_rows},
};
use support::{
    Controller, endpoints,
    pg::{available, try_connect},
    pg_bed::PgBed,
};

fn rounds() -> usize {
    std::env::var("REPLICANT_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn writer(bed: &PgBed, prefix: &str) -> Writer {
    Writer::start(WriterOptions {
        route: Route::Direct(bed.rw()),
        prefix: prefix.into(),
        wait_replicas: None,
        timeout: Duration::from_millis(500),
        postgres_password: Some(PASSWORD.into()),
    })
}

/// What a member's server says of itself: writable (a primary neither read-only nor fenced),
/// the timeline it writes on if a primary, and whom it streams from (`port`, receiver status,
/// received timeline).
struct Seen {
    writable: bool,
    /// The timeline a primary writes on.
    timeline: Option<i64>,
    upstream: Option<(i64, String, i64)>,
}

async fn seen(address: &str) -> Result<Seen, String> {
    let client = try_connect(address).await?;
    let row = client
        .query_one(
            "SELECT NOT pg_is_in_recovery()
                    AND current_setting('default_transaction_read_only') = 'off'
                    AND current_setting('synchronous_standby_names') NOT LIKE '%fenced%',
                    CASE WHEN NOT pg_is_in_recovery() THEN
                      ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8
                    END,
                    (SELECT sender_port::int8 FROM pg_stat_wal_receiver),
                    (SELECT status FROM pg_stat_wal_receiver),
                    (SELECT received_tli::int8 FROM pg_stat_wal_receiver)",
            &[],
        )
        .await
        .unwrap();
    let port: Option<i64> = row.get(2);
    Ok(Seen {
        writable: row.get(0),
        timeline: row.get(1),
        upstream: port.map(|p| (p, row.get(3), row.get(4))),
    })
}

/// Wait until the cluster settled with `expect_reachable` answering, then check the
/// invariants; returns the primary.
async fn assert_converged(bed: &PgBed, ctl: &Controller, expect_reachable: &[&str]) -> String {
    let settled =
        |r: &replicant::runtime::report::ClusterReport| support::converged(r, expect_reachable);
    let deadline = Instant::now() + Duration::from_secs(90);
    let report = loop {
        let report = bed.wait_for("a report", ctl, 10, |_| true).await;
        if settled(&report) {
            break report;
        }
        if Instant::now() > deadline {
            panic!(
                "no convergence on {expect_reachable:?}\nlast report: {}\ncontroller log:\n{}\n{}",
                serde_json::to_string_pretty(&report.status).unwrap(),
                ctl.log_text(),
                bed.agent_logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let primary = report.status.current_primary.clone().unwrap();
    let primary_port = i64::from(bed.spec_port(&primary));
    let mut writable = Vec::new();
    let mut timelines = Vec::new();
    for m in expect_reachable {
        let s = seen(&bed.address(m)).await.unwrap_or_else(|e| {
            panic!(
                "{m}, reported converged: {e}\ncontroller log:\n{}\n{}",
                ctl.log_text(),
                bed.agent_logs()
            )
        });
        if s.writable {
            writable.push(m.to_string());
        }
        if *m != primary {
            let (port, status, received) = s
                .upstream
                .unwrap_or_else(|| panic!("{m} streams from nobody"));
            assert_eq!(port, primary_port, "{m} streams from the primary");
            assert_eq!(status, "streaming", "{m}");
            timelines.push(received);
        } else {
            timelines.push(s.timeline.expect("the primary's timeline"));
        }
    }
    assert_eq!(
        writable,
        std::slice::from_ref(&primary),
        "exactly one writable primary"
    );
    timelines.dedup();
    assert_eq!(timelines.len(), 1, "one timeline: {timelines:?}");
    assert_eq!(endpoints(&report, "orders-rw"), [primary.as_str()]);
    primary
}

async fn assert_nothing_lost(bed: &PgBed, primary: &str, prefix: &str, acks: &[Ack]) {
    assert!(
        acks.len() > 20,
        "the writer made progress: {} commits",
        acks.len()
    );
    let lost = count_missing_rows(&bed.address(primary), PASSWORD, prefix, acks)
        .await
        .unwrap();
    assert_eq!(
        lost,
        0,
        "acknowledged commits lost in sync mode ({} acknowledged)",
        acks.len()
    );
}

async fn started(bed: &PgBed, env: &[(&str, &str)]) -> Controller {
    let ctl = bed.controller(&bed.spec("a", "sync"), env);
    bed.wait_for("a primary, b and c streaming", &ctl, 90, |r| {
        r.status.ready_members.as_deref() == Some("3/3")
            && support::condition(r, "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
    ctl
}

#[tokio::test(flavor = "multi_thread")]
async fn primary_node_loss_loses_no_acknowledged_commit_and_the_old_primary_rejoins() {
    if !available() {
        return;
    }
    for round in 0..rounds() {
        let mut bed = PgBed::new();
        let ctl = started(&bed, &[]).await;
        let w = writer(&bed, "kill:");
        tokio::time::sleep(Duration::from_millis(500)).await;
        bed.node("a").kill_node();
        bed.wait_for("failover", &ctl, 30, |r| !r.status.history.is_empty())
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let primary = assert_converged(&bed, &ctl, &["b", "c"]).await;
        bed.node("a").reboot();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let acks = w.finish().await;
        assert_eq!(
            assert_converged(&bed, &ctl, &["a", "b", "c"]).await,
            primary
        );
        assert_nothing_lost(&bed, &primary, "kill:", &acks).await;
        eprintln!("round {round}: {} acknowledged, 0 lost", acks.len());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_primary_is_failed_over_and_rejoins_when_it_wakes() {
    if !available() {
        return;
    }
    for _ in 0..rounds() {
        let mut bed = PgBed::new();
        let ctl = started(&bed, &[]).await;
        let w = writer(&bed, "freeze:");
        tokio::time::sleep(Duration::from_millis(500)).await;
        bed.node("a").process.freeze_node();
        bed.wait_for("failover", &ctl, 30, |r| !r.status.history.is_empty())
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        bed.node("a").process.thaw_node();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let acks = w.finish().await;
        let primary = assert_converged(&bed, &ctl, &["a", "b", "c"]).await;
        assert_ne!(primary, "a");
        assert_nothing_lost(&bed, &primary, "freeze:", &acks).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_standby_keeps_commits_flowing_and_rejoins() {
    if !available() {
        return;
    }
    let mut bed = PgBed::new();
    let ctl = started(&bed, &[]).await;
    let w = writer(&bed, "standby:");
    tokio::time::sleep(Duration::from_millis(300)).await;
    bed.node("c").kill_node();
    let before = w.count().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        w.count().await > before + 10,
        "commits continue with one standby left"
    );
    assert_converged(&bed, &ctl, &["a", "b"]).await;
    bed.node("c").reboot();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acks = w.finish().await;
    let primary = assert_converged(&bed, &ctl, &["a", "b", "c"]).await;
    assert_eq!(primary, "a", "a standby's loss is no reason to fail over");
    assert_nothing_lost(&bed, &primary, "standby:", &acks).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_killed_at_every_step_of_a_failover_or_switchover_loses_nothing() {
    if !available() {
        return;
    }
    // A failover of a hung primary (its standbys' links stay up, so they are detached first),
    // and a planned switchover, where the old primary is stopped cleanly.
    let failover = [
        "after-detach",
        "before-promote",
        "after-promote",
        "before-repoint",
        "after-repoint",
        "before-movenames",
    ];
    let switchover = ["after-stop", "after-promote", "after-movenames"];
    let cases = failover
        .iter()
        .map(|c| (*c, true))
        .chain(switchover.iter().map(|c| (*c, false)));
    for (crash_at, hang) in cases {
        eprintln!("case {crash_at}");
        let mut bed = PgBed::new();
        let mut crashing = started(&bed, &[("REPLICANT_CRASH_AT", crash_at)]).await;
        let w = writer(&bed, "crash:");
        tokio::time::sleep(Duration::from_millis(300)).await;
        if hang {
            bed.node("a").process.freeze_node();
        } else {
            bed.write_spec(&bed.spec("b", "sync"));
        }
        crashing
            .wait_for_exit_or_show(30, crash_at, || {
                let status = bed.state().join("clusters/default.orders/status.json");
                let status = std::fs::read_to_string(status).unwrap_or_default();
                format!("last status: {status}\n{}", bed.agent_logs())
            })
            .await;
        let target = bed.journal()["operation"]["to"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            !target.is_empty(),
            "{crash_at}: the operation is journaled before the step"
        );
        let spec = if hang {
            bed.spec("a", "sync")
        } else {
            bed.spec("b", "sync")
        };
        let ctl = bed.controller(&spec, &[]);
        bed.wait_for("the operation to finish after the restart", &ctl, 60, |r| {
            !r.status.history.is_empty()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let acks = w.finish().await;
        let reachable: &[&str] = if hang { &["b", "c"] } else { &["a", "b", "c"] };
        let primary = assert_converged(&bed, &ctl, reachable).await;
        assert_eq!(
            primary,
            target,
            "{crash_at}: the journaled target, not a new choice\n{}\n{}",
            ctl.log_text(),
            bed.agent_logs()
        );
        let report = bed.wait_for("the report", &ctl, 5, |_| true).await;
        assert_eq!(report.status.epoch, 1, "{crash_at}: one promotion, resumed");
        assert_eq!(
            format!("{:?}", report.status.history[0].outcome),
            "Succeeded",
            "{crash_at}"
        );
        assert_nothing_lost(&bed, &primary, "crash:", &acks).await;
        if hang {
            bed.node("a").kill_node();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_primary_is_replaced_and_rejoins_when_the_partition_heals() {
    if !available() {
        return;
    }
    for _ in 0..rounds() {
        // The controller and the standbys reach each member through a relay; a's are cut.
        let bed = PgBed::relayed().await;
        let ctl = started(&bed, &[]).await;
        let w = writer(&bed, "partition:");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (postgres, agent) = bed.host("a").relays.as_ref().unwrap();
        postgres.cut();
        agent.cut();
        bed.wait_for("failover", &ctl, 30, |r| !r.status.history.is_empty())
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let primary = assert_converged(&bed, &ctl, &["b", "c"]).await;
        let (postgres, agent) = bed.host("a").relays.as_ref().unwrap();
        postgres.heal();
        agent.heal();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let acks = w.finish().await;
        assert_eq!(
            assert_converged(&bed, &ctl, &["a", "b", "c"]).await,
            primary
        );
        assert_nothing_lost(&bed, &primary, "partition:", &acks).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_primary_returning_with_diverged_commits_is_rewound_onto_the_new_timeline() {
    if !available() {
        return;
    }
    use support::pg::{eventually_pg, sql, stop_receiving, try_number};
    // Async mode. With the controller away, the standbys stop receiving and a commits a row
    // only it holds; then a's node is lost and the controller comes back.
    let mut bed = PgBed::new();
    // A lease long enough for the steps below: a writes its row with the controller away.
    bed.failover = "{ detectAfter: 10s, cooldown: 1m }".into();
    let spec = bed.spec("a", "async");
    let mut ctl = bed.controller(&spec, &[]);
    bed.wait_for("ready", &ctl, 90, |r| {
        r.status.ready_members.as_deref() == Some("3/3")
    })
    .await;
    let a = bed.address("a");
    sql(&a, "CREATE TABLE d (v text)").await;
    ctl.kill();
    for m in ["b", "c"] {
        let address = bed.address(m);
        eventually_pg("the table on the standbys", async || {
            try_number(&address, "SELECT count(*) FROM d").await == Some(0)
        })
        .await;
        stop_receiving(&address).await;
    }
    sql(&a, "INSERT INTO d VALUES ('only on a')").await;
    bed.node("a").kill_node();
    let ctl = bed.controller(&spec, &[]);
    let report = bed
        .wait_for("failover", &ctl, 30, |r| !r.status.history.is_empty())
        .await;
    let primary = report.status.history[0].to.clone();

    // a's host comes back: rewound onto the new timeline, its own row gone.
    bed.node("a").reboot();
    assert_eq!(
        assert_converged(&bed, &ctl, &["a", "b", "c"]).await,
        primary
    );
    assert_eq!(
        try_number(&a, "SELECT count(*) FROM d").await,
        Some(0),
        "a's diverged commit is gone"
    );
    let status = bed.node("a").status();
    assert_eq!(status["rejoined"], "rewound", "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flapping_primary_gets_one_failover_per_cooldown() {
    if !available() {
        return;
    }
    let mut bed = PgBed::new();
    bed.failover = "{ detectAfter: 1s, cooldown: 10s }".into();
    let ctl = started(&bed, &[]).await;
    let w = writer(&bed, "flap:");
    tokio::time::sleep(Duration::from_millis(300)).await;
    bed.node("a").kill_node();
    let report = bed
        .wait_for("first failover", &ctl, 30, |r| !r.status.history.is_empty())
        .await;
    let first_done = Instant::now();
    let first = report.status.history[0].to.clone();
    bed.node("a").reboot();
    assert_converged(&bed, &ctl, &["a", "b", "c"]).await;

    // The new primary's node is lost too, well inside the cooldown: no second automatic
    // failover until it has passed, and status says why.
    bed.node(&first).kill_node();
    let report = bed
        .wait_for("the cooldown to be explained", &ctl, 10, |r| {
            support::condition(r, "PromotionBlocked")
                .is_some_and(|c| c.status == "True" && c.reason == "CooldownActive")
        })
        .await;
    assert_eq!(report.status.epoch, 1);
    assert!(
        first_done.elapsed() < Duration::from_secs(10),
        "checked inside the cooldown"
    );
    bed.wait_for("second failover", &ctl, 30, |r| r.status.epoch == 2)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acks = w.finish().await;
    let others: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|m| *m != first)
        .collect();
    let primary = assert_converged(&bed, &ctl, &others).await;
    assert_nothing_lost(&bed, &primary, "flap:", &acks).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_the_spec_during_a_failover_never_reverts_it() {
    if !available() {
        return;
    }
    let mut bed = PgBed::new();
    let ctl = started(&bed, &[]).await;
    let w = writer(&bed, "edit:");
    tokio::time::sleep(Duration::from_millis(300)).await;
    bed.node("a").kill_node();
    tokio::time::sleep(Duration::from_millis(900)).await;
    bed.write_spec(&bed.spec("c", "sync"));
    bed.wait_for("c primary", &ctl, 30, |r| {
        r.status.current_primary.as_deref() == Some("c")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acks = w.finish().await;
    let primary = assert_converged(&bed, &ctl, &["b", "c"]).await;
    assert_eq!(primary, "c");
    let report = bed.wait_for("the report", &ctl, 5, |_| true).await;
    assert!(
        report.status.history.iter().all(|h| h.to != "a"),
        "never back to a: {:?}",
        report.status.history
    );
    assert_nothing_lost(&bed, &primary, "edit:", &acks).await;
}

/// The backend that receives `standby`'s WAL stream: the process a test stops to make it lag.
async fn wal_receiver(standby: &str) -> nix::unistd::Pid {
    let client = try_connect(standby).await.unwrap();
    let row = client
        .query_one("SELECT pid FROM pg_stat_wal_receiver", &[])
        .await
        .unwrap();
    nix::unistd::Pid::from_raw(row.get(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn standbys_lagging_beyond_max_lag_block_promotion_until_a_person_accepts_the_loss() {
    if !available() {
        return;
    }
    for _ in 0..rounds() {
        lagging_standbys_block_promotion().await;
    }
}

async fn lagging_standbys_block_promotion() {
    use nix::sys::signal::{Signal, kill};
    let mut bed = PgBed::new();
    bed.failover = "{ detectAfter: 1s, maxLag: 1Mi, cooldown: 5s }".into();
    let ctl = bed.controller(&bed.spec("a", "async"), &[]);
    bed.wait_for("a primary, b and c streaming", &ctl, 90, |r| {
        r.status.ready_members.as_deref() == Some("3/3")
            && support::condition(r, "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
    // Both standbys stop receiving; the primary then commits 64 MiB of WAL, more than the
    // sockets between them buffer, and is lost.
    let receivers = [
        wal_receiver(&bed.address("b")).await,
        wal_receiver(&bed.address("c")).await,
    ];
    for pid in receivers {
        kill(pid, Signal::SIGSTOP).unwrap();
    }
    let primary = try_connect(&bed.address("a")).await.unwrap();
    primary
        .batch_execute(
            "CREATE TABLE burst AS SELECT repeat('x', 1000) AS v FROM generate_series(1, 65536)",
        )
        .await
        .unwrap();
    let burst: i64 = primary
        .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8", &[])
        .await
        .unwrap()
        .get(0);
    // Lag is judged against the primary's last observed position: let a probe see the burst.
    bed.wait_for("the burst to be observed", &ctl, 10, |r| {
        r.status
            .members
            .iter()
            .any(|m| m.name == "a" && m.offset.is_some_and(|o| o >= burst as u64))
    })
    .await;
    bed.node("a").kill_node();
    for pid in receivers {
        kill(pid, Signal::SIGCONT).unwrap();
    }
    let report = bed
        .wait_for("promotion to be refused", &ctl, 30, |r| {
            support::condition(r, "PromotionBlocked")
                .is_some_and(|c| c.status == "True" && c.reason == "NoCandidate")
        })
        .await;
    let message = &support::condition(&report, "PromotionBlocked")
        .unwrap()
        .message;
    assert!(message.contains("exceeds maxLag 1 MiB"), "{message}");
    eprintln!("refused: {message}");
    assert_eq!(report.status.epoch, 0, "nobody promoted");
    for m in ["b", "c"] {
        let s = seen(&bed.address(m)).await.unwrap();
        assert!(!s.writable, "{m} stays a standby");
    }

    // The person accepts the loss by raising maxLag: failover, and the loss is visible.
    bed.failover = "{ detectAfter: 1s, maxLag: 1Gi, cooldown: 5s }".into();
    bed.write_spec(&bed.spec("a", "async"));
    bed.wait_for("failover after raising maxLag", &ctl, 30, |r| {
        r.status.epoch == 1
    })
    .await;
    let promoted = assert_converged(&bed, &ctl, &["b", "c"]).await;
    let burst_there = try_connect(&bed.address(&promoted))
        .await
        .unwrap()
        .query_one("SELECT to_regclass('burst') IS NOT NULL", &[])
        .await
        .unwrap()
        .get::<_, bool>(0);
    assert!(
        !burst_there,
        "the unreplicated commit is gone, as the refusal said"
    );

    // The old primary comes back with that commit: it is rewound onto the new timeline.
    bed.node("a").reboot();
    assert_eq!(
        assert_converged(&bed, &ctl, &["a", "b", "c"]).await,
        promoted
    );
}
