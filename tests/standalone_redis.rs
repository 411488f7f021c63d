//! `replicant run` against real redis-servers: set-up, cascading, re-pointing, switchover, failover,
//! frozen and returning masters, a controller killed mid-failover, and bad specs beside good ones.

mod support;

use std::time::Duration;

use support::*;

const FAST: &str = "    detectAfter: 1s\n    cooldown: 1m";

#[tokio::test(flavor = "multi_thread")]
async fn replication_is_set_up_from_scratch_and_names_route() {
    let bed = Bed::new(3);
    bed.write_spec("orders.yaml", &bed.spec("a", &[], FAST));
    let ctl = bed.controller();
    let report = bed.wait_for("ready", &ctl, 30, ready).await;
    assert_eq!(report.status.current_primary.as_deref(), Some("a"));
    assert_eq!(report.status.ready_members.as_deref(), Some("3/3"));
    for m in ["b", "c"] {
        assert_eq!(role(&bed.address(m)).await, "slave");
        assert_eq!(upstream(&bed.address(m)).await, bed.address("a"));
    }
    assert_eq!(endpoints(&report, "orders-rw"), ["a"]);
    assert_eq!(endpoints(&report, "orders-ro"), ["b", "c"]);

    // Writes through the read-write name land on a and reach the replicas.
    set(&format!("127.0.0.1:{}", bed.rw_port), "k", "v")
        .await
        .unwrap();
    assert_eq!(
        get(&bed.address("a"), "k").await.unwrap().as_deref(),
        Some("v")
    );
    eventually("replicas to have k", 10, async || {
        value(&bed.address("c"), "k").await.as_deref() == Some("v")
    })
    .await;
    // The read-only name serves replicas, which refuse writes.
    let err = set(&format!("127.0.0.1:{}", bed.ro_port), "k", "w")
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("read only"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cascading_replica_follows_its_repli_master() {
    let bed = Bed::new(3);
    // Kept alive for the test's duration; dropping it kills the controller.
    let _ctl = bed
        .started(&bed.spec("a", &[("c", "upstream: b")], FAST))
        .await;
    assert_eq!(upstream(&bed.address("b")).await, bed.address("a"));
    assert_eq!(upstream(&bed.address("c")).await, bed.address("b"));
    set(&bed.address("a"), "chain", "1").await.unwrap();
    eventually("c to get data through b", 10, async || {
        value(&bed.address("c"), "chain").await.as_deref() == Some("1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn misconfigured_replica_is_repointed() {
    let bed = Bed::new(3);
    let ctl = bed.started(&bed.spec("a", &[], FAST)).await;
    // Someone points c at b by hand.
    let b = bed.address("b");
    let (host, port) = b.split_once(':').unwrap();
    let mut conn = connect(&bed.address("c")).await.unwrap();
    let _: () = redis::cmd("REPLICAOF")
        .arg(host)
        .arg(port)
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually("c to follow a again", 10, async || {
        upstream(&bed.address("c")).await == bed.address("a")
    })
    .await;
    // The controller logs the action once it has been applied: c may follow a a moment before.
    let why = "c replicates from b; it should follow a: the primary";
    eventually("the repoint to be logged", 5, async || {
        ctl.log_text().contains(why)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_primary_in_the_spec_switches_over_without_losing_writes() {
    let bed = Bed::new(3);
    let ctl = bed.started(&bed.spec("a", &[], FAST)).await;

    // A writer through the read-write name, counting acknowledged writes.
    let rw = format!("127.0.0.1:{}", bed.rw_port);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (rw, stop) = (rw.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                if set(&rw, &format!("sw:{n}"), "x").await.is_ok() {
                    acked.push(n);
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    bed.write_spec("orders.yaml", &bed.spec("b", &[], FAST));
    let report = bed
        .wait_for("b primary and ready", &ctl, 30, |r| {
            r.status.current_primary.as_deref() == Some("b") && ready(r)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 10,
        "the writer made progress: {}",
        acked.len()
    );

    assert_eq!(report.status.epoch, 1);
    let last = report.status.history.last().unwrap();
    assert_eq!(
        (format!("{:?}", last.kind), last.to.as_str()),
        ("Switchover".to_string(), "b")
    );
    assert_eq!(role(&bed.address("b")).await, "master");
    assert_eq!(upstream(&bed.address("a")).await, bed.address("b"));
    assert_eq!(endpoints(&report, "orders-rw"), ["b"]);
    let mut conn = connect(&bed.address("b")).await.unwrap();
    let keys: Vec<String> = acked.iter().map(|n| format!("sw:{n}")).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    let lost = values.iter().filter(|v| v.is_none()).count();
    assert_eq!(lost, 0, "a planned switchover loses no acknowledged write");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_master_fails_over_and_the_old_master_returns_as_a_replica() {
    let mut bed = Bed::new(3);
    bed.write_spec(
        "orders.yaml",
        &bed.spec(
            "a",
            &[],
            "    standby: c\n    detectAfter: 1s\n    cooldown: 1m",
        ),
    );
    let ctl = bed.controller();
    bed.wait_for("ready", &ctl, 30, ready).await;
    set(&bed.address("a"), "before", "1").await.unwrap();
    eventually("c to have the key", 10, async || {
        value(&bed.address("c"), "before").await.is_some()
    })
    .await;

    bed.server("a").kill();
    let report = bed
        .wait_for("c promoted and the failover finished", &ctl, 20, |r| {
            r.status.current_primary.as_deref() == Some("c") && !r.status.history.is_empty()
        })
        .await;
    assert_eq!(report.status.epoch, 1);
    let last = report.status.history.last().unwrap();
    assert_eq!((last.to.as_str(), last.from.as_deref()), ("c", Some("a")));
    eventually("b to follow c", 10, async || {
        upstream(&bed.address("b")).await == bed.address("c")
    })
    .await;
    let report = bed
        .wait_for("rw on c", &ctl, 10, |r| endpoints(r, "orders-rw") == ["c"])
        .await;
    let mismatch = condition(&report, "PrimaryMismatch").unwrap();
    assert_eq!(
        mismatch.status,
        "True",
        "spec.primary still says a: {:?} {}",
        report.status.conditions,
        bed.journal()
    );
    assert_eq!(
        get(&format!("127.0.0.1:{}", bed.rw_port), "before")
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    set(&format!("127.0.0.1:{}", bed.rw_port), "after", "2")
        .await
        .unwrap();

    // a comes back (empty, as after a crash without persistence): demoted to a replica of c.
    bed.server("a").restart(&[]).unwrap();
    eventually("a to follow c", 15, async || {
        upstream(&bed.address("a")).await == bed.address("c")
    })
    .await;
    eventually("a to hold c's data", 10, async || {
        value(&bed.address("a"), "after").await.as_deref() == Some("2")
    })
    .await;
    let report = bed
        .wait_for("3/3 ready members", &ctl, 10, |r| {
            r.status.ready_members.as_deref() == Some("3/3")
        })
        .await;
    assert_eq!(report.status.epoch, 1, "no second promotion");
}

#[tokio::test(flavor = "multi_thread")]
async fn frozen_master_is_replaced_and_never_accepts_writes_beside_the_new_one() {
    let mut bed = Bed::new(3);
    let ctl = bed.started(&bed.spec("a", &[], FAST)).await;
    bed.wait_for("a guarded", &ctl, 10, |r| {
        r.status.members.iter().all(|m| m.reachable)
    })
    .await;

    bed.server("a").freeze();
    let report = bed
        .wait_for("a replica promoted", &ctl, 20, |r| {
            r.status.epoch == 1 && r.status.current_primary.as_deref() != Some("a")
        })
        .await;
    let new_primary = report.status.current_primary.clone().unwrap();
    let new_address = bed.address(&new_primary);
    set(&new_address, "fresh", "1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    bed.server("a").thaw();
    // From the moment it resumes, the old master must refuse writes: first by its own guard (its
    // replicas have left), then because the controller demotes it.
    let a = bed.address("a");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut refused = 0;
    while std::time::Instant::now() < deadline {
        match set(&a, "split-brain", "x").await {
            Ok(()) => panic!("the resumed old master accepted a write beside {new_primary}"),
            Err(_) => refused += 1,
        }
        if upstream(&a).await == new_address {
            break;
        }
    }
    assert!(refused > 0);
    eventually("a to follow the new primary", 10, async || {
        upstream(&a).await == new_address
    })
    .await;
    eventually("a to hold the new primary's data", 10, async || {
        value(&a, "fresh").await.as_deref() == Some("1")
    })
    .await;
    assert_eq!(get(&new_address, "split-brain").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_killed_mid_failover_resumes_with_the_same_target_and_epoch() {
    for crash_at in ["before-promote", "after-promote"] {
        let mut bed = Bed::new(3);
        bed.write_spec(
            "orders.yaml",
            &bed.spec(
                "a",
                &[],
                "    standby: b\n    detectAfter: 1s\n    cooldown: 1m",
            ),
        );
        let mut ctl = Controller::start(
            &bed.specs(),
            &bed.state(),
            &[("REPLICANT_CRASH_AT", crash_at)],
        );
        bed.wait_for("ready", &ctl, 30, ready).await;
        bed.server("a").kill();
        eventually("the controller to die at the crash point", 20, async || {
            ctl.exited()
        })
        .await;
        let journal = bed.journal();
        assert_eq!(journal["operation"]["to"], "b", "{crash_at}: {journal}");
        assert_eq!(journal["operation"]["epoch"], 1, "{crash_at}: {journal}");

        let restarted = bed.controller();
        let report = bed
            .wait_for("failover completed after restart", &restarted, 20, |r| {
                r.status.current_primary.as_deref() == Some("b")
                    && r.status
                        .history
                        .last()
                        .is_some_and(|h| format!("{:?}", h.outcome) == "Succeeded")
            })
            .await;
        assert_eq!(
            report.status.epoch, 1,
            "{crash_at}: resumed, not restarted at a new epoch"
        );
        assert_eq!(role(&bed.address("b")).await, "master", "{crash_at}");
        eventually("c to follow b", 10, async || {
            upstream(&bed.address("c")).await == bed.address("b")
        })
        .await;
        bed.wait_for("rw on b", &restarted, 10, |r| {
            endpoints(r, "orders-rw") == ["b"]
        })
        .await;
        assert!(bed.journal()["operation"].is_null());
        ctl.kill();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_spec_beside_a_good_one_is_reported_and_the_last_good_version_keeps_running() {
    let bed = Bed::new(3);
    bed.write_spec("orders.yaml", &bed.spec("a", &[], FAST));
    bed.write_spec("broken.yaml", "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {name: broken}\nspec: {engine: mysql}\n");
    let ctl = bed.controller();
    bed.wait_for("ready", &ctl, 30, ready).await;
    eventually("the broken spec to be logged", 10, async || {
        ctl.log_text()
            .contains("spec.engine: unknown variant `mysql`")
    })
    .await;
    assert!(
        replicant::runtime::files::state::read_reports(&bed.state())
            .unwrap()
            .iter()
            .all(|r| r.name != "broken")
    );

    // Now a bad edit to the good cluster: nothing of it is applied.
    bed.write_spec("orders.yaml", &bed.spec("nobody", &[], FAST));
    let report = bed
        .wait_for("the problem in status", &ctl, 10, |r| {
            !r.spec_problems.is_empty()
        })
        .await;
    assert!(
        report.spec_problems[0].contains("spec.primary: unknown member \"nobody\""),
        "{:?}",
        report.spec_problems
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let report = bed.report().unwrap();
    assert_eq!(report.status.current_primary.as_deref(), Some("a"));
    assert_eq!(report.status.epoch, 0);
    assert_eq!(role(&bed.address("a")).await, "master");

    // Fixed: a switchover to b, as the new spec asks.
    bed.write_spec("orders.yaml", &bed.spec("b", &[], FAST));
    bed.wait_for("b primary", &ctl, 20, |r| {
        r.status.current_primary.as_deref() == Some("b") && r.spec_problems.is_empty()
    })
    .await;
}
