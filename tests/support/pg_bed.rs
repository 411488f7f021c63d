//! A PostgreSQL cluster for `replicant run` tests: hosts a, b, c, each a real `replicant node`
//! agent over its data directory, described by one spec in a spec directory. Optionally the
//! controller (and the members, which follow each other by their spec address) reach each
//! host's postgres and agent through relays the test can cut.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use replicant::runtime::report::ClusterReport;
use replicant_testkit::{
    free_port,
    postgres::{PASSWORD, empty_data, init_data, owned_dir},
};

use super::{
    Controller,
    node::{Node, TOKEN, certificate_for_loopback},
    read_journal,
    relay::Relay,
    try_wait_for_report,
};

pub struct Host {
    pub name: String,
    pub node: Node,
    pub data: PathBuf,
    pub port: u16,
    /// Relays to its postgres and to its agent, when the bed has them.
    pub relays: Option<(Relay, Relay)>,
}

pub struct PgBed {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<Host>,
    pub rw_port: u16,
    /// More of the cluster's spec, indented under `spec:`.
    pub spec_extra: String,
    /// The cluster's `failover` policy, as a YAML flow mapping.
    pub failover: String,
    /// The cluster's name ("orders").
    pub name: String,
    /// Held until the hosts above are gone (fields drop in order); none in a second bed
    /// beside one that holds it.
    _one_at_a_time: Option<MutexGuard<'static, ()>>,
}

/// One PostgreSQL cluster at a time in a test binary: three servers, three agents and a
/// controller at `detectAfter: 1s` are what two cores carry without the controller seeing
/// a starved primary as a failed one.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static CLUSTERS: Mutex<()> = Mutex::new(());
    CLUSTERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PgBed {
    /// a holds a fresh data set, stopped; b and c are empty.
    pub fn new() -> Self {
        Self::with_data(&["a"])
    }

    /// Each host named in `with_data` holds a data set of its own (each from its own
    /// `initdb`), stopped; the others are empty.
    pub fn with_data(with_data: &[&str]) -> Self {
        Self::build(with_data, &[])
    }

    /// As [`PgBed::with_data`], each agent started with `agent_args` too (`--set name=value`
    /// for its postgres, say).
    pub fn build(with_data: &[&str], agent_args: &[&str]) -> Self {
        Self::build_with(with_data, |_| {
            agent_args.iter().map(|a| a.to_string()).collect()
        })
    }

    /// As [`PgBed::new`], each agent serving its API over TLS with a certificate of its own;
    /// the spec names the bundle of all three as `agentTls.caFile`.
    pub fn with_tls_agents() -> Self {
        let mut certificates = Vec::new();
        let mut bed = Self::build_with(&["a"], |host| {
            let (cert, key) = certificate_for_loopback(host);
            certificates.push(std::fs::read_to_string(&cert).unwrap());
            let path = |p: PathBuf| p.to_str().unwrap().to_string();
            vec![
                "--tls-cert".into(),
                path(cert),
                "--tls-key".into(),
                path(key),
            ]
        });
        let bundle = bed.dir.path().join("agents-ca.pem");
        std::fs::write(&bundle, certificates.concat()).unwrap();
        bed.spec_extra = format!("  agentTls: {{ caFile: \"{}\" }}\n", bundle.display());
        bed
    }

    /// Three empty hosts for a cluster named `name` recovered from backups: their agents set the
    /// superuser's password from a file, as hosts that create data sets must.
    pub fn for_recovery(name: &str) -> Self {
        Self::recovering(name, Some(one_at_a_time()))
    }

    /// As [`PgBed::for_recovery`], beside this bed: the second cluster shares its turn, so the
    /// caller keeps this one until that one is gone.
    pub fn for_recovery_beside(&self, name: &str) -> Self {
        Self::recovering(name, None)
    }

    fn recovering(name: &str, turn: Option<MutexGuard<'static, ()>>) -> Self {
        let mut bed = Self::assemble(turn, &[], |host| {
            let file = host.join("superuser-password");
            std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
            vec![
                "--superuser-password-file".into(),
                file.to_str().unwrap().to_string(),
            ]
        });
        bed.name = name.into();
        bed
    }

    fn build_with(with_data: &[&str], agent_args: impl FnMut(&Path) -> Vec<String>) -> Self {
        Self::assemble(Some(one_at_a_time()), with_data, agent_args)
    }

    fn assemble(
        one_at_a_time: Option<MutexGuard<'static, ()>>,
        with_data: &[&str],
        mut agent_args: impl FnMut(&Path) -> Vec<String>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("specs")).unwrap();
        let mut hosts = Vec::new();
        for name in ["a", "b", "c"] {
            let host = owned_dir(dir.path(), &format!("host-{name}")).unwrap();
            let (data, port) = if with_data.contains(&name) {
                init_data(&host).unwrap()
            } else {
                empty_data(&host).unwrap()
            };
            let args = agent_args(&host);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let node = Node::start_with(&host, &data, port, &args);
            hosts.push(Host {
                name: name.to_string(),
                node,
                data,
                port,
                relays: None,
            });
        }
        Self {
            dir,
            hosts,
            rw_port: free_port().unwrap(),
            spec_extra: String::new(),
            failover: "{ detectAfter: 1s, cooldown: 1m }".into(),
            name: "orders".into(),
            _one_at_a_time: one_at_a_time,
        }
    }

    /// As [`PgBed::new`], every host reached through relays.
    pub async fn relayed() -> Self {
        let mut bed = Self::new();
        let ports: Vec<u16> = bed.hosts.iter().map(|h| h.port).collect();
        for host in &mut bed.hosts {
            let postgres = relay_avoiding(format!("127.0.0.1:{}", host.port), &ports).await;
            let agent = relay_avoiding(host.node.address(), &ports).await;
            host.relays = Some((postgres, agent));
        }
        bed
    }

    pub fn host(&self, member: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == member).unwrap()
    }

    /// Its postgres, reached directly (never through a relay).
    pub fn address(&self, member: &str) -> String {
        format!("127.0.0.1:{}", self.host(member).port)
    }

    /// The port others reach its postgres at: its relay's, when the bed has relays.
    pub fn spec_port(&self, member: &str) -> u16 {
        let host = self.host(member);
        match &host.relays {
            Some((postgres, _)) => postgres.port,
            None => host.port,
        }
    }

    pub fn node(&mut self, member: &str) -> &mut Node {
        &mut self
            .hosts
            .iter_mut()
            .find(|h| h.name == member)
            .unwrap()
            .node
    }

    /// `member`'s host loses its disk: its agent and postgres are killed, its data directory
    /// emptied, and the agent started again over the empty directory.
    pub fn lose_disk(&mut self, member: &str) {
        self.node(member).kill_node();
        let data = self.host(member).data.clone();
        for entry in std::fs::read_dir(&data).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
        self.node(member).reboot();
    }

    /// The label of the copy `member`'s data set was made from (empty when it was not copied).
    pub fn copied_from(&self, member: &str) -> String {
        std::fs::read_to_string(self.host(member).data.join("backup_label.old")).unwrap_or_default()
    }

    pub fn rw(&self) -> String {
        format!("127.0.0.1:{}", self.rw_port)
    }

    pub fn specs(&self) -> PathBuf {
        self.dir.path().join("specs")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn spec(&self, primary: &str, mode: &str) -> String {
        self.spec_with(primary, mode, &[])
    }

    /// As [`PgBed::spec`], with more fields for some members (`("b", "priority: 0")`).
    pub fn spec_with(&self, primary: &str, mode: &str, member_extra: &[(&str, &str)]) -> String {
        let mut members = String::new();
        for host in &self.hosts {
            let (address, agent) = match &host.relays {
                Some((postgres, agent)) => (postgres.address(), agent.address()),
                None => (format!("127.0.0.1:{}", host.port), host.node.address()),
            };
            let extra: String = member_extra
                .iter()
                .filter(|(m, _)| *m == host.name)
                .map(|(_, field)| format!(", {field}"))
                .collect();
            members.push_str(&format!(
                "    - {{ name: {}, address: \"{address}\", agent: \"{agent}\"{extra} }}\n",
                host.name
            ));
        }
        format!(
            "apiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {{name: {name}}}\nspec:\n  engine: postgres\n  primary: {primary}\n  members:\n{members}  credentials: {{ username: postgres, passwordEnv: PG_PASSWORD }}\n  agentToken: {{ tokenEnv: AGENT_TOKEN }}\n{}  replication: {{ mode: {mode} }}\n  failover: {}\n---\napiVersion: replicant.dev/v1alpha1\nkind: VirtualName\nmetadata: {{name: {name}-rw}}\nspec: {{cluster: {name}, target: primary, listen: \"127.0.0.1:{}\"}}\n",
            self.spec_extra,
            self.failover,
            self.rw_port,
            name = self.name
        )
    }

    pub fn write_spec(&self, spec: &str) {
        std::fs::write(self.specs().join(format!("{}.yaml", self.name)), spec).unwrap();
    }

    /// A controller over `spec`, with `env` besides the secrets.
    pub fn controller(&self, spec: &str, env: &[(&str, &str)]) -> Controller {
        self.controller_with(spec, env, &[])
    }

    /// As [`PgBed::controller`], with more arguments to `replicant run`.
    pub fn controller_with(&self, spec: &str, env: &[(&str, &str)], args: &[&str]) -> Controller {
        self.write_spec(spec);
        let mut all = vec![("PG_PASSWORD", PASSWORD), ("AGENT_TOKEN", TOKEN)];
        all.extend_from_slice(env);
        Controller::start_with(&self.specs(), &self.state(), &all, args)
    }

    /// The controller's journal of the cluster.
    pub fn journal(&self) -> serde_json::Value {
        read_journal(&self.state(), &self.name)
    }

    /// Wait until the cluster's report satisfies `check`; panics with the last report, the
    /// controller's log and every agent's log.
    pub async fn wait_for(
        &self,
        what: &str,
        controller: &Controller,
        secs: u64,
        check: impl Fn(&ClusterReport) -> bool,
    ) -> ClusterReport {
        match try_wait_for_report(&self.state(), &self.name, what, controller, secs, check).await {
            Ok(report) => report,
            Err(timed_out) => panic!("{timed_out}\n{}", self.agent_logs()),
        }
    }

    /// Every host's agent log (postgres's output included), for a failure's message.
    pub fn agent_logs(&self) -> String {
        self.hosts
            .iter()
            .map(|host| {
                let log = host
                    .data
                    .parent()
                    .unwrap()
                    .join(format!("node-{}.log", host.node.port));
                format!(
                    "--- {}'s agent:\n{}",
                    host.name,
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .collect()
    }
}

/// A relay to `target` on a port none of `postgres_ports` names: a stopped or empty host's
/// postgres was given its port but has not bound it yet, and the kernel may hand that port
/// to the relay (seen once: the postgres then could not start).
async fn relay_avoiding(target: String, postgres_ports: &[u16]) -> Relay {
    // Held until a port is found, so that each try gets another.
    let mut refused = Vec::new();
    loop {
        let relay = Relay::start(target.clone()).await;
        if !postgres_ports.contains(&relay.port) {
            return relay;
        }
        refused.push(relay);
    }
}

pub fn ready_members(report: &ClusterReport, n: usize) -> bool {
    report.status.ready_members.as_deref() == Some(&format!("{n}/3"))
}

pub fn streaming_from(report: &ClusterReport, member: &str, primary: &str) -> bool {
    streaming_in(&report.status, member, primary)
}

/// Whether `status` shows `member` streaming from `primary`.
pub fn streaming_in(
    status: &replicant::api::ReplicationClusterStatus,
    member: &str,
    primary: &str,
) -> bool {
    status.members.iter().any(|m| {
        m.name == member && m.upstream.as_deref() == Some(primary) && m.link_up == Some(true)
    })
}

pub fn data_dir_holds(data: &Path) -> bool {
    data.join("PG_VERSION").exists()
}
