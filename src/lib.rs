//! replicant: a declarative reconcile controller for master/replica replication clusters.
//!
//! `observe -> plan -> act -> status`: [`core::plan::plan`] is pure and holds the decisions; the
//! resources users write live in [`api`]; [`validate`] rejects bad specs with field paths.

pub mod accept;
pub mod api;
pub mod bounded;
pub mod cli;
pub mod core;
pub mod crd;
pub mod demo;
pub mod durable;
pub mod engine;
pub mod metrics;
pub mod node;
pub mod proxy;
pub mod repository;
pub mod runtime;
pub mod validate;
