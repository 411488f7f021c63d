//! The control plane away, the database healthy: replicant's controller killed, then started
//! again `BENCH_AWAY_SECS` later, against Patroni with its etcd killed for as long
//! (`failsafe_mode` on and off). A writer commits straight into the primary's port throughout,
//! so no proxy stands between it and the database: the longest wait between two of its
//! acknowledgements is what its clients see of the outage.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use replicant_testkit::{postgres::PASSWORD, writer::count_missing_rows};

use crate::postgres::{self, System};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Setup {
    Replicant,
    Patroni { failsafe: bool },
}

impl Setup {
    fn label(self) -> String {
        match self {
            Setup::Replicant => "replicant, detectAfter 1s: controller killed".into(),
            Setup::Patroni { failsafe } => format!(
                "{}, failsafe_mode {}: etcd killed",
                System::PATRONI_MINIMUM.label(),
                if failsafe { "on" } else { "off" }
            ),
        }
    }
}

/// What one trial saw.
struct Seen {
    /// The longest wait between two acknowledged commits, from just before the control plane
    /// went until the end of the trial (the end counts as one, if commits had stopped).
    longest_gap: f64,
    acknowledged: usize,
    /// Attempts that were not acknowledged (the writer numbers them).
    failed: u64,
    /// Members on a timeline that began while the control plane was away or after: a failover.
    on_new_timeline: usize,
    /// Acknowledged commits missing from the primary at the end.
    lost: usize,
}

async fn trial(dir: &Path, setup: Setup, sync: bool, away: Duration) -> Seen {
    let mut bed = match setup {
        Setup::Replicant => postgres::replicant(dir, 1000, sync, false).await,
        Setup::Patroni { failsafe } => {
            postgres::patroni(dir, System::PATRONI_MINIMUM, sync, failsafe).await
        }
    };
    let writer = postgres::writer(&bed.primary(), "away:");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (went_wall, went) = (SystemTime::now(), Instant::now());
    bed.kill_control_plane();
    tokio::time::sleep(away).await;
    bed.restart_control_plane(dir);
    // Long enough for a returning control plane to act on what it finds.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let end = Instant::now();
    let acks = writer.finish().await;
    let from = acks
        .iter()
        .rposition(|a| a.acked <= went)
        .unwrap_or_default();
    let counted = &acks[from..];
    let mut longest = counted
        .windows(2)
        .map(|pair| pair[1].acked - pair[0].acked)
        .max()
        .unwrap_or_default();
    if let Some(last) = counted.last() {
        longest = longest.max(end - last.acked);
    }
    let failed = match (acks.first(), acks.last()) {
        (Some(first), Some(last)) => last.n - first.n + 1 - acks.len() as u64,
        _ => 0,
    };
    let mut primary = None;
    for member in bed.members() {
        if postgres::writable(&member).await {
            primary = Some(member);
            break;
        }
    }
    let lost = match primary {
        Some(primary) => count_missing_rows(&primary, PASSWORD, "away:", &acks)
            .await
            .unwrap_or_else(|e| panic!("counting on {primary}: {e}")),
        None => acks.len(),
    };
    Seen {
        longest_gap: longest.as_secs_f64(),
        acknowledged: acks.len(),
        failed,
        on_new_timeline: bed.on_new_timeline_since(went_wall),
        lost,
    }
}

/// Each setup once per replication mode (`trials` times); a Markdown report.
pub async fn run(trials: usize, away: Duration, root: &Path) -> String {
    let mut out = format!(
        "### PostgreSQL with the control plane away for {}s: replicant vs Patroni 3.0.2\n\nA writer commits straight into the primary throughout. Longest gap: the longest wait between two acknowledged commits from the moment the control plane is killed until 10s after it is back (if commits had stopped, until then). Ratio: over Patroni's with `failsafe_mode` on, in the same run. On a new timeline: members other than the primary whose timeline began after the kill (a failover of a healthy cluster: the promoted member and those following it). Lost: acknowledged commits missing from the primary at the end.\n\n",
        away.as_secs()
    );
    let mut trial_no = 0;
    for sync in [false, true] {
        let _ = writeln!(
            out,
            "#### {} replication\n\n| system | trials | longest gap (worst) | ratio | failed attempts | acked | on a new timeline | lost |\n|---|---|---|---|---|---|---|---|",
            if sync { "sync" } else { "async" }
        );
        let mut rows = Vec::new();
        for setup in [
            Setup::Replicant,
            Setup::Patroni { failsafe: true },
            Setup::Patroni { failsafe: false },
        ] {
            let mut seen = Vec::new();
            for _ in 0..trials {
                trial_no += 1;
                let dir = root.join(format!("trial-{trial_no}"));
                fs::create_dir_all(&dir).unwrap();
                let outcome = trial(&dir, setup, sync, away).await;
                eprintln!(
                    "away {} / {}: longest gap {:.3}s, {} failed, {} on a new timeline, {} lost",
                    setup.label(),
                    if sync { "sync" } else { "async" },
                    outcome.longest_gap,
                    outcome.failed,
                    outcome.on_new_timeline,
                    outcome.lost
                );
                seen.push(outcome);
                if std::env::var_os("BENCH_KEEP").is_none() {
                    let _ = fs::remove_dir_all(&dir);
                }
            }
            rows.push((setup, seen));
        }
        let worst = |seen: &[Seen]| seen.iter().map(|s| s.longest_gap).fold(0.0, f64::max);
        let reference = rows
            .iter()
            .find(|(setup, _)| *setup == Setup::Patroni { failsafe: true })
            .map(|(_, seen)| worst(seen))
            .unwrap_or(f64::NAN);
        for (setup, seen) in &rows {
            let _ = writeln!(
                out,
                "| {} | {} | {:.3}s | {:.2} | {} | {} | {} | {} |",
                setup.label(),
                seen.len(),
                worst(seen),
                worst(seen) / reference,
                seen.iter().map(|s| s.failed).sum::<u64>(),
                seen.iter().map(|s| s.acknowledged).sum::<usize>(),
                seen.iter().map(|s| s.on_new_timeline).sum::<usize>(),
                seen.iter().map(|s| s.lost).sum::<usize>(),
            );
        }
        out.push('\n');
    }
    out
}
