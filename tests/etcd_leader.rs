//! Leadership through a real three-member etcd on loopback: one leader at a time, and a leader
//! that stops renewing stops acting, on its own clock, before anyone else can take over.

mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use etcd_client::Client;
use replicant::runtime::etcd::{ElectionOptions, Leadership, Session, campaign};
use support::etcd::{Etcd, available};

const TTL: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(1);

/// Campaign as `identity` on a session of its own.
async fn candidate(client: &Client, identity: &str) -> Leadership {
    let session = Arc::new(Session::open(client, TTL, TIMEOUT).await.unwrap());
    let options = ElectionOptions {
        key: "/replicant/leader".into(),
        identity: identity.into(),
        timeout: TIMEOUT,
    };
    campaign(client, &session, &options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_at_a_time_and_a_silent_one_stops_before_the_next_takes_over() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path(), 3);
    let client = Client::connect(etcd.endpoints(), None).await.unwrap();

    let first = candidate(&client, "host-1").await;
    assert!(first.may_act());
    // While the first renews, the second campaigns in vain, past several lease lengths.
    let second = {
        let client = client.clone();
        tokio::spawn(async move { candidate(&client, "host-2").await })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !second.is_finished(),
        "a second leader while the first renews"
    );
    assert!(first.may_act(), "renewals keep the first acting");
    let value = client.clone().get("/replicant/leader", None).await.unwrap();
    assert_eq!(value.kvs()[0].value(), b"host-1");

    // The first stops renewing, as a crashed or frozen process would.
    first.abandon();
    let stops_at = first.until();
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second takes over once the lease is gone")
        .unwrap();
    let took_over = Instant::now();
    assert!(
        stops_at < took_over,
        "the first stopped acting {:?} before the second led",
        took_over - stops_at
    );
    assert!(!first.may_act());
    assert!(second.may_act());
    assert!(
        second.fence.token > first.fence.token,
        "a newer fencing token"
    );
}
