//! Every Kubernetes API request the operator makes goes through [`call`]: a timeout and an error that names the request.

use std::{future::Future, time::Duration};

/// No single API request may take longer: a frozen API server must not stall a reconcile.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: no answer from the API server within {}s", API_TIMEOUT.as_secs())]
    Timeout { what: String },
}

impl ApiError {
    fn status(&self) -> Option<&kube::core::Status> {
        match self {
            ApiError::Kube {
                source: kube::Error::Api(status),
                ..
            } => Some(status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status().is_some_and(|s| s.is_not_found())
    }

    /// Someone else changed the object since we read it (or created it first).
    pub fn is_conflict(&self) -> bool {
        self.status()
            .is_some_and(|s| s.is_conflict() || s.is_already_exists())
    }
}

/// Run one API request with [`API_TIMEOUT`].
pub async fn call<T>(
    what: impl Into<String>,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(API_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(ApiError::Kube {
            what: what.into(),
            source,
        }),
        Err(_) => Err(ApiError::Timeout { what: what.into() }),
    }
}
