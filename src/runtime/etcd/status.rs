//! Status in etcd, so that `replicant status` works from any host: each cluster's report,
//! written by the leader under its fence, and each instance's presence with the problems it
//! found in its own spec directory. Touches `status/` and this instance's key.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use super::{Fence, Keys, RequestError, Session, fenced, get, txn};
use crate::runtime::report::ClusterReport;

/// An instance as it registers itself: present while its session lives.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReport {
    pub identity: String,
    /// Where its proxies listen, when not at the specs' own addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_host: Option<String>,
    /// Problems in this instance's spec directory (`FILE: ...`); the leader's are the ones acted on.
    #[serde(default)]
    pub spec_problems: Vec<String>,
}

/// Everything `replicant status --coordinator` shows.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub leader: Option<String>,
    pub instances: Vec<InstanceReport>,
    pub clusters: Vec<ClusterReport>,
}

/// Why a registration, a report or the overview could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(
        "another live process is registered as {identity} (etcd lease {lease}): give each instance its own --identity"
    )]
    IdentityTaken { identity: String, lease: i64 },
    #[error("{0} changed while registering; trying again")]
    Raced(String),
    #[error("this process no longer leads: status not stored")]
    Deposed,
    #[error("{0} in etcd: not understood")]
    NotUnderstood(String),
    #[error("encode: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Register (or update) this instance under its session's lease. Refused while another live
/// process holds the same identity: two instances under one name would answer for each
/// other's proxies.
pub async fn register(
    client: &Client,
    keys: &Keys,
    session: &Session,
    instance: &InstanceReport,
    timeout: Duration,
) -> Result<(), StatusError> {
    let bytes = serde_json::to_vec(instance)?;
    let key = keys.instance(&instance.identity);
    let put = TxnOp::put(
        key.as_str(),
        bytes,
        Some(PutOptions::new().with_lease(session.lease)),
    );
    for condition in [
        // Already ours: an update.
        Compare::lease(key.as_str(), CompareOp::Equal, session.lease),
        // Nobody's.
        Compare::version(key.as_str(), CompareOp::Equal, 0),
    ] {
        let request = Txn::new()
            .when([condition])
            .and_then([put.clone()])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let response = txn(client, request, timeout).await?;
        if response.succeeded() {
            return Ok(());
        }
        let holder = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.lease()),
            _ => None,
        });
        if let Some(other) = holder.filter(|other| *other != session.lease) {
            return Err(StatusError::IdentityTaken {
                identity: instance.identity.clone(),
                lease: other,
            });
        }
    }
    Err(StatusError::Raced(key))
}

/// Store a cluster's report, only while `fence` holds the leader key.
pub async fn store(
    client: &Client,
    keys: &Keys,
    fence: &Fence,
    report: &ClusterReport,
    timeout: Duration,
) -> Result<(), StatusError> {
    let bytes = serde_json::to_vec(report)?;
    let key = keys.status(&report.namespace, &report.name);
    match fenced(client, fence, TxnOp::put(key, bytes, None), timeout).await? {
        Some(_) => Ok(()),
        None => Err(StatusError::Deposed),
    }
}

/// Read the leader, the instances and every cluster's report.
pub async fn overview(
    client: &Client,
    keys: &Keys,
    timeout: Duration,
) -> Result<Overview, StatusError> {
    let prefixed = || Some(GetOptions::new().with_prefix());
    let leader = get(client, &keys.leader(), None, timeout).await?;
    let instances = get(client, &keys.instances(), prefixed(), timeout).await?;
    let clusters = get(client, &keys.statuses(), prefixed(), timeout).await?;
    let decode = |key: &[u8]| StatusError::NotUnderstood(String::from_utf8_lossy(key).into_owned());
    let mut overview = Overview {
        leader: leader
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        ..Overview::default()
    };
    for kv in instances.kvs() {
        let instance = serde_json::from_slice(kv.value()).map_err(|_| decode(kv.key()))?;
        overview.instances.push(instance);
    }
    for kv in clusters.kvs() {
        let report = serde_json::from_slice(kv.value()).map_err(|_| decode(kv.key()))?;
        overview.clusters.push(report);
    }
    Ok(overview)
}
