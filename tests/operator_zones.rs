//! Zones through the operator, against a real kube-apiserver and real redis-servers: the cascade forms, status says why each member follows whom, and a read name's EndpointSlices carry each member's zone and, where the server has them, topology hints.
//!
//! Needs `KUBEBUILDER_ASSETS` (see `tests/support/k8s.rs`) and redis-server.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client, core::DynamicObject};
use replicant::api::ReplicationCluster;
use replicant_testkit::RedisProcess;
use support::k8s::{ControlPlane, Operator};

const NS: &str = "zones";
const MEMBERS: [(&str, &str); 4] = [
    ("orders-a", "zone-a"),
    ("orders-b", "zone-a"),
    ("orders-c", "zone-b"),
    ("orders-d", "zone-b"),
];

fn cluster_yaml(servers: &[RedisProcess], preferred: &str) -> String {
    let members: String = MEMBERS
        .iter()
        .zip(servers)
        .map(|((name, zone), s)| {
            format!(
                "    - {{name: {name}, address: \"{}\", zone: {zone}}}\n",
                s.address()
            )
        })
        .collect();
    format!(
        r#"apiVersion: replicant.dev/v1alpha1
kind: ReplicationCluster
metadata: {{name: orders, namespace: {NS}}}
spec:
  engine: redis
  primary: orders-a
  members:
{members}  failover: {{detectAfter: 1s, cooldown: 1m}}
---
apiVersion: replicant.dev/v1alpha1
kind: VirtualName
metadata: {{name: orders-ro, namespace: {NS}}}
spec: {{cluster: orders, target: replicas, preferredZones: [{preferred}]}}
"#
    )
}

async fn eventually_status(
    client: &Client,
    operator: &Operator,
    what: &str,
    check: impl Fn(&ReplicationCluster) -> bool,
) -> ReplicationCluster {
    let logs = || format!("operator log:\n{}", operator.log_text());
    support::k8s::wait_for_cluster(client, NS, "orders", what, 60, logs, check).await
}

fn placement(cluster: &ReplicationCluster, member: &str) -> Option<String> {
    cluster
        .status
        .as_ref()?
        .members
        .iter()
        .find(|m| m.name == member)?
        .placement
        .clone()
}

/// The slices of `service`, and the version they were read at.
async fn slices(client: &Client, service: &str) -> (Vec<DynamicObject>, String) {
    let version = support::k8s::slice_version(client).await;
    (support::k8s::slices(client, NS, service).await, version)
}

/// Every endpoint of the slices as (member, zone, hinted zones).
fn endpoint_zones(
    slices: &[DynamicObject],
    v1: bool,
) -> Vec<(String, Option<String>, Option<Vec<String>>)> {
    let mut out = Vec::new();
    for slice in slices {
        for e in slice.data["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let zone = if v1 {
                e["zone"].as_str()
            } else {
                e["topology"]["topology.kubernetes.io/zone"].as_str()
            };
            let hints = e["hints"]["forZones"].as_array().map(|zones| {
                zones
                    .iter()
                    .filter_map(|z| z["name"].as_str().map(String::from))
                    .collect()
            });
            out.push((
                e["hostname"].as_str().unwrap_or_default().to_string(),
                zone.map(String::from),
                hints,
            ));
        }
    }
    out.sort();
    out
}

fn zones_annotation(slices: &[DynamicObject]) -> Option<String> {
    slices.iter().find_map(|s| {
        s.metadata
            .annotations
            .as_ref()?
            .get("replicant.dev/zones")
            .cloned()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_cascade_and_read_slices_carry_zones_and_hints() {
    let Some(plane) = ControlPlane::start().await else {
        return;
    };
    let kubeconfig = support::k8s::install_operator(&plane, None, NS).await;
    let dir = tempfile::tempdir().unwrap();
    let servers: Vec<RedisProcess> = MEMBERS
        .iter()
        .map(|_| RedisProcess::start(dir.path(), &[]).expect("redis-server starts"))
        .collect();
    let operator = Operator::start(&plane, &kubeconfig, "op-1", &[]);
    let out = plane.apply_text("orders.yaml", &cluster_yaml(&servers, "zone-b"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = plane.admin_client().await.unwrap();

    // The cascade forms through zone-b's gateway, and status says why.
    let cluster = eventually_status(&client, &operator, "4/4 ready", |c| {
        c.status.as_ref().and_then(|s| s.ready_members.as_deref()) == Some("4/4")
    })
    .await;
    assert_eq!(
        placement(&cluster, "orders-d").as_deref(),
        Some("orders-d follows orders-c: gateway of zone zone-b")
    );
    assert_eq!(
        placement(&cluster, "orders-c").as_deref(),
        Some("orders-c follows orders-a: gateway of zone zone-b")
    );
    let d = cluster
        .status
        .as_ref()
        .unwrap()
        .members
        .iter()
        .find(|m| m.name == "orders-d")
        .unwrap();
    assert_eq!(d.zone.as_deref(), Some("zone-b"));
    assert_eq!(
        support::upstream(&servers[3].address()).await,
        servers[2].address(),
        "orders-d streams from orders-c on the server itself"
    );

    // The read name's slices: every endpoint with its zone.
    let (read, version) = slices(&client, "orders-ro").await;
    let v1 = version == "v1";
    let zones = endpoint_zones(&read, v1);
    let members: Vec<(&str, Option<&str>)> = zones
        .iter()
        .map(|(m, z, _)| (m.as_str(), z.as_deref()))
        .collect();
    assert_eq!(
        members,
        [
            ("orders-b", Some("zone-a")),
            ("orders-c", Some("zone-b")),
            ("orders-d", Some("zone-b"))
        ]
    );
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let annotations = services
        .get("orders-ro")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default();
    if v1 {
        // Each endpoint serves its own zone.
        let hints: Vec<Option<Vec<String>>> = zones.iter().map(|(_, _, h)| h.clone()).collect();
        assert_eq!(
            hints,
            [
                Some(vec!["zone-a".to_string()]),
                Some(vec!["zone-b".to_string()]),
                Some(vec!["zone-b".to_string()])
            ]
        );
        assert_eq!(
            annotations
                .get("service.kubernetes.io/topology-mode")
                .map(String::as_str),
            Some("Auto")
        );
    } else {
        eprintln!(
            "SKIPPED the topology hints check: this API server serves EndpointSlices only at discovery.k8s.io/v1beta1 (Kubernetes 1.20), which has no hints field; zones were checked as the endpoints' topology labels"
        );
        assert!(zones.iter().all(|(_, _, h)| h.is_none()));
        assert!(!annotations.contains_key("service.kubernetes.io/topology-mode"));
    }

    // Changing the preferred zones rewrites the slices, although their members stay.
    let before = zones_annotation(&read).expect("slices record the zones they were written for");
    let out = plane.apply_text("orders.yaml", &cluster_yaml(&servers, "zone-a"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (read, _) = slices(&client, "orders-ro").await;
        let now = zones_annotation(&read);
        if now
            .as_deref()
            .is_some_and(|z| z != before && z.ends_with("preferred=zone-a"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slices still say {now:?}\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
