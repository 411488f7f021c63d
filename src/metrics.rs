//! Prometheus metrics and the admin HTTP endpoint (`/metrics`, `/healthz`), shared by both runtimes; touches no servers.

use std::{net::SocketAddr, sync::Arc};

use axum::{extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoundLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    cluster: String,
    member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    cluster: String,
    member: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    name: String,
    direction: String,
}

fn failover_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 10))
}

/// Every metric replicant exports.
pub struct Metrics {
    registry: Registry,
    failovers: Family<ClusterLabels, Counter>,
    failover_seconds: Family<ClusterLabels, Histogram, fn() -> Histogram>,
    lag_bytes: Family<MemberLabels, Gauge>,
    probe_errors: Family<ProbeLabels, Counter>,
    rounds: Family<RoundLabels, Counter>,
    proxy_connections: Family<NameLabels, Counter>,
    proxy_active: Family<NameLabels, Gauge>,
    proxy_bytes: Family<BytesLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("replicant");
        let failovers = Family::<ClusterLabels, Counter>::default();
        registry.register(
            "promotions",
            "Completed failovers and switchovers",
            failovers.clone(),
        );
        let failover_seconds =
            Family::<ClusterLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                failover_histogram,
            );
        registry.register(
            "promotion_duration_seconds",
            "From the decision to promote to the cluster converged on the new primary",
            failover_seconds.clone(),
        );
        let lag_bytes = Family::<MemberLabels, Gauge>::default();
        registry.register(
            "member_lag_bytes",
            "Replication bytes a member is behind its primary",
            lag_bytes.clone(),
        );
        let probe_errors = Family::<ProbeLabels, Counter>::default();
        registry.register(
            "probe_errors",
            "Failed probes by member and error kind",
            probe_errors.clone(),
        );
        let rounds = Family::<RoundLabels, Counter>::default();
        registry.register(
            "reconcile_rounds",
            "Completed observe-plan-act rounds per cluster (each probes every member once)",
            rounds.clone(),
        );
        let proxy_connections = Family::<NameLabels, Counter>::default();
        registry.register(
            "proxy_connections",
            "Connections accepted by a virtual name's proxy",
            proxy_connections.clone(),
        );
        let proxy_active = Family::<NameLabels, Gauge>::default();
        registry.register(
            "proxy_active_connections",
            "Open connections through a virtual name's proxy",
            proxy_active.clone(),
        );
        let proxy_bytes = Family::<BytesLabels, Counter>::default();
        registry.register(
            "proxy_bytes",
            "Bytes relayed by a virtual name's proxy",
            proxy_bytes.clone(),
        );
        Self {
            registry,
            failovers,
            failover_seconds,
            lag_bytes,
            probe_errors,
            rounds,
            proxy_connections,
            proxy_active,
            proxy_bytes,
        }
    }
}

impl Metrics {
    pub fn promotion(&self, cluster: &str, kind: &str, seconds: f64) {
        let labels = ClusterLabels {
            cluster: cluster.into(),
            kind: kind.into(),
        };
        self.failovers.get_or_create(&labels).inc();
        self.failover_seconds
            .get_or_create(&labels)
            .observe(seconds);
    }

    pub fn lag(&self, cluster: &str, member: &str, bytes: Option<u64>) {
        let labels = MemberLabels {
            cluster: cluster.into(),
            member: member.into(),
        };
        match bytes {
            Some(b) => {
                self.lag_bytes
                    .get_or_create(&labels)
                    .set(b.min(i64::MAX as u64) as i64);
            }
            None => {
                self.lag_bytes.remove(&labels);
            }
        }
    }

    pub fn round(&self, cluster: &str) {
        self.rounds
            .get_or_create(&RoundLabels {
                cluster: cluster.into(),
            })
            .inc();
    }

    pub fn probe_error(&self, cluster: &str, member: &str, kind: &str) {
        self.probe_errors
            .get_or_create(&ProbeLabels {
                cluster: cluster.into(),
                member: member.into(),
                kind: kind.into(),
            })
            .inc();
    }

    pub fn proxy_connection(&self, name: &str, delta: i64) {
        let labels = NameLabels { name: name.into() };
        if delta > 0 {
            self.proxy_connections.get_or_create(&labels).inc();
        }
        self.proxy_active.get_or_create(&labels).inc_by(delta);
    }

    pub fn proxy_bytes(&self, name: &str, to_backend: u64, to_client: u64) {
        for (direction, bytes) in [("toBackend", to_backend), ("toClient", to_client)] {
            self.proxy_bytes
                .get_or_create(&BytesLabels {
                    name: name.into(),
                    direction: direction.into(),
                })
                .inc_by(bytes);
        }
    }

    /// The Prometheus text exposition.
    /// Count one reconcile round, its lag readings and probe failures, and log finished promotions.
    pub fn record_round(&self, cluster: &str, round: &crate::reconcile::Round) {
        self.round(cluster);
        for m in &round.status.members {
            self.lag(cluster, &m.name, m.lag_bytes);
        }
        for (name, o) in &round.observed.members {
            if !o.reachable {
                self.probe_error(cluster, name, "unreachable");
            }
        }
        for entry in round.finished_operations() {
            let seconds = match (
                entry.started_at.parse::<jiff::Timestamp>(),
                entry.finished_at.parse::<jiff::Timestamp>(),
            ) {
                (Ok(s), Ok(f)) => f.duration_since(s).as_secs_f64(),
                _ => 0.0,
            };
            tracing::info!(
                cluster = %cluster,
                reason = ?entry.kind,
                from = entry.from.as_deref().unwrap_or("-"),
                to = %entry.to,
                epoch = entry.epoch,
                outcome = ?entry.outcome,
                seconds,
                "promotion finished"
            );
            if entry.outcome == crate::journal::Outcome::Succeeded {
                self.promotion(
                    cluster,
                    &format!("{:?}", entry.kind).to_lowercase(),
                    seconds,
                );
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

/// Listen on `addr` and serve `/metrics` and `/healthz` from a background task until the process ends.
pub async fn start_admin(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(metrics);
    // Bound here, so a busy port is the caller's error rather than a background task's.
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let listener = crate::accept::Acceptor::new(listener, "admin", &crate::accept::ADMIN_CLIENTS);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(%addr, error = %e, "admin endpoint stopped");
        }
    });
    Ok(())
}
