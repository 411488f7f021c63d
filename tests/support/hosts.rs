//! Several `replicant run --coordinator` processes, each a "host" with its own loopback address
//! (127.0.0.2, 127.0.0.3, ...), over a real three-member etcd and real redis-servers. Each host
//! reaches etcd through relays of its own, so a test can cut one host off. Every process is
//! killed by PID on drop.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use etcd_client::Client;
use replicant::runtime::{
    etcd::{Keys, status::Overview},
    report::ClusterReport,
};

use super::{Bed, Controller, etcd::Etcd, relay::Relay};

/// The lease the hosts run with unless a test sets another: short, so that tests are quick.
pub const LEASE: Duration = Duration::from_secs(3);
const TIMEOUT: Duration = Duration::from_secs(1);

pub struct Hosts {
    pub bed: Bed,
    pub etcd: Etcd,
    pub client: Client,
    /// Per host, one relay per etcd member.
    relays: Vec<Vec<Relay>>,
    pub hosts: Vec<Option<Controller>>,
    /// `--lease` of the hosts started from now on.
    pub lease: Duration,
}

impl Hosts {
    /// `count` hosts (none started), three redis-servers and a three-member etcd.
    pub async fn new(count: usize) -> Self {
        let bed = Bed::new(3);
        let etcd = Etcd::start(bed.dir.path(), 3);
        let client = Client::connect(etcd.endpoints(), None).await.unwrap();
        let mut relays = Vec::new();
        for _ in 0..count {
            let mut own = Vec::new();
            for member in &etcd.members {
                own.push(Relay::start(format!("127.0.0.1:{}", member.client_port)).await);
            }
            relays.push(own);
        }
        Self {
            bed,
            etcd,
            client,
            relays,
            hosts: (0..count).map(|_| None).collect(),
            lease: LEASE,
        }
    }

    pub fn identity(i: usize) -> String {
        format!("h{i}")
    }

    /// Host `i`'s own address.
    pub fn ip(i: usize) -> String {
        format!("127.0.0.{}", i + 2)
    }

    /// The read-write name's proxy on host `i`.
    pub fn rw(&self, i: usize) -> String {
        format!("{}:{}", Self::ip(i), self.bed.rw_port)
    }

    /// The coordinator URL of etcd itself, not through any host's relays.
    pub fn direct_coordinator(&self) -> String {
        format!(
            "etcd://{}",
            self.etcd.endpoints().join(",").replace("http://", "")
        )
    }

    /// The member an in-flight operation is moving the primary to, per the journal in etcd
    /// (empty when none is journaled).
    pub async fn journaled_target(&self) -> String {
        self.journal().await["operation"]["to"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn coordinator(&self, i: usize) -> String {
        let members: Vec<String> = self.relays[i].iter().map(Relay::address).collect();
        format!("etcd://{}", members.join(","))
    }

    /// Start host `i` with `env`.
    pub fn start(&mut self, i: usize, env: &[(&str, &str)]) {
        let log = self.bed.dir.path().join(format!("host-{i}.log"));
        let lease = format!("{}s", self.lease.as_secs());
        let (coordinator, identity, ip) = (self.coordinator(i), Self::identity(i), Self::ip(i));
        let specs = self.bed.specs();
        let args = [
            "--specs",
            specs.to_str().unwrap(),
            "--coordinator",
            &coordinator,
            "--identity",
            &identity,
            "--proxy-host",
            &ip,
            "--lease",
            &lease,
            "--rescan",
            "1s",
        ];
        self.hosts[i] = Some(Controller::spawn(&["run"], &args, env, log));
    }

    pub fn host(&mut self, i: usize) -> &mut Controller {
        self.hosts[i].as_mut().expect("host started")
    }

    /// Cut host `i` off from etcd: nothing passes either way.
    pub fn cut(&self, i: usize) {
        for relay in &self.relays[i] {
            relay.cut();
        }
    }

    pub fn heal(&self, i: usize) {
        for relay in &self.relays[i] {
            relay.heal();
        }
    }

    pub async fn overview(&self) -> Option<Overview> {
        replicant::runtime::etcd::status::overview(&self.client, &Keys::new("/replicant"), TIMEOUT)
            .await
            .ok()
    }

    /// The journal as stored in etcd.
    pub async fn journal(&self) -> serde_json::Value {
        let key = Keys::new("/replicant").journal("default", "orders");
        let found = self.client.clone().get(key, None).await.unwrap();
        serde_json::from_slice(found.kvs()[0].value()).unwrap()
    }

    /// The leader key's create revision: the fencing token of whoever leads.
    pub async fn leader_token(&self) -> Option<i64> {
        let found = self
            .client
            .clone()
            .get(Keys::new("/replicant").leader(), None)
            .await
            .ok()?;
        found.kvs().first().map(|kv| kv.create_revision())
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        for (i, host) in self.hosts.iter().enumerate() {
            if let Some(host) = host {
                let log = host.log_text();
                // The lines that say what happened; conditions repeat every round.
                let tail: Vec<&str> = log
                    .lines()
                    .rev()
                    .filter(|l| !l.contains("replicant::runtime: condition"))
                    .take(60)
                    .collect();
                text += &format!("--- host {i} (last lines)\n");
                for line in tail.into_iter().rev() {
                    text += line;
                    text.push('\n');
                }
            }
        }
        text
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.bed.dir.path().join(format!("host-{i}.log"))
    }

    /// Wait until the overview in etcd satisfies `check`; panics with the last one and the logs.
    pub async fn wait_for(
        &self,
        what: &str,
        secs: u64,
        check: impl Fn(&Overview) -> bool,
    ) -> Overview {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = None;
        loop {
            if let Some(overview) = self.overview().await {
                if check(&overview) {
                    return overview;
                }
                last = Some(overview);
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last overview: {last:#?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // A failed assertion anywhere in a test shows what every host did.
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// The cluster's report in `overview`.
pub fn orders(overview: &Overview) -> Option<&ClusterReport> {
    overview.clusters.iter().find(|r| r.name == "orders")
}

/// Whether `overview` shows `count` hosts, a leader, and the cluster settled with `reachable`
/// members reachable and the read-write name on the primary (a status written before an etcd
/// outage can show the rest).
pub fn settled(overview: &Overview, count: usize, reachable: &[&str]) -> bool {
    overview.instances.len() == count
        && overview.leader.is_some()
        && orders(overview).is_some_and(|r| {
            super::converged(r, reachable)
                && r.status
                    .current_primary
                    .as_deref()
                    .is_some_and(|p| super::endpoints(r, "orders-rw") == [p])
        })
}
