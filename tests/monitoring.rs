//! What operators look at: the alert rules under `promtool`, the dashboard's shape, a real
//! Prometheus scraping a live `replicant run` through a kill -9 failover, and the chart's
//! monitoring objects applied to a real API server.

mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use support::{
    pg_bed::{PgBed, ready_members},
    prometheus::{self, Prometheus},
    *,
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rules_file() -> PathBuf {
    root().join("charts/replicant/files/prometheus-rules.yaml")
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("charts/replicant/files/dashboard.json"))
        .expect("the dashboard exists");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel that queries, rows' nested panels included.
fn query_panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            out.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            out.push(panel);
        }
    }
    out
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

fn alert_names() -> BTreeSet<String> {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(rules_file()).unwrap()).unwrap();
    rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_alert_passes_promtool_and_its_unit_tests() {
    if !prometheus::available() {
        return;
    }
    let checked = promtool(&["check", "rules", rules_file().to_str().unwrap()]);
    assert!(checked.contains("SUCCESS: 11 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "tests/prometheus/alerts-test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert has a unit test in which it fires.
    let tests: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("tests/prometheus/alerts-test.yaml")).unwrap(),
    )
    .unwrap();
    let fired: BTreeSet<String> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
        .filter(|case| {
            case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty())
        })
        .map(|case| case["alertname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fired, alert_names(), "alerts without a firing unit test");
}

/// The metric names an expression reads.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("replicant_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_and_rules_read_only_exported_and_documented_metrics() {
    // What the controller exports, by family.
    let families: BTreeSet<String> = replicant::metrics::Metrics::default()
        .families()
        .iter()
        .cloned()
        .collect();
    assert!(families.len() >= 20, "{families:?}");
    let readme = std::fs::read_to_string(root().join("docs/src/monitoring.md")).unwrap();
    for family in &families {
        assert!(
            readme.contains(&format!("`{family}")),
            "{family} is exported but not documented in docs/src/monitoring.md"
        );
    }
    let exported = |name: &str| {
        families.iter().any(|f| {
            name == f
                || ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(f))
        })
    };

    let dashboard = dashboard();
    let mut ids = BTreeSet::new();
    let rows = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "row");
    for panel in rows.chain(query_panels(&dashboard)) {
        let id = panel["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{} is wider than the grid", panel["title"]);
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} queries nothing", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            for name in metrics_in(expr) {
                assert!(
                    exported(&name),
                    "{}: {name} is not exported",
                    panel["title"]
                );
            }
        }
    }
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "cluster"]);
    // One row per cluster.
    assert!(
        dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["type"] == "row" && p["repeat"] == "cluster")
    );

    let rules = std::fs::read_to_string(rules_file()).unwrap();
    for name in metrics_in(&rules) {
        assert!(
            exported(&name),
            "the rules read {name}, which is not exported"
        );
    }
}

/// `expr` as Grafana would send it for `cluster`.
fn as_grafana_sends(expr: &str, cluster: &str) -> String {
    expr.replace("$cluster", cluster)
        .replace("$__rate_interval", "1m")
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_a_failover_fires_the_alert_and_fills_every_panel() {
    if !prometheus::available() || !support::pg::available() {
        return;
    }
    // One controller runs a PostgreSQL cluster (which tells lag in seconds) and a Redis one
    // (which is failed over).
    let mut pg = PgBed::new();
    pg.failover = "{ detectAfter: 5s }".into();
    // It archives to a directory, which the agents (the database's user) write, and takes a
    // base backup there at once (it has none).
    let repository = replicant_testkit::postgres::owned_dir(pg.dir.path(), "repository").unwrap();
    pg.spec_extra = format!(
        "  backup:\n    repositories:\n      - name: local\n        directory: {{ path: \"{}\" }}\n    archive: {{}}\n    base: {{ schedule: \"0 3 * * *\" }}\n    drill: {{ schedule: \"0 5 * * 0\" }}\n",
        repository.display()
    );
    let redis = Bed::new(3);
    let sessions = redis
        .spec("a", &[], "    detectAfter: 1s")
        .replace("name: orders}", "name: sessions}")
        .replace("cluster: orders,", "cluster: sessions,")
        .replace("name: orders-", "name: sessions-");
    std::fs::write(pg.specs().join("sessions.yaml"), sessions).unwrap();
    let admin = replicant_testkit::free_port().unwrap();
    let ctl = pg.controller_with(
        &pg.spec("a", "async"),
        &[],
        &["--admin", &format!("127.0.0.1:{admin}")],
    );
    pg.wait_for("PostgreSQL ready", &ctl, 60, |r| ready_members(r, 3))
        .await;
    pg.wait_for("a base backup, its window and a drill", &ctl, 120, |r| {
        r.status
            .backup
            .as_ref()
            .is_some_and(|b| b.last_backup.is_some() && !b.recoverable.is_empty())
            && ["BackupSucceeded", "RestoreDrillPassed"]
                .iter()
                .all(|type_| {
                    r.status
                        .conditions
                        .iter()
                        .any(|c| c.type_ == *type_ && c.status == "True")
                })
    })
    .await;
    wait_for_report(&pg.state(), "sessions", "Redis ready", &ctl, 30, ready).await;

    let server = Prometheus::start(
        &pg.dir.path().join("prometheus"),
        &[format!("127.0.0.1:{admin}")],
        &[rules_file()],
    );
    server.ready(30).await;
    eventually("the first scrape", 30, async || {
        server
            .query("replicant_leader")
            .is_ok_and(|r| !r.is_empty())
    })
    .await;
    // Traffic through both clusters' proxies, and rate() windows with samples in them.
    set(&format!("127.0.0.1:{}", redis.rw_port), "k", "v")
        .await
        .unwrap();
    support::pg::sql(&pg.rw(), "CREATE TABLE t (v int); INSERT INTO t VALUES (1)").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        server.alerts().is_empty(),
        "alerts on a healthy installation: {:?}",
        server.alerts()
    );

    let mut redis = redis;
    redis.server("a").kill();
    wait_for_report(&pg.state(), "sessions", "the failover", &ctl, 30, |r| {
        !r.status.history.is_empty()
    })
    .await;
    eventually("the failover alert to fire", 30, async || {
        server.alerts().iter().any(|a| {
            a["labels"]["alertname"] == "ReplicantFailover"
                && a["labels"]["cluster"] == "default/sessions"
                && a["state"] == "firing"
        })
    })
    .await;
    let alerts = server.alerts();
    eprintln!("alerts after the failover: {alerts:#?}");
    for alert in &alerts {
        // Only the failover fires. The cluster is not Ready while a is gone, which pages only
        // after 5 minutes: until then its alert is pending.
        let name = alert["labels"]["alertname"].as_str().unwrap();
        assert_eq!(alert["labels"]["cluster"], "default/sessions", "{alert}");
        match alert["state"].as_str().unwrap() {
            "firing" => assert_eq!(name, "ReplicantFailover", "{alert}"),
            _ => assert_eq!(name, "ReplicantClusterNotReady", "{alert}"),
        }
        let description = alert["annotations"]["description"].as_str().unwrap();
        assert!(description.contains("default/sessions"), "{description}");
    }

    // The query behind each panel returns data, for one cluster or the other (lag in seconds
    // is PostgreSQL's; failovers are Redis's).
    let dashboard = dashboard();
    let clusters = ["default/sessions", "default/orders"];
    for panel in query_panels(&dashboard) {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut answered = Vec::new();
            for cluster in clusters {
                let query = as_grafana_sends(expr, cluster);
                let result = server
                    .query(&query)
                    .unwrap_or_else(|e| panic!("{}: {e}", panel["title"]));
                if !result.is_empty() {
                    answered.push(cluster);
                }
            }
            eprintln!(
                "{:<28} {answered:?}  {expr}",
                panel["title"].as_str().unwrap()
            );
            assert!(
                !answered.is_empty(),
                "panel {} returns no data: {expr}",
                panel["title"]
            );
        }
    }
    // The cluster variable lists both; the promotion annotation's query is valid.
    let clusters_known = server
        .query("group by (cluster) (replicant_cluster_epoch)")
        .unwrap();
    assert_eq!(clusters_known.len(), 2, "{clusters_known:?}");
    let annotation = dashboard["annotations"]["list"][1]["expr"]
        .as_str()
        .unwrap();
    server
        .query(&annotation.replace("$cluster", ".*"))
        .unwrap_or_else(|e| panic!("the promotions annotation: {e}"));
    let gap = server
        .query("replicant_last_promotion_write_gap_seconds{cluster=\"default/sessions\"}")
        .unwrap();
    eprintln!("write gap as scraped: {}", gap[0]["value"][1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_monitoring_objects_apply_to_the_api_server() {
    let Some(helm) = support::k8s::helm() else {
        return;
    };
    let Some(plane) = support::k8s::ControlPlane::start().await else {
        return;
    };
    let mut args = support::k8s::CHART_TEMPLATE.to_vec();
    args.extend([
        "--set",
        "namespace.create=true",
        "--set",
        "monitoring.enabled=true",
    ]);
    let rendered = support::k8s::run_helm(&helm, &args);
    let (monitoring, rest): (Vec<&str>, Vec<&str>) = rendered
        .split("\n---")
        .filter(|doc| doc.contains("kind:"))
        .partition(|doc| doc.contains("apiVersion: monitoring.coreos.com/"));
    assert_eq!(monitoring.len(), 2, "a PrometheusRule and a ServiceMonitor");
    let dir = tempfile::tempdir().unwrap();
    // --validate=false: kubectl 1.20 does not know the CRDs' CEL rules (as the README says).
    let apply = |name: &str, docs: &[&str]| {
        let file = dir.path().join(name);
        std::fs::write(&file, docs.join("\n---")).unwrap();
        plane.kubectl(&["apply", "--validate=false", "-f", file.to_str().unwrap()])
    };
    let applied = apply("chart.yaml", &rest);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    // The dashboard's ConfigMap is there, labelled for the Grafana sidecar, with the JSON whole.
    let found = plane.kubectl_ok(&[
        "-n",
        "replicant-system",
        "get",
        "configmap",
        "-l",
        "grafana_dashboard=1",
        "-o",
        "json",
    ]);
    let found: serde_json::Value = serde_json::from_str(&found).unwrap();
    let shipped = found["items"][0]["data"]["replicant-clusters.json"]
        .as_str()
        .expect("the dashboard ConfigMap");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(shipped).unwrap(),
        dashboard()
    );

    let served = plane.kubectl_ok(&[
        "api-resources",
        "--api-group=monitoring.coreos.com",
        "-o",
        "name",
    ]);
    if served.trim().is_empty() {
        // No package carries the Prometheus Operator's CRDs, and this machine reaches nothing
        // else; the objects' content is checked by tests/chart.rs and promtool above.
        eprintln!(
            "SKIPPED: the API server serves no monitoring.coreos.com (Prometheus Operator CRDs \
             absent); the PrometheusRule and ServiceMonitor were not applied"
        );
        return;
    }
    let applied = apply("monitoring.yaml", &monitoring);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    for kind in ["prometheusrule", "servicemonitor"] {
        plane.kubectl_ok(&["-n", "replicant-system", "get", kind, "replicant"]);
    }
}
