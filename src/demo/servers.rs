//! The demo's three database servers on loopback: redis-servers, or postgres servers each
//! under its own `replicant node` agent (the first host holds nothing either: the controller
//! has the agent create the data set). Their cluster spec, the writer that suits them, the
//! node loss, and the count of acknowledged writes missing afterwards.

use std::path::{Path, PathBuf};

use super::{DemoEngine, DemoError};
use replicant_testkit::{
    RedisProcess,
    node::NodeProcess,
    postgres::{PASSWORD, empty_data, owned_dir, postgres_available},
    redis_available,
    writer::{Ack, Route, WriterOptions, count_missing, count_missing_rows},
};

/// The token the demo's agents accept.
const AGENT_TOKEN: &str = "replicant-demo-agent-token";

pub(super) enum Servers {
    Redis(Vec<RedisProcess>),
    Postgres {
        nodes: Vec<NodeProcess>,
        /// The password and token files the spec names.
        secrets: PathBuf,
    },
}

impl Servers {
    /// Three servers in `dir`; for PostgreSQL, `agent` is the replicant executable each host's
    /// agent runs.
    pub(super) fn start(engine: DemoEngine, dir: &Path, agent: &Path) -> Result<Self, DemoError> {
        let setup = |e: &dyn std::fmt::Display| DemoError::Setup(e.to_string());
        match engine {
            DemoEngine::Redis => {
                if !redis_available() {
                    return Err(replicant_testkit::LocalError::RedisMissing.into());
                }
                Ok(Servers::Redis(vec![
                    RedisProcess::start(dir, &[])?,
                    RedisProcess::start(dir, &[])?,
                    RedisProcess::start(dir, &[])?,
                ]))
            }
            DemoEngine::Postgres => {
                if !postgres_available() {
                    return Err(setup(&replicant_testkit::postgres::PostgresError::Missing));
                }
                let secrets = dir.join("secrets");
                std::fs::create_dir_all(&secrets).map_err(|e| setup(&e))?;
                std::fs::write(secrets.join("password"), PASSWORD).map_err(|e| setup(&e))?;
                std::fs::write(secrets.join("agent-token"), AGENT_TOKEN).map_err(|e| setup(&e))?;
                let mut nodes = Vec::new();
                for host in ["host-a", "host-b", "host-c"] {
                    let host = owned_dir(dir, host).map_err(|e| setup(&e))?;
                    let (data, port) = empty_data(&host).map_err(|e| setup(&e))?;
                    let extra = ["--superuser-password-env", "REPLICATION_PASSWORD"];
                    nodes.push(
                        NodeProcess::start(agent, &host, &data, port, AGENT_TOKEN, &extra)
                            .map_err(|e| setup(&e))?,
                    );
                }
                Ok(Servers::Postgres { nodes, secrets })
            }
        }
    }

    /// One line naming each server.
    pub(super) fn describe(&self) -> String {
        let names = ["demo-a", "demo-b", "demo-c"];
        match self {
            Servers::Redis(servers) => {
                let each: Vec<String> = servers
                    .iter()
                    .zip(names)
                    .map(|(s, n)| format!("{n} {} (pid {})", s.address(), s.pid()))
                    .collect();
                format!("redis-servers {}", each.join(", "))
            }
            Servers::Postgres { nodes, .. } => {
                let each: Vec<String> = nodes
                    .iter()
                    .zip(names)
                    .map(|(node, n)| {
                        format!(
                            "{n} {} (agent {}, pid {})",
                            node.pg_address(),
                            node.address(),
                            node.pid()
                        )
                    })
                    .collect();
                format!("empty postgres hosts under node agents {}", each.join(", "))
            }
        }
    }

    /// The cluster and its two virtual names, as a person would write them.
    pub(super) fn cluster_yaml(&self, rw_port: u16, ro_port: u16, sync: bool) -> String {
        let name = "demo";
        let (engine, addresses, agents): (&str, Vec<String>, Vec<Option<String>>) = match self {
            Servers::Redis(servers) => (
                "redis",
                servers.iter().map(RedisProcess::address).collect(),
                vec![None; servers.len()],
            ),
            Servers::Postgres { nodes, .. } => (
                "postgres",
                nodes.iter().map(NodeProcess::pg_address).collect(),
                nodes.iter().map(|n| Some(n.address())).collect(),
            ),
        };
        let members: String = addresses
            .iter()
            .zip(&agents)
            .enumerate()
            .map(|(i, (address, agent))| {
                let agent = agent
                    .as_ref()
                    .map(|a| format!("      agent: {a}\n"))
                    .unwrap_or_default();
                format!(
                    "    - name: {name}-{}\n      address: {address}\n{agent}      priority: {}\n",
                    (b'a' + i as u8) as char,
                    if i == 2 { 1 } else { 2 }
                )
            })
            .collect();
        let access = match self {
            Servers::Redis(_) => String::new(),
            Servers::Postgres { secrets, .. } => format!(
                "  credentials:\n    username: postgres\n    passwordFile: {}\n  agentToken:\n    tokenFile: {}\n",
                secrets.join("password").display(),
                secrets.join("agent-token").display()
            ),
        };
        let mode = if sync {
            "  replication:\n    mode: sync\n    minSyncReplicas: 1\n"
        } else {
            ""
        };
        format!(
            "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata:\n  name: {name}\nspec:\n  engine: {engine}\n  primary: {name}-a\n  members:\n{members}{access}{mode}  failover:\n    standby: {name}-b\n    detectAfter: 1s\n    maxLag: 1Mi\n    cooldown: 1m\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata:\n  name: {name}-rw\nspec:\n  cluster: {name}\n  target: primary\n  listen: 127.0.0.1:{rw_port}\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata:\n  name: {name}-ro\nspec:\n  cluster: {name}\n  target: replicas\n  listen: 127.0.0.1:{ro_port}\n"
        )
    }

    /// A writer through the read-write name at `rw`.
    pub(super) fn writer(&self, rw: &str, prefix: &str, sync: bool) -> WriterOptions {
        let postgres = matches!(self, Servers::Postgres { .. });
        WriterOptions {
            route: Route::Direct(rw.to_string()),
            prefix: prefix.to_string(),
            // A PostgreSQL primary in sync mode answers a commit only once a standby has it.
            wait_replicas: (sync && !postgres).then_some(1),
            timeout: std::time::Duration::from_millis(500),
            postgres_password: postgres.then(|| PASSWORD.to_string()),
        }
    }

    /// Lose the first host (the primary) as a node loss would, by PID; what was killed.
    pub(super) fn kill_first(&mut self) -> String {
        match self {
            Servers::Redis(servers) => {
                let pid = servers[0].pid();
                servers[0].kill();
                format!("kill -9 demo-a (pid {pid})")
            }
            Servers::Postgres { nodes, .. } => {
                let agent = nodes[0].pid();
                let postmaster = nodes[0]
                    .postmaster_pid()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "none".into());
                nodes[0].kill_node();
                format!("kill -9 demo-a: its agent (pid {agent}) and postmaster (pid {postmaster})")
            }
        }
    }

    /// How many of `acks` the server behind `rw` lacks.
    pub(super) async fn count_missing(
        &self,
        rw: &str,
        prefix: &str,
        acks: &[Ack],
    ) -> Result<usize, DemoError> {
        match self {
            Servers::Redis(_) => count_missing(rw, prefix, acks).await,
            Servers::Postgres { .. } => count_missing_rows(rw, PASSWORD, prefix, acks).await,
        }
        .map_err(DemoError::Setup)
    }
}
