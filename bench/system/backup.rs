//! Base backup and restore-to-latest against pgBackRest, on one cluster and the same data
//! (pgbench at `BENCH_BACKUP_SCALE`, default 100), each into a directory repository on the
//! same disk; the archive lag under a pgbench write load; and the restore time a drill reports
//! against the one measured here. The primary's `archive_command` feeds both archives.

use std::{
    fmt::Write as _,
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use replicant_testkit::{
    free_port,
    postgres::{PASSWORD, bin_dir, owned_dir, server_user},
};

use crate::{
    postgres::{Extra, replicant_with},
    support::{self, median, reports},
};

/// pgBackRest's settings: zstd at its default level and as many processes as there are cores,
/// so that neither compression nor parallelism is left at a slower default.
fn pgbackrest_config(root: &Path, data: &Path, port: u16) -> String {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    format!(
        "[global]\nrepo1-path={}\nrepo1-retention-full=4\ncompress-type=zst\nprocess-max={cores}\nlog-path={}\nlock-path={}\nlog-level-console=warn\nlog-level-file=off\nstart-fast=y\n\n[bench]\npg1-path={}\npg1-port={port}\npg1-socket-path={}\npg1-user=postgres\n",
        root.join("pgbackrest-repo").display(),
        root.join("pgbackrest-log").display(),
        root.join("pgbackrest-lock").display(),
        data.display(),
        data.parent().unwrap().display(),
    )
}

/// The primary's agent: a socket beside its data directory for pgBackRest, and an
/// `archive_command` that archives each file to replicant's repository, then to pgBackRest's
/// (`archive_mode=on`: pgBackRest refuses `always`).
fn agent_args(member: &str, host: &Path, state: &Path) -> Vec<String> {
    if member != "a" {
        return Vec::new();
    }
    let replicant_push =
        replicant::node::archive::command(Path::new(env!("CARGO_BIN_EXE_replicant")), state);
    let config = host.parent().unwrap().join("pgbackrest.conf");
    vec![
        "--set".into(),
        format!("unix_socket_directories={}", host.display()),
        // pgBackRest refuses `always` (the agents' own choice, so standbys archive too).
        "--set".into(),
        "archive_mode=on".into(),
        "--set".into(),
        format!(
            "archive_command={replicant_push} && pgbackrest --config={} --stanza=bench archive-push %p",
            config.display()
        ),
    ]
}

/// A command run as the database's user (who owns the data and the repositories).
fn as_server_user(program: &str) -> Command {
    let mut command = Command::new(program);
    if let Some((uid, gid)) = server_user() {
        command.uid(uid).gid(gid);
    }
    command.stdin(Stdio::null());
    command
}

fn checked(what: &str, output: std::io::Result<Output>) -> Output {
    let output = output.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn pgbackrest(config: &Path, args: &[&str]) -> Output {
    checked(
        &format!("pgbackrest {args:?}"),
        as_server_user("pgbackrest")
            .arg(format!("--config={}", config.display()))
            .arg("--stanza=bench")
            .args(args)
            .output(),
    )
}

fn replicant_cli(root: &Path, args: &[&str]) -> Output {
    checked(
        &format!("replicant {args:?}"),
        as_server_user(env!("CARGO_BIN_EXE_replicant"))
            .args(args)
            .arg("--specs")
            .arg(root.join("specs"))
            .output(),
    )
}

async fn connect(address: &str) -> tokio_postgres::Client {
    let (host, port) = address.rsplit_once(':').unwrap();
    let config =
        format!("host={host} port={port} user=postgres password={PASSWORD} dbname=postgres");
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Seconds `f` took.
fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let began = Instant::now();
    let out = f();
    (began.elapsed().as_secs_f64(), out)
}

/// Start postgres on the restored `data` (private port, no socket, no archiving) and wait
/// until recovery ended and it takes writes; the seconds that took, and its last commit count.
async fn replay(data: &Path, log: &Path) -> f64 {
    let port = free_port().unwrap();
    let bin = bin_dir().expect("postgres binaries");
    let began = Instant::now();
    let mut server = as_server_user(bin.join("postgres").to_str().unwrap())
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "unix_socket_directories="])
        .args(["-c", "archive_mode=off"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .expect("postgres starts");
    let address = format!("127.0.0.1:{port}");
    let promoted = support::wait_until(Duration::from_secs(3600), || {
        let address = address.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(promoted(&address))
        })
        .join()
        .unwrap_or(false)
    })
    .await;
    let took = began.elapsed().as_secs_f64();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = server.wait();
    assert!(
        promoted,
        "the restore at {} never ended recovery: {}",
        data.display(),
        fs::read_to_string(log).unwrap_or_default()
    );
    took
}

async fn promoted(address: &str) -> bool {
    let config = format!(
        "host={} port={} user=postgres password={PASSWORD} dbname=postgres connect_timeout=1",
        address.rsplit_once(':').unwrap().0,
        address.rsplit_once(':').unwrap().1
    );
    let Ok(Ok((client, connection))) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio_postgres::connect(&config, tokio_postgres::NoTls),
    )
    .await
    else {
        return false;
    };
    tokio::spawn(connection);
    client
        .query_one("SELECT NOT pg_is_in_recovery()", &[])
        .await
        .is_ok_and(|row| row.get::<_, bool>(0))
}

fn pgbench(address: &str, args: &[&str]) -> Output {
    let (host, port) = address.rsplit_once(':').unwrap();
    checked(
        &format!("pgbench {args:?}"),
        Command::new("pgbench")
            .args(["-h", host, "-p", port, "-U", "postgres"])
            .args(args)
            .arg("postgres")
            .env("PGPASSWORD", PASSWORD)
            .output(),
    )
}

/// The cluster's archive lag now, bytes and seconds, from the controller's report.
fn archive_lag(state: &Path) -> Option<(u64, u64)> {
    let report = reports(state).into_iter().next()?;
    let archive = report.status.archive?;
    Some((archive.lag_bytes?, archive.lag_seconds?))
}

/// An empty directory for a restore, in one the database's user may write beside it (a restore
/// writes its settings there).
fn fresh(root: &Path, name: &str) -> PathBuf {
    let parent = owned_dir(root, "restores").unwrap();
    let _ = fs::remove_dir_all(parent.join(name));
    owned_dir(&parent, name).unwrap()
}

pub async fn run(trials: usize, scale: usize, root: &Path) -> String {
    fs::create_dir_all(root).unwrap();
    for dir in [
        "repository",
        "pgbackrest-repo",
        "pgbackrest-log",
        "pgbackrest-lock",
    ] {
        owned_dir(root, dir).unwrap();
    }
    let extra = Extra {
        spec: format!(
            "  backup:\n    repositories:\n      - name: local\n        directory: {{ path: \"{}\" }}\n    archive: {{}}\n",
            root.join("repository").display()
        ),
        agent_args: Some(agent_args),
    };
    let config = root.join("pgbackrest.conf");
    // Written before the agents start: the primary's archive_command reads it.
    let bed = {
        // The primary's data directory is known once the bed is built; pgBackRest's stanza
        // is written then, and its archive-push refuses until then, which only delays it.
        fs::write(&config, "").unwrap();
        replicant_with(root, 1000, false, false, &extra).await
    };
    let primary_data = bed.data(0);
    let primary = bed.primary();
    let port: u16 = primary.rsplit_once(':').unwrap().1.parse().unwrap();
    fs::write(&config, pgbackrest_config(root, &primary_data, port)).unwrap();
    pgbackrest(&config, &["stanza-create"]);

    let (init_s, _) = timed(|| pgbench(&bed.rw, &["-i", "-q", "-s", &scale.to_string()]));
    eprintln!("pgbench -i -s {scale}: {init_s:.0}s");
    let client = connect(&primary).await;
    let size: i64 = client
        .query_one("SELECT pg_database_size('postgres')", &[])
        .await
        .unwrap()
        .get(0);
    // A quiet start for both: what the load left to write is written first.
    client.batch_execute("CHECKPOINT").await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    pgbackrest(&config, &["check"]);

    let (backup_ours, backup_theirs) = backup_trials(trials, root, &config, "zst");
    let stored_ours = newest_backup_stored(&root.join("repository"));
    let stored_theirs = pgbackrest_stored(&config);

    // The archive under a write load.
    let state = root.join("state");
    let mut lags = Vec::new();
    let load = {
        let rw = bed.rw.clone();
        std::thread::spawn(move || pgbench(&rw, &["-N", "-c", "8", "-j", "2", "-T", "30"]))
    };
    while !load.is_finished() {
        if let Some(lag) = archive_lag(&state) {
            lags.push(lag);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tps: f64 = String::from_utf8_lossy(&load.join().unwrap().stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_default();
    // Everything written reaches both archives before the restores.
    client
        .batch_execute("SELECT pg_switch_wal()")
        .await
        .unwrap();
    support::wait_until(Duration::from_secs(300), || {
        archive_lag(&state).is_some_and(|(bytes, _)| bytes == 0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Restores to the latest point: unpack, then replay until the server takes writes.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        let data = fresh(root, &format!("restored-replicant-{trial}"));
        let (unpack, _) = timed(|| {
            replicant_cli(
                root,
                &[
                    "restore",
                    "--cluster",
                    "bench",
                    "--to",
                    data.to_str().unwrap(),
                ],
            )
        });
        let replayed = replay(&data, &root.join(format!("restored-replicant-{trial}.log"))).await;
        ours.push(unpack + replayed);
        let data = fresh(root, &format!("restored-pgbackrest-{trial}"));
        let (unpack, _) = timed(|| {
            pgbackrest(
                &config,
                &[&format!("--pg1-path={}", data.display()), "restore"],
            )
        });
        let replayed = replay(
            &data,
            &root.join(format!("restored-pgbackrest-{trial}.log")),
        )
        .await;
        theirs.push(unpack + replayed);
        for name in [
            format!("restored-replicant-{trial}"),
            format!("restored-pgbackrest-{trial}"),
        ] {
            let _ = fs::remove_dir_all(root.join(name));
        }
    }
    let (restore_ours, restore_theirs) = (median(&ours), median(&theirs));

    // A drill restores the same backup on a standby's host and times itself.
    let drill = replicant_cli(root, &["backup", "drill", "--timeout", "2h"]);
    let drilled = String::from_utf8_lossy(&drill.stdout)
        .split(" in ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|s| s.parse::<f64>().ok())
        .expect("the drill's restore time");

    // The same in lz4, both: the spec's compression, pgBackRest's compress-type.
    let spec = root.join("specs").join("bench.yaml");
    let text = fs::read_to_string(&spec).unwrap();
    fs::write(
        &spec,
        text.replacen(
            "    archive: {}\n",
            "    archive: {}\n    compression: Lz4\n",
            1,
        ),
    )
    .unwrap();
    let (lz4_ours, lz4_theirs) = backup_trials(trials, root, &config, "lz4");
    let lz4_stored_ours = newest_backup_stored(&root.join("repository"));
    let lz4_stored_theirs = pgbackrest_stored(&config);

    let mut out = format!(
        "### Base backup and restore against pgBackRest\n\npgbench scale {scale} ({:.0} MiB database), {trials} trial(s) each (median; each first in turn, after a checkpoint and 10 s of quiet), both into a directory repository on the same disk. replicant: `replicant backup take` (from a streaming standby, zstd on every core, one stream) and `replicant restore` (to the latest point) then replay until the server takes writes. {}: `backup --type=full` (from the primary, zstd, process-max {}) and `restore` (the latest), then the same replay. The lz4 rows: both again, in lz4 (replicant's `spec.backup.compression: Lz4`, on one core; pgBackRest's `--compress-type=lz4`, process-max {}). Ratio: pgBackRest's time over replicant's (above 1: replicant is faster).\n\n| measure | replicant | pgBackRest | ratio |\n|---|---|---|---|\n",
        size as f64 / (1 << 20) as f64,
        version("pgbackrest"),
        std::thread::available_parallelism().map_or(2, |n| n.get()),
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    );
    let seconds = |measure: &str, ours: f64, theirs: f64| {
        format!(
            "| {measure} | {ours:.1} s | {theirs:.1} s | {:.2} |\n",
            theirs / ours
        )
    };
    let mib = |measure: &str, ours: u64, theirs: u64| {
        format!(
            "| {measure} | {:.0} MiB | {:.0} MiB | {:.2} |\n",
            ours as f64 / (1 << 20) as f64,
            theirs as f64 / (1 << 20) as f64,
            theirs as f64 / ours.max(1) as f64
        )
    };
    out.push_str(&seconds("base backup", backup_ours, backup_theirs));
    out.push_str(&mib("stored size", stored_ours, stored_theirs));
    out.push_str(&seconds(
        "restore to the latest point, until writable",
        restore_ours,
        restore_theirs,
    ));
    out.push_str(&seconds("base backup, lz4 (both)", lz4_ours, lz4_theirs));
    out.push_str(&mib("stored size, lz4", lz4_stored_ours, lz4_stored_theirs));
    let lag_bytes: Vec<f64> = lags.iter().map(|(b, _)| *b as f64).collect();
    let lag_seconds: Vec<f64> = lags.iter().map(|(_, s)| *s as f64).collect();
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "\nArchive lag under `pgbench -N -c 8 -j 2 -T 30` ({tps:.0} tps), sampled every 0.5 s from status: median {:.1} MiB / {:.0} s, at most {:.1} MiB / {:.0} s ({} samples).\n",
        median(&lag_bytes) / (1 << 20) as f64,
        median(&lag_seconds),
        max(&lag_bytes) / (1 << 20) as f64,
        max(&lag_seconds),
        lags.len()
    );
    let _ = writeln!(
        out,
        "A restore drill of the same backup (`replicant backup drill`, on a standby's host, with its own small postgres) reported a restore time of {drilled:.1} s: {:.2} of the {restore_ours:.1} s measured here.",
        drilled / restore_ours
    );
    out
}

/// Base backups by each, alternating, pgBackRest with `compress-type` `theirs_compression`
/// (replicant's comes from the spec); the median time of each.
fn backup_trials(
    trials: usize,
    root: &Path,
    config: &Path,
    theirs_compression: &str,
) -> (f64, f64) {
    let compress_type = format!("--compress-type={theirs_compression}");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        // Each goes first in turn: the first after a load finds more of it still settling.
        let mut ours_now = || {
            let (s, _) = timed(|| replicant_cli(root, &["backup", "take", "--timeout", "2h"]));
            ours.push(s);
        };
        let mut theirs_now = || {
            let (s, _) = timed(|| pgbackrest(config, &["--type=full", &compress_type, "backup"]));
            theirs.push(s);
        };
        if trial % 2 == 0 {
            ours_now();
            theirs_now();
        } else {
            theirs_now();
            ours_now();
        }
    }
    (median(&ours), median(&theirs))
}

/// The size replicant's newest base backup takes in its repository, from its catalog entry.
fn newest_backup_stored(repository: &Path) -> u64 {
    let mut entries = Vec::new();
    let mut stack = vec![repository.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.ends_with("backup.json") {
                entries.push(path);
            }
        }
    }
    // Ids are times: the greatest path is the newest.
    entries.sort();
    entries
        .last()
        .and_then(|p| fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["storedBytes"].as_u64())
        .unwrap_or(0)
}

/// The size pgBackRest's newest backup takes in its repository.
fn pgbackrest_stored(config: &Path) -> u64 {
    let info = pgbackrest(config, &["info", "--output=json"]);
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap_or_default();
    json[0]["backup"]
        .as_array()
        .and_then(|b| b.last())
        .and_then(|b| b["info"]["repository"]["delta"].as_u64())
        .unwrap_or(0)
}

fn version(program: &str) -> String {
    Command::new(program)
        .arg("version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
