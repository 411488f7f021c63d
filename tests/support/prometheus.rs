//! A real Prometheus server (Debian's `prometheus`) on loopback that scrapes the test's
//! controllers and evaluates the shipped alert rules, and `promtool`. Killed by PID on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use replicant_testkit::free_port;

/// Whether `prometheus` and `promtool` are installed; tests skip, saying so, where they are
/// not (CI installs them).
pub fn available() -> bool {
    let found = ["prometheus", "promtool"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus or promtool is missing under CI"
        );
        eprintln!("SKIPPED: prometheus/promtool not installed (Debian package prometheus)");
    }
    found
}

pub struct Prometheus {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Prometheus {
    /// Scrape `targets` (`host:port`) every second and evaluate `rules` every second, with
    /// its data under `dir`.
    pub fn start(dir: &Path, targets: &[String], rules: &[PathBuf]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let rules: Vec<String> = rules.iter().map(|r| format!("'{}'", r.display())).collect();
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms}}\n\
                 rule_files: [{}]\n\
                 scrape_configs:\n  - job_name: replicant\n    static_configs: [{{targets: [{}]}}]\n",
                rules.join(", "),
                targets.join(", ")
            ),
        )
        .unwrap();
        let port = free_port().unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus runs");
        Self { child, port, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` (with its query) from the HTTP API: the JSON body.
    pub fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let response =
            super::try_http_get(self.port, path).map_err(|e| format!("GET {path}: {e}"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .ok_or_else(|| format!("no body: {response}"))?;
        serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))
    }

    /// Wait until it serves queries.
    pub async fn ready(&self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.get("/api/v1/status/runtimeinfo").is_err() {
            assert!(
                Instant::now() < deadline,
                "prometheus did not start:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The result of instant query `expr`, or Prometheus's error.
    pub fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let answer = self.get(&format!("/api/v1/query?query={}", encode(expr)))?;
        if answer["status"] != "success" {
            return Err(format!("{expr}: {answer}"));
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The alerts pending or firing now.
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        self.get("/api/v1/alerts")
            .ok()
            .and_then(|a| a["data"]["alerts"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encode a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
