//! A controller kept away while a writer goes straight into the database: how long, whether
//! writes went on all the while, and whether any attempt failed.

use std::time::{Duration, Instant};

use replicant_testkit::writer::{Ack, Writer};

/// How long a controller stays away: `REPLICANT_AWAY_SECS`, 60 by default.
pub fn away() -> Duration {
    let secs = std::env::var("REPLICANT_AWAY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// For [`away`] from `since`, check every 5s that `writer` still makes progress; `context`
/// is shown when it does not (logs, say).
pub async fn writes_go_on(
    writer: &Writer,
    since: Instant,
    what: &str,
    context: impl Fn() -> String,
) {
    while since.elapsed() < away() {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = writer.count().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            writer.count().await > before,
            "{what}: writes go on {}s after the controller went away\n{}",
            since.elapsed().as_secs(),
            context()
        );
    }
}

/// Every attempt was acknowledged (the writer numbers its attempts, so a failed one leaves a
/// gap), and the longest wait between two acknowledgements.
pub fn assert_no_failed_write(acks: &[Ack], what: &str) -> Duration {
    assert!(acks.len() > 20, "{what}: the writer made progress");
    for pair in acks.windows(2) {
        assert_eq!(
            pair[1].n,
            pair[0].n + 1,
            "{what}: write attempt {} failed",
            pair[0].n + 1
        );
    }
    acks.windows(2)
        .map(|pair| pair[1].acked - pair[0].acked)
        .max()
        .unwrap_or_default()
}
