//! The shared reconciler's decisions around a round, against an in-memory runtime adapter (a test
//! double of a runtime: no API server or files behind it) and, where a round runs, a Redis
//! engine over ports where nothing listens.
use std::sync::Mutex;

use super::*;
use crate::{
    api::MemberStatus,
    core::{
        journal::Journal,
        reconcile::Revision,
        routes::{Endpoint, RouteError},
    },
};

#[test]
fn an_invalid_spec_stalls_with_the_problems_and_a_valid_one_clears_it() {
    let problems =
        vec!["ReplicationCluster/orders: spec.primary: unknown member \"z\"".to_string()];
    let stalled = with_spec_problems(ReplicationClusterStatus::default(), &problems);
    let get = |s: &ReplicationClusterStatus, t: &str| {
        s.conditions.iter().find(|c| c.type_ == t).cloned().unwrap()
    };
    assert_eq!(get(&stalled, SPEC_VALID).status, "False");
    assert!(get(&stalled, SPEC_VALID).message.contains("spec.primary"));
    assert_eq!(get(&stalled, findings::STALLED).status, "True");
    assert_eq!(get(&stalled, findings::READY).status, "False");
    let fixed = with_spec_problems(stalled, &[]);
    assert_eq!(get(&fixed, SPEC_VALID).status, "True");
}

#[test]
fn offsets_alone_are_written_only_when_the_last_write_is_stale() {
    let member = |offset| MemberStatus {
        name: "a".into(),
        reachable: true,
        offset: Some(offset),
        ..Default::default()
    };
    let before = ReplicationClusterStatus {
        epoch: 1,
        members: vec![member(100)],
        ..Default::default()
    };
    let moved = ReplicationClusterStatus {
        members: vec![member(200)],
        ..before.clone()
    };
    assert!(worth_writing(None, &before, true));
    assert!(!worth_writing(Some(&before), &before, false));
    assert!(!worth_writing(Some(&before), &moved, true));
    assert!(worth_writing(Some(&before), &moved, false));
    let promoted = ReplicationClusterStatus {
        epoch: 2,
        ..before.clone()
    };
    assert!(worth_writing(Some(&before), &promoted, true));
}

#[test]
fn transient_errors_back_off_doubling_to_a_cap() {
    let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_millis() as u64).collect();
    assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
    assert_eq!(backoff(u32::MAX), Duration::from_secs(10));
    assert_eq!(backoff(0), Duration::from_millis(500));
}

#[derive(Default)]
struct FakeRuntime {
    acting: bool,
    secrets: Option<Result<ClusterSecrets, SecretsError>>,
    /// The journal and how many times it was saved (its revision).
    journal: Mutex<(Journal, u64)>,
    routes: Mutex<std::collections::HashMap<String, Vec<String>>>,
    stored: Mutex<Vec<(ReplicationClusterStatus, Option<String>)>>,
    notices: Mutex<Vec<String>>,
}

impl FakeRuntime {
    fn acting() -> Self {
        Self {
            acting: true,
            ..Default::default()
        }
    }

    fn stored(&self) -> Vec<(ReplicationClusterStatus, Option<String>)> {
        self.stored.lock().unwrap().clone()
    }

    fn notices(&self) -> Vec<String> {
        self.notices.lock().unwrap().clone()
    }
}

#[async_trait]
impl JournalStore for FakeRuntime {
    async fn load(&self) -> Result<(Journal, Revision), StoreError> {
        let (journal, saves) = self.journal.lock().unwrap().clone();
        Ok((journal, Revision(Some(saves.to_string()))))
    }

    async fn save(&self, journal: &Journal, expected: &Revision) -> Result<Revision, StoreError> {
        let mut stored = self.journal.lock().unwrap();
        if *expected != Revision(Some(stored.1.to_string())) {
            return Err(StoreError::Conflict {
                expected: expected.clone(),
            });
        }
        *stored = (journal.clone(), stored.1 + 1);
        Ok(Revision(Some(stored.1.to_string())))
    }
}

#[async_trait]
impl Router for FakeRuntime {
    async fn current(&self, name: &str) -> Option<Vec<String>> {
        self.routes.lock().unwrap().get(name).cloned()
    }

    async fn retarget(&self, name: &str, endpoints: &[Endpoint]) -> Result<(), RouteError> {
        let members = endpoints.iter().map(|e| e.member.clone()).collect();
        self.routes
            .lock()
            .unwrap()
            .insert(name.to_string(), members);
        Ok(())
    }
}

#[async_trait]
impl RuntimeAdapter for FakeRuntime {
    fn may_act(&self) -> bool {
        self.acting
    }

    async fn secrets(
        &self,
        _spec: &ReplicationClusterSpec,
    ) -> Result<ClusterSecrets, SecretsError> {
        self.secrets
            .clone()
            .unwrap_or_else(|| Ok(ClusterSecrets::default()))
    }

    fn journal(&self) -> &dyn JournalStore {
        self
    }

    fn router(&self) -> &dyn Router {
        self
    }

    fn volatile_refresh(&self) -> Duration {
        Duration::from_secs(30)
    }

    async fn store_status(
        &self,
        status: &ReplicationClusterStatus,
        error: Option<&str>,
    ) -> Result<(), StatusStoreError> {
        self.stored
            .lock()
            .unwrap()
            .push((status.clone(), error.map(str::to_string)));
        Ok(())
    }

    async fn notify(&self, notice: Notice<'_>) {
        let text = match notice {
            Notice::InvalidSpec(problems) => format!("invalid: {}", problems.join("; ")),
            Notice::CannotManage(why) => format!("cannot manage: {why}"),
            Notice::Round { .. } => "round".to_string(),
        };
        self.notices.lock().unwrap().push(text);
    }
}

/// A Redis cluster whose members' ports take no connection.
fn orders(primary: &str) -> Desired {
    let spec: ReplicationClusterSpec = serde_yaml::from_str(&format!(
        "engine: redis\nprimary: {primary}\nmembers:\n  - {{name: a, address: \"127.0.0.1:1\"}}\n  - {{name: b, address: \"127.0.0.1:2\"}}\n"
    ))
    .unwrap();
    Desired::new("orders".into(), spec, [])
}

fn input(desired: Desired, problems: &[&str]) -> RoundInput {
    RoundInput {
        desired,
        problems: problems.iter().map(|p| p.to_string()).collect(),
        generation: Some(3),
        stored: None,
    }
}

fn condition(status: &ReplicationClusterStatus, type_: &str) -> (String, String) {
    let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
    (c.status.clone(), c.reason.clone())
}

#[tokio::test]
async fn a_process_that_may_not_act_probes_and_touches_nothing_else() {
    let host = FakeRuntime::default();
    let mut reconciler = ClusterReconciler::new("default", "orders", None);
    let desired = orders("a");
    let wait = reconciler.round(input(desired.clone(), &[]), &host).await;
    assert_eq!(wait, Some(crate::core::plan::probe_interval(&desired)));
    assert!(host.stored().is_empty());
    assert!(host.notices().is_empty());
    assert_eq!(host.journal.lock().unwrap().1, 0, "no journal written");
    // It remembers since when each member has been silent, should it come to lead.
    let silent_since = |r: &ClusterReconciler| {
        r.memory().members["a"]
            .first_failure
            .expect("the failed probe is remembered")
    };
    let first = silent_since(&reconciler);
    reconciler.round(input(desired, &[]), &host).await;
    assert_eq!(
        silent_since(&reconciler),
        first,
        "counted from the first failure"
    );
    assert!(reconciler.last_good().is_some());

    // An invalid spec is not taken up while following either.
    let mut reconciler = ClusterReconciler::new("default", "orders", None);
    let wait = reconciler.round(input(orders("z"), &["bad"]), &host).await;
    assert_eq!(wait, Some(NOT_ACTING_RETRY));
    assert!(reconciler.last_good().is_none());
}

#[tokio::test]
async fn a_spec_invalid_from_the_start_is_reported_once_and_waits_for_a_change() {
    let host = FakeRuntime::acting();
    let mut reconciler = ClusterReconciler::new("default", "orders", None);
    let problem = "ReplicationCluster/orders: spec.primary: unknown member \"z\"";
    for _ in 0..2 {
        let wait = reconciler
            .round(input(orders("z"), &[problem]), &host)
            .await;
        assert_eq!(wait, None, "nothing to do until the spec changes");
    }
    assert_eq!(host.notices(), [format!("invalid: {problem}")]);
    let stored = host.stored();
    assert_eq!(stored.len(), 1, "the same status is stored once");
    let status = &stored[0].0;
    assert_eq!(
        condition(status, SPEC_VALID),
        ("False".into(), "InvalidSpec".into())
    );
    assert_eq!(condition(status, findings::STALLED).0, "True");
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(host.journal.lock().unwrap().1, 0, "no journal written");
}

#[tokio::test]
async fn a_cluster_without_its_secrets_stalls_and_says_so_once_per_reason() {
    let mut host = FakeRuntime::acting();
    host.secrets = Some(Err(SecretsError::unresolved(
        "spec.credentials.passwordEnv",
        "environment variable PW is not set",
    )));
    let mut reconciler = ClusterReconciler::new("default", "orders", None);
    for _ in 0..2 {
        let wait = reconciler.round(input(orders("a"), &[]), &host).await;
        assert_eq!(wait, Some(CANNOT_MANAGE_RETRY));
    }
    host.secrets = Some(Err(SecretsError::unresolved(
        "spec.credentials.passwordFile",
        "/run/pw: not found",
    )));
    reconciler.round(input(orders("a"), &[]), &host).await;
    assert_eq!(
        host.notices(),
        [
            "cannot manage: spec.credentials.passwordEnv: environment variable PW is not set",
            "cannot manage: spec.credentials.passwordFile: /run/pw: not found"
        ]
    );
    let stored = host.stored();
    assert_eq!(stored.len(), 2, "stored again only when the reason changed");
    let (status, error) = stored.last().unwrap();
    assert_eq!(
        condition(status, findings::STALLED),
        ("True".into(), "CannotManage".into())
    );
    assert_eq!(condition(status, findings::READY).0, "False");
    assert!(error.as_deref().unwrap().contains("passwordFile"));
}

#[tokio::test]
async fn an_invalid_edit_keeps_the_last_good_spec_running_and_a_fix_clears_it() {
    let host = FakeRuntime::acting();
    let mut reconciler = ClusterReconciler::new("default", "orders", None);
    let wait = reconciler.round(input(orders("a"), &[]), &host).await;
    assert!(wait.is_some(), "a round ran and asked to be run again");
    assert_eq!(host.notices(), ["round"]);

    let problem = "ReplicationCluster/orders: spec.primary: unknown member \"z\"";
    let wait = reconciler
        .round(input(orders("z"), &[problem]), &host)
        .await;
    assert!(wait.is_some(), "the last good spec keeps being reconciled");
    assert_eq!(reconciler.last_good().unwrap().spec.primary, "a");
    let (status, _) = host.stored().last().cloned().unwrap();
    assert_eq!(condition(&status, SPEC_VALID).0, "False");
    assert_eq!(condition(&status, findings::STALLED).0, "True");
    assert!(
        status.members.iter().any(|m| m.name == "a"),
        "members are still observed: {status:?}"
    );

    reconciler.round(input(orders("b"), &[]), &host).await;
    assert_eq!(reconciler.last_good().unwrap().spec.primary, "b");
    let (status, _) = host.stored().last().cloned().unwrap();
    assert_eq!(
        condition(&status, SPEC_VALID),
        ("True".into(), "Valid".into())
    );
    assert_eq!(
        host.notices()
            .iter()
            .filter(|n| n.starts_with("invalid"))
            .count(),
        1
    );
}
