//! `replicant run` managing real postgres servers under real `replicant node` agents, on
//! loopback: empty members copied from the primary, a node loss (agent and postmaster killed)
//! failed over with every replicated row kept, and the old primary rewound back in.

mod support;

use replicant_testkit::postgres::PASSWORD;
use support::{
    pg::*,
    pg_bed::{PgBed, data_dir_holds, ready_members, streaming_from},
};

async fn rows(address: &str) -> Option<i64> {
    try_number(address, "SELECT count(*) FROM t").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_cluster_is_copied_fails_over_on_node_loss_and_takes_its_old_primary_back() {
    if !available() {
        return;
    }
    let mut bed = PgBed::new();
    let ctl = bed.controller(&bed.spec("a", "async"), &[]);

    // a's agent starts it (it holds data); b and c are empty: the agents copy a onto them,
    // and they stream from it.
    let report = bed
        .wait_for("a started, b and c copied and streaming", &ctl, 90, |r| {
            ready_members(r, 3) && streaming_from(r, "b", "a") && streaming_from(r, "c", "a")
        })
        .await;
    assert_eq!(report.status.current_primary.as_deref(), Some("a"));
    for host in &bed.hosts {
        assert!(data_dir_holds(&host.data));
    }

    // Writes through the read-write name land on a and reach the standbys.
    let rw = bed.rw();
    sql(
        &rw,
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await;
    for m in ["b", "c"] {
        let address = bed.address(m);
        eventually_pg("rows on the standbys", async || {
            rows(&address).await == Some(100)
        })
        .await;
    }

    // The controller probes each member over one session it keeps, not a new one per round.
    let a = bed.address("a");
    eventually_pg("a probe session older than a second", async || {
        try_number(
            &a,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'replicant' AND backend_start < now() - interval '1 second'",
        )
        .await
            >= Some(1)
    })
    .await;

    // Node loss: a's agent and postmaster die at once.
    bed.node("a").kill_node();
    let report = bed
        .wait_for("a new primary", &ctl, 30, |r| {
            r.status
                .current_primary
                .as_deref()
                .is_some_and(|p| p != "a")
        })
        .await;
    let primary = report.status.current_primary.clone().unwrap();
    let new = bed.address(&primary);
    eventually_pg("the read-write name on the new primary", async || {
        try_sql(&rw, "INSERT INTO t VALUES (101)").await.is_ok()
    })
    .await;
    eventually_pg("every replicated row kept, and the new one", async || {
        rows(&new).await == Some(101)
    })
    .await;
    let report = bed
        .wait_for("the failover finished", &ctl, 30, |r| {
            !r.status.history.is_empty()
        })
        .await;
    let last = report.status.history.last().unwrap();
    assert!(
        last.branch.as_deref().is_some_and(|b| b.starts_with("2@")),
        "the promotion's branch is journaled: {last:?}"
    );

    // a's host comes back: it is rewound onto the new primary's timeline and streams again.
    bed.node("a").reboot();
    bed.wait_for("a back as a standby", &ctl, 90, |r| {
        ready_members(r, 3) && streaming_from(r, "a", &primary)
    })
    .await;
    let a = bed.address("a");
    eventually_pg("a to hold every row", async || rows(&a).await == Some(101)).await;

    // Copied, re-pointed over SQL and rewound, every standby follows through its host's
    // password file: no password in any member's settings.
    for host in &bed.hosts {
        let settings = std::fs::read_to_string(host.data.join("postgresql.auto.conf")).unwrap();
        assert!(!settings.contains(PASSWORD), "{}: {settings}", host.name);
        if host.name != primary {
            assert!(settings.contains("passfile="), "{}: {settings}", host.name);
        }
    }
}

/// `replicant demo --engine postgres --mode sync`: the node holding the primary is lost (agent
/// and postmaster killed) in each of three trials, on clusters the agents created from
/// nothing, and no commit the primary acknowledged is missing from the new primary.
#[test]
fn no_acknowledged_commit_is_lost_when_the_primary_node_dies_in_sync_mode() {
    if !available() {
        return;
    }
    let _one_at_a_time = support::pg_bed::one_at_a_time();
    let stdout = support::demo(&["--engine", "postgres", "--mode", "sync", "--trials", "3"]);
    assert_eq!(
        stdout
            .matches("first write acknowledged after the kill")
            .count(),
        3,
        "{stdout}"
    );
    for trial in stdout.lines().filter(|l| l.starts_with("result:")) {
        assert!(trial.ends_with("; 0 lost"), "{trial}");
        assert!(!trial.contains(" 0 writes acknowledged"), "{trial}");
    }
    assert!(stdout.contains("; lost: 0"), "{stdout}");
}

/// Zones on PostgreSQL: a in zone-a, b and c in zone-b. b is zone-b's gateway: it is copied
/// from a, and c is copied from b (a standby) and streams from it, so one stream crosses
/// zones. When b's node dies, c streams from a instead, re-pointed over SQL.
#[tokio::test(flavor = "multi_thread")]
async fn standbys_cascade_within_their_zone_and_re_form_when_the_gateway_dies() {
    if !available() {
        return;
    }
    let mut bed = PgBed::new();
    let zones = [
        ("a", "zone: zone-a"),
        ("b", "zone: zone-b"),
        ("c", "zone: zone-b"),
    ];
    let ctl = bed.controller(&bed.spec_with("a", "async", &zones), &[]);
    let report = bed
        .wait_for("b copied from a, c copied from b", &ctl, 120, |r| {
            ready_members(r, 3) && streaming_from(r, "b", "a") && streaming_from(r, "c", "b")
        })
        .await;
    let c = report
        .status
        .members
        .iter()
        .find(|m| m.name == "c")
        .unwrap();
    assert_eq!(
        c.placement.as_deref(),
        Some("c follows b: gateway of zone zone-b")
    );
    // The servers agree: c's WAL receiver is connected to b's port, and a sends to b only.
    let b_port = bed.spec_port("b");
    let c_address = bed.address("c");
    eventually_pg("c's WAL receiver on b", async || {
        try_number(
            &c_address,
            &format!("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming' AND sender_port = {b_port}"),
        )
        .await
            == Some(1)
    })
    .await;
    let a_address = bed.address("a");
    assert_eq!(
        try_number(&a_address, "SELECT count(*) FROM pg_stat_replication").await,
        Some(1),
        "one stream leaves zone-a"
    );
    sql(
        &bed.rw(),
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 50)",
    )
    .await;
    eventually_pg("rows on c through b", async || {
        rows(&c_address).await == Some(50)
    })
    .await;

    // The gateway's node dies: c is zone-b's gateway now, and streams from a.
    bed.node("b").kill_node();
    bed.wait_for("c streaming from a", &ctl, 60, |r| {
        streaming_from(r, "c", "a")
    })
    .await;
    sql(&bed.rw(), "INSERT INTO t VALUES (51)").await;
    eventually_pg("the new row on c", async || {
        rows(&c_address).await == Some(51)
    })
    .await;
}
