//! The core: what the user asked for, what was observed, the journal, the pure planner, status,
//! and the reconcile driver that runs `observe -> plan -> act -> status`.
//!
//! It knows no engine and no runtime: what it needs from them it defines here as traits
//! ([`engine::Engine`], [`engine::HostOperations`], [`reconcile::JournalStore`],
//! [`routes::Router`]), and the rooms
//! outside implement them. It imports only the resources ([`crate::api`]) and [`crate::bounded`].

pub mod archiving;
pub mod backups;
pub mod desired;
pub mod engine;
pub mod history;
pub mod journal;
pub mod observed;
pub mod plan;
pub mod reconcile;
pub mod routes;
pub mod status;
