//! Prometheus metrics and the admin HTTP endpoint (`/metrics`, `/healthz`), shared by both runtimes; touches no servers.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

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

use crate::{
    api::{OperationKind, Outcome},
    core::{observed::ProbeErrorKind, plan::findings, reconcile::Round},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    cluster: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
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
struct ActionFailureLabels {
    cluster: String,
    /// The journal step the action belongs to: `promote`, `fence`, `repoint`, ...
    step: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    cluster: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterNameLabels {
    cluster: String,
    name: String,
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

type FloatGauge = Gauge<f64, AtomicU64>;
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The kinds of promotion, as labelled: `OperationKind` in lowercase.
const PROMOTION_KINDS: [OperationKind; 2] = [OperationKind::Failover, OperationKind::Switchover];

fn kind_label(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::Failover => "failover",
        OperationKind::Switchover => "switchover",
    }
}

fn promotion_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 10))
}

fn round_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// The per-cluster series set last round, so that what no longer holds (a member removed, a
/// primary replaced, a block lifted) is removed rather than left stale.
#[derive(Default)]
struct Exported {
    members: BTreeSet<String>,
    names: BTreeSet<String>,
    primary: Option<String>,
    blocked: Option<String>,
}

/// Every metric replicant exports. Labels are bounded: clusters, their members, virtual
/// names, and fixed sets of kinds and reasons.
pub struct Metrics {
    registry: Registry,
    /// The name of every family, as registered (counters gain `_total` when exposed).
    families: Vec<String>,
    promotions: Family<KindLabels, Counter>,
    promotion_seconds: Histograms<KindLabels>,
    last_promotion: Family<KindLabels, FloatGauge>,
    write_gap: Family<KindLabels, FloatGauge>,
    ready: Family<ClusterLabels, Gauge>,
    spec_valid: Family<ClusterLabels, Gauge>,
    epoch: Family<ClusterLabels, Gauge>,
    primary: Family<MemberLabels, Gauge>,
    blocked: Family<ReasonLabels, Gauge>,
    max_lag: Family<ClusterLabels, Gauge>,
    member_up: Family<MemberLabels, Gauge>,
    lag_bytes: Family<MemberLabels, Gauge>,
    lag_seconds: Family<MemberLabels, FloatGauge>,
    archiving: Family<ClusterLabels, Gauge>,
    archive_lag_bytes: Family<ClusterLabels, Gauge>,
    archive_lag_seconds: Family<ClusterLabels, Gauge>,
    archive_pending: Family<MemberLabels, Gauge>,
    archive_gaps: Family<MemberLabels, Gauge>,
    backup_succeeded: Family<ClusterLabels, Gauge>,
    backup_completed: Family<ClusterLabels, Gauge>,
    backup_size: Family<ClusterLabels, Gauge>,
    backup_duration: Family<ClusterLabels, Gauge>,
    recoverable_earliest: Family<ClusterLabels, Gauge>,
    recoverable_latest: Family<ClusterLabels, Gauge>,
    drill_passed: Family<ClusterLabels, Gauge>,
    drill_restore: Family<ClusterLabels, Gauge>,
    drill_finished: Family<ClusterLabels, Gauge>,
    probe_errors: Family<ProbeLabels, Counter>,
    action_failures: Family<ActionFailureLabels, Counter>,
    rounds: Family<ClusterLabels, Counter>,
    round_failures: Family<ClusterLabels, Counter>,
    round_seconds: Histograms<ClusterLabels>,
    last_round: Family<ClusterLabels, FloatGauge>,
    leader: Gauge,
    virtual_names: Family<ClusterNameLabels, Gauge>,
    leading: Mutex<Option<Box<dyn Fn() -> bool + Send + Sync>>>,
    exported: Mutex<HashMap<String, Exported>>,
    proxy_connections: Family<NameLabels, Counter>,
    proxy_active: Family<NameLabels, Gauge>,
    proxy_bytes: Family<BytesLabels, Counter>,
}

/// Where metrics are registered, remembering their names.
struct Registering {
    registry: Registry,
    families: Vec<String>,
}

impl Registering {
    /// Register `metric` under `name` and hand it back.
    fn add<M: prometheus_client::registry::Metric + Clone>(
        &mut self,
        name: &str,
        help: &str,
        metric: M,
    ) -> M {
        self.registry.register(name, help, metric.clone());
        self.families.push(format!("replicant_{name}"));
        metric
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registering {
            registry: Registry::with_prefix("replicant"),
            families: Vec::new(),
        };
        let promotions = r.add(
            "promotions",
            "Completed failovers and switchovers",
            Family::default(),
        );
        let promotion_seconds = r.add(
            "promotion_duration_seconds",
            "From the decision to promote to the cluster converged on the new primary",
            Histograms::new_with_constructor(promotion_histogram),
        );
        let last_promotion = r.add(
            "last_promotion_timestamp_seconds",
            "When the last completed failover or switchover finished (Unix time)",
            Family::default(),
        );
        let write_gap = r.add(
            "last_promotion_write_gap_seconds",
            "Of the last promotion this process finished: from when the old primary could last \
             accept writes (it last answered or its lease was last renewed; for a switchover, the \
             start) until the new primary took over",
            Family::default(),
        );
        let ready = r.add(
            "cluster_ready",
            "1 while the cluster's Ready condition is True",
            Family::default(),
        );
        let spec_valid = r.add(
            "cluster_spec_valid",
            "0 while the stored spec breaks a rule and the last good one keeps running",
            Family::default(),
        );
        let epoch = r.add(
            "cluster_epoch",
            "The cluster's epoch, bumped on every promotion",
            Family::default(),
        );
        let primary = r.add(
            "cluster_primary",
            "1 for the member that is primary now",
            Family::default(),
        );
        let blocked = r.add(
            "promotion_blocked",
            "1 while a failover or switchover is wanted but refused, by the PromotionBlocked \
             condition's reason",
            Family::default(),
        );
        let max_lag = r.add(
            "cluster_max_lag_bytes",
            "spec.failover.maxLag: a replica further behind is not promoted",
            Family::default(),
        );
        let member_up = r.add(
            "member_up",
            "1 while the member's server answers its probes",
            Family::default(),
        );
        let lag_bytes = r.add(
            "member_lag_bytes",
            "Replication bytes a member is behind its primary",
            Family::default(),
        );
        let lag_seconds = r.add(
            "member_lag_seconds",
            "How old the newest data a replica shows is, while it is behind (PostgreSQL); 0 once \
             caught up",
            Family::default(),
        );
        let probe_errors = r.add(
            "probe_errors",
            "Failed probes by member and kind: refused, timeout, auth, protocol, starting, \
             unreachable",
            Family::default(),
        );
        let action_failures = r.add(
            "action_failures",
            "Actions that failed, by journal step and kind: an engine's (refused, timeout, auth, \
             protocol, starting, unreachable), or route, spec, unsupported",
            Family::default(),
        );
        let rounds = r.add(
            "reconcile_rounds",
            "Completed observe-plan-act rounds per cluster (each probes every member once)",
            Family::default(),
        );
        let round_failures = r.add(
            "reconcile_failures",
            "Rounds that failed (the journal or status could not be read or written)",
            Family::default(),
        );
        let round_seconds = r.add(
            "reconcile_round_duration_seconds",
            "How long a round took, from the first probe to the last action",
            Histograms::new_with_constructor(round_histogram),
        );
        let last_round = r.add(
            "last_round_timestamp_seconds",
            "When the last round that completed ended (Unix time); only the acting controller \
             exports it",
            Family::default(),
        );
        let archiving = r.add(
            "archiving",
            "1 while WAL reaches the cluster's repository as it is written (the \
             ContinuousArchiving condition), 0 while it does not; absent without spec.backup.archive",
            Family::default(),
        );
        let archive_lag_bytes = r.add(
            "archive_lag_bytes",
            "How far the primary's WAL runs ahead of the newest WAL file archived, in bytes",
            Family::default(),
        );
        let archive_lag_seconds = r.add(
            "archive_lag_seconds",
            "How long the oldest WAL file the primary finished has waited to be archived",
            Family::default(),
        );
        let archive_pending = r.add(
            "archive_pending_bytes",
            "Finished WAL waiting on a member's host for the repository, in bytes",
            Family::default(),
        );
        let archive_gaps = r.add(
            "archive_gaps",
            "Gaps a member's host declared: WAL it let go unarchived past pendingLimit",
            Family::default(),
        );
        let backup_succeeded = r.add(
            "backup_succeeded",
            "1 while the newest base backup attempt succeeded (the BackupSucceeded condition), 0 \
             while it did not or none exists; absent without spec.backup",
            Family::default(),
        );
        let backup_completed = r.add(
            "backup_last_completed_timestamp_seconds",
            "When the newest complete base backup in the repository finished (Unix time)",
            Family::default(),
        );
        let backup_size = r.add(
            "backup_last_size_bytes",
            "The newest base backup's data as PostgreSQL sent it, in bytes",
            Family::default(),
        );
        let backup_duration = r.add(
            "backup_last_duration_seconds",
            "How long the newest base backup took",
            Family::default(),
        );
        let recoverable_earliest = r.add(
            "recoverable_earliest_timestamp_seconds",
            "The earliest point a restore can reach (Unix time)",
            Family::default(),
        );
        let recoverable_latest = r.add(
            "recoverable_latest_timestamp_seconds",
            "The latest point a restore can reach: the end of the WAL archived without a hole \
             (Unix time)",
            Family::default(),
        );
        let drill_passed = r.add(
            "restore_drill_passed",
            "1 when the newest restore drill passed, 0 when it failed; absent before the first",
            Family::default(),
        );
        let drill_restore = r.add(
            "restore_drill_restore_seconds",
            "How long the newest restore drill's restore took, from the first byte fetched to \
             the restored server accepting writes",
            Family::default(),
        );
        let drill_finished = r.add(
            "restore_drill_timestamp_seconds",
            "When the newest restore drill finished (Unix time)",
            Family::default(),
        );
        let leader = r.add(
            "leader",
            "1 while this process may act: it holds the leadership, or runs alone",
            Gauge::default(),
        );
        let virtual_names = r.add(
            "virtual_name_info",
            "1 for each virtual name of a cluster (namespace/name, as the proxy metrics label it)",
            Family::default(),
        );
        let proxy_connections = r.add(
            "proxy_connections",
            "Connections accepted by a virtual name's proxy",
            Family::default(),
        );
        let proxy_active = r.add(
            "proxy_active_connections",
            "Open connections through a virtual name's proxy",
            Family::default(),
        );
        let proxy_bytes = r.add(
            "proxy_bytes",
            "Bytes relayed by a virtual name's proxy",
            Family::default(),
        );
        Self {
            registry: r.registry,
            families: r.families,
            promotions,
            promotion_seconds,
            last_promotion,
            write_gap,
            ready,
            spec_valid,
            epoch,
            primary,
            blocked,
            max_lag,
            member_up,
            lag_bytes,
            lag_seconds,
            archiving,
            archive_lag_bytes,
            archive_lag_seconds,
            archive_pending,
            archive_gaps,
            backup_succeeded,
            backup_completed,
            backup_size,
            backup_duration,
            recoverable_earliest,
            recoverable_latest,
            drill_passed,
            drill_restore,
            drill_finished,
            probe_errors,
            action_failures,
            rounds,
            round_failures,
            round_seconds,
            last_round,
            leader,
            virtual_names,
            leading: Mutex::new(None),
            exported: Mutex::new(HashMap::new()),
            proxy_connections,
            proxy_active,
            proxy_bytes,
        }
    }
}

fn cluster_labels(cluster: &str) -> ClusterLabels {
    ClusterLabels {
        cluster: cluster.into(),
    }
}

fn member_labels(cluster: &str, member: &str) -> MemberLabels {
    MemberLabels {
        cluster: cluster.into(),
        member: member.into(),
    }
}

fn unix_seconds(t: jiff::Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

fn clamp(bytes: u64) -> i64 {
    bytes.min(i64::MAX as u64) as i64
}

impl Metrics {
    /// `replicant_leader` is read from `leading` whenever metrics are scraped, so that a
    /// leadership that lapses without an event shows at once.
    pub fn lead_when(&self, leading: impl Fn() -> bool + Send + Sync + 'static) {
        *self.leading.lock().expect("not poisoned") = Some(Box::new(leading));
    }

    /// Whether the spec as stored passes every rule.
    pub fn spec_valid(&self, cluster: &str, valid: bool) {
        self.spec_valid
            .get_or_create(&cluster_labels(cluster))
            .set(valid as i64);
    }

    /// A round that failed.
    pub fn round_failed(&self, cluster: &str) {
        self.round_failures
            .get_or_create(&cluster_labels(cluster))
            .inc();
    }

    /// Drop every gauge of `cluster`: it was removed, or this process stopped acting on it
    /// (whoever acts now exports them). Counters stay: they only ever count.
    pub fn forget(&self, cluster: &str) {
        let labels = cluster_labels(cluster);
        self.ready.remove(&labels);
        self.spec_valid.remove(&labels);
        self.epoch.remove(&labels);
        self.max_lag.remove(&labels);
        self.last_round.remove(&labels);
        self.forget_archive(&labels);
        for family in self.backup_families() {
            family.remove(&labels);
        }
        for kind in PROMOTION_KINDS {
            let labels = KindLabels {
                cluster: cluster.into(),
                kind: kind_label(kind).into(),
            };
            self.last_promotion.remove(&labels);
            self.write_gap.remove(&labels);
        }
        let Some(exported) = self.exported.lock().expect("not poisoned").remove(cluster) else {
            return;
        };
        for member in &exported.members {
            self.forget_member(cluster, member);
        }
        for name in exported.names {
            self.virtual_names.remove(&ClusterNameLabels {
                cluster: cluster.into(),
                name,
            });
        }
        if let Some(primary) = &exported.primary {
            self.primary.remove(&member_labels(cluster, primary));
        }
        if let Some(reason) = exported.blocked {
            self.blocked.remove(&ReasonLabels {
                cluster: cluster.into(),
                reason,
            });
        }
    }

    fn forget_member(&self, cluster: &str, member: &str) {
        let labels = member_labels(cluster, member);
        self.member_up.remove(&labels);
        self.lag_bytes.remove(&labels);
        self.lag_seconds.remove(&labels);
        self.archive_pending.remove(&labels);
        self.archive_gaps.remove(&labels);
    }

    /// Record one completed round of `cluster`, that took `took`. Its spec allows `max_lag`
    /// bytes of lag to a candidate, and it has virtual names `names` (`namespace/name`).
    pub fn record_round(
        &self,
        cluster: &str,
        round: &Round,
        max_lag: u64,
        names: &[String],
        took: std::time::Duration,
    ) {
        let labels = cluster_labels(cluster);
        self.rounds.get_or_create(&labels).inc();
        // At 0 from the first round, so that the first failure shows as an increase.
        let _ = self.round_failures.get_or_create(&labels);
        self.round_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.last_round
            .get_or_create(&labels)
            .set(unix_seconds(jiff::Timestamp::now()));
        for (planned, error) in round.applied.failures() {
            self.action_failures
                .get_or_create(&ActionFailureLabels {
                    cluster: cluster.to_string(),
                    step: format!("{:?}", planned.action.step()).to_lowercase(),
                    kind: error.kind().to_string(),
                })
                .inc();
        }
        let status = &round.status;
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == findings::READY && c.status == "True");
        self.ready.get_or_create(&labels).set(ready as i64);
        self.epoch
            .get_or_create(&labels)
            .set(clamp(round.applied.journal.epoch));
        self.max_lag.get_or_create(&labels).set(clamp(max_lag));
        let blocked = status
            .conditions
            .iter()
            .find(|c| c.type_ == findings::PROMOTION_BLOCKED && c.status == "True")
            .map(|c| c.reason.clone());
        let members: BTreeSet<String> = status.members.iter().map(|m| m.name.clone()).collect();
        let names: BTreeSet<String> = names.iter().cloned().collect();
        let primary = status.current_primary.clone();
        let before = self
            .exported
            .lock()
            .expect("not poisoned")
            .insert(
                cluster.to_string(),
                Exported {
                    members: members.clone(),
                    names: names.clone(),
                    primary: primary.clone(),
                    blocked: blocked.clone(),
                },
            )
            .unwrap_or_default();
        for gone in before.members.difference(&members) {
            self.forget_member(cluster, gone);
        }
        let name_labels = |name: &String| ClusterNameLabels {
            cluster: cluster.into(),
            name: name.clone(),
        };
        for gone in before.names.difference(&names) {
            self.virtual_names.remove(&name_labels(gone));
        }
        for name in &names {
            self.virtual_names.get_or_create(&name_labels(name)).set(1);
        }
        if let Some(old) = before.primary.filter(|p| Some(p) != primary.as_ref()) {
            self.primary.remove(&member_labels(cluster, &old));
        }
        if let Some(primary) = &primary {
            self.primary
                .get_or_create(&member_labels(cluster, primary))
                .set(1);
        }
        if let Some(old) = before.blocked.filter(|b| Some(b) != blocked.as_ref()) {
            self.blocked.remove(&ReasonLabels {
                cluster: cluster.into(),
                reason: old,
            });
        }
        if let Some(reason) = blocked {
            self.blocked
                .get_or_create(&ReasonLabels {
                    cluster: cluster.into(),
                    reason,
                })
                .set(1);
        }
        self.record_members(cluster, round, &before.members);
        self.record_promotions(cluster, round);
        self.record_archive(cluster, round);
        self.record_backup(cluster, round);
    }

    fn backup_families(&self) -> [&Family<ClusterLabels, Gauge>; 9] {
        [
            &self.drill_passed,
            &self.drill_restore,
            &self.drill_finished,
            &self.backup_succeeded,
            &self.backup_completed,
            &self.backup_size,
            &self.backup_duration,
            &self.recoverable_earliest,
            &self.recoverable_latest,
        ]
    }

    fn record_backup(&self, cluster: &str, round: &Round) {
        let labels = cluster_labels(cluster);
        let Some(backup) = &round.status.backup else {
            for family in self.backup_families() {
                family.remove(&labels);
            }
            return;
        };
        let succeeded = round
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == crate::core::backups::BACKUP_SUCCEEDED && c.status == "True");
        self.backup_succeeded
            .get_or_create(&labels)
            .set(succeeded as i64);
        let seconds = |t: &str| t.parse::<jiff::Timestamp>().ok().map(|t| t.as_second());
        let set = |family: &Family<ClusterLabels, Gauge>, value: Option<i64>| match value {
            Some(value) => {
                family.get_or_create(&labels).set(value);
            }
            None => {
                family.remove(&labels);
            }
        };
        let last = backup.last_backup.as_ref();
        set(
            &self.backup_completed,
            last.and_then(|b| seconds(&b.finished_at)),
        );
        set(&self.backup_size, last.map(|b| clamp(b.size_bytes)));
        set(
            &self.backup_duration,
            last.and_then(|b| Some(seconds(&b.finished_at)? - seconds(&b.started_at)?)),
        );
        set(
            &self.recoverable_earliest,
            backup
                .recoverable
                .first()
                .and_then(|w| seconds(&w.earliest)),
        );
        set(
            &self.recoverable_latest,
            backup.recoverable.last().and_then(|w| seconds(&w.latest)),
        );
        let drill = backup.last_drill.as_ref();
        set(&self.drill_passed, drill.map(|d| d.passed as i64));
        set(
            &self.drill_restore,
            drill.and_then(|d| d.restore_seconds).map(clamp),
        );
        set(
            &self.drill_finished,
            drill.and_then(|d| seconds(&d.finished_at)),
        );
    }

    fn forget_archive(&self, labels: &ClusterLabels) {
        self.archiving.remove(labels);
        self.archive_lag_bytes.remove(labels);
        self.archive_lag_seconds.remove(labels);
    }

    fn record_archive(&self, cluster: &str, round: &Round) {
        let labels = cluster_labels(cluster);
        let Some(archive) = &round.status.archive else {
            self.forget_archive(&labels);
            for m in &round.status.members {
                let labels = member_labels(cluster, &m.name);
                self.archive_pending.remove(&labels);
                self.archive_gaps.remove(&labels);
            }
            return;
        };
        let flowing =
            round.status.conditions.iter().any(|c| {
                c.type_ == crate::core::archiving::CONTINUOUS_ARCHIVING && c.status == "True"
            });
        self.archiving.get_or_create(&labels).set(flowing as i64);
        let set = |family: &Family<ClusterLabels, Gauge>, value: Option<u64>| match value {
            Some(value) => {
                family.get_or_create(&labels).set(clamp(value));
            }
            None => {
                family.remove(&labels);
            }
        };
        set(&self.archive_lag_bytes, archive.lag_bytes);
        set(&self.archive_lag_seconds, archive.lag_seconds);
        for m in &archive.members {
            let labels = member_labels(cluster, &m.member);
            self.archive_pending
                .get_or_create(&labels)
                .set(clamp(m.pending_bytes));
            self.archive_gaps
                .get_or_create(&labels)
                .set(clamp(m.gap_count));
        }
    }

    fn record_members(&self, cluster: &str, round: &Round, known: &BTreeSet<String>) {
        let primary_durable = round
            .status
            .current_primary
            .as_ref()
            .and_then(|p| round.observed.members.get(p))
            .and_then(|o| o.durable);
        for m in &round.status.members {
            let labels = member_labels(cluster, &m.name);
            if !known.contains(&m.name) {
                // Every kind starts at 0, so that the first failure shows as an increase.
                for kind in ProbeErrorKind::ALL {
                    let _ = self.probe_errors.get_or_create(&ProbeLabels {
                        cluster: cluster.into(),
                        member: m.name.clone(),
                        kind: kind.as_str().into(),
                    });
                }
            }
            self.member_up
                .get_or_create(&labels)
                .set(m.reachable as i64);
            match m.lag_bytes {
                Some(bytes) => {
                    self.lag_bytes.get_or_create(&labels).set(clamp(bytes));
                }
                None => {
                    self.lag_bytes.remove(&labels);
                }
            }
            let observed = round.observed.members.get(&m.name);
            // Set only on a failed probe: the member did not answer this round.
            if let Some(kind) = observed.and_then(|o| o.error_kind) {
                self.probe_errors
                    .get_or_create(&ProbeLabels {
                        cluster: cluster.into(),
                        member: m.name.clone(),
                        kind: kind.as_str().into(),
                    })
                    .inc();
            }
            let seconds = observed.filter(|o| o.reachable).and_then(|o| {
                let behind = o.applied.zip(primary_durable).is_some_and(|(a, p)| a < p);
                let age = o.replay_age_ms?;
                Some(if behind { age as f64 / 1000.0 } else { 0.0 })
            });
            match seconds {
                Some(seconds) => {
                    self.lag_seconds.get_or_create(&labels).set(seconds);
                }
                None => {
                    self.lag_seconds.remove(&labels);
                }
            }
        }
    }

    fn record_promotions(&self, cluster: &str, round: &Round) {
        let label = |kind| KindLabels {
            cluster: cluster.into(),
            kind: kind_label(kind).into(),
        };
        for kind in PROMOTION_KINDS {
            // At 0 from the first round, so that the first promotion shows as an increase.
            let _ = self.promotions.get_or_create(&label(kind));
            let last = round
                .status
                .history
                .iter()
                .rev()
                .find(|r| r.kind == kind && r.outcome == Outcome::Succeeded)
                .and_then(|r| r.finished_at.parse::<jiff::Timestamp>().ok());
            if let Some(at) = last {
                self.last_promotion
                    .get_or_create(&label(kind))
                    .set(unix_seconds(at));
            }
        }
        for entry in round.finished_operations() {
            let started = entry.started_at.parse::<jiff::Timestamp>().ok();
            let finished = entry.finished_at.parse::<jiff::Timestamp>().ok();
            let seconds = match (started, finished) {
                (Some(s), Some(f)) => f.duration_since(s).as_secs_f64(),
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
            if entry.outcome != Outcome::Succeeded {
                continue;
            }
            self.promotions.get_or_create(&label(entry.kind)).inc();
            self.promotion_seconds
                .get_or_create(&label(entry.kind))
                .observe(seconds);
            // A failed primary could accept writes until it last answered or its lease was
            // last renewed; a switchover stops them once it starts.
            let writes_stopped = match entry.kind {
                OperationKind::Failover => entry
                    .from
                    .as_ref()
                    .and_then(|from| round.observed.members.get(from))
                    .and_then(|o| o.unreachable_since)
                    .or(started),
                OperationKind::Switchover => started,
            };
            if let (Some(stopped), Some(finished)) = (writes_stopped, finished) {
                let gap = finished.duration_since(stopped).as_secs_f64().max(0.0);
                self.write_gap.get_or_create(&label(entry.kind)).set(gap);
            }
        }
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

    /// Every family's name, as registered (counters gain `_total` when exposed).
    pub fn families(&self) -> &[String] {
        &self.families
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        if let Some(leading) = self.leading.lock().expect("not poisoned").as_ref() {
            self.leader.set(leading() as i64);
        }
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
    // Bound here, so a busy port is the caller's error rather than a background task's.
    let listener = std::net::TcpListener::bind(addr)?;
    // Dropped, the endpoint serves on for the life of the process.
    AdminEndpoint::serve(listener, metrics).map(drop)
}

/// How long a stopped admin endpoint waits for requests on connections it accepted before it
/// stopped: a client that has connected sends its request at once.
const REQUEST_ON_ITS_WAY: Duration = Duration::from_secs(1);

/// `/metrics` and `/healthz` served from a background task, which can stop taking clients and
/// answer those it took (a process handing its sockets to its successor). Dropped, it serves
/// on, detached, like a dropped task.
pub struct AdminEndpoint {
    /// A duplicate of the listening socket, to pass on.
    pub listener: std::net::TcpListener,
    stop_accepting: tokio::sync::watch::Sender<bool>,
    shut_down: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AdminEndpoint {
    /// Serve on `listener`.
    pub fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let app = axum::Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(|| async { "ok\n" }))
            .with_state(metrics);
        let kept = listener.try_clone()?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (stop_accepting, stopped) = tokio::sync::watch::channel(false);
        let listener = UntilStopped {
            acceptor: crate::accept::Acceptor::new(
                listener,
                "admin",
                &crate::accept::ADMIN_CLIENTS,
            ),
            stopped,
        };
        let (shut_down, mut shutting_down) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(async move { until_set(&mut shutting_down).await })
                .await
            {
                tracing::error!(%addr, error = %e, "admin endpoint stopped");
            }
        });
        Ok(Self {
            listener: kept,
            stop_accepting,
            shut_down,
            task,
        })
    }

    /// Take no more clients. The listening socket stays open, for whoever else holds it.
    pub fn stop_accepting(&self) {
        self.stop_accepting.send_replace(true);
    }

    /// Stop accepting, answer the requests of the clients already accepted, and close their
    /// connections, within `grace`.
    pub async fn drain(self, grace: Duration) {
        self.stop_accepting();
        // A client accepted an instant ago has its request on the way. Closing its connection
        // now, idle as it looks, would reset it, so give the request time to arrive.
        let settle = REQUEST_ON_ITS_WAY.min(grace);
        let began = tokio::time::Instant::now();
        let deadline = began + grace;
        while crate::accept::ADMIN_CLIENTS.open() > 0 && began.elapsed() < settle {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.shut_down.send_replace(true);
        let mut task = self.task;
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Resolves once `flag` is set; never, if its sender is gone (the endpoint was dropped, and
/// serves on).
async fn until_set(flag: &mut tokio::sync::watch::Receiver<bool>) {
    if flag.wait_for(|&set| set).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A listener that stops taking clients, without closing its socket, once told to.
struct UntilStopped {
    acceptor: crate::accept::Acceptor,
    stopped: tokio::sync::watch::Receiver<bool>,
}

impl axum::serve::Listener for UntilStopped {
    type Io = crate::accept::AdmittedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let Self { acceptor, stopped } = self;
        tokio::select! {
            accepted = axum::serve::Listener::accept(acceptor) => accepted,
            () = until_set(stopped) => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        axum::serve::Listener::local_addr(&self.acceptor)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{AdminEndpoint, Metrics};

    /// A client that connected before the endpoint stopped, and whose request arrives after,
    /// is answered rather than reset: it is what a process handing its sockets over does to
    /// a health check in flight.
    #[tokio::test]
    async fn a_stopped_admin_endpoint_answers_the_clients_it_accepted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = AdminEndpoint::serve(listener, Arc::new(Metrics::default())).unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Accepted by the endpoint before it is told to stop.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let drained = tokio::spawn(admin.drain(Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok\n"), "{answer}");
        tokio::time::timeout(Duration::from_secs(5), drained)
            .await
            .expect("the drain ends within its grace")
            .unwrap();
    }

    /// Each failed action is counted by its step and the kind of its error; an action that
    /// was done is not.
    #[test]
    fn failed_actions_are_counted_by_step_and_kind() {
        use crate::{
            api::ReplicationClusterStatus,
            core::{
                engine::EngineError,
                plan::{Action, PlannedAction},
                reconcile::Round,
                status::{ActError, ActionResult},
            },
        };
        let planned = |action| PlannedAction {
            action,
            why: "the test says so".into(),
            required: true,
            by_person: false,
        };
        let promote = planned(Action::Promote {
            member: "b".into(),
            epoch: 2,
        });
        let fence = planned(Action::Fence { member: "a".into() });
        let auth = ActError::Engine(EngineError::Auth {
            address: "b:5432".into(),
            message: "password authentication failed".into(),
        });
        let round = Round::applied(
            vec![
                (fence, ActionResult::Done),
                (promote, ActionResult::Failed(auth)),
            ],
            Default::default(),
            ReplicationClusterStatus::default(),
        );
        let metrics = Metrics::default();
        metrics.record_round("default/orders", &round, 0, &[], Duration::ZERO);
        metrics.record_round("default/orders", &round, 0, &[], Duration::ZERO);
        let text = metrics.render();
        assert!(
            text.contains(
                "replicant_action_failures_total{cluster=\"default/orders\",step=\"promote\",kind=\"auth\"} 2"
            ),
            "{text}"
        );
        assert!(!text.contains("step=\"fence\""), "{text}");
    }
}
