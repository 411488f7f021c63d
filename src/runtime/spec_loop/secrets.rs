//! The secrets a spec refers to, read from files and the environment of this host (the
//! runtimes without Kubernetes Secrets). Values are never logged; errors name the field.

use crate::{
    api::ReplicationClusterSpec,
    engine::{Credentials, Secret},
    runtime::reconciler::{ClusterSecrets, SecretsError},
};

/// The secrets a spec refers to, from files and the environment of this host.
pub fn local_secrets(spec: &ReplicationClusterSpec) -> Result<ClusterSecrets, SecretsError> {
    Ok(ClusterSecrets {
        password: credentials(spec)?.password,
        agent_token: agent_token(spec)?,
        agent_ca: agent_ca(spec)?,
    })
}

/// Resolve a standalone credentials reference (file or environment variable).
pub fn credentials(spec: &ReplicationClusterSpec) -> Result<Credentials, SecretsError> {
    let Some(reference) = &spec.credentials else {
        return Ok(Credentials::default());
    };
    let password = if let Some(var) = &reference.password_env {
        Some(std::env::var(var).map_err(|_| {
            SecretsError::unresolved(
                "spec.credentials.passwordEnv",
                format!("environment variable {var} is not set"),
            )
        })?)
    } else if let Some(file) = &reference.password_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            SecretsError::unresolved("spec.credentials.passwordFile", format!("{file}: {e}"))
        })?;
        Some(text.trim_end_matches(['\n', '\r']).to_string())
    } else {
        return Err(SecretsError::NeedsKubernetes {
            field: "spec.credentials.secretRef",
            instead: "passwordFile or passwordEnv",
        });
    };
    Ok(Credentials {
        username: reference.username.clone(),
        password: password.map(Secret::new),
    })
}

/// The largest CA bundle read: a few hundred certificates.
const MAX_CA_BUNDLE: u64 = 1 << 20;

/// Read a standalone `agentTls` reference: the CA bundle in `caFile`.
pub fn agent_ca(spec: &ReplicationClusterSpec) -> Result<Option<String>, SecretsError> {
    let Some(tls) = &spec.agent_tls else {
        return Ok(None);
    };
    let Some(file) = &tls.ca_file else {
        return Err(SecretsError::NeedsKubernetes {
            field: "spec.agentTls.caSecretRef",
            instead: "caFile",
        });
    };
    let read = || -> std::io::Result<String> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(file)?
            .take(MAX_CA_BUNDLE + 1)
            .read_to_string(&mut text)?;
        Ok(text)
    };
    let text = read()
        .map_err(|e| SecretsError::unresolved("spec.agentTls.caFile", format!("{file}: {e}")))?;
    if text.len() as u64 > MAX_CA_BUNDLE {
        return Err(SecretsError::unresolved(
            "spec.agentTls.caFile",
            format!("{file}: larger than {MAX_CA_BUNDLE} bytes"),
        ));
    }
    Ok(Some(text))
}

/// Resolve a standalone agent token reference (file or environment variable).
pub fn agent_token(spec: &ReplicationClusterSpec) -> Result<Option<Secret>, SecretsError> {
    let Some(reference) = &spec.agent_token else {
        return Ok(None);
    };
    let token = if let Some(var) = &reference.token_env {
        std::env::var(var).map_err(|_| {
            SecretsError::unresolved(
                "spec.agentToken.tokenEnv",
                format!("environment variable {var} is not set"),
            )
        })?
    } else if let Some(file) = &reference.token_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            SecretsError::unresolved("spec.agentToken.tokenFile", format!("{file}: {e}"))
        })?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else {
        return Err(SecretsError::NeedsKubernetes {
            field: "spec.agentToken.secretRef",
            instead: "tokenFile or tokenEnv",
        });
    };
    Ok(Some(Secret::new(token)))
}
