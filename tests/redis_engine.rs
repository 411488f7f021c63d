//! The Redis engine against real `redis-server` processes on loopback.

use std::time::{Duration, Instant};

use replicant::{
    api::{Member, Role},
    core::engine::{Engine, EngineError},
    engine::redis::{RedisEngine, RedisSettings},
};
use replicant_testkit::RedisProcess;

fn member(name: &str, server: &RedisProcess) -> Member {
    Member {
        name: name.into(),
        address: server.address(),
        priority: 1,
        upstream: None,
        zone: None,
        agent: None,
    }
}

async fn set(server: &RedisProcess, key: &str, value: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(format!("redis://{}", server.address()))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut conn)
        .await
}

async fn get(server: &RedisProcess, key: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://{}", server.address())).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .ok()?
}

async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn replicate_fence_promote_and_demote() {
    let dir = tempfile::tempdir().unwrap();
    let a = RedisProcess::start(dir.path(), &[]).unwrap();
    let b = RedisProcess::start(dir.path(), &[]).unwrap();
    let (ma, mb) = (member("a", &a), member("b", &b));
    let engine = RedisEngine::new(RedisSettings::default());

    let probe = engine.observe(&ma, None).await.server.unwrap();
    assert_eq!((probe.role, probe.read_only), (Role::Master, false));

    engine.replicate(&mb, &ma).await.unwrap();
    set(&a, "k", "1").await.unwrap();
    eventually("b to receive k", async || {
        get(&b, "k").await.as_deref() == Some("1")
    })
    .await;
    let probe = engine.observe(&mb, None).await.server.unwrap();
    assert_eq!(probe.role, Role::Replica);
    assert_eq!(probe.upstream_address, Some(a.address()));
    assert!(probe.read_only);
    eventually("b's link to come up", async || {
        engine.observe(&mb, None).await.server.unwrap().link_up == Some(true)
    })
    .await;

    // A fenced master keeps its role and data but rejects writes.
    engine.fence(&ma, 1).await.unwrap();
    let probe = engine.observe(&ma, None).await.server.unwrap();
    assert_eq!((probe.role, probe.read_only), (Role::Master, true));
    let err = set(&a, "k", "2").await.unwrap_err();
    assert!(err.to_string().contains("NOREPLICAS"), "{err}");

    // Promote b once caught up; a becomes its replica and keeps no fence.
    let a_offset = engine.observe(&ma, None).await.server.unwrap().durable;
    eventually("b to catch up", async || {
        engine.observe(&mb, None).await.server.unwrap().durable >= a_offset
    })
    .await;
    let a_branch = engine
        .observe(&ma, None)
        .await
        .server
        .unwrap()
        .history
        .unwrap()
        .branch;
    let history = engine
        .promote(&mb, 2)
        .await
        .unwrap()
        .expect("Redis reports its replication IDs");
    // b starts a new branch, and left a's where it had caught up.
    assert_ne!(history.branch, a_branch);
    assert_eq!(history.forks.len(), 1);
    assert_eq!(history.forks[0].branch, a_branch);
    assert_eq!(history.forks[0].at, a_offset);
    set(&b, "k", "3").await.unwrap();
    engine.replicate(&ma, &mb).await.unwrap();
    eventually("a to follow b", async || {
        get(&a, "k").await.as_deref() == Some("3")
    })
    .await;
    let probe = engine.observe(&ma, None).await.server.unwrap();
    assert_eq!(
        (probe.role, probe.upstream_address),
        (Role::Replica, Some(b.address()))
    );
    let err = set(&a, "x", "y").await.unwrap_err();
    assert!(
        err.to_string().to_uppercase().contains("READ ONLY REPLICA"),
        "{err}"
    );

    // Unfencing a fenced master restores writes.
    engine.fence(&mb, 1).await.unwrap();
    engine.unfence(&mb, 2).await.unwrap();
    set(&b, "k", "4").await.unwrap();
}

#[tokio::test]
async fn a_frozen_server_times_out_instead_of_stalling() {
    let dir = tempfile::tempdir().unwrap();
    let a = RedisProcess::start(dir.path(), &[]).unwrap();
    let ma = member("a", &a);
    let engine = RedisEngine::new(RedisSettings {
        timeout: Duration::from_millis(300),
        ..Default::default()
    });
    engine.observe(&ma, None).await.server.unwrap();
    a.freeze();
    let started = Instant::now();
    let err = engine.observe(&ma, None).await.server.unwrap_err();
    assert!(matches!(err, EngineError::Timeout { .. }), "{err}");
    // Bounded by the timeout, not by the frozen server (a generous bound, not a benchmark).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let err = engine.fence(&ma, 1).await.unwrap_err();
    assert!(matches!(err, EngineError::Timeout { .. }), "{err}");
    a.thaw();
    eventually("a to answer again", async || {
        engine.observe(&ma, None).await.server.is_ok()
    })
    .await;
}

#[tokio::test]
async fn a_dead_server_is_a_refused_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = RedisProcess::start(dir.path(), &[]).unwrap();
    let ma = member("a", &a);
    let engine = RedisEngine::new(RedisSettings::default());
    engine.observe(&ma, None).await.server.unwrap();
    a.kill();
    let err = engine.observe(&ma, None).await.server.unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Refused { .. } | EngineError::Command { .. }
        ),
        "{err}"
    );
    let err = engine.observe(&ma, None).await.server.unwrap_err();
    assert!(
        matches!(err, EngineError::Refused { .. }),
        "reconnects, then finds nothing listening: {err}"
    );
}

#[tokio::test]
async fn password_from_credentials_is_used_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let a = RedisProcess::start(dir.path(), &["--requirepass", "s3cret-pw"]).unwrap();
    let b = RedisProcess::start(dir.path(), &["--requirepass", "s3cret-pw"]).unwrap();
    let creds = replicant::engine::Credentials {
        username: None,
        password: Some(replicant::engine::Secret::new("s3cret-pw")),
    };
    let engine = RedisEngine::new(RedisSettings {
        credentials: creds,
        ..Default::default()
    });
    let (ma, mb) = (member("a", &a), member("b", &b));
    engine.replicate(&mb, &ma).await.unwrap();
    eventually("b's authenticated link", async || {
        engine.observe(&mb, None).await.server.unwrap().link_up == Some(true)
    })
    .await;

    let wrong = RedisEngine::new(RedisSettings {
        credentials: replicant::engine::Credentials {
            username: None,
            password: Some(replicant::engine::Secret::new("wrong-pw")),
        },
        ..Default::default()
    });
    let err = wrong
        .observe(&ma, None)
        .await
        .server
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("wrong-pw") && !err.contains("s3cret-pw"),
        "{err}"
    );
}
