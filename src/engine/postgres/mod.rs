//! The PostgreSQL engine: SQL through tokio-postgres (a timeout on every call) for the probe
//! and the actions that need no restart, and the node agent (`replicant node`) for what SQL
//! cannot do. [`PostgresEngine`] puts them behind the [`Engine`](crate::core::engine::Engine) trait.

pub mod actions;
pub mod agent;
pub mod archive;
pub mod archiving;
pub mod backups;
pub mod controldata;
mod engine;
pub mod history;
mod lease;
pub mod ping;
pub mod probe;
pub mod quorum;

pub use actions::{Target, Upstream};
pub use engine::{PostgresEngine, PostgresSettings};
pub use history::{TimelineSwitch, branches};
pub use probe::{Lsn, PgProbe, Receiver, Slot, probe, slot_name};
