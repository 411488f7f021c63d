//! An exhaustive check of the primary's lease while the controller is away (DESIGN.md, "The
//! database outlives its controller"), with stateright. Three agents run the rules of
//! `replicant::engine::postgres::quorum`, the ones the real agents run: the primary asks its
//! peers to confirm its lease, in rounds that overlap, and extends it from the moment a round
//! asked once a quorum has confirmed that round, or gives it up (a planned stop) and asks
//! them to release what they confirmed; a
//! controller raises agents to a new epoch, waits out what they report, and promotes another
//! member. Messages are delayed without bound, reordered and lost (a lost message is one never
//! delivered: for a safety property the two are the same, and the model is the smaller for
//! it); any agent crashes (its
//! memory and, with its postgres, its lease gone) and restarts; time advances between any two
//! steps, so every process stalls for as long as it likes. Deadlines are on each agent's own
//! monotonic clock, which a step of the wall clock does not move, so clock steps are stalls
//! here. The property: never two members holding a lease at once. Each variant that drops a
//! part of the protocol must produce a counterexample, so the check is seen to bite.

use replicant::engine::postgres::quorum::{Promises, raise_quorum, renewal_quorum};
use stateright::{Checker, Model, Property};

const AGENTS: usize = 3;
/// The old primary, and the member the controller promotes.
const PRIMARY: usize = 0;
const CANDIDATE: usize = 1;
/// A lease's length, in ticks.
const TTL: u8 = 2;
/// How far time runs in the model.
const HORIZON: u8 = 7;
/// A lease that outlasts the horizon: the promoted member's.
const FOREVER: u8 = u8::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// The protocol as built.
    AsBuilt,
    /// The promotion raises one agent only, not a quorum.
    RaisesOne,
    /// The promotion does not wait out the confirmations the raised agents report.
    SkipsTheWait,
    /// A restarted agent forgets the confirmations it gave instead of owing them.
    ForgetsOnRestart,
    /// The primary's lease runs from when the quorum answered, not from when it asked.
    LeaseFromAnswer,
    /// The primary's agent tells its peers it gave its lease up while it still holds it.
    ReleasesWhileHolding,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Agent {
    up: bool,
    /// The highest epoch seen (durable: it survives a crash).
    epoch: u64,
    promises: Promises<u8>,
    /// The lease its postgres runs under: epoch and end.
    lease: Option<(u64, u8)>,
}

impl Agent {
    fn holds_lease(&self, now: u8) -> bool {
        self.up && self.lease.is_some_and(|(_, until)| until > now)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Message {
    /// The primary asks `to` to confirm its lease at `epoch`, asked at tick `asked`.
    Confirm {
        to: usize,
        epoch: u64,
        asked: u8,
    },
    Confirmed {
        from: usize,
        asked: u8,
    },
    /// The primary gave its lease up (its postgres stopped): `to` forgets what it confirmed.
    Release {
        to: usize,
    },
    /// The controller raises `to` to the new epoch.
    Raise {
        to: usize,
    },
    Raised {
        from: usize,
        epoch: u64,
        outstanding: Option<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    now: u8,
    agents: Vec<Agent>,
    /// In flight, as a sorted set.
    network: Vec<Message>,
    /// The primary's renewals under way (they overlap, each on its own): when each asked,
    /// and who confirmed it.
    renewals: Vec<(u8, Vec<usize>)>,
    renewals_started: u8,
    stopped: bool,
    raising: bool,
    raised: Vec<usize>,
    wait_until: u8,
    promoted: bool,
    crashes: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Tick,
    AskPeers,
    /// A planned stop of the primary's postgres: the lease given up, and released.
    StopPrimary,
    Deliver(Message),
    Crash(usize),
    Restart(usize),
    RaiseAll,
    Promote,
}

struct LeaseProtocol {
    variant: Variant,
}

/// The member whose lease it is, as the agents name it.
const PRIMARY_NAME: &str = "primary";

/// The new epoch the controller promotes at.
const NEW_EPOCH: u64 = 1;

impl LeaseProtocol {
    fn send(state: &mut State, message: Message) {
        if let Err(at) = state.network.binary_search(&message) {
            state.network.insert(at, message);
        }
    }

    fn deliver(&self, state: &mut State, message: Message) {
        let now = state.now;
        match message {
            Message::Confirm { to, epoch, asked } => {
                let agent = &mut state.agents[to];
                if !agent.up {
                    return;
                }
                agent.epoch = agent.epoch.max(epoch);
                let holds = agent.holds_lease(now);
                if agent
                    .promises
                    .confirm(agent.epoch, epoch, PRIMARY_NAME, holds, now + TTL)
                    .is_ok()
                {
                    Self::send(state, Message::Confirmed { from: to, asked });
                }
            }
            Message::Confirmed { from, asked } => {
                let Some(round) = state.renewals.iter().position(|(at, _)| *at == asked) else {
                    return;
                };
                let votes = &mut state.renewals[round].1;
                if !state.agents[PRIMARY].up || votes.contains(&from) {
                    return;
                }
                votes.push(from);
                let quorum = renewal_quorum(AGENTS).expect("three agents");
                if votes.len() >= quorum {
                    let from_moment = match self.variant {
                        Variant::LeaseFromAnswer => now,
                        _ => asked,
                    };
                    let primary = &mut state.agents[PRIMARY];
                    // Never revived once lapsed, and only at its own epoch.
                    if let Some((epoch, until)) = primary.lease.as_mut()
                        && *until > now
                        && *epoch == 0
                    {
                        *until = (*until).max(from_moment + TTL);
                    }
                    state.renewals.remove(round);
                }
            }
            Message::Release { to } => {
                let agent = &mut state.agents[to];
                if agent.up {
                    agent.promises.release(0, PRIMARY_NAME, FOREVER);
                }
            }
            Message::Raise { to } => {
                let agent = &mut state.agents[to];
                if !agent.up || agent.epoch > NEW_EPOCH {
                    return;
                }
                agent.epoch = NEW_EPOCH;
                let outstanding = agent.promises.outstanding_before(NEW_EPOCH);
                let epoch = agent.epoch;
                Self::send(
                    state,
                    Message::Raised {
                        from: to,
                        epoch,
                        outstanding,
                    },
                );
            }
            Message::Raised {
                from,
                epoch,
                outstanding,
            } => {
                if epoch == NEW_EPOCH && !state.raised.contains(&from) {
                    state.raised.push(from);
                    state.wait_until = state.wait_until.max(outstanding.unwrap_or(0));
                }
            }
        }
    }
}

impl Model for LeaseProtocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let mut agents = vec![
            Agent {
                up: true,
                epoch: 0,
                promises: Promises::default(),
                lease: None,
            };
            AGENTS
        ];
        // The controller's last renewal, at tick 0; then it went away.
        agents[PRIMARY].lease = Some((0, TTL));
        vec![State {
            now: 0,
            agents,
            network: Vec::new(),
            renewals: Vec::new(),
            renewals_started: 0,
            stopped: false,
            raising: false,
            raised: Vec::new(),
            wait_until: 0,
            promoted: false,
            crashes: 0,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        if state.now < HORIZON {
            actions.push(Action::Tick);
        }
        let primary = &state.agents[PRIMARY];
        let asked_now = state.renewals.iter().any(|(at, _)| *at == state.now);
        if primary.holds_lease(state.now) && state.renewals_started < 3 && !asked_now {
            actions.push(Action::AskPeers);
        }
        if primary.holds_lease(state.now) && !state.stopped {
            actions.push(Action::StopPrimary);
        }
        for message in &state.network {
            actions.push(Action::Deliver(message.clone()));
        }
        // The primary's own crash only ends its lease: the peers' are the ones to check.
        for (i, agent) in state.agents.iter().enumerate().skip(1) {
            if agent.up && state.crashes < 1 {
                actions.push(Action::Crash(i));
            }
            if !agent.up {
                actions.push(Action::Restart(i));
            }
        }
        if !state.raising {
            actions.push(Action::RaiseAll);
        }
        let needed = match self.variant {
            Variant::RaisesOne => 1,
            _ => raise_quorum(AGENTS),
        };
        let waited = self.variant == Variant::SkipsTheWait || state.now >= state.wait_until;
        // The controller's own last renewal has run out: detectAfter, which outlasts it, has
        // passed since (the argument the controller's lease always rested on).
        let controller_lease_over = state.now >= TTL;
        if !state.promoted && state.raised.len() >= needed && waited && controller_lease_over {
            actions.push(Action::Promote);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Tick => state.now += 1,
            Action::AskPeers => {
                let primary = &mut state.agents[PRIMARY];
                let (epoch, _) = primary.lease?;
                let asked = state.now;
                // Its own vote first, recorded as a promise like a peer's.
                primary
                    .promises
                    .confirm(primary.epoch, epoch, PRIMARY_NAME, false, asked + TTL)
                    .ok()?;
                state.renewals.push((asked, vec![PRIMARY]));
                state.renewals_started += 1;
                for to in (0..AGENTS).filter(|a| *a != PRIMARY) {
                    Self::send(&mut state, Message::Confirm { to, epoch, asked });
                }
            }
            Action::StopPrimary => {
                state.stopped = true;
                let primary = &mut state.agents[PRIMARY];
                if self.variant != Variant::ReleasesWhileHolding {
                    primary.lease = None;
                }
                primary.promises.release(0, PRIMARY_NAME, FOREVER);
                for to in (0..AGENTS).filter(|a| *a != PRIMARY) {
                    Self::send(&mut state, Message::Release { to });
                }
            }
            Action::Deliver(message) => {
                state.network.retain(|m| *m != message);
                self.deliver(&mut state, message);
            }
            Action::Crash(i) => {
                let agent = &mut state.agents[i];
                agent.up = false;
                // Postgres stops with its agent; what was in memory is gone.
                agent.lease = None;
                agent.promises = Promises::default();
                if i == PRIMARY {
                    state.renewals.clear();
                }
                state.crashes += 1;
            }
            Action::Restart(i) => {
                let agent = &mut state.agents[i];
                agent.up = true;
                if self.variant != Variant::ForgetsOnRestart {
                    // It recorded the longest confirmation it gives (TTL) before giving one.
                    agent.promises = Promises::restarted(agent.epoch, state.now + TTL);
                }
            }
            Action::RaiseAll => {
                state.raising = true;
                for to in 0..AGENTS {
                    Self::send(&mut state, Message::Raise { to });
                }
            }
            Action::Promote => {
                state.promoted = true;
                let candidate = &mut state.agents[CANDIDATE];
                if !candidate.up {
                    return None;
                }
                candidate.epoch = candidate.epoch.max(NEW_EPOCH);
                candidate.lease = Some((NEW_EPOCH, FOREVER));
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("never two leaseholders", |_, state: &State| {
                state
                    .agents
                    .iter()
                    .filter(|a| a.holds_lease(state.now))
                    .count()
                    <= 1
            }),
            // The model reaches what it is about: the primary renewed through its peers past
            // the controller's last renewal while a promotion was being prepared.
            Property::sometimes(
                "a renewal through the peers during a promotion",
                |_, state: &State| {
                    state.agents[PRIMARY]
                        .lease
                        .is_some_and(|(_, until)| until > TTL)
                        && !state.raised.is_empty()
                },
            ),
        ]
    }

    /// A lease that has lapsed is never renewed again (the controller, which could, is away),
    /// so once the old primary holds none no later state can have two leaseholders: those
    /// states are not explored.
    fn within_boundary(&self, state: &State) -> bool {
        state.agents[PRIMARY].holds_lease(state.now)
    }
}

fn check(variant: Variant) -> impl Checker<LeaseProtocol> {
    let checker = LeaseProtocol { variant }.checker().spawn_bfs().join();
    eprintln!(
        "{variant:?}: {} states, {} unique, depth {}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth()
    );
    checker
}

#[test]
fn never_two_leaseholders_through_crashes_lost_messages_and_stalls() {
    let checker = check(Variant::AsBuilt);
    checker.assert_properties();
}

#[test]
fn the_check_fails_when_the_protocol_is_weakened() {
    for variant in [
        Variant::RaisesOne,
        Variant::SkipsTheWait,
        Variant::ForgetsOnRestart,
        Variant::LeaseFromAnswer,
        Variant::ReleasesWhileHolding,
    ] {
        let checker = check(variant);
        let path = checker.assert_any_discovery("never two leaseholders");
        eprintln!(
            "{variant:?}: counterexample\n  {}",
            path.into_actions()
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
}
