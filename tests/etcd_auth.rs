//! `--etcd-user` against a real etcd with authentication on: the coordinator's client signs in
//! with the password and can read and write; without it, or with a wrong one, it cannot.

mod support;

use std::time::Duration;

use etcd_client::Client;
use replicant::{engine::Secret, runtime::etcd::Coordinator};
use support::etcd::{Etcd, available};

fn coordinator(etcd: &Etcd, user: Option<&str>, password: Option<&str>) -> Coordinator {
    Coordinator {
        endpoints: etcd.endpoints(),
        prefix: "/replicant".into(),
        tls: None,
        user: user.map(str::to_string),
        password: password.map(Secret::new),
        timeout: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_with_its_password_is_let_in_and_others_are_not() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path(), 1);
    let mut admin = Client::connect(etcd.endpoints(), None).await.unwrap();
    admin.user_add("root", "root-secret", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    let signed_in = coordinator(&etcd, Some("root"), Some("s3cret-not-this"))
        .connect()
        .await;
    assert!(signed_in.is_err(), "a wrong password is refused");

    let mut client = coordinator(&etcd, Some("root"), Some("root-secret"))
        .connect()
        .await
        .unwrap();
    client.put("/replicant/probe", "1", None).await.unwrap();
    let read = client.get("/replicant/probe", None).await.unwrap();
    assert_eq!(read.kvs()[0].value(), b"1");

    let anonymous = coordinator(&etcd, None, None).connect().await;
    if let Ok(mut anonymous) = anonymous {
        assert!(
            anonymous.get("/replicant/probe", None).await.is_err(),
            "no user, no access"
        );
    }

    let missing = coordinator(&etcd, Some("root"), None).connect().await;
    let Err(error) = missing else {
        panic!("a user without a password connected");
    };
    let message = error.to_string();
    assert!(message.contains("--etcd-password-file"), "{message}");
    assert!(!message.contains("root-secret"));
}
