//! Zones on real redis-servers, standalone: six members in three zones cascade through one gateway per zone, re-form when a gateway or the primary dies, and a proxy started with `--zone` keeps its clients in its zone.
//!
//! Cross-zone traffic is counted from the servers' own replication state: each replica's
//! `master_host:master_port` with its link up, mapped back to members and their zones.

mod support;

use std::{collections::BTreeMap, time::Duration};

use replicant::runtime::report::ClusterReport;
use support::*;

const MEMBERS: [(&str, &str); 6] = [
    ("a", "zone-a"),
    ("b", "zone-a"),
    ("c", "zone-b"),
    ("d", "zone-b"),
    ("e", "zone-c"),
    ("f", "zone-c"),
];

/// The test kit's bed of six servers, named as [`MEMBERS`] lists them.
struct ZonedBed(Bed);

impl std::ops::Deref for ZonedBed {
    type Target = Bed;
    fn deref(&self) -> &Bed {
        &self.0
    }
}

impl std::ops::DerefMut for ZonedBed {
    fn deref_mut(&mut self) -> &mut Bed {
        &mut self.0
    }
}

impl ZonedBed {
    fn new() -> Self {
        Self(Bed::new(MEMBERS.len()))
    }

    fn index(member: &str) -> usize {
        MEMBERS.iter().position(|(m, _)| *m == member).unwrap()
    }

    fn zone(member: &str) -> &'static str {
        MEMBERS[Self::index(member)].1
    }

    fn member_at(&self, address: &str) -> Option<&'static str> {
        MEMBERS
            .iter()
            .zip(&self.servers)
            .find(|(_, s)| s.address() == address)
            .map(|((m, _), _)| *m)
    }

    fn spec(&self) -> String {
        let members: String = MEMBERS
            .iter()
            .zip(&self.servers)
            .map(|((name, zone), s)| {
                format!(
                    "    - {{ name: {name}, address: \"{}\", zone: {zone} }}\n",
                    s.address()
                )
            })
            .collect();
        format!(
            "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {{name: orders}}\nspec:\n  engine: redis\n  primary: a\n  members:\n{members}  failover:\n    detectAfter: 1s\n    cooldown: 1m\n    preferredZones: [zone-c]\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {{name: orders-rw}}\nspec: {{cluster: orders, target: primary, listen: \"127.0.0.1:{}\"}}\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {{name: orders-ro}}\nspec: {{cluster: orders, target: replicas, listen: \"127.0.0.1:{}\", preferredZones: [zone-b]}}\n",
            self.rw_port, self.ro_port
        )
    }

    /// Every live replica's upstream as its server reports it, with the link up.
    async fn streams(&self, live: &[&str]) -> BTreeMap<&'static str, &'static str> {
        let mut streams = BTreeMap::new();
        for (member, _) in MEMBERS.iter().filter(|(m, _)| live.contains(m)) {
            let info = replication(&self.address(member)).await;
            if info.get("role").map(String::as_str) != Some("slave")
                || info.get("master_link_status").map(String::as_str) != Some("up")
            {
                continue;
            }
            let upstream = format!(
                "{}:{}",
                info.get("master_host").cloned().unwrap_or_default(),
                info.get("master_port").cloned().unwrap_or_default()
            );
            if let Some(from) = self.member_at(&upstream) {
                streams.insert(*member, from);
            }
        }
        streams
    }

    /// Wait until the live members replicate exactly as `expected` (member -> upstream), every
    /// link up; then return the streams that cross zones.
    async fn settle(
        &self,
        what: &str,
        live: &[&str],
        expected: &[(&'static str, &'static str)],
        ctl: &Controller,
    ) -> Vec<(&'static str, &'static str)> {
        let expected: BTreeMap<_, _> = expected.iter().copied().collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let streams = self.streams(live).await;
            if streams == expected {
                return streams
                    .into_iter()
                    .filter(|(m, up)| Self::zone(m) != Self::zone(up))
                    .collect();
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}: streams {streams:?}, expected {expected:?}\ncontroller log:\n{}",
                    ctl.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn report(
        &self,
        what: &str,
        ctl: &Controller,
        check: impl Fn(&ClusterReport) -> bool,
    ) -> ClusterReport {
        wait_for_report(
            &self.dir.path().join("state"),
            "orders",
            what,
            ctl,
            30,
            check,
        )
        .await
    }
}

/// The member's placement in status ("d follows c: gateway of zone zone-b").
fn placement(report: &ClusterReport, member: &str) -> String {
    report
        .status
        .members
        .iter()
        .find(|m| m.name == member)
        .and_then(|m| m.placement.clone())
        .unwrap_or_default()
}

/// The port of the server a fresh connection through `address` reaches.
async fn served_by(address: &str) -> String {
    let mut conn = connect(address).await.unwrap();
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("port")
        .query_async(&mut conn)
        .await
        .unwrap();
    reply[1].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn six_members_in_three_zones_cross_zones_twice_through_every_failure() {
    let mut bed = ZonedBed::new();
    std::fs::write(bed.dir.path().join("specs/orders.yaml"), bed.spec()).unwrap();
    let specs = bed.dir.path().join("specs");
    let state = bed.dir.path().join("state");
    let ctl = Controller::start_with(&specs, &state, &[], &["--zone", "zone-c"]);
    let all = ["a", "b", "c", "d", "e", "f"];

    // Set-up: c and e carry their zones' streams; d and f follow them.
    let crossing = bed
        .settle(
            "the cascade to form",
            &all,
            &[("b", "a"), ("c", "a"), ("d", "c"), ("e", "a"), ("f", "e")],
            &ctl,
        )
        .await;
    println!("steady state: cross-zone streams {crossing:?}");
    assert_eq!(crossing, [("c", "a"), ("e", "a")]);
    let report = bed
        .report("ready with every placement", &ctl, |r| {
            ready(r) && r.status.members.iter().all(|m| m.placement.is_some())
        })
        .await;
    assert_eq!(
        placement(&report, "d"),
        "d follows c: gateway of zone zone-b"
    );
    assert_eq!(
        placement(&report, "c"),
        "c follows a: gateway of zone zone-b"
    );
    assert_eq!(
        placement(&report, "b"),
        "b follows a: the primary, in its zone zone-a"
    );

    // A write reaches the far end of each cascade.
    set(&format!("127.0.0.1:{}", bed.rw_port), "k", "1")
        .await
        .unwrap();
    eventually("d and f to have k", 10, async || {
        value(&bed.address("d"), "k").await.is_some()
            && value(&bed.address("f"), "k").await.is_some()
    })
    .await;

    // The proxy runs in zone-c: its read clients stay on e and f.
    let zone_c_ports = [
        bed.servers[4].port.to_string(),
        bed.servers[5].port.to_string(),
    ];
    let ro = format!("127.0.0.1:{}", bed.ro_port);
    for _ in 0..6 {
        let port = served_by(&ro).await;
        assert!(
            zone_c_ports.contains(&port),
            "a zone-c client read from port {port}"
        );
    }

    // Kill the gateway of zone-b: d takes over its zone's stream.
    bed.servers[ZonedBed::index("c")].kill();
    let live = ["a", "b", "d", "e", "f"];
    let crossing = bed
        .settle(
            "d to carry zone-b",
            &live,
            &[("b", "a"), ("d", "a"), ("e", "a"), ("f", "e")],
            &ctl,
        )
        .await;
    println!("gateway c killed: cross-zone streams {crossing:?}");
    assert_eq!(crossing, [("d", "a"), ("e", "a")]);
    let report = bed
        .report("d's placement", &ctl, |r| {
            placement(r, "d").contains("(c does not answer)")
        })
        .await;
    assert_eq!(
        placement(&report, "d"),
        "d follows a: gateway of zone zone-b (c does not answer)"
    );

    // Kill the primary: failover prefers zone-c, and the cascade re-forms around it.
    set(&format!("127.0.0.1:{}", bed.rw_port), "before", "1")
        .await
        .unwrap();
    eventually("every replica to have 'before'", 10, async || {
        for m in ["b", "d", "e", "f"] {
            if value(&bed.address(m), "before").await.is_none() {
                return false;
            }
        }
        true
    })
    .await;
    bed.servers[ZonedBed::index("a")].kill();
    let report = bed
        .report("a failover into zone-c", &ctl, |r| {
            !r.status.history.is_empty() && r.status.current_primary.as_deref() == Some("e")
        })
        .await;
    let record = report.status.history.last().unwrap();
    assert!(
        record
            .reason
            .contains("in zone zone-c, the first of failover.preferredZones"),
        "{}",
        record.reason
    );
    let live = ["b", "d", "e", "f"];
    let crossing = bed
        .settle(
            "the cascade around e",
            &live,
            &[("b", "e"), ("d", "e"), ("f", "e")],
            &ctl,
        )
        .await;
    println!("primary a killed: cross-zone streams {crossing:?}");
    assert_eq!(crossing, [("b", "e"), ("d", "e")]);
    assert_eq!(
        value(&format!("127.0.0.1:{}", bed.rw_port), "before")
            .await
            .as_deref(),
        Some("1")
    );
    // e is primary now: f is zone-c's only replica, and the proxy sends its clients there.
    bed.report("orders-ro without e", &ctl, |r| {
        !endpoints(r, "orders-ro").contains(&"e")
    })
    .await;
    let f_port = bed.servers[5].port.to_string();
    for _ in 0..4 {
        assert_eq!(served_by(&ro).await, f_port);
    }

    // a and c come back empty: each joins its zone through the gateway, and once synced the
    // seed rule gives them their zones back. Still two streams across zones.
    bed.servers[ZonedBed::index("a")].restart(&[]).unwrap();
    bed.servers[ZonedBed::index("c")].restart(&[]).unwrap();
    let crossing = bed
        .settle(
            "a and c to lead their zones again",
            &all,
            &[("a", "e"), ("b", "a"), ("c", "e"), ("d", "c"), ("f", "e")],
            &ctl,
        )
        .await;
    println!("a and c back: cross-zone streams {crossing:?}");
    assert_eq!(crossing, [("a", "e"), ("c", "e")]);
    eventually("c to hold 'before'", 10, async || {
        value(&bed.address("c"), "before").await.as_deref() == Some("1")
    })
    .await;
}

#[test]
fn a_zone_that_is_not_a_label_value_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_replicant"))
        .args(["run", "--specs"])
        .arg(dir.path())
        .arg("--state")
        .arg(dir.path().join("state"))
        .args(["--zone", "eu west"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--zone: \"eu west\" is not a label value"),
        "{stderr}"
    );
}
