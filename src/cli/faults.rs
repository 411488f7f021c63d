//! Fault points for crash-recovery tests, enabled from the environment: with
//! `REPLICANT_CRASH_AT=before-promote` (or `after-fence`, ...) the process dies like `kill -9` at
//! that point of a failover or switchover; with `REPLICANT_FREEZE_AT=...` it stops itself
//! (SIGSTOP) there once, until sent SIGCONT. Read once, at start-up; touches only this process.

use std::sync::Once;

use crate::core::reconcile::FaultPoints;

/// The fault points the environment asks for, if it asks for any.
pub fn from_environment() -> Option<EnvironmentFaults> {
    let crash_at = std::env::var("REPLICANT_CRASH_AT").ok();
    let freeze_at = std::env::var("REPLICANT_FREEZE_AT").ok();
    (crash_at.is_some() || freeze_at.is_some()).then(|| EnvironmentFaults {
        crash_at,
        freeze_at,
        frozen: Once::new(),
    })
}

pub struct EnvironmentFaults {
    crash_at: Option<String>,
    freeze_at: Option<String>,
    frozen: Once,
}

impl FaultPoints for EnvironmentFaults {
    fn reached(&self, point: &str) {
        if self.crash_at.as_deref() == Some(point) {
            eprintln!("REPLICANT_CRASH_AT={point}: aborting");
            std::process::abort();
        }
        if self.freeze_at.as_deref() == Some(point) {
            self.frozen.call_once(|| {
                eprintln!("REPLICANT_FREEZE_AT={point}: stopping");
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
            });
        }
    }
}
