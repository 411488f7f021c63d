//! `replicant demo`: local servers, the controller, the loss of the primary, and the measured
//! outcome printed.

use std::process::ExitCode;

use super::{CliError, LogFormat, init_logging_filtered, render, runtime};

/// `replicant demo` flags.
#[derive(clap::Args, Debug)]
pub(super) struct DemoArgs {
    /// How many failovers to run and measure.
    #[arg(long, default_value_t = 1)]
    pub(super) trials: usize,
    /// The servers: redis-servers, or postgres servers under node agents.
    #[arg(long, value_enum, default_value_t = crate::demo::DemoEngine::Redis)]
    pub(super) engine: crate::demo::DemoEngine,
    /// Replication mode: with sync, a write is acknowledged once a replica holds it.
    #[arg(long, value_enum, default_value_t = DemoMode::Async)]
    pub(super) mode: DemoMode,
}

/// The demo's replication mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum DemoMode {
    Async,
    Sync,
}

pub(super) fn run(args: DemoArgs) -> Result<ExitCode, CliError> {
    init_logging_filtered(LogFormat::Text, "warn");
    let agent = std::env::current_exe()
        .map_err(|e| CliError::Invalid(format!("cannot find the replicant executable: {e}")))?;
    let options = crate::demo::DemoOptions {
        engine: args.engine,
        sync: args.mode == DemoMode::Sync,
        trials: args.trials,
        agent,
        work: None,
    };
    let results = runtime()?.block_on(crate::demo::run(options))?;
    print!("{}", render::demo_summary(&results));
    let clean = results.iter().all(|t| t.lost == 0);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
