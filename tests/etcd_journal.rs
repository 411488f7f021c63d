//! The journal in a real three-member etcd on loopback: compare-and-swap on the journal's own
//! revision, fenced by the leader key's create revision, so that neither a second writer nor a
//! deposed leader can take a step.

mod support;

use std::time::Duration;

use etcd_client::Client;
use replicant::{
    core::{
        journal::Journal,
        reconcile::{JournalStore, Revision, StoreError},
    },
    runtime::etcd::{EtcdJournalStore, Fence, Keys},
};
use support::etcd::{Etcd, available};

const LEADER: &str = "/replicant/leader";

/// Take the leader key (anew): its create revision is the new leader's fencing token.
async fn lead(client: &mut Client) -> Fence {
    client.delete(LEADER, None).await.unwrap();
    let put = client.put(LEADER, "host", None).await.unwrap();
    Fence {
        leader_key: LEADER.into(),
        token: put.header().unwrap().revision(),
    }
}

fn journal(epoch: u64) -> Journal {
    Journal {
        epoch,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn journal_writes_compare_the_revision_they_read_and_the_leaders_token() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path(), 3);
    let mut client = Client::connect(etcd.endpoints(), None).await.unwrap();
    let key = Keys::new("/replicant").journal("default", "orders");
    let first = lead(&mut client).await;
    let shared = client.clone();
    let store = |fence: &Fence| {
        EtcdJournalStore::new(
            shared.clone(),
            key.clone(),
            fence.clone(),
            Duration::from_secs(2),
        )
    };

    // A new cluster starts empty; the first save creates the key.
    let (mine, theirs) = (store(&first), store(&first));
    let (empty, none) = mine.load().await.unwrap();
    assert_eq!((empty, none.clone()), (Journal::default(), Revision::NONE));
    let written = mine.save(&journal(1), &none).await.unwrap();
    assert_eq!(mine.load().await.unwrap(), (journal(1), written.clone()));

    // A second writer read the journal at the same revision: whoever saves second is refused.
    let (_, read) = theirs.load().await.unwrap();
    let after = mine.save(&journal(2), &written).await.unwrap();
    let refused = theirs.save(&journal(99), &read).await.unwrap_err();
    assert!(matches!(refused, StoreError::Conflict { .. }), "{refused}");
    assert_eq!(
        mine.load().await.unwrap().0,
        journal(2),
        "nothing overwritten"
    );
    // Creating a journal that exists is refused the same way.
    let refused = theirs
        .save(&journal(99), &Revision::NONE)
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Conflict { .. }), "{refused}");

    // Another process takes the lead: the old one's save is refused though its revision is
    // current, and it is told why; the new leader writes.
    let second = lead(&mut client).await;
    assert!(second.token > first.token);
    let deposed = mine.save(&journal(3), &after).await.unwrap_err();
    assert!(
        matches!(deposed, StoreError::Deposed { token } if token == first.token),
        "{deposed}"
    );
    let leader = store(&second);
    let (seen, revision) = leader.load().await.unwrap();
    assert_eq!(seen, journal(2));
    leader.save(&journal(3), &revision).await.unwrap();
    assert_eq!(leader.load().await.unwrap().0, journal(3));

    // With no leader key at all, nobody writes.
    client.delete(LEADER, None).await.unwrap();
    let (_, revision) = leader.load().await.unwrap();
    let refused = leader.save(&journal(4), &revision).await.unwrap_err();
    assert!(matches!(refused, StoreError::Deposed { .. }), "{refused}");
}
