//! Status in etcd, so that `replicant status` works from any host: each cluster's report,
//! written by the leader under its fence, and each host's presence with the problems it found
//! in its own spec directory. Touches `status/` and this host's key.

use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions};
use serde::{Deserialize, Serialize};

use super::{Fence, Keys, Session, fenced_put, get};
use crate::standalone::state::ClusterReport;

/// A host as it registers itself: present while its session lives.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostReport {
    pub identity: String,
    /// Where its proxies listen, when not at the specs' own addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_host: Option<String>,
    /// Problems in this host's spec directory (`FILE: ...`); the leader's are the ones acted on.
    #[serde(default)]
    pub spec_problems: Vec<String>,
}

/// Everything `replicant status --coordinator` shows.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub leader: Option<String>,
    pub hosts: Vec<HostReport>,
    pub clusters: Vec<ClusterReport>,
}

/// Register (or update) this host under its session's lease.
pub async fn register(
    client: &Client,
    keys: &Keys,
    session: &Session,
    host: &HostReport,
    timeout: Duration,
) -> Result<(), String> {
    let bytes = serde_json::to_vec(host).map_err(|e| e.to_string())?;
    let key = keys.host(&host.identity);
    let options = PutOptions::new().with_lease(session.lease);
    super::retried(timeout, || {
        let (mut client, key, bytes, options) =
            (client.clone(), key.clone(), bytes.clone(), options.clone());
        async move { client.put(key, bytes, Some(options)).await }
    })
    .await
    .map(|_| ())
}

/// Store a cluster's report, only while `fence` holds the leader key.
pub async fn store(
    client: &Client,
    keys: &Keys,
    fence: &Fence,
    report: &ClusterReport,
    timeout: Duration,
) -> Result<(), String> {
    let bytes = serde_json::to_vec(report).map_err(|e| e.to_string())?;
    let key = keys.status(&report.namespace, &report.name);
    if fenced_put(client, fence, &key, bytes, timeout).await? {
        Ok(())
    } else {
        Err("this process no longer leads: status not stored".into())
    }
}

/// Read the leader, the hosts and every cluster's report.
pub async fn overview(client: &Client, keys: &Keys, timeout: Duration) -> Result<Overview, String> {
    let prefixed = || Some(GetOptions::new().with_prefix());
    let leader = get(client, &keys.leader(), None, timeout).await?;
    let hosts = get(client, &keys.hosts(), prefixed(), timeout).await?;
    let clusters = get(client, &keys.statuses(), prefixed(), timeout).await?;
    let decode = |key: &[u8]| format!("{} in etcd: not understood", String::from_utf8_lossy(key));
    let mut overview = Overview {
        leader: leader
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        ..Overview::default()
    };
    for kv in hosts.kvs() {
        let host = serde_json::from_slice(kv.value()).map_err(|_| decode(kv.key()))?;
        overview.hosts.push(host);
    }
    for kv in clusters.kvs() {
        let report = serde_json::from_slice(kv.value()).map_err(|_| decode(kv.key()))?;
        overview.clusters.push(report);
    }
    Ok(overview)
}
