//! The PostgreSQL engine, over SQL (tokio-postgres, a timeout on every call). So far: the probe
//! of one member and the actions that need no restart. The engine behind the
//! [`super::Engine`] trait, and the node agent for what SQL cannot do, build on them.

pub mod actions;
pub mod agent;
pub mod controldata;
pub mod history;
pub mod probe;

pub use actions::{Target, Upstream};
pub use history::{TimelineSwitch, branches};
pub use probe::{Lsn, PgProbe, Receiver, Slot, probe, slot_name};
