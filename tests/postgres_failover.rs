//! `replicant run` failing over and switching over real postgres servers under real `replicant
//! node` agents, on loopback: a planned switchover, a controller killed mid-failover, a primary
//! cut off from the controller while its clients still reach it, one the controller alone can
//! no longer log in to, and a member holding another data set.

mod support;

use std::time::{Duration, Instant, SystemTime};

use replicant_testkit::{
    postgres::PASSWORD,
    writer::{Ack, Route, Writer, WriterOptions, count_missing_rows},
};
use support::{
    condition,
    pg::*,
    pg_bed::{PgBed, ready_members, streaming_from},
};

/// Rows `{prefix}{n}` written to `address` one commit at a time until finished.
fn writer(address: &str, prefix: &str) -> Writer {
    Writer::start(WriterOptions {
        route: Route::Direct(address.to_string()),
        prefix: prefix.to_string(),
        wait_replicas: None,
        timeout: Duration::from_millis(500),
        postgres_password: Some(PASSWORD.to_string()),
    })
}

async fn acknowledged_at_least(writer: &Writer, n: usize) {
    eventually_pg("writes acknowledged", async || writer.count().await >= n).await;
}

async fn all_streaming_from(bed: &PgBed, ctl: &support::Controller, primary: &str) {
    bed.wait_for(
        &format!("{primary} primary, the others streaming from it"),
        ctl,
        90,
        |r| {
            r.status.current_primary.as_deref() == Some(primary)
                && ready_members(r, 3)
                && ["a", "b", "c"]
                    .iter()
                    .all(|m| *m == primary || streaming_from(r, m, primary))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switchover_by_editing_the_primary_loses_no_commit_and_needs_no_rewind() {
    if !available() {
        return;
    }
    let mut bed = PgBed::new();
    let ctl = bed.controller(&bed.spec("a", "sync"), &[]);
    all_streaming_from(&bed, &ctl, "a").await;

    let writes = writer(&bed.rw(), "switch:");
    acknowledged_at_least(&writes, 50).await;
    bed.write_spec(&bed.spec("b", "sync"));
    let report = bed
        .wait_for("b primary, a and c streaming from it", &ctl, 60, |r| {
            r.status.current_primary.as_deref() == Some("b")
                && streaming_from(r, "a", "b")
                && streaming_from(r, "c", "b")
        })
        .await;
    let before = writes.count().await;
    acknowledged_at_least(&writes, before + 50).await;
    let acks = writes.finish().await;
    let missing = count_missing_rows(&bed.address("b"), PASSWORD, "switch:", &acks)
        .await
        .unwrap();
    assert_eq!(missing, 0, "of {} acknowledged commits", acks.len());

    // The old primary was stopped cleanly, so it holds nothing b lacks: it restarted as a
    // standby, with no rewind and no copy.
    let a = bed.node("a").status();
    assert_eq!(
        a["lastOperation"],
        "standby",
        "{a}\nhistory: {:?}\ncontroller log:\n{}\n{}",
        report.status.history,
        ctl.log_text(),
        bed.agent_logs()
    );
    assert!(a["rejoined"].is_null(), "{a}");
    assert!(a["lastError"].is_null(), "{a}");
    let last = report.status.history.last().unwrap();
    assert_eq!(format!("{:?}", last.kind), "Switchover", "{last:?}");
    assert_eq!(format!("{:?}", last.outcome), "Succeeded", "{last:?}");
    assert!(
        last.branch.as_deref().is_some_and(|b| b.starts_with("2@")),
        "{last:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_killed_after_detach_or_after_promote_resumes_at_the_same_epoch() {
    if !available() {
        return;
    }
    for crash_at in ["after-detach", "after-promote"] {
        let mut bed = PgBed::new();
        let mut crashing =
            bed.controller(&bed.spec("a", "async"), &[("REPLICANT_CRASH_AT", crash_at)]);
        all_streaming_from(&bed, &crashing, "a").await;
        // a's host hangs: its standbys' links stay open, so they are detached first.
        bed.node("a").process.freeze_node();
        crashing
            .wait_for_exit_or_show(30, crash_at, || bed.agent_logs())
            .await;
        let journal = bed.journal();
        let target = journal["operation"]["to"].as_str().unwrap().to_string();
        assert_eq!(journal["operation"]["epoch"], 1, "{crash_at}: {journal}");

        let ctl = bed.controller(&bed.spec("a", "async"), &[]);
        let report = bed
            .wait_for("the failover finished after the restart", &ctl, 60, |r| {
                r.status
                    .history
                    .last()
                    .is_some_and(|h| format!("{:?}", h.outcome) == "Succeeded" && h.to == target)
            })
            .await;
        assert_eq!(
            report.status.epoch, 1,
            "{crash_at}: resumed, not started again at a new epoch"
        );
        assert_eq!(report.status.history.len(), 1, "{crash_at}");
        assert_eq!(bed.node(&target).status()["epoch"], 1, "{crash_at}");
        let other = if target == "b" { "c" } else { "b" };
        bed.wait_for(
            "the other standby following the new primary",
            &ctl,
            60,
            |r| streaming_from(r, other, &target),
        )
        .await;
        assert!(bed.journal()["operation"].is_null(), "{crash_at}");
        bed.node("a").kill_node();
    }
}

/// When `acked` happened on the wall clock, given one instant read on both clocks.
fn wall_time(acked: Instant, clocks: (Instant, SystemTime)) -> SystemTime {
    clocks.1 + acked.duration_since(clocks.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_cut_off_from_the_controller_stops_committing_before_another_is_promoted() {
    if !available() {
        return;
    }
    let mut bed = PgBed::relayed().await;
    let ctl = bed.controller(&bed.spec("a", "async"), &[]);
    all_streaming_from(&bed, &ctl, "a").await;

    // Clients reach a directly; the controller, and the standbys, reach it through relays.
    let clocks = (Instant::now(), SystemTime::now());
    let writes = writer(&bed.address("a"), "cut:");
    acknowledged_at_least(&writes, 50).await;
    let (postgres, agent) = bed.host("a").relays.as_ref().unwrap();
    postgres.cut();
    agent.cut();
    let report = bed
        .wait_for("a new primary", &ctl, 30, |r| {
            r.status
                .current_primary
                .as_deref()
                .is_some_and(|p| p != "a")
                && r.status.history.len() == 1
        })
        .await;
    let new = report.status.current_primary.clone().unwrap();
    // Writers keep trying a for a while after the promotion.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acks: Vec<Ack> = writes.finish().await;
    assert!(acks.len() >= 50);

    // The promotion wrote the new timeline's history file before the new primary took a
    // commit; every commit a acknowledged came before it.
    let promoted_at = std::fs::metadata(bed.host(&new).data.join("pg_wal/00000002.history"))
        .unwrap()
        .modified()
        .unwrap();
    let last = wall_time(acks.last().unwrap().acked, clocks);
    assert!(
        last < promoted_at,
        "a acknowledged a commit {:?} after {new} was promoted",
        last.duration_since(promoted_at).unwrap_or_default()
    );
    eprintln!(
        "a's last acknowledged commit came {:?} before {new}'s promotion",
        promoted_at.duration_since(last).unwrap()
    );
    let a = bed.node("a").status();
    assert_eq!(a["fenced"], true, "its agent fenced it: {a}");
    assert_eq!(a["running"], false, "{a}");

    // a's host reboots while still cut off: it stays down, as the controller has not
    // confirmed it.
    bed.node("a").reboot();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = bed.node("a").status();
    assert_eq!((&a["fenced"], &a["running"]), (&true.into(), &false.into()));
    assert!(try_sql(&bed.address("a"), "SELECT 1").await.is_err());

    // The partition heals: a's writes after the cut never reached the others (async mode), so
    // it is rewound onto the new primary's timeline and streams from it.
    let (postgres, agent) = bed.host("a").relays.as_ref().unwrap();
    postgres.heal();
    agent.heal();
    bed.wait_for("a back as a standby", &ctl, 90, |r| {
        ready_members(r, 3) && streaming_from(r, "a", &new)
    })
    .await;
    let a = bed.node("a").status();
    assert_eq!(a["rejoined"], "rewound", "{a}");
    assert_eq!(a["fenced"], false, "{a}");
}

/// The controller can no longer log in to the primary (its role is rejected there), while the
/// other members' hosts still reach it: it is reported, never failed over, its lease is kept
/// through its peers, and its clients see nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_primary_the_controller_alone_has_lost_is_reported_not_failed_over() {
    if !available() {
        return;
    }
    let mut bed = PgBed::new();
    let ctl = bed.controller(&bed.spec("a", "async"), &[]);
    all_streaming_from(&bed, &ctl, "a").await;
    // The controller logs in as a role of its own, which a's pg_hba.conf can then reject
    // while the clients (and replication) go on as postgres.
    let a = bed.address("a");
    sql(
        &a,
        &format!("CREATE ROLE controller SUPERUSER LOGIN PASSWORD '{PASSWORD}'"),
    )
    .await;
    bed.write_spec(
        &bed.spec("a", "async")
            .replace("username: postgres", "username: controller"),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    all_streaming_from(&bed, &ctl, "a").await;
    let epoch = bed
        .wait_for("the report", &ctl, 5, |_| true)
        .await
        .status
        .epoch;

    let writes = writer(&a, "lost:");
    acknowledged_at_least(&writes, 20).await;
    let superuser = connect(&a).await;
    let hba = bed.host("a").data.join("pg_hba.conf");
    let kept = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("host all controller all reject\n{kept}")).unwrap();
    superuser
        .batch_execute(
            "SELECT pg_reload_conf(); \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'controller'",
        )
        .await
        .unwrap();

    // Far past detectAfter (1s), and past several of the lease's length.
    let report = bed
        .wait_for(
            "the primary reported as reached by its peers",
            &ctl,
            30,
            |r| {
                condition(r, "PromotionBlocked")
                    .is_some_and(|c| c.status == "True" && c.reason == "PrimaryReachedByPeers")
            },
        )
        .await;
    let blocked = condition(&report, "PromotionBlocked").unwrap();
    assert!(
        blocked.message.contains("b, c still reach it"),
        "{}",
        blocked.message
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = bed.wait_for("the report", &ctl, 5, |_| true).await;
    assert!(
        report.status.history.is_empty(),
        "{:?}",
        report.status.history
    );
    assert_eq!(report.status.current_primary.as_deref(), Some("a"));
    assert_eq!(report.status.epoch, epoch, "no promotion");
    let host = bed.node("a").status();
    assert_eq!(
        (&host["fenced"], &host["running"]),
        (&false.into(), &true.into()),
        "a's lease was kept through its peers: {host}\n{}",
        bed.agent_logs()
    );

    // The controller's way back: it finds the same primary, and nothing was done.
    std::fs::write(&hba, kept).unwrap();
    superuser
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    all_streaming_from(&bed, &ctl, "a").await;
    let acks: Vec<Ack> = writes.finish().await;
    let longest = acks
        .windows(2)
        .map(|w| w[1].acked.duration_since(w[0].acked))
        .max()
        .unwrap();
    assert!(
        acks.iter().all(|ack| ack.server == a),
        "every commit went to a"
    );
    eprintln!(
        "{} commits while the controller could not log in to a; the longest gap between two: {longest:?}",
        acks.len()
    );
    assert!(
        longest < Duration::from_secs(2),
        "the clients were held up for {longest:?}"
    );
    let report = bed.wait_for("the report", &ctl, 5, |_| true).await;
    assert!(
        report.status.history.is_empty(),
        "{:?}",
        report.status.history
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_holding_another_data_set_is_refused_and_never_copied_over() {
    if !available() {
        return;
    }
    let bed = PgBed::with_data(&["a", "c"]);
    let c_data = bed.host("c").data.clone();
    let control = || std::fs::read(c_data.join("global/pg_control")).unwrap()[..8].to_vec();
    let identity = control();
    std::fs::write(c_data.join("kept.txt"), "c's own data").unwrap();

    let ctl = bed.controller(&bed.spec("a", "async"), &[]);
    let report = bed
        .wait_for("b streaming from a, c refused", &ctl, 90, |r| {
            streaming_from(r, "b", "a")
                && condition(r, "Stalled").is_some_and(|c| {
                    c.status == "True" && c.message.contains("c holds another data set")
                })
        })
        .await;
    let stalled = condition(&report, "Stalled").unwrap();
    assert_eq!(stalled.reason, "ForeignData", "{stalled:?}");
    assert!(
        stalled.message.contains("Empty its data directory"),
        "{stalled:?}"
    );

    // Some rounds later c's data set is still its own, untouched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(control(), identity);
    assert!(c_data.join("kept.txt").exists());
    let c = bed.host("c").node.status();
    assert!(c["lastOperation"].is_null(), "nothing was run on c: {c}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_whose_slot_lost_its_wal_is_copied_again() {
    if !available() {
        return;
    }
    let mut bed = PgBed::build(&["a"], &["--set", "max_slot_wal_keep_size=32MB"]);
    let ctl = bed.controller(&bed.spec("a", "async"), &[]);
    all_streaming_from(&bed, &ctl, "a").await;
    let a = bed.address("a");
    sql(&a, "CREATE TABLE t (v int)").await;

    // b's host is down while a writes on, past what a keeps for b's slot.
    bed.node("b").kill_node();
    for _ in 0..5 {
        sql(
            &a,
            "INSERT INTO t SELECT generate_series(1, 1000); SELECT pg_switch_wal()",
        )
        .await;
    }
    sql(&a, "CHECKPOINT").await;
    let lost = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'replicant_b' AND wal_status = 'lost'";
    assert_eq!(number(&a, lost).await, 1, "b's slot on a has lost its WAL");

    // b comes back: streaming cannot resume where it stopped, so it is copied again. Its
    // server may look streaming for a moment before the lost WAL ends that: wait for the copy
    // itself, then for streaming.
    bed.node("b").reboot();
    let node = bed.node("b");
    support::eventually("b's host copied it again", 90, async || {
        let status = node.status();
        status["lastOperation"] == "clone" && status["busy"].is_null()
    })
    .await;
    let b = node.status();
    assert!(b["lastError"].is_null(), "{b}");
    bed.wait_for("b streaming from a", &ctl, 90, |r| {
        ready_members(r, 3) && streaming_from(r, "b", "a")
    })
    .await;
    assert_eq!(number(&a, lost).await, 0, "a keeps a new slot for b");
    let b = bed.address("b");
    eventually_pg("b to hold every row", async || {
        try_number(&b, "SELECT count(*) FROM t").await == Some(5000)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_ahead_of_the_new_primarys_switch_point_is_rewound_not_left_stuck() {
    if !available() {
        return;
    }
    // b may never be promoted, so c, which is behind it, will be.
    let mut bed = PgBed::new();
    let spec = bed.spec_with("a", "async", &[("b", "priority: 0")]);
    let mut ctl = bed.controller(&spec, &[]);
    all_streaming_from(&bed, &ctl, "a").await;
    let (a, b, c) = (bed.address("a"), bed.address("b"), bed.address("c"));
    sql(
        &a,
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await;
    eventually_pg("c to hold 100 rows", async || {
        try_number(&c, "SELECT count(*) FROM t").await == Some(100)
    })
    .await;

    // With the controller away, c stops receiving; a writes 100 rows more, which only b gets.
    ctl.kill();
    stop_receiving(&c).await;
    sql(&a, "INSERT INTO t SELECT generate_series(101, 200)").await;
    eventually_pg("b to hold 200 rows", async || {
        try_number(&b, "SELECT count(*) FROM t").await == Some(200)
    })
    .await;

    // a's node is lost; the controller comes back and promotes c, behind b.
    bed.node("a").kill_node();
    let ctl = bed.controller(&spec, &[]);
    let report = bed
        .wait_for("c promoted", &ctl, 30, |r| {
            r.status.history.last().is_some_and(|h| h.to == "c")
        })
        .await;
    let promotion = report.status.history.last().unwrap();
    assert!(
        promotion.fork.is_some(),
        "where c left a's timeline is journaled: {promotion:?}"
    );
    assert_eq!(try_number(&c, "SELECT count(*) FROM t").await, Some(100));

    // b's data runs past the point where c's timeline left a's: b is rewound onto c's
    // timeline, losing the rows c never had, and streams from c.
    bed.wait_for("b streaming from c", &ctl, 90, |r| {
        streaming_from(r, "b", "c")
    })
    .await;
    let b_status = bed.node("b").status();
    assert_eq!(b_status["lastOperation"], "rewind", "{b_status}");
    assert_eq!(b_status["rejoined"], "rewound", "{b_status}");
    sql(&c, "INSERT INTO t VALUES (1000)").await;
    eventually_pg("b to follow c", async || {
        try_number(&b, "SELECT count(*) FROM t").await == Some(101)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn in_sync_mode_the_standby_holding_every_acknowledged_commit_wins_and_none_is_promoted_without_it()
 {
    if !available() {
        return;
    }
    // c is preferred by priority; only its position can make b win.
    let mut bed = PgBed::new();
    let spec = bed.spec_with("a", "sync", &[("c", "priority: 5")]);
    let mut ctl = bed.controller(&spec, &[]);
    all_streaming_from(&bed, &ctl, "a").await;
    let (a, b, c) = (bed.address("a"), bed.address("b"), bed.address("c"));
    sql(
        &a,
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await;
    eventually_pg("c to hold 100 rows", async || {
        try_number(&c, "SELECT count(*) FROM t").await == Some(100)
    })
    .await;

    // With the controller away, c stops receiving; a's next commits are acknowledged once b
    // (one of ANY 1 (b, c)) has them.
    ctl.kill();
    stop_receiving(&c).await;
    sql(&a, "INSERT INTO t SELECT generate_series(101, 200)").await;

    // a and b are lost. c alone cannot be promoted: b, out of reach, may hold commits a
    // acknowledged.
    bed.node("a").kill_node();
    bed.node("b").kill_node();
    let ctl = bed.controller(&spec, &[]);
    let report = bed
        .wait_for("the promotion refused", &ctl, 30, |r| {
            condition(r, "PromotionBlocked").is_some_and(|c| c.status == "True")
        })
        .await;
    let blocked = condition(&report, "PromotionBlocked").unwrap();
    assert!(blocked.message.contains('b'), "{blocked:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        bed.node("c").status()["epoch"] == 0,
        "c was never asked to act at a new epoch"
    );
    assert_eq!(
        number(&c, "SELECT count(*) WHERE pg_is_in_recovery()").await,
        1,
        "c is still a standby"
    );

    // b's host comes back: it holds every acknowledged commit, so it wins over c.
    bed.node("b").reboot();
    let report = bed
        .wait_for("b promoted", &ctl, 60, |r| {
            r.status.history.last().is_some_and(|h| h.to == "b")
        })
        .await;
    assert!(
        report
            .status
            .history
            .last()
            .unwrap()
            .reason
            .contains("most up-to-date"),
        "{:?}",
        report.status.history.last()
    );
    eventually_pg("every acknowledged row on b", async || {
        try_number(&b, "SELECT count(*) FROM t").await == Some(200)
    })
    .await;
    bed.wait_for("c following b", &ctl, 60, |r| streaming_from(r, "c", "b"))
        .await;
    eventually_pg("c to catch up", async || {
        try_number(&c, "SELECT count(*) FROM t").await == Some(200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_serving_tls_are_driven_over_it_verified_against_the_spec_bundle() {
    if !available() {
        return;
    }
    // Each agent has a certificate of its own; spec.agentTls.caFile holds the three.
    let mut bed = PgBed::with_tls_agents();
    let ctl = bed.controller(&bed.spec("a", "async"), &[]);
    // a started, b and c copied: every one an order over TLS.
    all_streaming_from(&bed, &ctl, "a").await;

    // A node loss is failed over (the new primary's lease granted over TLS), and the old
    // primary's host, back, is rewound in.
    bed.node("a").kill_node();
    let report = bed
        .wait_for("a new primary", &ctl, 30, |r| !r.status.history.is_empty())
        .await;
    let new = report.status.history[0].to.clone();
    bed.node("a").reboot();
    bed.wait_for("a back as a standby", &ctl, 90, |r| {
        ready_members(r, 3) && streaming_from(r, "a", &new)
    })
    .await;
    // Asked over TLS, as the controller does, the new primary's agent holds its lease.
    use replicant::engine::postgres::agent::{AgentApi, AgentClient, trusting};
    let bundle = std::fs::read_to_string(bed.dir.path().join("agents-ca.pem")).unwrap();
    let agent = AgentClient::new(
        bed.host(&new).node.address(),
        replicant::engine::Secret::new(support::node::TOKEN),
        Some(trusting(&bundle).unwrap()),
        Duration::from_secs(5),
    );
    let status = agent.status().await.unwrap();
    assert_eq!(status.epoch, 1);
    assert!(status.lease_remaining_ms.is_some(), "{status:?}");
}
