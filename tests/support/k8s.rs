//! A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager on loopback, killed by PID.
//!
//! Binaries come from an envtest-style `KUBEBUILDER_ASSETS` directory
//! (`scripts/install-k8s-test-binaries` builds one). Without it the tests say so and pass,
//! except under CI (`CI` set), where missing assets are a failure.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use kube::config::{KubeConfigOptions, Kubeconfig};
use replicant_testkit::free_port;

use super::Controller;
use tempfile::TempDir;

const ADMIN_TOKEN: &str = "replicant-test-admin-token";

pub struct ControlPlane {
    pub dir: TempDir,
    pub url: String,
    pub admin_kubeconfig: PathBuf,
    kubectl: PathBuf,
    children: Vec<(String, Child)>,
}

/// The assets directory, or `None` (test skipped) outside CI.
pub fn assets() -> Option<PathBuf> {
    let dir = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from);
    match dir {
        Some(dir) if dir.join("kube-apiserver").is_file() && dir.join("etcd").exists() => Some(dir),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "KUBEBUILDER_ASSETS must name a directory with etcd, kube-apiserver and \
                 kube-controller-manager under CI: run scripts/install-k8s-test-binaries"
            );
            eprintln!(
                "SKIPPED: set KUBEBUILDER_ASSETS (scripts/install-k8s-test-binaries prints it)"
            );
            None
        }
    }
}

/// A real `helm` (`HELM`, else on PATH), or `None` (test skipped) outside CI.
pub fn helm() -> Option<PathBuf> {
    super::tool("helm", "HELM", "run scripts/install-helm and set HELM")
}

/// `helm template` of the chart as installed in `replicant-system`, CRDs included; add
/// `--set` arguments after it.
pub const CHART_TEMPLATE: &[&str] = &[
    "template",
    "replicant",
    "charts/replicant",
    "--namespace",
    "replicant-system",
    "--include-crds",
];

/// Run helm in the project directory and insist it succeeds; returns stdout.
pub fn run_helm(helm: &Path, args: &[&str]) -> String {
    let out = Command::new(helm)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("helm runs");
    succeeded(&format!("helm {args:?}"), out)
}

/// The stdout of a command that must have succeeded; its whole output otherwise.
fn succeeded(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> (String, Child) {
    let file = fs::File::create(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    (name.to_string(), child)
}

pub fn kubeconfig_text(url: &str, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {url}
    insecure-skip-tls-verify: true
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: test
  context:
    cluster: test
    user: {user}
    namespace: default
current-context: test
"
    )
}

impl ControlPlane {
    /// Start etcd, the API server (RBAC on, token auth) and the controller manager (garbage
    /// collection, service-account tokens); `None` when the binaries are not available.
    pub async fn start() -> Option<Self> {
        let assets = assets()?;
        let dir = tempfile::Builder::new()
            .prefix("replicant-k8s-")
            .tempdir()
            .unwrap();
        let d = dir.path().to_path_buf();
        let mut children = Vec::new();

        let (client_port, peer_port) = (free_port().unwrap(), free_port().unwrap());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        children.push(spawn(
            "etcd",
            &assets.join("etcd"),
            &[
                format!("--data-dir={}", d.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync".into(),
            ],
            &d.join("etcd.log"),
        ));

        let key = d.join("sa.key");
        let status = Command::new("openssl")
            .args(["genrsa", "-out", key.to_str().unwrap(), "2048"])
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl genrsa");
        fs::write(
            d.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin,system:masters\n"),
        )
        .unwrap();

        let port = free_port().unwrap();
        let url = format!("https://127.0.0.1:{port}");
        let certs = d.join("certs");
        children.push(spawn(
            "kube-apiserver",
            &assets.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                "--insecure-port=0".into(),
                format!("--cert-dir={}", certs.display()),
                format!("--token-auth-file={}", d.join("tokens.csv").display()),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", key.display()),
                format!("--service-account-signing-key-file={}", key.display()),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--enable-priority-and-fairness=false".into(),
            ],
            &d.join("kube-apiserver.log"),
        ));
        let admin_kubeconfig = d.join("admin.kubeconfig");
        fs::write(
            &admin_kubeconfig,
            kubeconfig_text(&url, "admin", ADMIN_TOKEN),
        )
        .unwrap();
        let kubectl = [assets.join("kubectl")]
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("kubectl"));
        let mut plane = ControlPlane {
            dir,
            url,
            admin_kubeconfig,
            kubectl,
            children,
        };
        plane.wait_ready().await;

        let cm_log = plane.dir.path().join("kube-controller-manager.log");
        let cm = spawn(
            "kube-controller-manager",
            &assets.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", plane.admin_kubeconfig.display()),
                format!("--service-account-private-key-file={}", key.display()),
                format!("--root-ca-file={}", certs.join("apiserver.crt").display()),
                "--controllers=garbagecollector,serviceaccount,serviceaccount-token,namespace"
                    .into(),
                "--leader-elect=false".into(),
                "--port=0".into(),
                "--secure-port=0".into(),
                "--concurrent-gc-syncs=5".into(),
            ],
            &cm_log,
        );
        plane.children.push(cm);
        Some(plane)
    }

    async fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(client) = self.admin_client().await {
                let request = http::Request::get("/readyz").body(Vec::new()).unwrap();
                if let Ok(text) = client.request_text(request).await
                    && text.trim() == "ok"
                {
                    return;
                }
            }
            let exited = self
                .children
                .iter_mut()
                .find_map(|(name, child)| Some((name.clone(), child.try_wait().ok()??)));
            if let Some((name, status)) = exited {
                panic!("{name} exited ({status}):\n{}", self.log(&name));
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "kube-apiserver not ready in 90s:\n{}",
                self.log("kube-apiserver")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn log(&self, name: &str) -> String {
        let text =
            fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub async fn client_for(kubeconfig: &Path) -> kube::Result<kube::Client> {
        replicant::runtime::install_tls_provider();
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(kubeconfig).expect("kubeconfig reads"),
            &KubeConfigOptions::default(),
        )
        .await
        .expect("kubeconfig is valid");
        kube::Client::try_from(config)
    }

    pub async fn admin_client(&self) -> kube::Result<kube::Client> {
        Self::client_for(&self.admin_kubeconfig).await
    }

    /// Run kubectl as the admin; the output whatever the exit status.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(&self.kubectl)
            .arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("kubectl runs")
    }

    /// Run kubectl and insist it succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        succeeded(&format!("kubectl {args:?}"), self.kubectl(args))
    }

    /// Apply stdin-like text.
    pub fn apply_text(&self, name: &str, yaml: &str) -> Output {
        let file = self.dir.path().join(name);
        fs::write(&file, yaml).unwrap();
        self.kubectl(&["apply", "-f", file.to_str().unwrap()])
    }

    /// A kubeconfig that authenticates as a ServiceAccount, with the token the controller
    /// manager minted for it: the operator then runs with exactly the chart's RBAC.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
        let client = self.admin_client().await.unwrap();
        let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), namespace);
        let secrets: kube::Api<Secret> = kube::Api::namespaced(client, namespace);
        let started = Instant::now();
        let token = loop {
            let account = accounts.get_opt(name).await.unwrap();
            let secret_name = account
                .and_then(|a| a.secrets)
                .and_then(|s| s.into_iter().next())
                .and_then(|s| s.name);
            if let Some(secret_name) = secret_name
                && let Some(secret) = secrets.get_opt(&secret_name).await.unwrap()
                && let Some(token) = secret.data.and_then(|d| d.get("token").cloned())
            {
                break String::from_utf8(token.0).unwrap();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no token for ServiceAccount {namespace}/{name}:\n{}",
                self.log("kube-controller-manager")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        fs::write(
            &path,
            kubeconfig_text(
                &self.url,
                &format!("system:serviceaccount:{namespace}:{name}"),
                &token,
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `replicant operator` child process (killed by PID on drop, like every [`Controller`]).
pub struct Operator {
    process: Controller,
    pub identity: String,
}

impl Operator {
    /// Start an operator authenticated by `kubeconfig`, electing on the chart's lease with
    /// short timings so a takeover happens within seconds.
    pub fn start(
        plane: &ControlPlane,
        kubeconfig: &Path,
        identity: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let log = plane.dir.path().join(format!("operator-{identity}.log"));
        let kubeconfig = kubeconfig.to_str().unwrap();
        let mut env = env.to_vec();
        env.push(("KUBECONFIG", kubeconfig));
        let process = Controller::spawn(
            &[
                "operator",
                "--lease-namespace=replicant-system",
                "--lease-duration=3s",
                "--renew-deadline=2s",
                "--retry-period=500ms",
                "--log-format=json",
            ],
            &[&format!("--identity={identity}")],
            &env,
            log,
        );
        Operator {
            process,
            identity: identity.to_string(),
        }
    }
}

impl std::ops::Deref for Operator {
    type Target = Controller;

    fn deref(&self) -> &Controller {
        &self.process
    }
}

impl std::ops::DerefMut for Operator {
    fn deref_mut(&mut self) -> &mut Controller {
        &mut self.process
    }
}

/// `kubectl apply -f manifests/`: CRDs, namespace, RBAC, Deployment.
fn apply_manifests(plane: &ControlPlane) {
    // This 1.20 server predates `x-kubernetes-validations` (CEL), so kubectl's client-side
    // schema check would refuse the CRDs before sending them; the server itself accepts them and
    // ignores the rules (replicant enforces them and reports in status).
    let out = plane.kubectl_ok(&["apply", "--validate=false", "-f", "manifests/"]);
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/replicationclusters.replicant.dev"
        ),
        "{out}"
    );
    assert!(out.contains("deployment.apps/replicant"), "{out}");
}

/// `helm install` of the chart, as the README says.
fn helm_install(plane: &ControlPlane, helm: &Path) {
    run_helm(
        helm,
        &[
            &format!("--kubeconfig={}", plane.admin_kubeconfig.display()),
            "install",
            "replicant",
            "charts/replicant",
            "--namespace",
            "replicant-system",
            "--create-namespace",
        ],
    );
    let deployed = plane.kubectl_ok(&[
        "-n",
        "replicant-system",
        "get",
        "deployment,serviceaccount,role",
    ]);
    assert!(deployed.contains("deployment.apps/replicant"), "{deployed}");
}

/// Install the operator's resources as the README says (the manifests, or the chart with
/// `helm`), wait for the CRDs, create `namespace`; the kubeconfig of the operator's
/// ServiceAccount.
pub async fn install_operator(
    plane: &ControlPlane,
    helm: Option<&Path>,
    namespace: &str,
) -> PathBuf {
    match helm {
        Some(helm) => helm_install(plane, helm),
        None => apply_manifests(plane),
    }
    plane.kubectl_ok(&["apply", "--validate=false", "-f", "crds/"]);
    plane.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/replicationclusters.replicant.dev",
        "crd/virtualnames.replicant.dev",
    ]);
    plane.kubectl_ok(&["create", "namespace", namespace]);
    plane
        .service_account_kubeconfig("replicant-system", "replicant")
        .await
}

/// The EndpointSlice version this server serves.
pub async fn slice_version(client: &kube::Client) -> String {
    match client.list_api_group_resources("discovery.k8s.io/v1").await {
        Ok(list) if list.resources.iter().any(|r| r.name == "endpointslices") => "v1".into(),
        _ => "v1beta1".into(),
    }
}

/// The EndpointSlices of `service` in `namespace`, at the version the server serves.
pub async fn slices(
    client: &kube::Client,
    namespace: &str,
    service: &str,
) -> Vec<kube::core::DynamicObject> {
    use kube::{
        Api,
        core::{ApiResource, DynamicObject, GroupVersionKind},
    };
    let gvk = GroupVersionKind::gvk(
        "discovery.k8s.io",
        &slice_version(client).await,
        "EndpointSlice",
    );
    let resource = ApiResource::from_gvk_with_plural(&gvk, "endpointslices");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    api.list(
        &kube::api::ListParams::default().labels(&format!("kubernetes.io/service-name={service}")),
    )
    .await
    .unwrap()
    .items
}

/// Wait until the ReplicationCluster `name` in `namespace` satisfies `check`; panics with its
/// last status and `logs()`.
pub async fn wait_for_cluster(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    what: &str,
    secs: u64,
    logs: impl Fn() -> String,
    check: impl Fn(&replicant::api::ReplicationCluster) -> bool,
) -> replicant::api::ReplicationCluster {
    let api: kube::Api<replicant::api::ReplicationCluster> =
        kube::Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(Some(cluster)) = api.get_opt(name).await {
            if check(&cluster) {
                return cluster;
            }
            last = Some(cluster);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting for {what}\nlast status: {}\n{}",
        serde_json::to_string_pretty(&last.and_then(|c| c.status)).unwrap(),
        logs()
    );
}

/// Ports the EndpointSlices of `service` in `namespace` point at (on 127.0.0.1), and the
/// member names they record.
pub async fn slice_ports(
    client: &kube::Client,
    namespace: &str,
    service: &str,
) -> (Vec<u16>, String) {
    let list = slices(client, namespace, service).await;
    let mut ports = Vec::new();
    let mut members = Vec::new();
    for slice in list {
        let endpoints = slice.data["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for endpoint in endpoints {
            assert_eq!(endpoint["addresses"][0], "127.0.0.1");
        }
        if !slice.data["endpoints"]
            .as_array()
            .is_none_or(|e| e.is_empty())
        {
            ports.push(slice.data["ports"][0]["port"].as_u64().unwrap() as u16);
        }
        if let Some(m) = slice
            .metadata
            .annotations
            .and_then(|a| a.get("replicant.dev/members").cloned())
        {
            members.push(m);
        }
    }
    ports.sort();
    (ports, members.join(","))
}
