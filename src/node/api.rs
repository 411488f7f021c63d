//! The agent's HTTP API: `GET /v1/status`, `GET /v1/lease` (a nonce), `POST /v1/start`,
//! `/v1/stop`, `/v1/lease`,
//! `/v1/initialize`, `/v1/clone`, `/v1/standby`, `/v1/rewind`; and between agents and for
//! promotions, `POST /v1/confirm` (a peer's lease), `/v1/release` (a peer gave its lease up)
//! and `/v1/raise` (the epoch); and before a
//! failover, `POST /v1/reach` (does this host reach the primary); `POST /v1/archive` (where the
//! host archives its WAL), `POST /v1/backup` (a base backup, in the background) and
//! `POST /v1/drill` (a restore drill, in the background). Every request carries the bearer token; every command that acts on
//! postgres carries the epoch.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;

use super::{
    Agent, HeldLease, Inner, archive,
    host::{self, HostError},
    peers,
    postmaster::{Postmaster, StopMode},
};
use crate::engine::postgres::{
    agent::{AgentStatus, LeaseNonce, PeerView, Raised, Reached, Rejoined, Source},
    archive::{
        ArchiveReport, ArchiveSettings, BackupOutcome, BackupReport, BackupRequest, DrillReport,
        DrillRequest, RecoveryRequest,
    },
    controldata::{self, ControlDataError},
    ping,
};

/// How long postgres may take to accept connections after a start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/start", post(start))
        .route("/v1/initialize", post(initialize))
        .route("/v1/stop", post(stop))
        .route("/v1/lease", get(lease_nonce).post(lease))
        .route("/v1/confirm", post(confirm))
        .route("/v1/release", post(release))
        .route("/v1/raise", post(raise))
        .route("/v1/reach", post(reach))
        .route("/v1/archive", post(archive_settings))
        .route("/v1/backup", post(take_backup))
        .route("/v1/drill", post(run_drill))
        .route("/v1/clone", post(clone))
        .route("/v1/standby", post(standby))
        .route("/v1/rewind", post(rewind))
        .layer(middleware::from_fn_with_state(agent.clone(), authenticate))
        .with_state(agent)
}

/// Compare without stopping at the first difference, so timing tells nothing of the token.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

async fn authenticate(State(agent): State<Arc<Agent>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !same_secret(given.as_bytes(), agent.options.token.expose().as_bytes()) {
        return refuse(StatusCode::UNAUTHORIZED, "a valid bearer token is required")
            .into_response();
    }
    next.run(request).await
}

/// A request the agent will not carry out, and why: `{"error": "..."}` with the status.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.error })),
        )
            .into_response()
    }
}

fn refuse(status: StatusCode, error: impl std::fmt::Display) -> Refusal {
    Refusal {
        status,
        error: error.to_string(),
    }
}

/// How soon an operation that failed may be asked for again: a failing copy is not retried
/// at every controller round.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The agent's report. `inner` is `None` while an operation holds the data directory: postgres
/// is then reported as not running, and the data as not readable.
async fn describe(agent: &Agent, inner: Option<&mut Inner>) -> AgentStatus {
    let seen = inner.map(running_now);
    describe_seen(agent, seen).await
}

/// Whether postgres runs now, and its PID; a postmaster that exited is let go.
fn running_now(inner: &mut Inner) -> (bool, Option<u32>) {
    let running = inner.postmaster.as_mut().is_some_and(Postmaster::running);
    if !running {
        inner.postmaster = None;
    }
    (running, inner.postmaster.as_ref().and_then(Postmaster::pid))
}

/// The agent's report, given whether postgres runs (`None`: unknown, an operation holds the
/// data directory).
async fn describe_seen(agent: &Agent, seen: Option<(bool, Option<u32>)>) -> AgentStatus {
    let durable = agent.durable();
    let lease = agent.held_lease().map(|held| held.until);
    let (busy, last_operation, failure, rejoined) = {
        let activity = agent.activity.lock().expect("lock");
        let last = activity.last.as_ref();
        (
            activity.current.map(str::to_string),
            last.map(|l| l.operation.to_string()),
            last.and_then(|l| l.outcome.as_ref().err().cloned()),
            last.and_then(|l| l.outcome.as_ref().ok().cloned().flatten()),
        )
    };
    let (last_error, last_failure) = failure.map(|f| (f.message, f.kind)).unzip();
    let mut status = AgentStatus {
        running: false,
        pid: None,
        epoch: durable.epoch,
        fenced: durable.fenced,
        lease_remaining_ms: lease.map(|until| {
            until
                .saturating_duration_since(std::time::Instant::now())
                .as_millis() as u64
        }),
        control_data: None,
        control_data_error: None,
        empty: false,
        standby: false,
        history: None,
        busy,
        last_operation,
        last_error,
        last_failure,
        rejoined,
        upstream_auth: agent.upstream_auth.clone(),
        archive: Some(archive::report(&agent.options.state, &agent.options.data)),
        backup: Some(agent.backups.lock().expect("lock").clone()),
        drill: Some(agent.drills.lock().expect("lock").clone()),
    };
    let Some((running, pid)) = seen else {
        return status;
    };
    (status.running, status.pid) = (running, pid);
    let (bin, data) = (agent.options.bin.clone(), agent.options.data.clone());
    let control = tokio::task::spawn_blocking(move || controldata::read(&bin, &data))
        .await
        .unwrap_or_else(|e| Err(ControlDataError::Failed(e.to_string())));
    status.empty = !host::holds_data(&agent.options.data);
    status.standby = agent.is_standby();
    status.history = control
        .as_ref()
        .ok()
        .and_then(|c| host::timeline_history(&agent.options.data, c.checkpoint_timeline));
    status.control_data = control.as_ref().ok().cloned();
    status.control_data_error = control.err().map(|e| e.to_string());
    status
}

/// How long a report waits for a stop to let go of the data directory before it reports
/// postgres as unknown (not running): well within the controller's quickest call timeout.
const REPORT_WAIT: Duration = Duration::from_millis(100);

/// The agent's report now, without waiting for an operation under way. The data directory's
/// lock is held only to see whether postgres runs, not while its control file is read, so
/// that two callers at once (the controller and a peer, say) both see it.
async fn report(agent: &Agent) -> AgentStatus {
    let seen = match agent.inner.clone().try_lock_owned() {
        Ok(mut inner) => Some(running_now(&mut inner)),
        Err(_) if agent.activity.lock().expect("lock").current.is_none() => {
            tokio::time::timeout(REPORT_WAIT, agent.inner.clone().lock_owned())
                .await
                .ok()
                .map(|mut inner| running_now(&mut inner))
        }
        Err(_) => None,
    };
    describe_seen(agent, seen).await
}

async fn status(State(agent): State<Arc<Agent>>) -> Json<AgentStatus> {
    Json(report(&agent).await)
}

/// Take `epoch` as the newest, recorded before anything is done; refuse an older one.
fn accept_epoch(agent: &Agent, epoch: u64) -> Result<(), Refusal> {
    let seen = agent.durable().epoch;
    if epoch < seen {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!(
                "epoch {epoch} is older than {seen}, the highest this agent has seen: a newer controller decision stands"
            ),
        ));
    }
    agent
        .record(|durable| durable.epoch = durable.epoch.max(epoch))
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e))
}

#[derive(Deserialize)]
struct Command {
    epoch: u64,
}

/// Start postgres as it is, in the background; a former primary only under a lease.
async fn start(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<Command>,
) -> Result<Json<AgentStatus>, Refusal> {
    // A standby commits nothing: it may start while fenced (that is how an old primary rejoins).
    if agent.durable().fenced && !agent.is_standby() {
        return Err(refuse(
            StatusCode::CONFLICT,
            "fenced: the controller's lease lapsed while postgres ran; it stays down until the lease is renewed",
        ));
    }
    begin(&agent, command.epoch, Operation::Start).await
}

#[derive(Deserialize)]
struct Initialize {
    epoch: u64,
    /// Recover the data set from a repository instead of creating an empty one.
    #[serde(default)]
    recovery: Option<RecoveryRequest>,
}

/// Create a new data set in the empty data directory (empty, or recovered from a repository)
/// and start it as a primary, in the background. Refused where any data set is, or postgres
/// runs.
async fn initialize(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<Initialize>,
) -> Result<Json<AgentStatus>, Refusal> {
    if host::holds_data(&agent.options.data) {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!(
                "{} already holds a data set: a new one is only created in an empty directory",
                agent.options.data.display()
            ),
        ));
    }
    let operation = match command.recovery {
        Some(request) => Operation::Recover(Box::new(request)),
        None => Operation::Initialize,
    };
    begin(&agent, command.epoch, operation).await
}

/// Start postgres unless it runs, and wait until it accepts connections.
async fn ensure_running(agent: &Agent, inner: &mut Inner) -> Result<(), HostError> {
    if inner.postmaster.as_mut().is_some_and(Postmaster::running) {
        return Ok(());
    }
    let mut postmaster = Postmaster::start(&agent.options)?;
    let ready = postmaster
        .wait_ready(&agent.options.bin, agent.options.port, START_TIMEOUT)
        .await;
    inner.postmaster = Some(postmaster);
    ready
}

#[derive(Deserialize)]
struct Stop {
    epoch: u64,
    mode: StopMode,
}

async fn stop(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<Stop>,
) -> Result<Json<AgentStatus>, Refusal> {
    accept_epoch(&agent, command.epoch)?;
    let mut inner = match agent.inner.clone().try_lock_owned() {
        Ok(inner) => inner,
        // The operation stopped postgres before it began and brings it back as a standby:
        // nothing here accepts writes. Waiting for it would only stop the standby it makes.
        Err(_) if standby_operation_under_way(&agent) => {
            return Ok(Json(describe(&agent, None).await));
        }
        Err(_) => agent.inner.clone().lock_owned().await,
    };
    inner.stop_postgres(command.mode).await;
    // The lease guarded the postgres just stopped: renewed on, it would only leave peers'
    // confirmations for a promotion to wait out. It ends as a lapse does, fenced until the
    // controller grants one again, and the peers are told to forget what they confirmed of it.
    let lease = agent.lease.lock().expect("lock").take();
    if let Some(lease) = lease
        && !agent.is_standby()
    {
        agent
            .record(|durable| durable.fenced = true)
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        agent.release_lease(lease).await;
    }
    Ok(Json(describe(&agent, Some(&mut inner)).await))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lease {
    epoch: u64,
    ttl_ms: u64,
    nonce: LeaseNonce,
    /// This host's peers, for renewals through them, alongside the controller and without it.
    #[serde(default)]
    view: Option<PeerView>,
}

async fn lease_nonce(State(agent): State<Arc<Agent>>) -> Json<LeaseNonce> {
    Json(agent.lease_nonce())
}

/// Renew the lease for `ttlMs` from the nonce's issue (on the agent's monotonic clock),
/// lifting a fence; a renewal that arrives after that has run out grants nothing. Never waits
/// for an operation on the data directory.
async fn lease(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<Lease>,
) -> Result<Json<AgentStatus>, Refusal> {
    accept_epoch(&agent, command.epoch)?;
    let issued = agent
        .nonce_issued_at(command.nonce)
        .map_err(|why| refuse(StatusCode::CONFLICT, why))?;
    let ttl = Duration::from_millis(command.ttl_ms.min(peers::MAX_TTL_MS));
    let until = issued + ttl;
    if until > std::time::Instant::now() {
        agent
            .record(|durable| durable.fenced = false)
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        let mut lease = agent.lease.lock().expect("lock");
        // A renewal overtaken by a later one shortens nothing.
        let until = lease
            .filter(|held| held.epoch == command.epoch)
            .map_or(until, |held| held.until.max(until));
        *lease = Some(HeldLease {
            epoch: command.epoch,
            until,
            ttl,
        });
        drop(lease);
        // The controller renews only a server that answers its probes (or that its host is
        // starting): as good a proof of life as a ping sent when the nonce was issued.
        agent.postgres_answered(issued);
    }
    if let Some(view) = command.view {
        agent.learn_peers(view);
    }
    Ok(Json(report(&agent).await))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Confirm {
    epoch: u64,
    /// The member whose lease it is.
    member: String,
    /// Where its postgres is reached (`host:port`), if the controller said.
    #[serde(default)]
    address: Option<String>,
    ttl_ms: u64,
}

/// Confirm a peer's lease at its epoch for `ttlMs` from now, on this agent's clock: a promise
/// that no promotion raising this agent proceeds before it ends. Refused once this host finds
/// it no longer reaches the peer's postgres (when its address is given), once a newer epoch is
/// seen, and while this agent holds a lease itself.
async fn confirm(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<Confirm>,
) -> Result<Json<serde_json::Value>, Refusal> {
    let ttl = command.ttl_ms.min(peers::MAX_TTL_MS);
    if let Some(address) = &command.address
        && let Some(why) = agent.unreached(address, Duration::from_millis(ttl))
    {
        let refusal = format!(
            "this host no longer reaches {}'s postgres at {address}: {why}",
            command.member
        );
        tracing::info!(member = %command.member, epoch = command.epoch, %refusal, "a peer's lease is not confirmed");
        return Err(refuse(StatusCode::CONFLICT, refusal));
    }
    // Recorded first: after a restart this agent owes that long to the next promotion.
    agent
        .record(|durable| durable.promise_ttl_ms = durable.promise_ttl_ms.max(ttl))
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let mut promises = agent.promises.lock().expect("lock");
    let seen = agent.durable().epoch;
    if command.epoch > seen {
        accept_epoch(&agent, command.epoch)?;
    }
    let now = std::time::Instant::now();
    promises.prune(now);
    promises
        .confirm(
            agent.durable().epoch,
            command.epoch,
            &command.member,
            agent.held_lease().is_some(),
            now + Duration::from_millis(ttl),
        )
        .map_err(|refusal| {
            tracing::info!(member = %command.member, epoch = command.epoch, %refusal, "a peer's lease is not confirmed");
            refuse(StatusCode::CONFLICT, refusal.to_string())
        })?;
    Ok(Json(serde_json::json!({ "epoch": command.epoch })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Release {
    epoch: u64,
    member: String,
    /// The lease's length: a confirmation of it asked before and arriving later is refused
    /// for as long.
    ttl_ms: u64,
}

/// A peer gave up its lease at `epoch` (its postgres stopped, and its agent never extends that
/// lease again): what this agent confirmed of it holds up no promotion any more.
async fn release(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<Release>,
) -> Json<serde_json::Value> {
    let ttl = Duration::from_millis(command.ttl_ms.min(peers::MAX_TTL_MS));
    let now = std::time::Instant::now();
    let mut promises = agent.promises.lock().expect("lock");
    promises.prune(now);
    promises.release(command.epoch, &command.member, now + ttl);
    Json(serde_json::json!({ "epoch": command.epoch }))
}

/// Take `epoch` as the newest before a promotion to it, and say how long the confirmations
/// given at older epochs still last. Refused for an epoch older than one seen.
async fn raise(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<Command>,
) -> Result<Json<Raised>, Refusal> {
    let promises = agent.promises.lock().expect("lock");
    accept_epoch(&agent, command.epoch)?;
    let outstanding = promises
        .outstanding_before(command.epoch)
        .map(|until| until.saturating_duration_since(std::time::Instant::now()))
        .unwrap_or_default();
    Ok(Json(Raised {
        epoch: agent.durable().epoch,
        // Rounded up: the promotion must not end its wait early.
        outstanding_ms: outstanding.as_micros().div_ceil(1000) as u64,
    }))
}

/// The longest ping a caller may ask for.
const REACH_LIMIT_MS: u64 = 5_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reach {
    /// `host:port` of the postgres to ping.
    address: String,
    timeout_ms: u64,
}

/// Archive this host's WAL with `settings`, or stop archiving (`null`). Taken at the
/// archiver's next run; postgres is not restarted.
async fn archive_settings(
    State(agent): State<Arc<Agent>>,
    Json(settings): Json<Option<ArchiveSettings>>,
) -> Result<Json<ArchiveReport>, Refusal> {
    archive::write_settings(&agent.options.state, settings.as_ref())
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(archive::report(
        &agent.options.state,
        &agent.options.data,
    )))
}

/// Begin a base backup of this host's postgres, in the background; refused while one is under
/// way. `/v1/status` tells how it ends (`backup.last`).
async fn take_backup(
    State(agent): State<Arc<Agent>>,
    Json(request): Json<BackupRequest>,
) -> Result<Json<BackupReport>, Refusal> {
    {
        // Idempotent: a backup under way goes on, and the caller hears of it.
        let mut backups = agent.backups.lock().expect("lock");
        if backups.running_since.is_some() {
            return Ok(Json(backups.clone()));
        }
        backups.running_since = Some(jiff::Timestamp::now());
        backups.running_request = request.request.clone();
    }
    let runner = agent.clone();
    tokio::spawn(async move {
        let outcome = super::backup::take(&runner.options, &request).await;
        if let Err(error) = &outcome {
            tracing::warn!(%error, "the base backup failed");
        }
        let mut backups = runner.backups.lock().expect("lock");
        backups.running_since = None;
        backups.last = Some(BackupOutcome {
            finished_at: jiff::Timestamp::now(),
            request: backups.running_request.take(),
            error: outcome.as_ref().err().map(|e| e.to_string()),
            backup: outcome.ok(),
        });
    });
    Ok(Json(agent.backups.lock().expect("lock").clone()))
}

/// Begin a restore drill in the background (`status` reports it); idempotent: a drill under
/// way goes on, and the caller hears of it.
async fn run_drill(
    State(agent): State<Arc<Agent>>,
    Json(request): Json<DrillRequest>,
) -> Json<DrillReport> {
    {
        let mut drills = agent.drills.lock().expect("lock");
        if drills.running_since.is_some() {
            return Json(drills.clone());
        }
        drills.running_since = Some(jiff::Timestamp::now());
    }
    let runner = agent.clone();
    tokio::spawn(async move {
        let record = super::drill::run(&runner.options, &request).await;
        if !record.passed {
            tracing::warn!(message = %record.message, "the restore drill failed");
        }
        let mut drills = runner.drills.lock().expect("lock");
        drills.running_since = None;
        drills.last = Some(record);
    });
    Json(agent.drills.lock().expect("lock").clone())
}

/// Whether this host reaches the postgres at `address`: the controller asks before it fails
/// over a primary it cannot reach itself. A ping needs no credentials and logs nothing there.
async fn reach(Json(command): Json<Reach>) -> Json<Reached> {
    let timeout = Duration::from_millis(command.timeout_ms.min(REACH_LIMIT_MS));
    let outcome = ping::ping(&command.address, timeout).await;
    Json(Reached {
        reached: outcome.is_ok(),
        error: outcome.err().map(|e| e.to_string()),
    })
}

#[derive(Deserialize)]
struct FromSource {
    epoch: u64,
    source: Source,
}

#[derive(Deserialize)]
struct CloneCommand {
    epoch: u64,
    source: Source,
    /// Copy from the newest base backup in this repository when it holds one.
    #[serde(default)]
    seed: Option<ArchiveSettings>,
}

/// Whether the operation under way on `agent` stopped postgres and starts it as a standby.
fn standby_operation_under_way(agent: &Agent) -> bool {
    agent
        .activity
        .lock()
        .expect("lock")
        .current
        .is_some_and(Operation::makes_a_standby)
}

/// A long operation on the data directory.
enum Operation {
    Start,
    Initialize,
    Recover(Box<RecoveryRequest>),
    Clone(Source, Option<Box<ArchiveSettings>>),
    Standby(Source),
    Rewind(Source),
}

impl Operation {
    fn name(&self) -> &'static str {
        match self {
            Operation::Start => "start",
            Operation::Initialize => "initialize",
            Operation::Recover(_) => "recover",
            Operation::Clone(..) => "clone",
            Operation::Standby(_) => "standby",
            Operation::Rewind(_) => "rewind",
        }
    }

    /// Whether the operation named `name` leaves postgres running as a standby.
    fn makes_a_standby(name: &str) -> bool {
        matches!(name, "clone" | "standby" | "rewind")
    }

    async fn run(self, agent: &Agent, inner: &mut Inner) -> Result<Option<Rejoined>, HostError> {
        let source = match self {
            Operation::Start => return ensure_running(agent, inner).await.map(|()| None),
            Operation::Initialize => {
                host::initialize(&agent.options).await?;
                return ensure_running(agent, inner).await.map(|()| None);
            }
            Operation::Recover(ref request) => {
                super::recover::recover(&agent.options, request).await?;
                return ensure_running(agent, inner).await.map(|()| None);
            }
            Operation::Clone(ref source, _)
            | Operation::Standby(ref source)
            | Operation::Rewind(ref source) => source.clone(),
        };
        // The data directory is about to serve a standby: a lease means nothing to one.
        *agent.lease.lock().expect("lock") = None;
        inner.stop_postgres(StopMode::Fast).await;
        let options = &agent.options;
        let rejoined = match self {
            Operation::Clone(_, ref seed) => super::seed::clone(options, &source, seed.as_deref())
                .await
                .map(|()| None)?,
            Operation::Standby(_) => host::configure_standby(options, &source).map(|()| None)?,
            Operation::Rewind(_) => Some(host::rewind(options, &source).await?),
            Operation::Start | Operation::Initialize | Operation::Recover(_) => None,
        };
        // A standby of the member the controller named: the fence has done its work, and a
        // later promotion comes with a lease.
        agent.record(|durable| durable.fenced = false)?;
        ensure_running(agent, inner).await?;
        Ok(rejoined)
    }
}

/// Start `operation` in the background and answer at once: the controller watches it through
/// `/v1/status` (`busy`, then `lastOperation` and `lastError`), so its rounds, and the
/// primary's lease renewals, never wait for a copy. Refused while another operation runs, and
/// for a while after the same one failed.
async fn begin(
    agent: &Arc<Agent>,
    epoch: u64,
    operation: Operation,
) -> Result<Json<AgentStatus>, Refusal> {
    let name = operation.name();
    let Ok(mut inner) = agent.inner.clone().try_lock_owned() else {
        let busy = agent
            .activity
            .lock()
            .expect("lock")
            .current
            .unwrap_or("an operation");
        return Err(refuse(
            StatusCode::CONFLICT,
            format!("busy: {busy} is under way"),
        ));
    };
    if let Some(last) = &agent.activity.lock().expect("lock").last
        && last.operation == name
        && let Err(super::Failure { message: error, .. }) = &last.outcome
        && last.at.elapsed() < RETRY_AFTER
    {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!(
                "the last {name} failed {}s ago ({error}); it may be asked for again {}s after it failed",
                last.at.elapsed().as_secs(),
                RETRY_AFTER.as_secs()
            ),
        ));
    }
    accept_epoch(agent, epoch)?;
    agent.activity.lock().expect("lock").current = Some(name);
    let status = describe(agent, None).await;
    let worker = agent.clone();
    tokio::spawn(async move {
        let outcome = operation.run(&worker, &mut inner).await.map_err(|error| {
            tracing::warn!(operation = name, %error, kind = error.kind().as_str(), "host operation failed");
            super::Failure::from(error)
        });
        let mut activity = worker.activity.lock().expect("lock");
        activity.current = None;
        activity.last = Some(super::Finished {
            operation: name,
            at: std::time::Instant::now(),
            outcome,
        });
    });
    Ok(Json(status))
}

/// Copy another member into the data directory and start as its standby.
async fn clone(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<CloneCommand>,
) -> Result<Json<AgentStatus>, Refusal> {
    let seed = command.seed.map(Box::new);
    begin(
        &agent,
        command.epoch,
        Operation::Clone(command.source, seed),
    )
    .await
}

/// Start as a standby of another member, with the data already here.
async fn standby(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<FromSource>,
) -> Result<Json<AgentStatus>, Refusal> {
    begin(&agent, command.epoch, Operation::Standby(command.source)).await
}

/// Bring diverged data back onto a member's history (rewind, or copy when that fails) and start
/// as its standby.
async fn rewind(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<FromSource>,
) -> Result<Json<AgentStatus>, Refusal> {
    begin(&agent, command.epoch, Operation::Rewind(command.source)).await
}

#[cfg(test)]
mod tests {
    use super::{Operation, same_secret};
    use crate::engine::postgres::agent::Source;

    #[test]
    fn the_operations_that_make_a_standby_are_known_by_name() {
        let source = || Source {
            address: "127.0.0.1:5432".into(),
            application_name: "a".into(),
            slot: None,
        };
        for (operation, standby) in [
            (Operation::Start, false),
            (Operation::Initialize, false),
            (Operation::Clone(source(), None), true),
            (Operation::Standby(source()), true),
            (Operation::Rewind(source()), true),
        ] {
            assert_eq!(
                Operation::makes_a_standby(operation.name()),
                standby,
                "{}",
                operation.name()
            );
        }
    }

    #[test]
    fn tokens_match_only_exactly() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3creT"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
