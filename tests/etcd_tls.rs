//! `etcds://` against a real etcd that serves TLS and asks for client certificates: with the CA
//! and this host's certificate the coordinator's client reads and writes; without the
//! certificate, or trusting another CA, it gets nothing.

mod support;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use replicant::runtime::etcd::{Coordinator, connect::TlsFiles};
use replicant_testkit::free_port;
use support::etcd::available;

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

/// Two CAs, and a server and a client certificate for 127.0.0.1 signed by the first.
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let key = format!("{ca}.key");
        let pem = format!("{ca}.pem");
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "1",
            "-subj",
            "/CN=replicant-test-ca",
        ]);
        openssl(dir, &args);
    }
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    for who in ["server", "client"] {
        let (key, csr, pem) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
        );
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                "ext.cnf",
            ],
        );
    }
}

struct TlsEtcd {
    child: Child,
    port: u16,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_etcd(dir: &Path) -> TlsEtcd {
    let (port, peer) = (free_port().unwrap(), free_port().unwrap());
    let file = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new("etcd")
        .args(["--name", "m0", "--data-dir", &file("data")])
        .args(["--listen-client-urls", &format!("https://127.0.0.1:{port}")])
        .args([
            "--advertise-client-urls",
            &format!("https://127.0.0.1:{port}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args(["--initial-cluster", &format!("m0=http://127.0.0.1:{peer}")])
        .args([
            "--cert-file",
            &file("server.pem"),
            "--key-file",
            &file("server.key"),
        ])
        .args(["--trusted-ca-file", &file("ca.pem"), "--client-cert-auth"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd starts");
    TlsEtcd { child, port }
}

fn coordinator(dir: &Path, port: u16, ca: &str, with_cert: bool) -> Coordinator {
    let (endpoints, prefix, tls) =
        Coordinator::parse(&format!("etcds://127.0.0.1:{port}")).unwrap();
    assert!(tls);
    Coordinator {
        endpoints,
        prefix,
        tls: Some(TlsFiles {
            ca: Some(dir.join(ca)),
            cert: with_cert.then(|| dir.join("client.pem")),
            key: with_cert.then(|| dir.join("client.key")),
        }),
        user: None,
        password: None,
        timeout: Duration::from_secs(1),
    }
}

/// Whether a put and a get through `coordinator` succeed.
async fn usable(coordinator: &Coordinator) -> bool {
    let Ok(mut client) = coordinator.connect().await else {
        return false;
    };
    let put = tokio::time::timeout(
        Duration::from_secs(2),
        client.put("/replicant/tls-probe", "1", None),
    )
    .await;
    if !matches!(put, Ok(Ok(_))) {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.get("/replicant/tls-probe", None)).await,
        Ok(Ok(found)) if found.kvs().first().is_some_and(|kv| kv.value() == b"1")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn etcds_with_the_ca_and_a_client_certificate_works_and_without_them_does_not() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let etcd = start_etcd(dir.path());
    let trusted = coordinator(dir.path(), etcd.port, "ca.pem", true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !usable(&trusted).await {
        assert!(
            Instant::now() < deadline,
            "etcd over TLS never answered: {}",
            std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !usable(&coordinator(dir.path(), etcd.port, "ca.pem", false)).await,
        "no client certificate, no access"
    );
    assert!(
        !usable(&coordinator(dir.path(), etcd.port, "other-ca.pem", true)).await,
        "a server whose CA is not trusted is not used"
    );
    let missing_ca = Coordinator {
        tls: Some(TlsFiles::default()),
        ..trusted.clone()
    };
    let Err(error) = missing_ca.connect().await else {
        panic!("etcds:// without a CA connected");
    };
    assert!(error.to_string().contains("--etcd-ca"), "{error}");
}
