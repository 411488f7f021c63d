//! Where etcd is and how to reach it: `--coordinator etcd://h1:2379,h2:2379[/prefix]` (or
//! `etcds://` for TLS), a CA and client certificate, and a user whose password comes from a
//! file or the environment and is never logged. Touches nothing but the connection.

use std::{path::PathBuf, time::Duration};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::engine::Secret;

/// The prefix every key lives under when the URL names none.
pub const DEFAULT_PREFIX: &str = "/replicant";

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("--coordinator {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot connect to etcd at {endpoints}: {message}")]
    Connect { endpoints: String, message: String },
}

/// The client side of TLS to etcd: the CA that signed the members' certificates, and this
/// host's certificate and key where etcd asks for one.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Coordinator {
    /// `http://host:port` or `https://host:port`, as the client takes them.
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub tls: Option<TlsFiles>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// For every request, and for connecting.
    pub timeout: Duration,
}

impl Coordinator {
    /// Parse `etcd://h1:2379,h2:2379[/prefix]` or `etcds://...`.
    pub fn parse(url: &str) -> Result<(Vec<String>, String, bool), CoordinatorError> {
        let invalid = |reason: &str| CoordinatorError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("etcds://") {
            (true, rest)
        } else {
            return Err(invalid(
                "must start with etcd:// (or etcds:// for TLS), as in etcd://h1:2379,h2:2379,h3:2379",
            ));
        };
        let (hosts, prefix) = match rest.split_once('/') {
            Some((hosts, "")) => (hosts, DEFAULT_PREFIX.to_string()),
            Some((hosts, prefix)) => (hosts, format!("/{}", prefix.trim_end_matches('/'))),
            None => (rest, DEFAULT_PREFIX.to_string()),
        };
        let scheme = if tls { "https" } else { "http" };
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let Some((name, port)) = host.rsplit_once(':') else {
                return Err(invalid(&format!("{host:?} has no port")));
            };
            if name.is_empty() || port.parse::<u16>().is_err() {
                return Err(invalid(&format!("{host:?} is not host:port")));
            }
            endpoints.push(format!("{scheme}://{host}"));
        }
        if endpoints.len() > 64 {
            return Err(invalid("more than 64 members"));
        }
        Ok((endpoints, prefix, tls))
    }

    fn options(&self) -> Result<ConnectOptions, CoordinatorError> {
        let mut options = ConnectOptions::new()
            .with_timeout(self.timeout)
            .with_connect_timeout(self.timeout)
            .with_keep_alive(Duration::from_secs(1), self.timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from its quorum answers nothing rather than stale data.
            .with_require_leader(true);
        if let Some(user) = &self.user {
            let Some(password) = &self.password else {
                return Err(CoordinatorError::Invalid(format!(
                    "--etcd-user {user} needs a password: --etcd-password-file or REPLICANT_ETCD_PASSWORD"
                )));
            };
            options = options.with_user(user.clone(), password.expose().to_string());
        }
        if let Some(files) = &self.tls {
            options = options.with_tls(tls_options(files)?);
        }
        Ok(options)
    }

    /// A client over every endpoint. Connecting does not wait for etcd to answer: a host that
    /// starts while etcd is away comes up, serves nothing and leads nothing until it is back.
    pub async fn connect(&self) -> Result<Client, CoordinatorError> {
        let options = self.options()?;
        let connected = tokio::time::timeout(
            self.timeout * 2,
            Client::connect(self.endpoints.clone(), Some(options)),
        )
        .await;
        let failure = |message: String| CoordinatorError::Connect {
            endpoints: self.endpoints.join(","),
            message,
        };
        match connected {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(failure(e.to_string())),
            Err(_) => Err(failure(format!("no answer within {:?}", self.timeout * 2))),
        }
    }
}

fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, CoordinatorError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut bytes))
        .map_err(|source| CoordinatorError::File {
            what,
            path: path.display().to_string(),
            source,
        })?;
    Ok(bytes)
}

fn tls_options(files: &TlsFiles) -> Result<TlsOptions, CoordinatorError> {
    let Some(ca) = &files.ca else {
        return Err(CoordinatorError::Invalid(
            "etcds:// needs --etcd-ca: the CA that signed the etcd members' certificates".into(),
        ));
    };
    let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read("--etcd-ca", ca)?));
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read("--etcd-cert", cert)?,
                read("--etcd-key", key)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(CoordinatorError::Invalid(
                "--etcd-cert and --etcd-key go together".into(),
            ));
        }
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_urls() {
        let (endpoints, prefix, tls) =
            Coordinator::parse("etcd://h1:2379,h2:2379,10.0.0.3:2379").unwrap();
        assert_eq!(
            endpoints,
            ["http://h1:2379", "http://h2:2379", "http://10.0.0.3:2379"]
        );
        assert_eq!(prefix, "/replicant");
        assert!(!tls);
        let (endpoints, prefix, tls) = Coordinator::parse("etcds://h1:2379/prod/db/").unwrap();
        assert_eq!(endpoints, ["https://h1:2379"]);
        assert_eq!(prefix, "/prod/db");
        assert!(tls);
        for bad in [
            "http://h1:2379",
            "etcd://h1",
            "etcd://:2379",
            "etcd://h1:x",
            "etcd://",
        ] {
            let error = Coordinator::parse(bad).unwrap_err().to_string();
            assert!(error.starts_with("--coordinator"), "{bad}: {error}");
        }
    }
}
