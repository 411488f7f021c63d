//! The PostgreSQL engine, over SQL (tokio-postgres, a timeout on every call). So far: the probe
//! of one member. The engine behind the [`super::Engine`] trait, and the node agent for what
//! SQL cannot do, build on it.

pub mod probe;

pub use probe::{Lsn, PgProbe, Receiver, probe};
