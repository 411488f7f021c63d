//! PostgreSQL actions over SQL against real servers: re-point and detach with no restart,
//! promote keeping every received row, and the soft fence with its stated limit.

mod support;

use std::time::Duration;

use replicant::engine::postgres::{
    Lsn, Upstream,
    actions::{UpstreamAuth, detach, fence, promote, repoint, unfence},
    branches,
};
use replicant_testkit::postgres::PostgresProcess;
use support::pg::*;

async fn started(address: &str) -> String {
    let client = connect(address).await;
    let row = client
        .query_one("SELECT pg_postmaster_start_time()::text", &[])
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn standbys_are_repointed_and_detached_without_a_restart() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let primary = PostgresProcess::primary(dir.path(), &[]).unwrap();
    let a = PostgresProcess::standby_of(&primary, dir.path(), &[]).unwrap();
    let b = PostgresProcess::standby_of(&primary, dir.path(), &[]).unwrap();
    let creds = superuser();
    let b_started = started(&b.address()).await;

    // b cascades from a: streams from it, with the server never restarted.
    repoint(
        target(&b.address(), &creds),
        Upstream {
            address: &a.address(),
            slot: None,
            application_name: "b",
            auth: UpstreamAuth::Credentials(&creds),
        },
    )
    .await
    .unwrap();
    let p = probe_until(&b.address(), |p| {
        p.receiver
            .as_ref()
            .is_some_and(|r| r.sender == a.address() && r.status == "streaming")
    })
    .await;
    assert_eq!(
        p.configured_upstream.as_deref(),
        Some(a.address().as_str()),
        "{p:?}"
    );
    assert_eq!(p.receiver.unwrap().sender, a.address());
    assert_eq!(started(&b.address()).await, b_started, "no restart");
    sql(
        &primary.address(),
        "CREATE TABLE t (v int); INSERT INTO t VALUES (-15)",
    )
    .await;
    let written = probe(&primary.address()).await.unwrap().durable;
    probe_until(&b.address(), |p| p.applied >= written).await;
    assert_eq!(
        number(&b.address(), "SELECT count(*) FROM t").await,
        1,
        "through a"
    );

    // Detached, b's position stops moving while the primary writes on.
    detach(target(&b.address(), &creds)).await.unwrap();
    let detached = probe(&b.address()).await.unwrap();
    assert!(
        detached.receiver.is_none() && detached.configured_upstream.is_none(),
        "{detached:?}"
    );
    sql(
        &primary.address(),
        "INSERT INTO t SELECT generate_series(1, 1000)",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(probe(&b.address()).await.unwrap().durable, detached.durable);
    assert_eq!(started(&b.address()).await, b_started, "no restart");
    // Detaching again changes nothing.
    detach(target(&b.address(), &creds)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn promote_keeps_every_received_row_and_the_fence_holds_across_a_restart() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut primary = PostgresProcess::primary(dir.path(), &[]).unwrap();
    let mut standby = PostgresProcess::standby_of(&primary, dir.path(), &[]).unwrap();
    let creds = superuser();
    sql(
        &primary.address(),
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 5000)",
    )
    .await;
    let written = probe(&primary.address()).await.unwrap().durable;
    probe_until(&standby.address(), |p| p.durable >= written).await;
    primary.kill();

    promote(target(&standby.address(), &creds)).await.unwrap();
    let promoted = probe(&standby.address()).await.unwrap();
    assert!(!promoted.in_recovery);
    assert_eq!(promoted.timeline, 2, "a new timeline");
    // Its history says where timeline 1 ended: at or after what it had received, before what
    // it wrote since; the old primary's data up to there is on that history, nothing past it.
    assert_eq!(promoted.history.len(), 1, "{promoted:?}");
    let fork = promoted.history[0].clone();
    assert_eq!(fork.parent, 1);
    assert!(Some(fork.switch) >= written && Some(fork.switch) <= promoted.durable);
    let history = branches(promoted.timeline, &promoted.history);
    assert_eq!(history.divergence("1", fork.switch.0), None);
    assert!(matches!(
        history.divergence("1", Lsn(fork.switch.0 + 1).0),
        Some(replicant::core::history::Divergence::PastFork { .. })
    ));
    assert_eq!(
        number(&standby.address(), "SELECT count(*) FROM t").await,
        5000
    );
    promote(target(&standby.address(), &creds)).await.unwrap();
    assert_eq!(
        probe(&standby.address()).await.unwrap().timeline,
        2,
        "promoting twice is once"
    );
    sql(&standby.address(), "INSERT INTO t VALUES (-10)").await;

    // Fenced: the sessions open now end, new ones may not write, commits are never acknowledged.
    let open = connect(&standby.address()).await;
    fence(target(&standby.address(), &creds)).await.unwrap();
    assert!(
        open.simple_query("SELECT 1").await.is_err(),
        "open sessions are ended"
    );
    let refused = connect(&standby.address())
        .await
        .batch_execute("INSERT INTO t VALUES (-15)")
        .await
        .unwrap_err();
    assert_eq!(refused.code().map(|c| c.code()), Some("25006"), "{refused}");
    let insisting = connect(&standby.address()).await;
    insisting
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .unwrap();
    let waited = tokio::time::timeout(
        Duration::from_secs(1),
        insisting.batch_execute("INSERT INTO t VALUES (-20)"),
    )
    .await;
    assert!(
        waited.is_err(),
        "a commit was acknowledged by a fenced primary"
    );
    // The stated limit: a session that opts out of synchronous commit still commits.
    let local = connect(&standby.address()).await;
    // (Each on its own: a multi-statement query is one transaction, begun read-only.)
    local
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .unwrap();
    local
        .batch_execute("SET synchronous_commit = local")
        .await
        .unwrap();
    local
        .batch_execute("INSERT INTO t VALUES (-30)")
        .await
        .unwrap();

    // The fence is in the configuration: a restart keeps it.
    drop((insisting, local));
    standby.restart(&[], true).unwrap();
    let refused = connect(&standby.address())
        .await
        .batch_execute("INSERT INTO t VALUES (-40)")
        .await
        .unwrap_err();
    assert_eq!(refused.code().map(|c| c.code()), Some("25006"), "{refused}");
    let fenced = probe(&standby.address()).await.unwrap();
    assert_eq!(fenced.synchronous_standby_names, "replicant_fenced");
    assert!(fenced.default_transaction_read_only);

    unfence(target(&standby.address(), &creds), "")
        .await
        .unwrap();
    sql(&standby.address(), "INSERT INTO t VALUES (-50)").await;
    assert_eq!(
        number(
            &standby.address(),
            "SELECT count(*) FROM t WHERE v IN (-10, -30, -50)"
        )
        .await,
        3
    );
    // Refused writes never landed. (The commit left waiting, -20, was never acknowledged:
    // PostgreSQL may have kept it locally, which is why a fenced primary is stopped too.)
    assert_eq!(
        number(
            &standby.address(),
            "SELECT count(*) FROM t WHERE v IN (-15, -40)"
        )
        .await,
        0
    );
}

async fn stream(standby: &str, from: &str, name: &str) {
    let creds = superuser();
    let slot = replicant::engine::postgres::slot_name(name);
    repoint(
        target(standby, &creds),
        Upstream {
            address: from,
            slot: Some(&slot),
            application_name: name,
            auth: UpstreamAuth::Credentials(&creds),
        },
    )
    .await
    .unwrap();
}

fn slot_names(p: &replicant::engine::postgres::PgProbe) -> Vec<&str> {
    p.slots.iter().map(|s| s.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn slots_follow_the_members_the_quorum_holds_commits_and_slots_survive_promotion() {
    use replicant::engine::postgres::actions::{keep_slots, quorum};
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut primary = PostgresProcess::primary(dir.path(), &[]).unwrap();
    let b = PostgresProcess::standby_of(&primary, dir.path(), &[]).unwrap();
    let c = PostgresProcess::standby_of(&primary, dir.path(), &[]).unwrap();
    let creds = superuser();
    let (p, b_at, c_at) = (primary.address(), b.address(), c.address());

    keep_slots(target(&p, &creds), &["b", "c"]).await.unwrap();
    assert_eq!(
        slot_names(&probe(&p).await.unwrap()),
        ["replicant_b", "replicant_c"]
    );
    stream(&b_at, &p, "b").await;
    stream(&c_at, &p, "c").await;
    let both = probe_until(&p, |p| p.slots.iter().all(|s| s.active)).await;
    assert!(
        both.slots.iter().all(|s| s.active && s.lost != Some(true)),
        "{both:?}"
    );

    // The quorum guard: a commit waits for one of b and c.
    unfence(target(&p, &creds), &quorum(1, &["b", "c"]))
        .await
        .unwrap();
    assert_eq!(
        probe(&p).await.unwrap().synchronous_standby_names,
        "ANY 1 (\"b\", \"c\")"
    );
    sql(&p, "CREATE TABLE t (v int); INSERT INTO t VALUES (1)").await;
    detach(target(&b_at, &creds)).await.unwrap();
    detach(target(&c_at, &creds)).await.unwrap();
    let writer = connect(&p).await;
    let insert =
        tokio::spawn(async move { writer.batch_execute("INSERT INTO t VALUES (2)").await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !insert.is_finished(),
        "acknowledged with no standby of the quorum"
    );
    stream(&c_at, &p, "c").await;
    tokio::time::timeout(Duration::from_secs(10), insert)
        .await
        .expect("acknowledged once c streams again")
        .unwrap()
        .unwrap();

    // b leaves the cluster: its slot goes; c's stays.
    keep_slots(target(&p, &creds), &["c"]).await.unwrap();
    assert_eq!(slot_names(&probe(&p).await.unwrap()), ["replicant_c"]);

    // A standby keeps slots for the others, moved to what it replayed, so they exist the
    // moment it is promoted.
    stream(&b_at, &p, "b").await;
    keep_slots(target(&p, &creds), &["b", "c"]).await.unwrap();
    sql(&p, "INSERT INTO t SELECT generate_series(1, 1000)").await;
    let written = probe(&p).await.unwrap().durable;
    probe_until(&b_at, |s| s.applied >= written).await;
    probe_until(&c_at, |s| s.durable >= written).await;
    keep_slots(target(&b_at, &creds), &["c"]).await.unwrap();
    let on_b = probe(&b_at).await.unwrap();
    assert_eq!(slot_names(&on_b), ["replicant_c"]);
    assert!(
        on_b.slots[0].restart >= written,
        "{on_b:?} not advanced to {written:?}"
    );

    primary.kill();
    unfence(target(&b_at, &creds), "").await.unwrap();
    promote(target(&b_at, &creds)).await.unwrap();
    stream(&c_at, &b_at, "c").await;
    let after = probe_until(&b_at, |p| p.slots.iter().any(|s| s.active)).await;
    assert!(
        after
            .slots
            .iter()
            .any(|s| s.name == "replicant_c" && s.active),
        "{after:?}"
    );
    let c_now = probe_until(&c_at, |p| p.timeline == 2).await;
    assert_eq!(
        c_now.timeline, 2,
        "c follows b onto its timeline: {c_now:?}"
    );
    assert_eq!(c_now.history, after.history, "the same history on both");
}
