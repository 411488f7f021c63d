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
        repository_keys: repository_keys(spec)?,
    })
}

/// Resolve the standalone store credentials of every repository that names some: both
/// files or both environment variables for S3, the file or the variable for Azure and GCS.
pub fn repository_keys(
    spec: &ReplicationClusterSpec,
) -> Result<std::collections::BTreeMap<String, crate::repository::StoreKey>, SecretsError> {
    use crate::repository::StoreKey;
    let mut keys = std::collections::BTreeMap::new();
    for (path, repository, credentials) in spec.s3_credentials() {
        if credentials.secret_ref.is_some() {
            return Err(SecretsError::NeedsKubernetes {
                field: "spec.backup.repositories[].s3.credentials.secretRef",
                instead: "accessKeyIdFile and secretAccessKeyFile, or accessKeyIdEnv and secretAccessKeyEnv",
            });
        }
        let read = |name: &str, env: &Option<String>, file: &Option<String>| {
            read_local(&format!("{path}.{name}"), env, file)
        };
        keys.insert(
            repository.name.clone(),
            StoreKey::S3 {
                access_key_id: read(
                    "accessKeyId",
                    &credentials.access_key_id_env,
                    &credentials.access_key_id_file,
                )?,
                secret_access_key: read(
                    "secretAccessKey",
                    &credentials.secret_access_key_env,
                    &credentials.secret_access_key_file,
                )?,
            },
        );
    }
    for (path, repository, credentials) in spec.azure_credentials() {
        if credentials.secret_ref.is_some() {
            return Err(SecretsError::NeedsKubernetes {
                field: "spec.backup.repositories[].azure.credentials.secretRef",
                instead: "accountKeyFile or accountKeyEnv",
            });
        }
        let account_key = read_local(
            &format!("{path}.accountKey"),
            &credentials.account_key_env,
            &credentials.account_key_file,
        )?;
        keys.insert(repository.name.clone(), StoreKey::Azure { account_key });
    }
    for (path, repository, credentials) in spec.gcs_credentials() {
        if credentials.secret_ref.is_some() {
            return Err(SecretsError::NeedsKubernetes {
                field: "spec.backup.repositories[].gcs.credentials.secretRef",
                instead: "serviceAccountKeyFile or serviceAccountKeyEnv",
            });
        }
        let service_account_key = read_local(
            &format!("{path}.serviceAccountKey"),
            &credentials.service_account_key_env,
            &credentials.service_account_key_file,
        )?;
        keys.insert(
            repository.name.clone(),
            StoreKey::Gcs {
                service_account_key,
            },
        );
    }
    Ok(keys)
}

/// A secret from environment variable `env` if set, else from `file` (its last line break
/// dropped); `field` is the path without its `Env`/`File` ending, for messages.
fn read_local(
    field: &str,
    env: &Option<String>,
    file: &Option<String>,
) -> Result<String, SecretsError> {
    if let Some(var) = env {
        return std::env::var(var).map_err(|_| {
            SecretsError::unresolved(
                format!("{field}Env"),
                format!("environment variable {var} is not set"),
            )
        });
    }
    let file = file.as_deref().unwrap_or_default();
    std::fs::read_to_string(file)
        .map(|text| text.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| SecretsError::unresolved(format!("{field}File"), format!("{file}: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster with one S3 repository whose `credentials` are `credentials` (YAML).
    fn spec(credentials: &str) -> ReplicationClusterSpec {
        serde_yaml::from_str(&format!(
            r#"
engine: postgres
primary: a
members: [{{ name: a, address: "127.0.0.1:5432" }}]
backup:
  repositories:
    - name: local
      directory: {{ path: /backups }}
    - name: offsite
      s3: {{ bucket: pg, credentials: {credentials} }}
  archive: {{ repository: offsite }}
"#
        ))
        .unwrap()
    }

    #[test]
    fn an_s3_key_is_read_from_files_with_their_line_ends_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let (id, secret) = (dir.path().join("id"), dir.path().join("secret"));
        std::fs::write(&id, "GK123\n").unwrap();
        std::fs::write(&secret, "s3cr3t\r\n").unwrap();
        let keys = repository_keys(&spec(&format!(
            "{{ accessKeyIdFile: {}, secretAccessKeyFile: {} }}",
            id.display(),
            secret.display()
        )))
        .unwrap();
        assert_eq!(
            keys["offsite"],
            crate::repository::StoreKey::S3 {
                access_key_id: "GK123".into(),
                secret_access_key: "s3cr3t".into()
            }
        );
        // The archive names the second repository: that is the one its settings carry.
        let spec = spec("{ accessKeyIdFile: /x, secretAccessKeyFile: /y }");
        let archive = spec.backup.as_ref().unwrap().archive_repository().unwrap();
        assert_eq!(archive.name, "offsite");
    }

    #[test]
    fn a_missing_key_names_the_field_and_a_secret_ref_needs_kubernetes() {
        let missing = repository_keys(&spec(
            "{ accessKeyIdFile: /nonexistent/id, secretAccessKeyFile: /nonexistent/secret }",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            missing.contains("spec.backup.repositories[1].s3.credentials.accessKeyIdFile"),
            "{missing}"
        );
        let unset = repository_keys(&spec(
            "{ accessKeyIdEnv: REPLICANT_TEST_UNSET_ID, secretAccessKeyEnv: REPLICANT_TEST_UNSET_SECRET }",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            unset.contains("REPLICANT_TEST_UNSET_ID is not set"),
            "{unset}"
        );
        let kubernetes = repository_keys(&spec("{ secretRef: { name: s3 } }"))
            .unwrap_err()
            .to_string();
        assert!(kubernetes.contains("secretRef"), "{kubernetes}");
    }

    #[test]
    fn an_azure_account_key_is_read_from_a_file_or_the_environment() {
        let azure = |credentials: &str| -> ReplicationClusterSpec {
            serde_yaml::from_str(&format!(
                "engine: postgres\nprimary: a\nmembers: [{{ name: a, address: \"127.0.0.1:5432\" }}]\nbackup:\n  repositories:\n    - name: blobs\n      azure: {{ account: orders, container: archive, credentials: {credentials} }}\n"
            ))
            .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("account-key");
        std::fs::write(&file, "a2V5\n").unwrap();
        let keys =
            repository_keys(&azure(&format!("{{ accountKeyFile: {} }}", file.display()))).unwrap();
        assert_eq!(
            keys["blobs"],
            crate::repository::StoreKey::Azure {
                account_key: "a2V5".into()
            }
        );
        let unset = repository_keys(&azure("{ accountKeyEnv: REPLICANT_TEST_UNSET_AZURE }"))
            .unwrap_err()
            .to_string();
        assert!(
            unset.contains("spec.backup.repositories[0].azure.credentials.accountKeyEnv")
                && unset.contains("REPLICANT_TEST_UNSET_AZURE is not set"),
            "{unset}"
        );
        let kubernetes = repository_keys(&azure("{ secretRef: { name: blobs } }"))
            .unwrap_err()
            .to_string();
        assert!(
            kubernetes.contains("azure.credentials.secretRef"),
            "{kubernetes}"
        );
    }

    #[test]
    fn a_gcs_service_account_key_is_read_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.json");
        std::fs::write(&file, "{\"client_email\": \"a@b\"}\n").unwrap();
        let spec: ReplicationClusterSpec = serde_yaml::from_str(&format!(
            "engine: postgres\nprimary: a\nmembers: [{{ name: a, address: \"127.0.0.1:5432\" }}]\nbackup:\n  repositories:\n    - name: gcs\n      gcs: {{ bucket: pg, credentials: {{ serviceAccountKeyFile: {} }} }}\n",
            file.display()
        ))
        .unwrap();
        assert_eq!(
            repository_keys(&spec).unwrap()["gcs"],
            crate::repository::StoreKey::Gcs {
                service_account_key: "{\"client_email\": \"a@b\"}".into()
            }
        );
    }

    #[test]
    fn store_keys_keep_their_wire_form_and_never_show_their_secret() {
        // Agents keep the key in their settings file: an S3 key reads as it always did.
        let s3: crate::repository::StoreKey =
            serde_json::from_str(r#"{"accessKeyId":"GK1","secretAccessKey":"hidden"}"#).unwrap();
        let azure: crate::repository::StoreKey =
            serde_json::from_str(r#"{"accountKey":"hidden"}"#).unwrap();
        assert!(matches!(azure, crate::repository::StoreKey::Azure { .. }));
        let gcs: crate::repository::StoreKey =
            serde_json::from_str(r#"{"serviceAccountKey":"hidden"}"#).unwrap();
        assert!(matches!(gcs, crate::repository::StoreKey::Gcs { .. }));
        for key in [s3, azure, gcs] {
            assert!(!format!("{key:?}").contains("hidden"), "{key:?}");
        }
    }
}
