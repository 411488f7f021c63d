//! The PostgreSQL probe against real servers on loopback: a primary, a streaming standby, a
//! standby whose primary is gone, another data set, and each class of error.

mod support;

use std::time::Duration;

use replicant::{core::engine::EngineError, engine::postgres};
use replicant_testkit::postgres::PostgresProcess;
use support::pg::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_and_its_standby_describe_themselves() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut primary = PostgresProcess::primary(dir.path(), &[]).unwrap();
    let standby = PostgresProcess::standby_of(&primary, dir.path(), &[]).unwrap();

    let p = probe(&primary.address()).await.unwrap();
    assert!(!p.in_recovery);
    assert_eq!(p.timeline, 1);
    assert_ne!(p.system_identifier, 0);
    assert!(p.durable.is_some() && p.durable == p.applied, "{p:?}");
    assert_eq!(
        (p.receiver.as_ref(), p.configured_upstream.as_ref()),
        (None, None)
    );
    assert_eq!(p.synchronous_standby_names, "");
    assert!(!p.default_transaction_read_only);

    sql(
        &primary.address(),
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 10000)",
    )
    .await;
    let written = probe(&primary.address()).await.unwrap().durable.unwrap();
    assert!(written > p.durable.unwrap());
    let mut s = probe(&standby.address()).await.unwrap();
    for _ in 0..100 {
        if s.durable >= Some(written) && s.applied >= Some(written) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        s = probe(&standby.address()).await.unwrap();
    }
    assert!(s.in_recovery);
    assert_eq!(s.system_identifier, p.system_identifier, "one data set");
    assert_eq!(s.timeline, 1);
    assert!(
        s.durable >= Some(written) && s.applied >= Some(written),
        "{s:?} behind {written}"
    );
    assert!(s.applied <= s.durable);
    let receiver = s
        .receiver
        .clone()
        .expect("a streaming standby has a receiver");
    assert_eq!(receiver.sender, primary.address());
    assert_eq!(receiver.status, "streaming");
    assert_eq!(receiver.timeline, 1);
    assert_eq!(
        s.configured_upstream.as_deref(),
        Some(primary.address().as_str())
    );

    // The primary dies: the standby still says where it should stream from, and what it holds.
    primary.kill();
    let mut gone = probe(&standby.address()).await.unwrap();
    for _ in 0..100 {
        if gone
            .receiver
            .as_ref()
            .is_none_or(|r| r.status != "streaming")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        gone = probe(&standby.address()).await.unwrap();
    }
    assert!(
        gone.receiver
            .as_ref()
            .is_none_or(|r| r.status != "streaming"),
        "{gone:?}"
    );
    assert_eq!(gone.configured_upstream, s.configured_upstream);
    assert_eq!(gone.durable, s.durable.max(gone.durable));
    assert_eq!(gone.timeline, 1);

    // Another initdb is another data set.
    let other = PostgresProcess::primary(dir.path(), &[]).unwrap();
    let o = probe(&other.address()).await.unwrap();
    assert_ne!(o.system_identifier, p.system_identifier);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_kind_of_failure_is_told_apart() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let primary = PostgresProcess::primary(dir.path(), &[]).unwrap();

    let nobody = format!("127.0.0.1:{}", replicant_testkit::free_port().unwrap());
    let refused = probe(&nobody).await.unwrap_err();
    assert!(matches!(refused, EngineError::Refused { .. }), "{refused}");

    let wrong = postgres::probe(&primary.address(), &credentials("wrong"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(wrong, EngineError::Auth { .. }), "{wrong}");
    assert!(
        !wrong.to_string().contains("wrong"),
        "the password is never shown: {wrong}"
    );

    // A standby that may not be read: up, listening, not accepting connections.
    let mut cold = PostgresProcess::standby_of(&primary, dir.path(), &[]).unwrap();
    cold.restart(&[("hot_standby", "off")], false).unwrap();
    let not_accepting = probe(&cold.address()).await.unwrap_err();
    assert!(
        matches!(not_accepting, EngineError::NotAccepting { .. }),
        "{not_accepting}"
    );

    // A frozen server: the kernel accepts the connection, nothing answers.
    primary.freeze();
    let started = std::time::Instant::now();
    let frozen = probe(&primary.address()).await.unwrap_err();
    primary.thaw();
    assert!(matches!(frozen, EngineError::Timeout { .. }), "{frozen}");
    assert!(started.elapsed() < TIMEOUT + Duration::from_secs(2));
    assert!(
        probe(&primary.address()).await.is_ok(),
        "thawed, it answers again"
    );
}
