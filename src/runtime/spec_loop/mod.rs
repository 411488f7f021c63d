//! The spec loop shared by the runtimes that read a directory of specs (a process alone, and
//! hosts coordinated through etcd): it watches the directory and keeps a task per cluster that
//! runs rounds at the pace they ask for. What differs between those runtimes comes in through
//! [`Coordination`].

pub mod secrets;
pub mod specs;

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use async_trait::async_trait;
use notify::Watcher;
use tokio::{sync::watch, task::JoinHandle};

use self::specs::{ClusterKey, SpecSet};
use crate::{core::desired::Desired, runtime::reconciler::RoundInput};

/// The spec directory cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("spec directory {0}: {1}")]
pub struct SpecDirError(pub String, pub std::io::Error);

/// What a cluster task works from; replaced whenever the specs change.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub namespace: String,
    pub desired: Desired,
    pub spec_problems: Vec<String>,
}

/// What differs between a process that runs alone and one of several coordinated through etcd.
#[async_trait]
pub trait Coordination: Send + Sync + 'static {
    /// The spec directory's problems, whenever they change.
    async fn report_problems(&self, problems: &[String]);
    /// The virtual names (`NAMESPACE/NAME`) the specs hold now; the others are retired.
    async fn keep_names(&self, keep: &[String]);
    /// The runner of a cluster that has just appeared in the specs.
    fn runner(&self, namespace: &str, name: &str) -> Box<dyn ClusterRunner>;
}

/// Runs one cluster's rounds.
#[async_trait]
pub trait ClusterRunner: Send {
    /// One round; how long to wait before the next, or `None` to wait for a change of spec.
    async fn round(&mut self, input: &Input) -> Option<Duration>;
    /// Resolves when a round is due at once for a reason of the runner's own (this process
    /// came to lead, say).
    async fn woken(&mut self) {
        std::future::pending().await
    }
}

struct ClusterTask {
    input: watch::Sender<Input>,
    task: JoinHandle<()>,
}

/// Watch the spec directory until `shutdown` completes, keeping a task per cluster in it.
pub async fn serve_specs(
    specs_dir: &Path,
    rescan: Duration,
    coordination: Arc<dyn Coordination>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SpecDirError> {
    std::fs::read_dir(specs_dir).map_err(|e| SpecDirError(specs_dir.display().to_string(), e))?;
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(1);
    // Without a watcher the periodic rescan still picks changes up.
    let _watcher = notify::recommended_watcher(move |_event| {
        let _ = changed_tx.try_send(());
    })
    .and_then(|mut w| {
        w.watch(specs_dir, notify::RecursiveMode::Recursive)
            .map(|_| w)
    })
    .map_err(|e| tracing::warn!(error = %e, "file watcher unavailable; rescanning periodically"))
    .ok();

    let mut specs = SpecSet::default();
    let mut tasks: HashMap<ClusterKey, ClusterTask> = HashMap::new();
    // None until the first load, so that a clean start clears what an earlier run reported.
    let mut reported: Option<Vec<String>> = None;
    tokio::pin!(shutdown);
    loop {
        specs = specs.reload(specs_dir);
        let problems: Vec<String> = specs.problems.iter().map(|p| p.to_string()).collect();
        if reported.as_ref() != Some(&problems) {
            // Once per change, however often the unchanged files are rescanned.
            for problem in &problems {
                tracing::warn!(reason = "InvalidSpec", problem = %problem, "spec rejected; the last good version keeps running");
            }
            coordination.report_problems(&problems).await;
            reported = Some(problems);
        }
        apply_specs(&specs, &mut tasks, coordination.as_ref()).await;
        tokio::select! {
            _ = changed_rx.recv() => {
                // Let a burst of writes (a git pull) settle before reading.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while changed_rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(rescan) => {}
            _ = &mut shutdown => break,
        }
    }
    for (_, task) in tasks.drain() {
        task.task.abort();
        // Gone for sure before the caller lets another process reconcile.
        let _ = task.task.await;
    }
    Ok(())
}

async fn apply_specs(
    specs: &SpecSet,
    tasks: &mut HashMap<ClusterKey, ClusterTask>,
    coordination: &dyn Coordination,
) {
    let desired = specs.desired();
    tasks.retain(|key, task| {
        let keep = desired.contains_key(key);
        if !keep {
            tracing::info!(cluster = %key.1, namespace = %key.0, "no longer in the specs; no longer managed");
            task.task.abort();
        }
        keep
    });
    let keep: Vec<String> = desired
        .iter()
        .flat_map(|((ns, _), d)| {
            d.virtual_names
                .iter()
                .map(move |vn| format!("{ns}/{}", vn.name))
        })
        .collect();
    coordination.keep_names(&keep).await;
    for (key, d) in desired {
        let input = Input {
            namespace: key.0.clone(),
            desired: d,
            spec_problems: specs.problems_for(&key),
        };
        match tasks.get(&key) {
            Some(task) => {
                task.input.send_if_modified(|current| {
                    let changed = *current != input;
                    if changed {
                        *current = input.clone();
                    }
                    changed
                });
            }
            None => {
                let (tx, rx) = watch::channel(input);
                let runner = coordination.runner(&key.0, &key.1);
                let task = tokio::spawn(drive(rx, runner));
                tasks.insert(key, ClusterTask { input: tx, task });
            }
        }
    }
}

/// One cluster, forever: rounds at the pace they ask for, and at once when the spec changes
/// or the runner wakes.
async fn drive(mut input: watch::Receiver<Input>, mut runner: Box<dyn ClusterRunner>) {
    loop {
        let current = input.borrow_and_update().clone();
        let wait = runner.round(&current).await;
        let next = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = next => {}
            _ = runner.woken() => {}
            changed = input.changed() => if changed.is_err() { return },
        }
    }
}

/// What a round of a spec-directory runtime works from.
pub fn round_input(current: &Input) -> RoundInput {
    RoundInput {
        desired: current.desired.clone(),
        problems: current.spec_problems.clone(),
        generation: None,
        stored: None,
    }
}
