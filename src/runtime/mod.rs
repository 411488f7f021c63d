//! The runtimes: the shared per-cluster reconciler, the spec loop of the runtimes that read a
//! directory of specs, and the adapters beside each other: Kubernetes, files (a process alone),
//! and etcd (several hosts).

pub mod etcd;
pub mod files;
pub mod kubernetes;
pub mod reconciler;
pub mod report;
pub mod spec_loop;

/// Make ring the process's TLS provider, as replicant's own clients choose it explicitly.
/// rustls is built with both ring and aws-lc-rs (the object store's HTTP client brings the
/// second), so it cannot pick one for the clients that ask it for the default (the Kubernetes
/// client). Idempotent; call before any such client is made.
pub fn install_tls_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}
