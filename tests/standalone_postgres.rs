//! `replicant run` managing real postgres servers under real `replicant node` agents, on
//! loopback: empty members copied from the primary, a node loss (agent and postmaster killed)
//! failed over with every replicated row kept, and the old primary rewound back in.

mod support;

use std::path::{Path, PathBuf};

use replicant::{
    local::{
        free_port,
        postgres::{PASSWORD, empty_data, init_data, owned_dir},
    },
    standalone::state::ClusterReport,
};
use support::{
    Controller,
    node::{Node, TOKEN},
    pg::*,
    wait_for_report,
};

/// Three hosts a, b, c, each an agent over its data directory: a holds a fresh data set,
/// stopped; b and c are empty.
struct PgBed {
    dir: tempfile::TempDir,
    nodes: Vec<(String, Node, PathBuf, u16)>,
    rw_port: u16,
}

impl PgBed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("specs")).unwrap();
        let mut nodes = Vec::new();
        for name in ["a", "b", "c"] {
            let host = owned_dir(dir.path(), &format!("host-{name}")).unwrap();
            let (data, port) = if name == "a" {
                init_data(&host).unwrap()
            } else {
                empty_data(&host).unwrap()
            };
            let node = Node::start(&host, &data, port);
            nodes.push((name.to_string(), node, data, port));
        }
        Self {
            dir,
            nodes,
            rw_port: free_port().unwrap(),
        }
    }

    fn address(&self, member: &str) -> String {
        let (_, _, _, port) = self.nodes.iter().find(|n| n.0 == member).unwrap();
        format!("127.0.0.1:{port}")
    }

    fn data_and_port(&self, member: &str) -> (PathBuf, u16) {
        let (_, _, data, port) = self.nodes.iter().find(|n| n.0 == member).unwrap();
        (data.clone(), *port)
    }

    fn node(&mut self, member: &str) -> &mut Node {
        &mut self.nodes.iter_mut().find(|n| n.0 == member).unwrap().1
    }

    fn specs(&self) -> PathBuf {
        self.dir.path().join("specs")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn spec(&self, primary: &str, mode: &str) -> String {
        let mut members = String::new();
        for (name, node, _, port) in &self.nodes {
            members.push_str(&format!(
                "    - {{ name: {name}, address: \"127.0.0.1:{port}\", agent: \"{}\" }}\n",
                node.address()
            ));
        }
        format!(
            "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {{name: orders}}\nspec:\n  engine: postgres\n  primary: {primary}\n  members:\n{members}  credentials: {{ username: postgres, passwordEnv: PG_PASSWORD }}\n  agentToken: {{ tokenEnv: AGENT_TOKEN }}\n  replication: {{ mode: {mode} }}\n  failover: {{ detectAfter: 1s, cooldown: 1m }}\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {{name: orders-rw}}\nspec: {{cluster: orders, target: primary, listen: \"127.0.0.1:{}\"}}\n",
            self.rw_port
        )
    }

    fn controller(&self, spec: &str) -> Controller {
        std::fs::write(self.specs().join("orders.yaml"), spec).unwrap();
        Controller::start(
            &self.specs(),
            &self.state(),
            &[("PG_PASSWORD", PASSWORD), ("AGENT_TOKEN", TOKEN)],
        )
    }

    async fn wait_for(
        &self,
        what: &str,
        controller: &Controller,
        secs: u64,
        check: impl Fn(&ClusterReport) -> bool,
    ) -> ClusterReport {
        wait_for_report(&self.state(), "orders", what, controller, secs, check).await
    }
}

fn ready_members(report: &ClusterReport, n: usize) -> bool {
    report.status.ready_members.as_deref() == Some(&format!("{n}/3"))
}

fn streaming_from(report: &ClusterReport, member: &str, primary: &str) -> bool {
    report.status.members.iter().any(|m| {
        m.name == member && m.upstream.as_deref() == Some(primary) && m.link_up == Some(true)
    })
}

async fn rows(address: &str) -> Option<i64> {
    try_number(address, "SELECT count(*) FROM t").await
}

fn data_dir_holds(data: &Path) -> bool {
    data.join("PG_VERSION").exists()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_cluster_is_copied_fails_over_on_node_loss_and_takes_its_old_primary_back() {
    if !available() {
        return;
    }
    let mut bed = PgBed::new();
    let ctl = bed.controller(&bed.spec("a", "async"));

    // a's agent starts it (it holds data); b and c are empty: the agents copy a onto them,
    // and they stream from it.
    let report = bed
        .wait_for("a started, b and c copied and streaming", &ctl, 90, |r| {
            ready_members(r, 3) && streaming_from(r, "b", "a") && streaming_from(r, "c", "a")
        })
        .await;
    assert_eq!(report.status.current_primary.as_deref(), Some("a"));
    for (_, _, data, _) in &bed.nodes {
        assert!(data_dir_holds(data));
    }

    // Writes through the read-write name land on a and reach the standbys.
    let rw = format!("127.0.0.1:{}", bed.rw_port);
    sql(
        &rw,
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await;
    for m in ["b", "c"] {
        let address = bed.address(m);
        eventually_pg("rows on the standbys", async || {
            rows(&address).await == Some(100)
        })
        .await;
    }

    // Node loss: a's agent and postmaster die at once.
    bed.node("a").kill_node();
    let report = bed
        .wait_for("a new primary", &ctl, 30, |r| {
            r.status
                .current_primary
                .as_deref()
                .is_some_and(|p| p != "a")
        })
        .await;
    let primary = report.status.current_primary.clone().unwrap();
    let new = bed.address(&primary);
    eventually_pg("the read-write name on the new primary", async || {
        try_sql(&rw, "INSERT INTO t VALUES (101)").await.is_ok()
    })
    .await;
    eventually_pg("every replicated row kept, and the new one", async || {
        rows(&new).await == Some(101)
    })
    .await;
    let report = bed
        .wait_for("the failover finished", &ctl, 30, |r| {
            !r.status.history.is_empty()
        })
        .await;
    let last = report.status.history.last().unwrap();
    assert!(
        last.branch.as_deref().is_some_and(|b| b.starts_with("2@")),
        "the promotion's branch is journaled: {last:?}"
    );

    // a's host comes back: it is rewound onto the new primary's timeline and streams again.
    let (data_a, port_a) = bed.data_and_port("a");
    let host_a = data_a.parent().unwrap().to_path_buf();
    *bed.node("a") = Node::start(&host_a, &data_a, port_a);
    let spec = bed.spec("a", "async");
    std::fs::write(bed.specs().join("orders.yaml"), spec).unwrap();
    bed.wait_for("a back as a standby", &ctl, 90, |r| {
        ready_members(r, 3) && streaming_from(r, "a", &primary)
    })
    .await;
    let a = bed.address("a");
    eventually_pg("a to hold every row", async || rows(&a).await == Some(101)).await;
}

/// `replicant demo --engine postgres --mode sync`: the node holding the primary is lost (agent
/// and postmaster killed) in each of three trials, on clusters the agents created from
/// nothing, and no commit the primary acknowledged is missing from the new primary.
#[test]
fn no_acknowledged_commit_is_lost_when_the_primary_node_dies_in_sync_mode() {
    if !available() {
        return;
    }
    let stdout = support::demo(&["--engine", "postgres", "--mode", "sync", "--trials", "3"]);
    assert_eq!(
        stdout
            .matches("first write acknowledged after the kill")
            .count(),
        3,
        "{stdout}"
    );
    for trial in stdout.lines().filter(|l| l.starts_with("result:")) {
        assert!(trial.ends_with("; 0 lost"), "{trial}");
        assert!(!trial.contains(" 0 writes acknowledged"), "{trial}");
    }
    assert!(stdout.contains("; lost: 0"), "{stdout}");
}
