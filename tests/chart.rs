//! The Helm chart lints, renders, and `manifests/` is exactly what it renders (drift check).
//!
//! Needs a real `helm` (`scripts/install-helm`; `HELM` or PATH). Without one the tests say so
//! and pass, except under CI (`CI` set), where a missing helm is a failure.

mod support;

use std::path::Path;

use support::k8s::{CHART_TEMPLATE as TEMPLATE, helm, run_helm};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn chart_lints_strictly() {
    let Some(helm) = helm() else { return };
    let out = run_helm(&helm, &["lint", "--strict", "charts/replicant"]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn manifests_are_the_rendered_chart() {
    let Some(helm) = helm() else { return };
    let mut args = TEMPLATE.to_vec();
    args.extend(["--set", "namespace.create=true"]);
    let rendered = run_helm(&helm, &args);
    let committed = std::fs::read_to_string(root().join("manifests/replicant.yaml"))
        .expect("manifests/replicant.yaml exists");
    assert!(
        committed == rendered,
        "manifests/replicant.yaml differs from the chart; run scripts/generate-manifests and commit"
    );
}

#[test]
fn the_plain_rules_file_and_dashboard_are_the_charts() {
    for (copy, source) in [
        (
            "manifests/monitoring/prometheus-rules.yaml",
            "charts/replicant/files/prometheus-rules.yaml",
        ),
        (
            "manifests/monitoring/grafana-dashboard.json",
            "charts/replicant/files/dashboard.json",
        ),
    ] {
        let read = |path: &str| std::fs::read_to_string(root().join(path)).expect(path);
        assert!(
            read(copy) == read(source),
            "{copy} differs from {source}; run scripts/generate-manifests and commit"
        );
    }
}

/// The rendered documents of kind `kind`.
fn documents(rendered: &str, kind: &str) -> Vec<serde_yaml::Value> {
    rendered
        .split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<serde_yaml::Value>(doc).ok())
        .filter(|doc| doc["kind"].as_str() == Some(kind))
        .collect()
}

#[test]
fn one_value_switches_on_the_dashboard_the_rules_and_the_monitor() {
    let Some(helm) = helm() else { return };
    let mut args = TEMPLATE.to_vec();
    let off = run_helm(&helm, &args);
    for kind in ["PrometheusRule", "ServiceMonitor", "PodMonitor"] {
        assert!(
            documents(&off, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
    args.extend(["--set", "monitoring.enabled=true"]);
    let on = run_helm(&helm, &args);

    let rule = &documents(&on, "PrometheusRule")[0];
    let file: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("charts/replicant/files/prometheus-rules.yaml"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        rule["spec"]["groups"], file["groups"],
        "the rule carries the file's groups"
    );

    let dashboards: Vec<_> = documents(&on, "ConfigMap")
        .into_iter()
        .filter(|c| c["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1"))
        .collect();
    assert_eq!(dashboards.len(), 1, "{on}");
    let shipped: serde_json::Value = serde_json::from_str(
        dashboards[0]["data"]["replicant-clusters.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("charts/replicant/files/dashboard.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(shipped, file);

    let monitor = &documents(&on, "ServiceMonitor")[0];
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"].as_str(),
        Some("metrics")
    );
    assert!(
        documents(&on, "PodMonitor").is_empty(),
        "one monitor, not two"
    );

    // Without the metrics Service the umbrella value picks the PodMonitor; asking for a
    // ServiceMonitor then is an error that says why.
    args.extend(["--set", "metrics.service.enabled=false"]);
    let pods = run_helm(&helm, &args);
    assert_eq!(documents(&pods, "PodMonitor").len(), 1, "{pods}");
    assert!(documents(&pods, "ServiceMonitor").is_empty());
    args.extend(["--set", "monitoring.serviceMonitor.enabled=true"]);
    let out = std::process::Command::new(&helm)
        .args(&args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs metrics.service.enabled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Each part can be switched on alone, with labels for the operator's selectors and for
    // Alertmanager's routes.
    let mut args = TEMPLATE.to_vec();
    args.extend([
        "--set",
        "monitoring.prometheusRule.enabled=true",
        "--set",
        "monitoring.prometheusRule.labels.release=kube-prometheus-stack",
        "--set",
        "monitoring.prometheusRule.alertLabels.team=databases",
    ]);
    let rule_only = run_helm(&helm, &args);
    let rule = &documents(&rule_only, "PrometheusRule")[0];
    assert_eq!(
        rule["metadata"]["labels"]["release"].as_str(),
        Some("kube-prometheus-stack")
    );
    for alert in rule["spec"]["groups"][0]["rules"].as_sequence().unwrap() {
        assert_eq!(
            alert["labels"]["team"].as_str(),
            Some("databases"),
            "{alert:?}"
        );
        assert!(alert["labels"]["severity"].as_str().is_some(), "{alert:?}");
    }
    assert!(documents(&rule_only, "ServiceMonitor").is_empty());

    // The dashboard where the sidecar looks, with its folder; the monitors' timing and labels.
    let mut args = TEMPLATE.to_vec();
    args.extend([
        "--set",
        "monitoring.enabled=true",
        "--set",
        "monitoring.grafanaDashboard.namespace=monitoring",
        "--set",
        "monitoring.grafanaDashboard.annotations.grafana_folder=Databases",
        "--set",
        "monitoring.serviceMonitor.interval=15s",
        "--set",
        "monitoring.serviceMonitor.scrapeTimeout=5s",
        "--set",
        "monitoring.podMonitor.enabled=true",
        "--set",
        "monitoring.podMonitor.labels.release=kps",
        "--set",
        "monitoring.podMonitor.interval=20s",
    ]);
    let tuned = run_helm(&helm, &args);
    let dashboard = documents(&tuned, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1"))
        .expect("the dashboard ConfigMap");
    assert_eq!(
        dashboard["metadata"]["namespace"].as_str(),
        Some("monitoring")
    );
    assert_eq!(
        dashboard["metadata"]["annotations"]["grafana_folder"].as_str(),
        Some("Databases")
    );
    let endpoint = &documents(&tuned, "ServiceMonitor")[0]["spec"]["endpoints"][0];
    assert_eq!(endpoint["interval"].as_str(), Some("15s"));
    assert_eq!(endpoint["scrapeTimeout"].as_str(), Some("5s"));
    let pods = &documents(&tuned, "PodMonitor")[0];
    assert_eq!(pods["metadata"]["labels"]["release"].as_str(), Some("kps"));
    assert_eq!(
        pods["spec"]["podMetricsEndpoints"][0]["interval"].as_str(),
        Some("20s")
    );
}

#[test]
fn default_render_is_locked_down_and_highly_available() {
    let Some(helm) = helm() else { return };
    let out = run_helm(&helm, TEMPLATE);
    for needle in [
        "kind: CustomResourceDefinition",
        "kind: ServiceAccount",
        "kind: ClusterRole",
        "kind: Deployment",
        "replicas: 2",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "path: /healthz",
        "--lease-duration=15s",
        "resources: [\"leases\"]",
        "value: \"json\"",
    ] {
        assert!(out.contains(needle), "default render lacks {needle:?}");
    }
    // No wildcard grants anywhere.
    assert!(!out.contains("\"*\""), "RBAC must not use wildcards");
    assert!(
        !out.contains("kind: Namespace"),
        "namespace only when asked for"
    );
}

#[test]
fn values_switch_leader_election_and_scope() {
    let Some(helm) = helm() else { return };
    let mut args = TEMPLATE.to_vec();
    args.extend([
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "replicas=1",
        "--set",
        "watchNamespace=shop",
        "--set",
        "logging.level=debug",
    ]);
    let out = run_helm(&helm, &args);
    assert!(out.contains("--no-leader-election"));
    assert!(out.contains("name: WATCH_NAMESPACE\n              value: \"shop\""));
    assert!(out.contains("value: \"debug\""));
    assert!(
        !out.contains("kind: Role\n"),
        "no Lease Role without election"
    );
}
