//! Test doubles of the driver's I/O (mocks, test-only): an engine whose calls answer from a
//! script, a journal store in memory whose saves can be made to fail, and a router in memory.
//! All three write to one shared call log, so a test can check the order of saves and steps.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;

use super::{FaultPoints, JournalStore, Revision, StoreError};
use crate::{
    api::Member,
    core::{
        desired::Desired,
        engine::{Engine, EngineError, HostOperations, Lease, Observation},
        history::History,
        journal::Journal,
        observed::HostAccess,
        plan::Action,
        routes::{Endpoint, RouteError, Router},
    },
};

/// What every double appends to, in the order things happened.
pub type CallLog = Arc<Mutex<Vec<String>>>;

/// An engine that takes every call, logs it as `"promote b 2"` (name, member, then the other
/// member or the epoch), and answers with the error scripted for that entry, if any.
pub struct FakeEngine {
    log: CallLog,
    failures: Mutex<HashMap<String, EngineError>>,
    /// Whether its members have host operations (as PostgreSQL's agents give).
    with_hosts: bool,
}

impl FakeEngine {
    pub fn new(log: &CallLog, with_hosts: bool) -> Self {
        Self {
            log: log.clone(),
            failures: Mutex::new(HashMap::new()),
            with_hosts,
        }
    }

    /// The call logged as `call` fails with `error`, every time.
    pub fn fail(&self, call: &str, error: EngineError) {
        self.failures
            .lock()
            .unwrap()
            .insert(call.to_string(), error);
    }

    fn answer(&self, call: String) -> Result<(), EngineError> {
        let failure = self.failures.lock().unwrap().get(&call).cloned();
        self.log.lock().unwrap().push(call);
        failure.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl Engine for FakeEngine {
    async fn observe(&self, member: &Member, _lease: Option<Lease>) -> Observation {
        Observation::silent(
            &member.address,
            std::time::Duration::ZERO,
            HostAccess::Engine,
        )
    }

    async fn replicate(&self, member: &Member, from: &Member) -> Result<(), EngineError> {
        self.answer(format!("replicate {} {}", member.name, from.name))
    }

    async fn detach(&self, member: &Member) -> Result<(), EngineError> {
        self.answer(format!("detach {}", member.name))
    }

    async fn fence(&self, member: &Member, epoch: u64) -> Result<(), EngineError> {
        self.answer(format!("fence {} {epoch}", member.name))
    }

    async fn promote(&self, member: &Member, epoch: u64) -> Result<Option<History>, EngineError> {
        self.answer(format!("promote {} {epoch}", member.name))?;
        Ok(Some(History {
            branch: format!("branch-{epoch}"),
            forks: Vec::new(),
        }))
    }

    async fn unfence(&self, member: &Member, epoch: u64) -> Result<(), EngineError> {
        self.answer(format!("unfence {} {epoch}", member.name))
    }

    fn hosts(&self) -> Option<&dyn HostOperations> {
        self.with_hosts.then_some(self as &dyn HostOperations)
    }
}

#[async_trait]
impl HostOperations for FakeEngine {
    async fn restart(
        &self,
        member: &Member,
        from: &Member,
        _epoch: u64,
    ) -> Result<(), EngineError> {
        self.answer(format!("restart {} {}", member.name, from.name))
    }

    async fn rejoin(&self, member: &Member, from: &Member, _epoch: u64) -> Result<(), EngineError> {
        self.answer(format!("rejoin {} {}", member.name, from.name))
    }

    async fn clone_from(
        &self,
        member: &Member,
        from: &Member,
        _epoch: u64,
    ) -> Result<(), EngineError> {
        self.answer(format!("clone {} {}", member.name, from.name))
    }

    async fn stop(&self, member: &Member, epoch: u64) -> Result<(), EngineError> {
        self.answer(format!("stop {} {epoch}", member.name))
    }

    async fn start(&self, member: &Member, epoch: u64) -> Result<(), EngineError> {
        self.answer(format!("start {} {epoch}", member.name))
    }

    async fn initialize(&self, member: &Member, epoch: u64) -> Result<(), EngineError> {
        self.answer(format!("initialize {} {epoch}", member.name))
    }

    fn manual_command(&self, action: &Action, _desired: &Desired) -> String {
        format!("run by hand: {action:?}")
    }
}

/// A journal in memory. Each save is logged as `"save <step> epoch <n>"` (the operation's
/// step, or `idle`); saves fail while [`fail_saves_from`](Self::fail_saves_from) says so.
pub struct MemoryJournal {
    log: CallLog,
    stored: Mutex<(Journal, u64)>,
    /// Saves beyond this many succeed no more.
    saves_allowed: Mutex<Option<usize>>,
    saves: Mutex<usize>,
}

impl MemoryJournal {
    pub fn new(log: &CallLog, journal: Journal) -> Self {
        Self {
            log: log.clone(),
            stored: Mutex::new((journal, 1)),
            saves_allowed: Mutex::new(None),
            saves: Mutex::new(0),
        }
    }

    /// The first `allowed` saves from now on succeed; every later one fails.
    pub fn fail_saves_from(&self, allowed: usize) {
        *self.saves.lock().unwrap() = 0;
        *self.saves_allowed.lock().unwrap() = Some(allowed);
    }

    pub fn stored(&self) -> Journal {
        self.stored.lock().unwrap().0.clone()
    }

    pub fn revision(&self) -> Revision {
        Revision(Some(self.stored.lock().unwrap().1.to_string()))
    }
}

#[async_trait]
impl JournalStore for MemoryJournal {
    async fn load(&self) -> Result<(Journal, Revision), StoreError> {
        Ok((self.stored(), self.revision()))
    }

    async fn save(&self, journal: &Journal, expected: &Revision) -> Result<Revision, StoreError> {
        let mut saves = self.saves.lock().unwrap();
        *saves += 1;
        if self
            .saves_allowed
            .lock()
            .unwrap()
            .is_some_and(|n| *saves > n)
        {
            self.log.lock().unwrap().push("save failed".into());
            return Err(StoreError::failed("write", "the disk is full"));
        }
        if *expected != self.revision() {
            return Err(StoreError::Conflict {
                expected: expected.clone(),
            });
        }
        let step = journal.operation.as_ref().map_or("idle".to_string(), |op| {
            format!("{:?}", op.step).to_lowercase()
        });
        self.log
            .lock()
            .unwrap()
            .push(format!("save {step} epoch {}", journal.epoch));
        let mut stored = self.stored.lock().unwrap();
        *stored = (journal.clone(), stored.1 + 1);
        Ok(Revision(Some(stored.1.to_string())))
    }
}

/// Routes in memory; moving a name is logged as `"retarget <name> <members>"`.
pub struct MemoryRouter {
    log: CallLog,
    routes: Mutex<HashMap<String, Vec<String>>>,
}

impl MemoryRouter {
    pub fn new(log: &CallLog) -> Self {
        Self {
            log: log.clone(),
            routes: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Router for MemoryRouter {
    async fn current(&self, name: &str) -> Option<Vec<String>> {
        self.routes.lock().unwrap().get(name).cloned()
    }

    async fn retarget(&self, name: &str, endpoints: &[Endpoint]) -> Result<(), RouteError> {
        let members: Vec<String> = endpoints.iter().map(|e| e.member.clone()).collect();
        self.log
            .lock()
            .unwrap()
            .push(format!("retarget {name} {}", members.join(",")));
        self.routes
            .lock()
            .unwrap()
            .insert(name.to_string(), members);
        Ok(())
    }
}

/// Fault points that log each point reached as `"point <name>"`.
pub struct LoggedFaults {
    pub log: CallLog,
}

impl FaultPoints for LoggedFaults {
    fn reached(&self, point: &str) {
        self.log.lock().unwrap().push(format!("point {point}"));
    }
}
