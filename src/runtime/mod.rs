//! The runtimes: the shared per-cluster reconciler, the spec loop of the runtimes that read a
//! directory of specs, and the adapters beside each other: Kubernetes, files (a process alone),
//! and etcd (several hosts).

pub mod etcd;
pub mod files;
pub mod kubernetes;
pub mod reconciler;
pub mod report;
pub mod spec_loop;
