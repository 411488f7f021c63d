//! `--etcd-user` against a real etcd with authentication on: the coordinator's client signs in
//! with the password and can read and write; without it, or with a wrong one, it cannot. Also
//! the command line's handling of the etcd flags: the password from a file or the environment,
//! and flags refused with a reason before anything runs.

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

/// A one-member etcd with user `root` (password `root-secret`) and authentication on.
async fn with_root_user(dir: &std::path::Path) -> Etcd {
    let etcd = Etcd::start(dir, 1);
    let mut admin = Client::connect(etcd.endpoints(), None).await.unwrap();
    admin.user_add("root", "root-secret", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();
    etcd
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_with_its_password_is_let_in_and_others_are_not() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = with_root_user(dir.path()).await;

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

fn replicant(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_replicant"))
        .args(args)
        .env_remove("REPLICANT_ETCD_PASSWORD")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_signs_in_with_a_password_file_or_the_environment() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = with_root_user(dir.path()).await;
    let url = format!("etcd://{}", etcd.endpoints()[0].replace("http://", ""));
    let status = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "status",
            "--coordinator",
            url.as_str(),
            "--etcd-user",
            "root",
        ];
        args.extend(extra);
        replicant(&args, env)
    };

    let file = dir.path().join("password");
    std::fs::write(&file, "root-secret\n").unwrap();
    let shown = status(&["--etcd-password-file", file.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(text.contains("Leader: none"), "{text}");

    let shown = status(&[], &[("REPLICANT_ETCD_PASSWORD", "root-secret")]);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );

    let refused = status(&[], &[("REPLICANT_ETCD_PASSWORD", "wrong")]);
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        !error.contains("wrong") && !error.contains("root-secret"),
        "{error}"
    );

    let missing = status(&[], &[]);
    let error = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(error.contains("--etcd-password-file"), "{error}");
}

#[test]
fn etcd_flags_are_refused_with_a_reason() {
    let specs = tempfile::tempdir().unwrap();
    let specs = specs.path().to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--specs",
            specs,
            "--coordinator",
            "etcd://127.0.0.1:1",
        ];
        args.extend(extra);
        let out = replicant(&args, &[]);
        assert!(!out.status.success(), "{extra:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["--lease", "2500ms"]).contains("whole seconds"));
    assert!(run(&["--lease", "1s"]).contains("at least 2s"));
    assert!(run(&["--identity", "a/b"]).contains("--identity"));
    assert!(run(&["--etcd-timeout", "10ms"]).contains("--etcd-timeout"));
    let out = replicant(
        &[
            "run",
            "--specs",
            specs,
            "--coordinator",
            "http://127.0.0.1:2379",
        ],
        &[],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with etcd://"));
    let out = replicant(&["run", "--specs", specs], &[]);
    assert!(!out.status.success(), "neither --state nor --coordinator");
}
