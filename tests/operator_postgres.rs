//! The operator managing a PostgreSQL cluster: a real kube-apiserver, the operator running as
//! the chart's ServiceAccount, and real postgres servers under real `replicant node` agents on
//! loopback, their password and token read from Secrets.
//!
//! Needs `KUBEBUILDER_ASSETS` (see `tests/support/k8s.rs`) and PostgreSQL.

mod support;

use k8s_openapi::api::events::v1::Event;
use kube::{Api, Client};
use replicant::api::ReplicationCluster;
use replicant_testkit::postgres::PASSWORD;
use support::{
    k8s::{ControlPlane, Operator},
    node::TOKEN,
    pg::{archived_through_now, available, eventually_pg, number, sql, try_number, try_sql},
    pg_bed::{PgBed, streaming_in},
};

const NS: &str = "shop";

struct Bed {
    plane: ControlPlane,
    hosts: PgBed,
    operator_kubeconfig: std::path::PathBuf,
}

impl Bed {
    async fn new() -> Option<Bed> {
        if !available() {
            return None;
        }
        let plane = ControlPlane::start().await?;
        let operator_kubeconfig = support::k8s::install_operator(&plane, None, NS).await;
        Some(Bed {
            plane,
            hosts: PgBed::new(),
            operator_kubeconfig,
        })
    }

    fn cluster_yaml(&self, primary: &str) -> String {
        let members = members_yaml(&self.hosts);
        format!(
            r#"apiVersion: v1
kind: Secret
metadata: {{name: orders-pg, namespace: {NS}}}
stringData: {{password: {PASSWORD}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: orders-agents, namespace: {NS}}}
stringData: {{token: {TOKEN}}}
---
apiVersion: replicant.dev/v1alpha1
kind: ReplicationCluster
metadata: {{name: orders, namespace: {NS}}}
spec:
  engine: postgres
  primary: {primary}
  members:
{members}  failover: {{detectAfter: 1s, cooldown: 1m}}
  credentials: {{username: postgres, secretRef: {{name: orders-pg, key: password}}}}
  agentToken: {{secretRef: {{name: orders-agents, key: token}}}}
---
apiVersion: replicant.dev/v1alpha1
kind: VirtualName
metadata: {{name: orders-rw, namespace: {NS}}}
spec: {{cluster: orders, target: primary}}
---
apiVersion: replicant.dev/v1alpha1
kind: VirtualName
metadata: {{name: orders-ro, namespace: {NS}}}
spec: {{cluster: orders, target: replicas}}
"#
        )
    }

    fn operator(&self, identity: &str, env: &[(&str, &str)]) -> Operator {
        Operator::start(&self.plane, &self.operator_kubeconfig, identity, env)
    }

    async fn client(&self) -> Client {
        self.plane.admin_client().await.unwrap()
    }

    async fn cluster(&self) -> Option<ReplicationCluster> {
        let api: Api<ReplicationCluster> = Api::namespaced(self.client().await, NS);
        api.get_opt("orders").await.ok().flatten()
    }

    /// Wait until the cluster's status satisfies `check`; panics with the status and log.
    async fn wait_for(
        &self,
        what: &str,
        secs: u64,
        operator: &Operator,
        check: impl Fn(&ReplicationCluster) -> bool,
    ) -> ReplicationCluster {
        self.wait_for_cluster("orders", what, secs, operator, check)
            .await
    }

    /// As [`Bed::wait_for`], for the cluster `name`.
    async fn wait_for_cluster(
        &self,
        name: &str,
        what: &str,
        secs: u64,
        operator: &Operator,
        check: impl Fn(&ReplicationCluster) -> bool,
    ) -> ReplicationCluster {
        support::k8s::wait_for_cluster(
            &self.client().await,
            NS,
            name,
            what,
            secs,
            || format!("operator log:\n{}", operator.log_text()),
            check,
        )
        .await
    }

    /// Wait until the read-write Service's slices point at `member`'s postgres, and only it.
    async fn wait_for_rw_on(&self, member: &str) {
        let port = self.hosts.host(member).port;
        support::eventually(
            &format!("the read-write Service on {member}"),
            30,
            async || {
                support::k8s::slice_ports(&self.client().await, NS, "orders-rw")
                    .await
                    .0
                    == vec![port]
            },
        )
        .await;
    }
}

/// The `members` list of a cluster on `hosts`, indented under `spec:`.
fn members_yaml(hosts: &PgBed) -> String {
    let mut members = String::new();
    for host in &hosts.hosts {
        members.push_str(&format!(
            "    - {{name: {}, address: \"127.0.0.1:{}\", agent: \"{}\"}}\n",
            host.name,
            host.port,
            host.node.address()
        ));
    }
    members
}

fn ready(cluster: &ReplicationCluster) -> bool {
    let Some(status) = &cluster.status else {
        return false;
    };
    status.ready_members.as_deref() == Some("3/3")
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn event_reasons(client: &Client) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), NS);
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("orders"))
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_builds_a_postgres_cluster_fails_it_over_and_moves_the_service() {
    let Some(mut bed) = Bed::new().await else {
        return;
    };
    let op = bed.operator("op-1", &[]);
    let out = bed.plane.apply_text("orders.yaml", &bed.cluster_yaml("a"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The operator has a's agent start it and the others' copy it, with the password and
    // token from their Secrets.
    let cluster = bed
        .wait_for("a primary, b and c streaming", 120, &op, ready)
        .await;
    let status = cluster.status.as_ref().unwrap();
    assert_eq!(status.current_primary.as_deref(), Some("a"));
    for member in &status.members {
        assert_eq!(member.branch.as_deref(), Some("1"), "{member:?}");
        assert!(member.offset.is_some_and(|o| o > 0), "{member:?}");
    }
    let a_port = bed.hosts.host("a").port;
    let rw = support::k8s::slice_ports(&bed.client().await, NS, "orders-rw").await;
    assert_eq!(rw.0, vec![a_port]);
    let reasons = event_reasons(&bed.client().await).await;
    assert!(
        reasons.iter().any(|r| r == "Cloned"),
        "a copy is an event: {reasons:?}"
    );

    // kubectl shows the primary's timeline and position.
    assert_eq!(status.branch.as_deref(), Some("1"));
    assert!(status.position.is_some_and(|p| p > 0), "{status:?}");
    let wide = bed
        .plane
        .kubectl_ok(&["get", "rcluster", "-n", NS, "-o", "wide"]);
    let column = |name: &str| -> String {
        let mut lines = wide.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let at = header.iter().position(|h| *h == name).expect(name);
        row[at].to_string()
    };
    assert_eq!(column("BRANCH"), "1", "{wide}");
    assert!(
        column("POSITION").parse::<u64>().is_ok_and(|p| p > 0),
        "{wide}"
    );

    // Node loss: the operator fails over, and the read-write Service follows.
    let a = bed.hosts.address("a");
    sql(
        &a,
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await;
    for m in ["b", "c"] {
        let address = bed.hosts.address(m);
        eventually_pg("rows on the standbys", async || {
            try_number(&address, "SELECT count(*) FROM t").await == Some(100)
        })
        .await;
    }
    bed.hosts.node("a").kill_node();
    let cluster = bed
        .wait_for("a failover", 60, &op, |c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.history.last().is_some_and(|h| h.to != "a"))
        })
        .await;
    let status = cluster.status.as_ref().unwrap();
    let new = status.history.last().unwrap().to.clone();
    let promotion = status.history.last().unwrap();
    assert!(
        promotion
            .branch
            .as_deref()
            .is_some_and(|b| b.starts_with("2@")),
        "the new timeline is journaled: {promotion:?}"
    );
    bed.wait_for_rw_on(&new).await;
    let reasons = event_reasons(&bed.client().await).await;
    for reason in ["Promoted", "FailoverSucceeded"] {
        assert!(reasons.iter().any(|r| r == reason), "{reason}: {reasons:?}");
    }

    // a's host comes back and is rewound in; that is an event too.
    bed.hosts.node("a").reboot();
    bed.wait_for("a back as a standby", 120, &op, ready).await;
    support::eventually("a Rejoined event", 30, async || {
        event_reasons(&bed.client().await)
            .await
            .iter()
            .any(|r| r == "Rejoined")
    })
    .await;

    // Neither secret is anywhere in status or events.
    let status = serde_json::to_string(&bed.cluster().await.unwrap().status).unwrap();
    assert!(!status.contains(PASSWORD) && !status.contains(TOKEN));
    let events = bed
        .plane
        .kubectl_ok(&["get", "events", "-n", NS, "-o", "yaml"]);
    assert!(!events.contains(PASSWORD) && !events.contains(TOKEN));
    assert!(!op.log_text().contains(PASSWORD) && !op.log_text().contains(TOKEN));
}

/// The operator killed, and away for a minute: the primary keeps committing (a writer straight
/// into its port), and the next operator, once it leads, finds the cluster as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_for_a_minute_leaves_every_database_untouched() {
    use replicant_testkit::writer::{Route, Writer, WriterOptions, count_missing_rows};
    use std::time::{Duration, Instant};
    use support::away::{assert_no_failed_write, away, writes_go_on};
    let Some(bed) = Bed::new().await else {
        return;
    };
    let mut first = bed.operator("op-1", &[]);
    let out = bed.plane.apply_text("orders.yaml", &bed.cluster_yaml("a"));
    assert!(out.status.success());
    let cluster = bed.wait_for("the cluster ready", 120, &first, ready).await;
    let epoch = cluster.status.as_ref().unwrap().epoch;
    let primary = bed.hosts.address("a");
    let writes = Writer::start(WriterOptions {
        route: Route::Direct(primary.clone()),
        prefix: "away:".into(),
        wait_replicas: None,
        timeout: Duration::from_secs(5),
        postgres_password: Some(PASSWORD.into()),
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill();
    let killed = Instant::now();
    writes_go_on(&writes, killed, "operator killed", || {
        bed.hosts.agent_logs()
    })
    .await;

    let second = bed.operator("op-2", &[]);
    support::eventually("op-2 to lead", 30, async || {
        second.log_text().contains("became leader")
    })
    .await;
    // Long enough for a failover to have started, had op-2 wanted one.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cluster = bed.wait_for("op-2's status", 30, &second, ready).await;
    let status = cluster.status.as_ref().unwrap();
    assert_eq!(status.current_primary.as_deref(), Some("a"), "{status:?}");
    assert_eq!(status.epoch, epoch, "no promotion: {status:?}");
    assert!(status.history.is_empty(), "no failover: {status:?}");
    let log = second.log_text();
    assert!(
        !log.contains("started again"),
        "nothing was restarted: {log}"
    );

    let acks = writes.finish().await;
    let longest = assert_no_failed_write(&acks, "operator killed");
    let lost = count_missing_rows(&primary, PASSWORD, "away:", &acks)
        .await
        .unwrap();
    assert_eq!(lost, 0, "acknowledged commits lost");
    eprintln!(
        "operator away {}s: {} commits, none failed, none lost, longest gap {}ms",
        away().as_secs(),
        acks.len(),
        longest.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_failover_is_resumed_by_the_next_and_spec_primary_switches_over() {
    let Some(mut bed) = Bed::new().await else {
        return;
    };
    let mut first = bed.operator("op-1", &[("REPLICANT_CRASH_AT", "after-promote")]);
    let out = bed.plane.apply_text("orders.yaml", &bed.cluster_yaml("a"));
    assert!(out.status.success());
    bed.wait_for("the cluster ready", 120, &first, ready).await;

    // Node loss; the operator dies right after the promotion, before anything else.
    bed.hosts.node("a").kill_node();
    support::eventually("op-1 to die at its crash point", 30, async || {
        first.exited()
    })
    .await;
    let second = bed.operator("op-2", &[]);
    let cluster = bed
        .wait_for("op-2 to finish the failover", 60, &second, |c| {
            c.status.as_ref().is_some_and(|s| {
                s.history
                    .last()
                    .is_some_and(|h| format!("{:?}", h.outcome) == "Succeeded")
            })
        })
        .await;
    let status = cluster.status.as_ref().unwrap();
    assert_eq!(status.epoch, 1, "resumed at the same epoch: {status:?}");
    assert_eq!(status.history.len(), 1);
    let new = status.current_primary.clone().unwrap();
    let other = if new == "b" { "c" } else { "b" };
    bed.wait_for_rw_on(&new).await;

    // With no operator renewing it, the new primary kept its lease through its peers (the
    // standby left is a majority with it): it was never stopped, so op-2 starts nothing.
    let primary = bed.hosts.address(&new);
    eventually_pg("the new primary to take writes", async || {
        try_sql(
            &primary,
            "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)",
        )
        .await
        .is_ok()
    })
    .await;
    let log = second.log_text();
    assert!(
        !log.contains("it is started again") && !log.contains("started again where it is"),
        "{log}"
    );

    // spec.primary names the other standby: a planned switchover, with nothing lost.
    let out = bed
        .plane
        .apply_text("orders.yaml", &bed.cluster_yaml(other));
    assert!(out.status.success());
    let cluster = bed
        .wait_for("the switchover", 60, &second, |c| {
            c.status.as_ref().is_some_and(|s| {
                s.current_primary.as_deref() == Some(other) && s.history.len() == 2
            })
        })
        .await;
    let last = cluster.status.as_ref().unwrap().history.last().unwrap();
    assert_eq!(format!("{:?}", last.kind), "Switchover", "{last:?}");
    assert_eq!(last.epoch, 2);
    bed.wait_for_rw_on(other).await;
    let target = bed.hosts.address(other);
    eventually_pg("every row on the new primary", async || {
        try_number(&target, "SELECT count(*) FROM t").await == Some(100)
    })
    .await;
    bed.wait_for("the old primary following the new one", 60, &second, |c| {
        c.status.as_ref().is_some_and(|s| {
            s.members.iter().any(|m| {
                m.name == new && m.upstream.as_deref() == Some(other) && m.link_up == Some(true)
            })
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statefulset_example_is_accepted_and_runs_the_agent_from_the_copied_binary() {
    let Some(bed) = Bed::new().await else {
        return;
    };
    let op = bed.operator("op-1", &[]);
    bed.plane
        .kubectl_ok(&["apply", "-f", "examples/kubernetes/postgres/"]);

    // The StatefulSet as the server stored it (there is no kubelet here to run it).
    let text = bed
        .plane
        .kubectl_ok(&["get", "statefulset", "orders-pg", "-n", NS, "-o", "json"]);
    let set: serde_json::Value = serde_json::from_str(&text).unwrap();
    let pod = &set["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    assert!(
        init["image"].as_str().unwrap().contains("replicant"),
        "{init}"
    );
    assert_eq!(
        init["args"],
        serde_json::json!(["copy-binary", "/replicant"])
    );
    let postgres = &pod["containers"][0];
    assert!(postgres["image"].as_str().unwrap().starts_with("postgres:"));
    assert_eq!(
        postgres["command"],
        serde_json::json!(["/replicant/replicant"])
    );
    let mounts = postgres["volumeMounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"] == "/replicant" && m["readOnly"] == true)
    );
    assert_eq!(pod["securityContext"]["runAsUser"], 999);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "data"
    );
    let service: serde_json::Value = serde_json::from_str(&bed.plane.kubectl_ok(&[
        "get",
        "service",
        "orders-pg",
        "-n",
        NS,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(service["spec"]["clusterIP"], "None");

    // The container's arguments are ones this binary's agent takes: run with them (its
    // addresses and paths moved to loopback and a temporary directory), it serves.
    let dir = tempfile::tempdir().unwrap();

    // The init container's command, into a directory here: a whole executable copy.
    let shared = dir.path().join("replicant-volume");
    let copied = std::process::Command::new(env!("CARGO_BIN_EXE_replicant"))
        .args(["copy-binary", shared.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(copied.status.success(), "{copied:?}");
    let copy = shared.join("replicant");
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&copy).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    assert_eq!(
        meta.len(),
        std::fs::metadata(env!("CARGO_BIN_EXE_replicant"))
            .unwrap()
            .len()
    );
    let version = std::process::Command::new(&copy)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("replicant "));

    let listen = format!("127.0.0.1:{}", replicant_testkit::free_port().unwrap());
    let args: Vec<String> = postgres["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .map(|a| match a.split_once('=') {
            Some(("--listen", _)) => format!("--listen={listen}"),
            Some(("--data", _)) => format!("--data={}", dir.path().join("pgdata").display()),
            Some(("--state", _)) => {
                format!("--state={}", dir.path().join("agent/node.json").display())
            }
            Some(("--pg-bin", _)) => format!(
                "--pg-bin={}",
                replicant_testkit::postgres::bin_dir().unwrap().display()
            ),
            _ => a,
        })
        .collect();
    assert_eq!(args[0], "node");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(String, String)> = postgres["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                "a-test-value-long-enough-for-a-token".to_string(),
            )
        })
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let agent = support::Controller::spawn(&args, &[], &env, dir.path().join("agent.log"));
    support::eventually("the example's agent to listen", 20, async || {
        tokio::net::TcpStream::connect(&listen).await.is_ok()
    })
    .await;
    assert!(
        agent.log_text().contains("node agent listening"),
        "{}",
        agent.log_text()
    );

    // The operator takes the cluster; without pods, it says its members cannot be reached.
    let api: Api<ReplicationCluster> = Api::namespaced(bed.client().await, NS);
    support::eventually("the example cluster's status", 30, async || {
        api.get_opt("orders-pg")
            .await
            .ok()
            .flatten()
            .and_then(|c| c.status)
            .is_some_and(|s| {
                s.members.len() == 3
                    && s.members.iter().all(|m| {
                        !m.reachable
                            && m.message
                                .as_deref()
                                .is_some_and(|t| t.contains(".orders-pg.shop.svc:5432"))
                    })
            })
    })
    .await;
    drop(op);
}

/// Backups through the operator: the store's key comes from a Secret and every host archives
/// with it; a `Backup` applied with kubectl is read from a standby into the repository, and
/// its object and the cluster's status say so; a `Backup` naming no member fails at once,
/// saying why, and so does one naming a cluster that does not exist. With
/// `copyFrom: Backup`, a member whose host lost its disk is copied again from that backup. A
/// second cluster applied with `bootstrap.recovery` comes up from the first one's backup and
/// WAL, with its replicas, archives to an Azure container (Azurite) and takes its first base
/// backup into a GCS bucket (a mock), each key from a Secret. No key is anywhere in status,
/// Events or the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_copies_and_recovery_through_the_operator_with_the_store_key_from_a_secret() {
    use replicant::api::{Backup, BackupPhase};
    use replicant_testkit::{
        azurite::{self, AzuriteProcess},
        garage::{self, GarageProcess},
    };
    let Some(mut bed) = Bed::new().await else {
        return;
    };
    let Some(binary) = support::garage_binary() else {
        return;
    };
    let store =
        GarageProcess::start(&binary, &bed.hosts.dir.path().join("garage"), "backups").unwrap();
    let op = bed.operator("op-1", &[]);
    let token_line = "  agentToken: {secretRef: {name: orders-agents, key: token}}\n";
    let backup = format!(
        "  backup:\n    repositories:\n      - name: offsite\n        s3: {{bucket: backups, endpoint: \"{}\", region: {}, credentials: {{secretRef: {{name: orders-s3}}}}}}\n    archive: {{}}\n",
        store.endpoint,
        garage::REGION
    );
    let copy_from_backup = "  replication: {copyFrom: Backup}\n";
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: orders-s3, namespace: {NS}}}\nstringData: {{accessKeyId: {}, secretAccessKey: {}}}\n---\n{}",
        garage::ACCESS_KEY_ID,
        garage::SECRET_ACCESS_KEY,
        bed.cluster_yaml("a").replace(
            token_line,
            &format!("{token_line}{backup}{copy_from_backup}")
        )
    );
    let out = bed.plane.apply_text("orders.yaml", &yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let condition = |c: &ReplicationCluster, type_: &str| {
        c.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|k| k.type_ == type_).cloned())
    };
    bed.wait_for(
        "ready, archiving with the key from the Secret, and no backup yet",
        120,
        &op,
        |c| {
            ready(c)
                && condition(c, "ContinuousArchiving").is_some_and(|k| k.status == "True")
                && condition(c, "BackupSucceeded").is_some_and(|k| k.reason == "NoBackup")
        },
    )
    .await;
    let primary = bed.hosts.address("a");
    sql(
        &primary,
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await;

    let asked = format!(
        "apiVersion: replicant.dev/v1alpha1\nkind: Backup\nmetadata: {{name: before-migration, namespace: {NS}}}\nspec: {{cluster: orders}}\n---\napiVersion: replicant.dev/v1alpha1\nkind: Backup\nmetadata: {{name: typo, namespace: {NS}}}\nspec: {{cluster: orders, member: z}}\n---\napiVersion: replicant.dev/v1alpha1\nkind: Backup\nmetadata: {{name: elsewhere, namespace: {NS}}}\nspec: {{cluster: nope}}\n"
    );
    let out = bed.plane.apply_text("backups.yaml", &asked);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api: Api<Backup> = Api::namespaced(bed.client().await, NS);
    let phase = async |name: &str| {
        api.get(name)
            .await
            .ok()
            .and_then(|b| b.status)
            .map(|s| s.phase)
    };
    support::eventually("the three Backups ended", 120, async || {
        phase("before-migration").await == Some(BackupPhase::Completed)
            && phase("typo").await == Some(BackupPhase::Failed)
            && phase("elsewhere").await == Some(BackupPhase::Failed)
    })
    .await;
    let elsewhere = api.get("elsewhere").await.unwrap().status.unwrap();
    assert!(
        elsewhere.message.contains("no ReplicationCluster nope"),
        "{elsewhere:?}"
    );
    let done = api.get("before-migration").await.unwrap().status.unwrap();
    let id = done.backup_id.clone().expect("the catalog's id");
    assert!(
        matches!(done.member.as_deref(), Some("b" | "c")),
        "read from a standby: {done:?}"
    );
    assert_eq!(done.repository.as_deref(), Some("offsite"));
    assert!(done.size_bytes.is_some_and(|s| s > 0), "{done:?}");
    eprintln!("the Backup: {done:?}");
    let typo = api.get("typo").await.unwrap().status.unwrap();
    assert!(typo.message.contains("no member"), "{typo:?}");
    let cluster = bed
        .wait_for("the cluster shows the backup", 90, &op, |c| {
            condition(c, "BackupSucceeded").is_some_and(|k| k.status == "True")
        })
        .await;
    let backups = cluster.status.as_ref().unwrap().backup.clone().unwrap();
    assert_eq!(backups.last_backup.as_ref().unwrap().id, id, "{backups:?}");
    assert!(!backups.recoverable.is_empty(), "{backups:?}");
    let listed = bed.plane.kubectl_ok(&["get", "rbackup", "-n", NS]);
    assert!(
        listed.lines().any(|l| l.starts_with("before-migration")
            && l.contains("Completed")
            && l.contains(&id)),
        "{listed}"
    );

    // copyFrom: Backup: c's host loses its disk, and c is copied again from that backup.
    sql(&primary, "INSERT INTO t SELECT generate_series(101, 200)").await;
    bed.hosts.lose_disk("c");
    let lost = std::time::Instant::now();
    let label = format!("LABEL: replicant {id}");
    bed.wait_for(
        "c copied again from the backup and streaming from a",
        120,
        &op,
        |c| {
            c.status.as_ref().is_some_and(|s| streaming_in(s, "c", "a"))
                && bed.hosts.copied_from("c").contains(&label)
        },
    )
    .await;
    eprintln!("c copied from {id} and streaming in {:?}", lost.elapsed());
    eventually_pg("c holds every row", async || {
        try_number(&bed.hosts.address("c"), "SELECT count(*) FROM t")
            .await
            .is_some_and(|n| n == 200)
    })
    .await;

    // A new cluster recovered from orders' backup and WAL, to the latest point.
    archived_through_now(&primary).await;
    let hosts = bed.hosts.for_recovery_beside("restored");
    // It archives to an Azure container of its own (Azurite), its account key in a Secret.
    let Some(azurite_binary) = support::azurite_binary() else {
        return;
    };
    let blobs = AzuriteProcess::start(
        &azurite_binary,
        &bed.hosts.dir.path().join("azurite"),
        "restored",
    )
    .unwrap();
    // Its base backups go to a GCS bucket (a MOCK of GCS's XML API: no emulator runs here),
    // the service account key in a Secret too.
    let gcs = support::gcs_mock::GcsMock::start("restored").await;
    let own_archive = format!(
        "      - name: blobs\n        azure: {{account: {}, container: restored, endpoint: \"{}\", credentials: {{secretRef: {{name: restored-azure}}}}}}\n      - name: gcs\n        gcs: {{bucket: restored, endpoint: \"{}\", credentials: {{secretRef: {{name: restored-gcs}}}}}}\n    archive: {{repository: blobs}}\n    base: {{schedule: \"0 0 * * *\", repository: gcs}}\n",
        azurite::ACCOUNT,
        blobs.endpoint,
        gcs.url
    );
    let gcs_key = r#"{\"private_key\": \"unused\", \"private_key_id\": \"unused\", \"client_email\": \"tests@example.invalid\", \"disable_oauth\": true}"#;
    let restored = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: restored-gcs, namespace: {NS}}}\nstringData: {{serviceAccountKey: \"{gcs_key}\"}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: restored-azure, namespace: {NS}}}\nstringData: {{accountKey: \"{}\"}}\n---\napiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {{name: restored, namespace: {NS}}}\nspec:\n  engine: postgres\n  primary: a\n  members:\n{}  failover: {{detectAfter: 1s, cooldown: 1m}}\n  credentials: {{username: postgres, secretRef: {{name: orders-pg, key: password}}}}\n{token_line}{}  bootstrap:\n    recovery: {{repository: offsite, source: {{cluster: orders}}}}\n",
        azurite::ACCOUNT_KEY,
        members_yaml(&hosts),
        backup.replace("    archive: {}\n", &own_archive)
    );
    let out = bed.plane.apply_text("restored.yaml", &restored);
    let applied = std::time::Instant::now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recovered = bed
        .wait_for_cluster(
            "restored",
            "restored recovered, b and c copied from it and streaming, archiving to Azure, its first base backup in GCS",
            180,
            &op,
            |c| {
                ready(c)
                    && c.status
                        .as_ref()
                        .is_some_and(|s| streaming_in(s, "b", "a") && streaming_in(s, "c", "a"))
                    && condition(c, "ContinuousArchiving").is_some_and(|k| k.status == "True")
                    && condition(c, "BackupSucceeded").is_some_and(|k| k.status == "True")
            },
        )
        .await;
    assert_eq!(
        number(&hosts.address("a"), "SELECT count(*) FROM t").await,
        200,
        "every row orders archived"
    );
    assert!(
        gcs.keys()
            .iter()
            .any(|k| k.starts_with("shop/restored/") && k.ends_with("/backup.json")),
        "{:?}",
        gcs.keys()
    );
    eprintln!(
        "restored recovered with its replicas in {:?}",
        applied.elapsed()
    );

    let events = bed
        .plane
        .kubectl_ok(&["get", "events", "-n", NS, "-o", "yaml"]);
    for secret in [garage::SECRET_ACCESS_KEY, azurite::ACCOUNT_KEY] {
        for status in [&cluster.status, &recovered.status] {
            let status = serde_json::to_string(status).unwrap();
            assert!(!status.contains(secret));
        }
        assert!(!events.contains(secret));
        assert!(!op.log_text().contains(secret));
    }
}
