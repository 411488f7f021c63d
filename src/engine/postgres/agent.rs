//! The controller's side of `replicant node`: host operations (start, stop, lease, clone,
//! follow, rewind) over the agent's HTTP API, with its bearer token, a timeout on every call,
//! and TLS when the agent serves it; and the API's wire types, which the agent shares.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio_rustls::rustls;

use super::{
    archive::{
        ArchiveReport, ArchiveSettings, BackupReport, BackupRequest, DrillReport, DrillRequest,
        RecoveryRequest,
    },
    controldata::ControlData,
    probe::split_address,
};
use crate::{core::engine::EngineError, engine::Secret};

/// What an agent reports of its host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub running: bool,
    pub pid: Option<u32>,
    pub epoch: u64,
    pub fenced: bool,
    pub lease_remaining_ms: Option<u64>,
    pub control_data: Option<ControlData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_data_error: Option<String>,
    /// The data directory holds no data set: a copy is all it can take.
    #[serde(default)]
    pub empty: bool,
    /// The data directory is set up as a standby's (`standby.signal`): started as it is, it
    /// replays what it holds and accepts no writes.
    #[serde(default)]
    pub standby: bool,
    /// The `.history` file of the control file's timeline, when it is past the first: where
    /// each earlier timeline forked, so the controller can tell the data's branch while
    /// postgres is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
    /// The operation under way on the data directory (`clone`, `rewind`, `standby`, `start`),
    /// if any: postgres and the data are not reported meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<String>,
    /// The last such operation that finished, and its error if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Why the last operation failed, as a kind the controller decides on (absent from
    /// agents older than it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<HostFailure>,
    /// How the last rejoin went, when the last operation was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejoined: Option<Rejoined>,
    /// How a standby on this host authenticates to its upstream, when the host keeps the
    /// password in a file: a re-point then names the file, never the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_auth: Option<PassfileAuth>,
    /// The host's WAL archiver (absent from agents older than it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveReport>,
    /// The host's base backups (absent from agents older than them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupReport>,
    /// The host's restore drills (absent from agents older than them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillReport>,
}

/// A moment on an agent's monotonic clock, fetched by the controller just before each lease
/// renewal: the lease runs from it, not from the renewal's arrival. So a renewal that arrives
/// late (held in a frozen agent's socket, or delayed on the network) grants no more than the
/// controller counted from the nonce's receipt, which is later than its issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseNonce {
    /// The agent process that issued it: another run's clock means nothing.
    pub run: u64,
    /// Milliseconds since that process began, rounded down.
    pub issued_ms: u64,
}

/// What the controller tells the primary's agent with each lease renewal, so that it can renew
/// through its peers while no controller does: its own member's name, every other member's
/// agent, and the CA bundle their certificates chain to when they serve TLS. They are called
/// with the same bearer token as the controller's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerView {
    pub member: String,
    /// `host:port` where the peers reach this member's postgres: they stop confirming its
    /// lease once they find they no longer do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub peers: Vec<Peer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// Another member's agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    pub name: String,
    /// `host:port` of its API.
    pub agent: String,
}

/// An agent's answer to a promotion raising it to a new epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Raised {
    /// The epoch it now holds.
    pub epoch: u64,
    /// How much longer the confirmations it gave at older epochs last: the promotion waits
    /// them out.
    pub outstanding_ms: u64,
}

/// An agent's answer to whether its host reaches another member's postgres.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reached {
    pub reached: bool,
    /// Why not, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A replication user whose password a host keeps in a password file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassfileAuth {
    pub user: String,
    /// Absolute path of the file on the host.
    pub passfile: String,
}

/// The member a host copies, follows or rewinds onto.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// `host:port` of its postgres.
    pub address: String,
    /// The name the host reports upstream (`synchronous_standby_names` lists these).
    pub application_name: String,
    /// The replication slot kept for the host there, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

/// Why a member's host could not carry out its last operation (a copy, a rewind, a start), as
/// its agent reports it beside the message.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum HostFailure {
    /// The member to copy or rewind from could not be read (not reachable, credentials
    /// refused, not yet checkpointed on its timeline).
    SourceUnreachable,
    /// The data directory holds another data set, which is never copied over.
    ForeignData,
    /// The data cannot be rewound (it ran without `wal_log_hints` or data checksums, or a
    /// standby stopped uncleanly): only a full copy brings it back.
    NotRewindable,
    /// A tool (`pg_basebackup`, `pg_rewind`, `initdb`, `postgres`) ran and failed.
    ToolFailed,
    /// It took longer than the agent allows.
    TimedOut,
    /// The host's own files: a directory or file could not be read or written (a full disk,
    /// permissions).
    Storage,
    /// The agent cannot do it as configured (no superuser password, a directory not empty).
    Refused,
    /// A reason this version does not know (a newer agent).
    #[serde(other)]
    Other,
}

impl HostFailure {
    /// The label value and the word status uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SourceUnreachable => "sourceUnreachable",
            Self::ForeignData => "foreignData",
            Self::NotRewindable => "notRewindable",
            Self::ToolFailed => "toolFailed",
            Self::TimedOut => "timedOut",
            Self::Storage => "storage",
            Self::Refused => "refused",
            Self::Other => "other",
        }
    }
}

/// How a member that left the primary's history was brought back onto it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Rejoined {
    /// `pg_rewind` replaced what diverged; the rest was kept.
    Rewound,
    /// The rewind could not be done (the reason is kept); a full copy replaced the data.
    Copied {
        rewind_failed: String,
        /// Why, as a kind (absent from agents older than it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        because: Option<HostFailure>,
    },
}

/// What the controller may ask of a member's host. Every call carries the epoch of the
/// decision it serves; a host refuses one older than the newest it has seen.
#[async_trait]
pub trait AgentApi: Send + Sync {
    async fn status(&self) -> Result<AgentStatus, EngineError>;
    /// Start postgres as it is. This and the copies below return once begun; `status` tells
    /// when they end (`busy`, then `lastOperation`, `lastError`).
    async fn start(&self, epoch: u64) -> Result<AgentStatus, EngineError>;
    /// Create a new data set in the empty data directory and start it as a primary: an empty
    /// one, or one recovered from a repository as `recovery` asks.
    async fn initialize(
        &self,
        epoch: u64,
        recovery: Option<&RecoveryRequest>,
    ) -> Result<AgentStatus, EngineError>;
    /// Stop postgres: fast (clean) or immediate.
    async fn stop(&self, epoch: u64, immediate: bool) -> Result<AgentStatus, EngineError>;
    /// A nonce for the next lease renewal.
    async fn lease_nonce(&self) -> Result<LeaseNonce, EngineError>;
    /// Keep the host's postgres allowed to run for `ttl` from `nonce`'s issue; `view` lets
    /// its agent renew through its peers, alongside the controller and without it.
    async fn renew_lease(
        &self,
        epoch: u64,
        ttl: Duration,
        nonce: LeaseNonce,
        view: Option<&PeerView>,
    ) -> Result<AgentStatus, EngineError>;
    /// Confirm, as a peer, `member`'s lease at `epoch` for `ttl`: refused once this host finds
    /// it no longer reaches `member`'s postgres at `address`, when given.
    async fn confirm(
        &self,
        epoch: u64,
        member: &str,
        address: Option<&str>,
        ttl: Duration,
    ) -> Result<(), EngineError>;
    /// Tell a peer that `member` gave up its lease at `epoch`, of length `ttl` (its postgres
    /// stopped): what the peer confirmed of it no longer holds up a promotion.
    async fn release(&self, epoch: u64, member: &str, ttl: Duration) -> Result<(), EngineError>;
    /// Take `epoch` as the newest before a promotion to it, and say how long the
    /// confirmations given at older epochs still last.
    async fn raise(&self, epoch: u64) -> Result<Raised, EngineError>;
    /// Whether this host reaches the postgres at `address` within `timeout` (a ping that needs
    /// no credentials): asked of the other members before their primary is failed over.
    async fn reach(&self, address: &str, timeout: Duration) -> Result<Reached, EngineError>;
    /// Copy `source` onto an empty host (or one of the same data set) and follow it.
    async fn clone_from(
        &self,
        epoch: u64,
        source: &Source,
        seed: Option<&ArchiveSettings>,
    ) -> Result<AgentStatus, EngineError>;
    /// Start as a standby of `source` with the data already there.
    async fn follow(&self, epoch: u64, source: &Source) -> Result<AgentStatus, EngineError>;
    /// Bring diverged data back onto `source`'s history and follow it.
    async fn rewind(&self, epoch: u64, source: &Source) -> Result<AgentStatus, EngineError>;
    /// Archive the host's WAL with `settings` from the archiver's next run on, or stop
    /// archiving (`None`).
    async fn configure_archive(
        &self,
        settings: Option<&ArchiveSettings>,
    ) -> Result<ArchiveReport, EngineError>;
    /// Begin a base backup of the host's postgres; `status` tells when it ends (`backup`).
    async fn backup(&self, request: &BackupRequest) -> Result<BackupReport, EngineError>;
    /// Begin a restore drill on the host; `status` tells when it ends (`drill`).
    async fn drill(&self, request: &DrillRequest) -> Result<DrillReport, EngineError>;
}

/// A member's agent, reached over HTTP (or HTTPS).
#[derive(Clone)]
pub struct AgentClient {
    /// `host:port` of the agent's API.
    address: String,
    token: Secret,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// For every call: the long operations run in the background on the agent.
    timeout: Duration,
}

/// Why a CA bundle cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("not a PEM certificate: {0}")]
    NotPem(String),
    #[error("unusable certificate: {0}")]
    Unusable(String),
    #[error("it holds no certificate")]
    Empty,
    #[error("{0}")]
    Tls(String),
}

/// A TLS client configuration that trusts the certificates of `pem` (a CA bundle), and
/// nothing else: the agents' certificates must chain to them.
pub fn trusting(pem: &str) -> Result<Arc<rustls::ClientConfig>, TrustError> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let certificate = certificate.map_err(|e| TrustError::NotPem(e.to_string()))?;
        roots
            .add(certificate)
            .map_err(|e| TrustError::Unusable(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TrustError::Empty);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TrustError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// How long a clean stop may take: a fast shutdown writes a checkpoint first.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an immediate stop (a fence) may take. It writes nothing, so a host that has not
/// answered by then is frozen or cut off, and waiting longer would only stall the round that
/// tries it.
pub const FENCE_TIMEOUT: Duration = Duration::from_secs(2);

impl AgentClient {
    pub fn new(
        address: impl Into<String>,
        token: Secret,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Self {
        Self {
            address: address.into(),
            token,
            tls,
            timeout,
        }
    }

    /// The same agent, each call bounded by `timeout` instead.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// POST `body` as JSON to `path`, within the quick calls' timeout.
    async fn post_json<T: DeserializeOwned>(
        &self,
        during: &'static str,
        path: &str,
        body: impl serde::Serialize,
    ) -> Result<T, EngineError> {
        let body = serde_json::to_value(body).map_err(|e| EngineError::Protocol {
            address: self.address.clone(),
            during,
            detail: e.to_string(),
        })?;
        self.call(during, path, Some(body), self.timeout).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        during: &'static str,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<T, EngineError> {
        let address = self.address.clone();
        tokio::time::timeout(timeout, self.call_unbounded(during, path, body))
            .await
            .map_err(|_| EngineError::Timeout {
                address,
                millis: timeout.as_millis(),
                during,
            })?
    }

    async fn call_unbounded<T: DeserializeOwned>(
        &self,
        during: &'static str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, EngineError> {
        let address = self.address.clone();
        let protocol = |detail: String| EngineError::Protocol {
            address: address.clone(),
            during,
            detail,
        };
        let tcp = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => EngineError::Refused {
                    address: address.clone(),
                },
                _ => EngineError::Connect {
                    address: address.clone(),
                    message: e.to_string(),
                },
            })?;
        let method = if body.is_some() { "POST" } else { "GET" };
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.address)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token.expose()),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .map_err(|e| protocol(e.to_string()))?;
        let (status, bytes) = match &self.tls {
            Some(config) => {
                let (host, _) = split_address(&self.address)?;
                let name = rustls_pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| protocol(format!("server name {host:?}: {e}")))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| EngineError::Connect {
                        address: address.clone(),
                        message: format!("TLS: {e}"),
                    })?;
                exchange(TokioIo::new(tls), request).await
            }
            None => exchange(TokioIo::new(tcp), request).await,
        }
        .map_err(protocol)?;
        let text = String::from_utf8_lossy(&bytes);
        let refusal = || {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| crate::bounded::clip(&text, 512).into_owned())
        };
        match status.as_u16() {
            200 => serde_json::from_slice(&bytes).map_err(|e| protocol(format!("reply: {e}"))),
            401 => Err(EngineError::Auth {
                address,
                message: refusal(),
            }),
            _ => Err(EngineError::Command {
                address,
                during,
                message: format!("{status}: {}", refusal()),
            }),
        }
    }
}

/// One request over a fresh HTTP/1.1 connection; the status and at most 1 MiB of body.
async fn exchange<I>(
    io: I,
    request: http::Request<Full<Bytes>>,
) -> Result<(http::StatusCode, Bytes), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    let result = match response {
        Ok(response) => {
            let status = response.status();
            http_body_util::Limited::new(response.into_body(), 1 << 20)
                .collect()
                .await
                .map(|body| (status, body.to_bytes()))
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    };
    connection.abort();
    result
}

#[async_trait]
impl AgentApi for AgentClient {
    async fn status(&self) -> Result<AgentStatus, EngineError> {
        self.call("agent status", "/v1/status", None, self.timeout)
            .await
    }

    async fn start(&self, epoch: u64) -> Result<AgentStatus, EngineError> {
        let body = serde_json::json!({ "epoch": epoch });
        self.call("start postgres", "/v1/start", Some(body), self.timeout)
            .await
    }

    async fn initialize(
        &self,
        epoch: u64,
        recovery: Option<&RecoveryRequest>,
    ) -> Result<AgentStatus, EngineError> {
        let body = serde_json::json!({ "epoch": epoch, "recovery": recovery });
        self.call("initialize", "/v1/initialize", Some(body), self.timeout)
            .await
    }

    async fn stop(&self, epoch: u64, immediate: bool) -> Result<AgentStatus, EngineError> {
        let (mode, timeout) = if immediate {
            ("immediate", FENCE_TIMEOUT)
        } else {
            ("fast", STOP_TIMEOUT)
        };
        let body = serde_json::json!({ "epoch": epoch, "mode": mode });
        self.call("stop postgres", "/v1/stop", Some(body), timeout)
            .await
    }

    async fn lease_nonce(&self) -> Result<LeaseNonce, EngineError> {
        self.call("fetch a lease nonce", "/v1/lease", None, self.timeout)
            .await
    }

    async fn renew_lease(
        &self,
        epoch: u64,
        ttl: Duration,
        nonce: LeaseNonce,
        view: Option<&PeerView>,
    ) -> Result<AgentStatus, EngineError> {
        let body = serde_json::json!({
            "epoch": epoch, "ttlMs": ttl.as_millis() as u64, "nonce": nonce, "view": view
        });
        self.call("renew the lease", "/v1/lease", Some(body), self.timeout)
            .await
    }

    async fn confirm(
        &self,
        epoch: u64,
        member: &str,
        address: Option<&str>,
        ttl: Duration,
    ) -> Result<(), EngineError> {
        let body = serde_json::json!({
            "epoch": epoch, "member": member, "address": address, "ttlMs": ttl.as_millis() as u64
        });
        self.call::<serde_json::Value>("confirm a lease", "/v1/confirm", Some(body), self.timeout)
            .await
            .map(drop)
    }

    async fn release(&self, epoch: u64, member: &str, ttl: Duration) -> Result<(), EngineError> {
        let body = serde_json::json!({
            "epoch": epoch, "member": member, "ttlMs": ttl.as_millis() as u64
        });
        self.call::<serde_json::Value>("release a lease", "/v1/release", Some(body), self.timeout)
            .await
            .map(drop)
    }

    async fn raise(&self, epoch: u64) -> Result<Raised, EngineError> {
        let body = serde_json::json!({ "epoch": epoch });
        self.call("raise the epoch", "/v1/raise", Some(body), self.timeout)
            .await
    }

    async fn configure_archive(
        &self,
        settings: Option<&ArchiveSettings>,
    ) -> Result<ArchiveReport, EngineError> {
        self.post_json("configure archiving", "/v1/archive", settings)
            .await
    }

    async fn backup(&self, request: &BackupRequest) -> Result<BackupReport, EngineError> {
        self.post_json("begin a base backup", "/v1/backup", request)
            .await
    }

    async fn drill(&self, request: &DrillRequest) -> Result<DrillReport, EngineError> {
        self.post_json("begin a restore drill", "/v1/drill", request)
            .await
    }

    async fn reach(&self, address: &str, timeout: Duration) -> Result<Reached, EngineError> {
        let body =
            serde_json::json!({ "address": address, "timeoutMs": timeout.as_millis() as u64 });
        // The agent answers once its ping has, within `timeout`; `self.timeout` bounds the
        // rest of the call.
        self.call(
            "ask whether it reaches a member",
            "/v1/reach",
            Some(body),
            self.timeout + timeout,
        )
        .await
    }

    async fn clone_from(
        &self,
        epoch: u64,
        source: &Source,
        seed: Option<&ArchiveSettings>,
    ) -> Result<AgentStatus, EngineError> {
        let body = serde_json::json!({ "epoch": epoch, "source": source, "seed": seed });
        self.call("clone", "/v1/clone", Some(body), self.timeout)
            .await
    }

    async fn follow(&self, epoch: u64, source: &Source) -> Result<AgentStatus, EngineError> {
        let body = serde_json::json!({ "epoch": epoch, "source": source });
        self.call(
            "start as a standby",
            "/v1/standby",
            Some(body),
            self.timeout,
        )
        .await
    }

    async fn rewind(&self, epoch: u64, source: &Source) -> Result<AgentStatus, EngineError> {
        let body = serde_json::json!({ "epoch": epoch, "source": source });
        self.call("rewind", "/v1/rewind", Some(body), self.timeout)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::trusting;

    #[test]
    fn a_bundle_without_a_usable_certificate_is_refused_with_the_reason() {
        assert_eq!(
            trusting("").unwrap_err().to_string(),
            "it holds no certificate"
        );
        assert_eq!(
            trusting("just some text\n").unwrap_err().to_string(),
            "it holds no certificate"
        );
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(
            trusting(broken)
                .unwrap_err()
                .to_string()
                .starts_with("not a PEM certificate"),
        );
        let not_der = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(
            trusting(not_der)
                .unwrap_err()
                .to_string()
                .starts_with("unusable certificate"),
        );
    }
}
