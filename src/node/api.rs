//! The agent's HTTP API: `GET /v1/status`, `POST /v1/start`, `/v1/stop`, `/v1/lease`. Every
//! request carries the bearer token; every command carries the epoch.

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
    Agent, Inner, Options, host,
    postmaster::{Postmaster, StopMode},
};
use crate::engine::postgres::{
    agent::{AfterRejoin, AgentStatus, Source},
    controldata,
};

/// How long postgres may take to accept connections after a start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/start", post(start))
        .route("/v1/stop", post(stop))
        .route("/v1/lease", post(lease))
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
        return refuse(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required".into(),
        )
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

fn refuse(status: StatusCode, error: String) -> Refusal {
    Refusal { status, error }
}

async fn describe(agent: &Agent, inner: &mut Inner) -> AgentStatus {
    let running = inner.postmaster.as_mut().is_some_and(Postmaster::running);
    if !running {
        inner.postmaster = None;
    }
    let (bin, data) = (agent.options.bin.clone(), agent.options.data.clone());
    let control = tokio::task::spawn_blocking(move || controldata::read(&bin, &data))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    AgentStatus {
        running,
        pid: inner.postmaster.as_ref().and_then(Postmaster::pid),
        epoch: inner.durable.epoch,
        fenced: inner.durable.fenced,
        lease_remaining_ms: inner.lease_until.map(|until| {
            until
                .saturating_duration_since(std::time::Instant::now())
                .as_millis() as u64
        }),
        empty: !host::holds_data(&agent.options.data),
        history: control
            .as_ref()
            .ok()
            .and_then(|c| host::timeline_history(&agent.options.data, c.checkpoint_timeline)),
        control_data: control.as_ref().ok().cloned(),
        control_data_error: control.err(),
    }
}

async fn status(State(agent): State<Arc<Agent>>) -> Json<AgentStatus> {
    let mut inner = agent.inner.lock().await;
    Json(describe(&agent, &mut inner).await)
}

/// Take `epoch` as the newest, recorded before anything is done; refuse an older one.
fn accept_epoch(agent: &Agent, inner: &mut Inner, epoch: u64) -> Result<(), Refusal> {
    let seen = inner.durable.epoch;
    if epoch < seen {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!(
                "epoch {epoch} is older than {seen}, the highest this agent has seen: a newer controller decision stands"
            ),
        ));
    }
    if epoch > seen {
        agent
            .record(inner, |durable| durable.epoch = epoch)
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct Command {
    epoch: u64,
}

async fn start(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<Command>,
) -> Result<Json<AgentStatus>, Refusal> {
    let mut inner = agent.inner.lock().await;
    accept_epoch(&agent, &mut inner, command.epoch)?;
    // A standby commits nothing: it may start while fenced (that is how an old primary rejoins).
    if inner.durable.fenced && !agent.options.data.join("standby.signal").exists() {
        return Err(refuse(
            StatusCode::CONFLICT,
            "fenced: the controller's lease lapsed while postgres ran; it stays down until the lease is renewed".into(),
        ));
    }
    ensure_running(&agent, &mut inner).await?;
    Ok(Json(describe(&agent, &mut inner).await))
}

/// Start postgres unless it runs, and wait until it accepts connections.
async fn ensure_running(agent: &Agent, inner: &mut Inner) -> Result<(), Refusal> {
    if inner.postmaster.as_mut().is_some_and(Postmaster::running) {
        return Ok(());
    }
    let mut postmaster = Postmaster::start(&agent.options)
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let ready = postmaster
        .wait_ready(&agent.options.bin, agent.options.port, START_TIMEOUT)
        .await;
    inner.postmaster = Some(postmaster);
    ready.map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e))
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
    let mut inner = agent.inner.lock().await;
    accept_epoch(&agent, &mut inner, command.epoch)?;
    inner.stop_postgres(command.mode).await;
    Ok(Json(describe(&agent, &mut inner).await))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lease {
    epoch: u64,
    ttl_ms: u64,
}

/// Renew the lease for `ttlMs` from now (on the agent's monotonic clock), lifting a fence.
async fn lease(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<Lease>,
) -> Result<Json<AgentStatus>, Refusal> {
    let mut inner = agent.inner.lock().await;
    accept_epoch(&agent, &mut inner, command.epoch)?;
    if inner.durable.fenced {
        agent
            .record(&mut inner, |durable| durable.fenced = false)
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    }
    inner.lease_until =
        Some(std::time::Instant::now() + Duration::from_millis(command.ttl_ms.min(3_600_000)));
    Ok(Json(describe(&agent, &mut inner).await))
}

#[derive(Deserialize)]
struct FromSource {
    epoch: u64,
    source: Source,
}

/// An operation on the data directory: take the epoch, stop postgres (fast), run `operation`,
/// then start postgres again (a standby now, so fenced or not) and report.
async fn with_data_stopped<T>(
    agent: &Agent,
    epoch: u64,
    operation: impl AsyncFnOnce(&Options) -> Result<T, Refusal>,
) -> Result<(T, AgentStatus), Refusal> {
    let mut inner = agent.inner.lock().await;
    accept_epoch(agent, &mut inner, epoch)?;
    inner.stop_postgres(StopMode::Fast).await;
    let done = operation(&agent.options).await?;
    ensure_running(agent, &mut inner).await?;
    Ok((done, describe(agent, &mut inner).await))
}

/// Copy another member into the data directory and start as its standby.
async fn clone(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<FromSource>,
) -> Result<Json<AgentStatus>, Refusal> {
    let ((), status) = with_data_stopped(&agent, command.epoch, async |options| {
        host::clone(options, &command.source)
            .await
            .map_err(|e| refuse(StatusCode::CONFLICT, e))
    })
    .await?;
    Ok(Json(status))
}

/// Start as a standby of another member, with the data already here.
async fn standby(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<FromSource>,
) -> Result<Json<AgentStatus>, Refusal> {
    let ((), status) = with_data_stopped(&agent, command.epoch, async |options| {
        host::configure_standby(options, &command.source)
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e))
    })
    .await?;
    Ok(Json(status))
}

/// Bring diverged data back onto a member's history (rewind, or copy when that fails) and start
/// as its standby.
async fn rewind(
    State(agent): State<Arc<Agent>>,
    Json(command): Json<FromSource>,
) -> Result<Json<AfterRejoin>, Refusal> {
    let (rejoined, status) = with_data_stopped(&agent, command.epoch, async |options| {
        host::rewind(options, &command.source)
            .await
            .map_err(|e| refuse(StatusCode::CONFLICT, e))
    })
    .await?;
    Ok(Json(AfterRejoin { rejoined, status }))
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn tokens_match_only_exactly() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3creT"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
