//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder runs the controllers.
//!
//! Expiry is judged on the local clock from when this process last saw the lease change (as
//! client-go does), so clock skew between operator replicas cannot shorten it. The holder gives
//! up once it has failed to renew for `renew_deadline`, which is shorter than the lease, so it
//! stops acting before anyone else may start. Touches only the one Lease object.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::Mutex;

use super::call::{ApiError, call};

#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub name: String,
    pub namespace: String,
    /// How long a silent holder keeps the lease.
    pub duration: Duration,
    /// The holder steps down after failing to renew for this long (less than `duration`).
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

pub struct Elector {
    api: Api<Lease>,
    options: LeaseOptions,
    identity: String,
    /// The other holder's record as last seen, and when this process saw it change.
    seen: Mutex<Option<Sighting>>,
    /// Until when this process may act: the start of its last successful renewal plus the
    /// renew deadline. Monotonic, so a process frozen past it stops acting the moment it wakes.
    valid_until: std::sync::Mutex<Option<Instant>>,
}

/// A lease record held by someone else, and when this process first saw it in that state.
#[derive(Clone, Debug, PartialEq)]
struct Sighting {
    holder: Option<String>,
    renewed: Option<Timestamp>,
    at: Instant,
}

impl Elector {
    pub fn new(client: kube::Client, options: LeaseOptions, identity: String) -> Self {
        Elector {
            api: Api::namespaced(client, &options.namespace),
            options,
            identity,
            seen: Mutex::new(None),
            valid_until: std::sync::Mutex::new(None),
        }
    }

    /// Whether this process holds the lease now (checked before every reconcile round).
    pub fn is_leading(&self) -> bool {
        self.valid_until
            .lock()
            .expect("not poisoned")
            .is_some_and(|until| Instant::now() < until)
    }

    fn renewed(&self, started: Instant) {
        *self.valid_until.lock().expect("not poisoned") =
            Some(started + self.options.renew_deadline);
    }

    fn lost(&self) {
        *self.valid_until.lock().expect("not poisoned") = None;
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Wait until this process holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.options.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the leader lease"),
            }
            tokio::time::sleep(self.options.retry_period).await;
        }
    }

    /// Keep renewing; returns when leadership is lost (renewal failed for `renew_deadline`, or
    /// someone else holds the lease).
    pub async fn hold(&self) {
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(self.options.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.options.name, "another replica holds the lease");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the leader lease"),
            }
            if last_renewal.elapsed() >= self.options.renew_deadline {
                tracing::error!(lease = %self.options.name, "lease not renewed within the renew deadline");
                return;
            }
        }
    }

    /// Hand the lease over at once on a clean shutdown instead of letting it expire.
    pub async fn release(&self) {
        self.lost();
        let Ok(Some(mut lease)) = call("get lease", self.api.get_opt(&self.options.name)).await
        else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        let name = self.options.name.clone();
        match call(
            "release lease",
            self.api.replace(&name, &PostParams::default(), &lease),
        )
        .await
        {
            Ok(_) => tracing::info!(lease = %name, "leadership released"),
            Err(e) => tracing::warn!(error = %e, "cannot release the leader lease"),
        }
    }

    /// One attempt: `Ok(true)` when this process holds the lease afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool, ApiError> {
        let started = Instant::now();
        let held = self.attempt().await;
        match held {
            Ok(true) => self.renewed(started),
            Ok(false) => self.lost(),
            Err(_) => {}
        }
        held
    }

    async fn attempt(&self) -> Result<bool, ApiError> {
        let now = Timestamp::now();
        let name = &self.options.name;
        let duration_seconds = i32::try_from(self.options.duration.as_secs().max(1)).unwrap_or(15);
        let Some(mut lease) = call("get lease", self.api.get_opt(name)).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match call(
                "create lease",
                self.api.create(&PostParams::default(), &lease),
            )
            .await
            {
                Ok(_) => Ok(true),
                Err(e) if e.is_conflict() => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if !mine && holder.is_some() {
            let renewed = spec.renew_time.as_ref().map(|t| t.0);
            let held_for = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(duration_seconds)).unwrap_or(0),
            );
            let mut seen = self.seen.lock().await;
            let since = match &*seen {
                Some(s) if s.holder == holder && s.renewed == renewed => s.at,
                _ => {
                    let at = Instant::now();
                    *seen = Some(Sighting {
                        holder: holder.clone(),
                        renewed,
                        at,
                    });
                    at
                }
            };
            if since.elapsed() < held_for {
                return Ok(false);
            }
            tracing::info!(previous = ?holder, "the leader lease expired; taking it over");
        }
        if !mine {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(duration_seconds);
        spec.renew_time = Some(MicroTime(now));
        // The resourceVersion read above makes this a compare-and-swap: of two contenders, one wins.
        match call(
            "update lease",
            self.api.replace(name, &PostParams::default(), &lease),
        )
        .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }
}
