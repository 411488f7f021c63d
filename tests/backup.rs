//! Backups and WAL archiving against real stores: a directory repository, and a real
//! S3-compatible server (Garage) on loopback.

mod support;

use replicant::{
    api::{DirectoryRepository, Repository as RepositorySpec, S3Repository},
    repository::{
        Repository, StoreKey,
        layout::{DataSet, WalFile},
        wal::{FetchError, PushError, Pushed},
    },
};
use replicant_testkit::garage::{self, GarageProcess};

const SYSTEM: u64 = 7_400_000_000_000_000_042;

fn data_set() -> DataSet {
    DataSet {
        namespace: "default".into(),
        cluster: "orders".into(),
        system_identifier: SYSTEM,
    }
}

/// A WAL segment's first page as PostgreSQL writes it (a long header naming `system`), then
/// `fill`.
fn segment(system: u64, fill: u8) -> Vec<u8> {
    let mut bytes = vec![fill; 64 * 1024];
    bytes[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    bytes[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
    bytes[24..32].copy_from_slice(&system.to_le_bytes());
    bytes
}

fn directory_spec(path: &std::path::Path) -> RepositorySpec {
    RepositorySpec {
        name: "local".into(),
        directory: Some(DirectoryRepository {
            path: path.display().to_string(),
        }),
        s3: None,
        azure: None,
        gcs: None,
    }
}

/// Each WAL file is stored once, an identical copy counts as done, another content is refused
/// (and the first stays), a segment of another database is refused, and what comes back is
/// what went in.
async fn stores_once_and_refuses_another_content(repository: &Repository) {
    let set = data_set();
    let name = WalFile::parse("000000010000000000000003").unwrap();
    let first = segment(SYSTEM, 1);
    assert_eq!(
        repository.push_wal(&set, &name, &first).await.unwrap(),
        Pushed::Stored
    );
    assert_eq!(
        repository.push_wal(&set, &name, &first).await.unwrap(),
        Pushed::AlreadyThere,
        "a standby sending the segment the primary sent is done at once"
    );
    let error = repository
        .push_wal(&set, &name, &segment(SYSTEM, 2))
        .await
        .unwrap_err();
    assert!(matches!(error, PushError::Conflict { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("another server wrote this timeline"),
        "{error}"
    );
    assert_eq!(
        repository.fetch_wal(&set, &name).await.unwrap(),
        Some(first),
        "the first content stays, untouched"
    );
    let foreign = repository
        .push_wal(
            &set,
            &WalFile::parse("000000010000000000000004").unwrap(),
            &segment(SYSTEM + 1, 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(foreign, PushError::OtherDataSet { found, .. } if found == SYSTEM + 1),
        "{foreign}"
    );
    let history = WalFile::History { timeline: 2 };
    let text = b"1\t0/3000000\tno recovery target specified\n".to_vec();
    repository.push_wal(&set, &history, &text).await.unwrap();
    assert_eq!(
        repository.fetch_wal(&set, &history).await.unwrap(),
        Some(text)
    );
    assert_eq!(
        repository
            .fetch_wal(&set, &WalFile::History { timeline: 3 })
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_directory_repository_stores_each_wal_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let repository = Repository::open(&directory_spec(dir.path()), None).unwrap();
    stores_once_and_refuses_another_content(&repository).await;

    // Damage the stored segment: fetching it says so rather than handing it to PostgreSQL.
    let set = data_set();
    let name = WalFile::parse("000000010000000000000003").unwrap();
    let directory = dir.path().join(set.wal_directory(&name));
    let stored = std::fs::read_dir(&directory)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| name.holds(&p.file_name().unwrap().to_string_lossy()))
        .unwrap();
    let damaged = zstd::bulk::compress(&segment(SYSTEM, 9), 1).unwrap();
    std::fs::write(&stored, &damaged).unwrap();
    let error = repository.fetch_wal(&set, &name).await.unwrap_err();
    assert!(matches!(error, FetchError::Damaged { .. }), "{error}");
    assert!(error.to_string().contains("digest"), "{error}");

    // Two contents side by side (two writers raced): a fetch refuses to choose.
    let raced = set.wal_object(&name, &segment(SYSTEM, 7));
    std::fs::write(dir.path().join(&raced), damaged).unwrap();
    let error = repository.fetch_wal(&set, &name).await.unwrap_err();
    assert!(matches!(error, FetchError::Ambiguous { .. }), "{error}");
}

#[tokio::test]
async fn an_s3_repository_on_a_real_store_stores_each_wal_file_once() {
    let Some(binary) = support::garage_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = GarageProcess::start(&binary, &dir.path().join("garage"), "backups").unwrap();
    let spec = RepositorySpec {
        name: "offsite".into(),
        directory: None,
        s3: Some(S3Repository {
            bucket: store.bucket.clone(),
            prefix: Some("prod/eu".into()),
            endpoint: Some(store.endpoint.clone()),
            region: Some(garage::REGION.into()),
            credentials: None,
        }),
        azure: None,
        gcs: None,
    };
    let key = StoreKey::S3 {
        access_key_id: garage::ACCESS_KEY_ID.into(),
        secret_access_key: garage::SECRET_ACCESS_KEY.into(),
    };
    let repository = Repository::open(&spec, Some(&key)).unwrap();
    stores_once_and_refuses_another_content(&repository).await;
    let listed = repository.list("default/orders").await.unwrap();
    // The segment and the history file; the refused content never reached the store.
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|l| l.path.starts_with(&format!("default/orders/{SYSTEM}/wal/"))),
        "{listed:?}"
    );

    // A wrong secret is refused by the store, and the error says so without the secret.
    let wrong = StoreKey::S3 {
        access_key_id: garage::ACCESS_KEY_ID.into(),
        secret_access_key: "f".repeat(64),
    };
    refuses_a_wrong_key(&spec, &wrong, &"f".repeat(64)).await;
}

/// A push with `wrong` (whose secret is `secret`) is refused by the store, and the error does
/// not show the secret.
async fn refuses_a_wrong_key(spec: &RepositorySpec, wrong: &StoreKey, secret: &str) {
    let refused = Repository::open(spec, Some(wrong))
        .unwrap()
        .push_wal(
            &data_set(),
            &WalFile::parse("000000010000000000000009").unwrap(),
            &segment(SYSTEM, 1),
        )
        .await
        .unwrap_err();
    assert!(!refused.to_string().contains(secret), "{refused}");
    assert!(matches!(refused, PushError::Store(_)), "{refused}");
}

/// Azure Blob Storage, on Azurite (Microsoft's emulator): WAL stored once, other content
/// refused; a snapshot large enough to go up in several blocks comes back whole; a wrong
/// account key is refused by the service without the key in the error.
#[tokio::test]
async fn an_azure_repository_on_azurite_stores_once_and_uploads_in_blocks() {
    use replicant_testkit::azurite::{self, AzuriteProcess};
    let Some(binary) = support::azurite_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = AzuriteProcess::start(&binary, &dir.path().join("azurite"), "backups").unwrap();
    let spec = RepositorySpec {
        name: "blobs".into(),
        directory: None,
        s3: None,
        azure: Some(replicant::api::AzureRepository {
            account: azurite::ACCOUNT.into(),
            container: store.container.clone(),
            prefix: Some("prod/eu".into()),
            endpoint: Some(store.endpoint.clone()),
            credentials: None,
        }),
        gcs: None,
    };
    let key = StoreKey::Azure {
        account_key: azurite::ACCOUNT_KEY.into(),
    };
    let repository = Repository::open(&spec, Some(&key)).unwrap();
    stores_once_and_refuses_another_content(&repository).await;
    let listed = repository.list("default/orders").await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");

    // Three parts of the multipart upload, in lz4.
    let rdb = incompressible(40 << 20);
    comes_back_whole(&repository, &rdb, replicant::repository::codec::Codec::Lz4).await;

    let wrong = StoreKey::Azure {
        account_key: "eHh4".repeat(22),
    };
    refuses_a_wrong_key(&spec, &wrong, "eHh4eHh4").await;
}

/// Google Cloud Storage through a MOCK of its XML API (no GCS emulator runs here): WAL stored
/// once, other content refused, and a base-backup-sized upload in parts comes back whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_gcs_repository_on_a_mock_stores_once_and_uploads_in_parts() {
    let store = support::gcs_mock::GcsMock::start("backups").await;
    let spec = RepositorySpec {
        name: "gcs".into(),
        directory: None,
        s3: None,
        azure: None,
        gcs: Some(replicant::api::GcsRepository {
            bucket: store.bucket.clone(),
            prefix: Some("prod/eu".into()),
            endpoint: Some(store.url.clone()),
            credentials: None,
        }),
    };
    let key = StoreKey::Gcs {
        service_account_key: r#"{"private_key": "unused", "private_key_id": "unused", "client_email": "tests@example.invalid", "disable_oauth": true}"#.into(),
    };
    let repository = Repository::open(&spec, Some(&key)).unwrap();
    stores_once_and_refuses_another_content(&repository).await;
    assert_eq!(repository.list("default/orders").await.unwrap().len(), 2);
    // Two parts, as large as a base backup's.
    let rdb = incompressible(20 << 20);
    comes_back_whole(&repository, &rdb, replicant::repository::codec::Codec::Zstd).await;
    assert!(
        store
            .keys()
            .iter()
            .any(|k| k == "prod/eu/default/sessions/redis/20261204T000000.000Z/dump.rdb.zst"),
        "{:?}",
        store.keys()
    );
}

/// `rdb`, uploaded to `repository` as a snapshot compressed with `codec` (in parts, as it
/// streams), comes back byte for byte.
async fn comes_back_whole(
    repository: &Repository,
    rdb: &[u8],
    codec: replicant::repository::codec::Codec,
) {
    let id = "20261204T000000.000Z";
    let (raw, stored) = repository
        .upload_snapshot(
            ("default", "sessions"),
            id,
            codec,
            std::io::Cursor::new(rdb.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(raw, rdb.len() as u64);
    let snapshot = replicant::repository::snapshot::Snapshot {
        id: id.into(),
        member: "b".into(),
        started_at: jiff::Timestamp::now(),
        finished_at: jiff::Timestamp::now(),
        raw_bytes: raw,
        stored_bytes: stored,
        compression: codec,
        request: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let back = dir.path().join("dump.rdb");
    repository
        .restore_snapshot(("default", "sessions"), &snapshot, &back)
        .await
        .unwrap();
    assert!(
        std::fs::read(&back).unwrap() == rdb,
        "the snapshot comes back whole"
    );
}

/// `length` bytes that compress poorly (xorshift), so that uploads go up in full parts.
fn incompressible(length: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Every file under `dir`, depth first.
fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// The first file named `name` under `dir`.
fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    files_in(dir).into_iter().find(|path| path.ends_with(name))
}

/// Every object in a directory repository: its file name and when it was written.
/// A write under way is staged beside its object as `<name>#<n>` and renamed into place;
/// the repository's own listing leaves those out, and so does this.
fn archived(repo: &std::path::Path) -> Vec<(String, std::time::SystemTime)> {
    files_in(repo)
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            if name.contains('#') {
                return None;
            }
            // A staged file renamed away between the walk and this look.
            let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
            Some((name, modified))
        })
        .collect()
}

/// The segment numbers (log * 256 + segment) archived on `timeline`, sorted.
fn segments_on(objects: &[(String, std::time::SystemTime)], timeline: u32) -> Vec<u64> {
    let mut numbers: Vec<u64> = objects
        .iter()
        .filter_map(|(name, _)| {
            let wal = name.split('-').next()?;
            match WalFile::parse(wal)? {
                WalFile::Segment { name }
                    if u32::from_str_radix(&name[..8], 16).ok()? == timeline =>
                {
                    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
                    let segment = u64::from_str_radix(&name[16..24], 16).ok()?;
                    Some(log * 256 + segment)
                }
                _ => None,
            }
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

fn condition<'a>(
    report: &'a replicant::runtime::report::ClusterReport,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    report.status.conditions.iter().find(|c| c.type_ == type_)
}

/// WAL has been archived, and `ContinuousArchiving` is True.
fn archiving_soundly(r: &replicant::runtime::report::ClusterReport) -> bool {
    r.status
        .archive
        .as_ref()
        .is_some_and(|a| a.last_archived.is_some())
        && condition(r, "ContinuousArchiving").is_some_and(|c| c.status == "True")
}

/// Every member's agent archives to a directory repository (`archive_mode=always`): the
/// primary's WAL lands there, a failover loses none of it (the standbys had sent what the dead
/// primary had not), the new primary's `.history` file is there before any segment of its
/// timeline, each file is stored once, and status shows it all.
#[tokio::test(flavor = "multi_thread")]
async fn archiving_goes_on_across_a_failover_with_no_gap_and_the_history_file_first() {
    use support::pg::*;
    if !available() {
        return;
    }
    let (mut bed, repo, ctl) = archiving_bed("{ pendingLimit: 256Mi }").await;
    let rw = bed.rw();
    sql(&rw, "CREATE TABLE t (v int)").await;
    for i in 0..3 {
        sql(
            &rw,
            &format!("INSERT INTO t VALUES ({i}); SELECT pg_switch_wal()"),
        )
        .await;
    }
    let report = bed
        .wait_for(
            "WAL archived and ContinuousArchiving True",
            &ctl,
            60,
            archiving_soundly,
        )
        .await;
    let archive = report.status.archive.clone().unwrap();
    assert_eq!(archive.repository, "local");
    assert_eq!(archive.members.len(), 3, "{archive:?}");
    assert!(archive.members.iter().all(|m| m.configured), "{archive:?}");
    assert!(archive.lag_bytes.is_some(), "{archive:?}");

    // The primary's node dies; the new primary's timeline is archived after its history.
    bed.node("a").kill_node();
    bed.wait_for("a new primary", &ctl, 30, |r| {
        r.status
            .current_primary
            .as_deref()
            .is_some_and(|p| p != "a")
    })
    .await;
    eventually_pg("writes through the read-write name again", async || {
        try_sql(&rw, "INSERT INTO t VALUES (100)").await.is_ok()
    })
    .await;
    for _ in 0..2 {
        sql(&rw, "INSERT INTO t VALUES (101); SELECT pg_switch_wal()").await;
    }
    eventually_pg("timeline 2 archived", async || {
        let objects = archived(&repo);
        segments_on(&objects, 2).len() >= 2
    })
    .await;
    let objects = archived(&repo);
    let history = objects
        .iter()
        .find(|(name, _)| name.starts_with("00000002.history-"))
        .unwrap_or_else(|| panic!("no history file: {objects:?}"));
    for (name, modified) in &objects {
        if name.starts_with("00000002") && !name.contains(".history") {
            assert!(
                history.1 <= *modified,
                "{name} was archived before 00000002.history"
            );
        }
    }
    // No hole: timeline 1 runs unbroken from its first archived segment up to the one where
    // timeline 2 begins, and timeline 2 from there on.
    let first = segments_on(&objects, 1);
    let second = segments_on(&objects, 2);
    assert!(!first.is_empty() && !second.is_empty(), "{objects:?}");
    let fork = second[0];
    let expected: Vec<u64> = (first[0]..fork).collect();
    let before_fork: Vec<u64> = first.iter().copied().filter(|n| *n < fork).collect();
    assert_eq!(before_fork, expected, "timeline 1 has a hole: {objects:?}");
    let expected: Vec<u64> = (fork..=*second.last().unwrap()).collect();
    assert_eq!(second, expected, "timeline 2 has a hole: {objects:?}");
    // Each WAL file once, however many members sent it.
    let mut names: Vec<&str> = objects
        .iter()
        .map(|(name, _)| name.split('-').next().unwrap())
        .collect();
    let all = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all, "a WAL file stored twice: {objects:?}");

    let report = bed
        .wait_for("status names the new timeline's archiving", &ctl, 30, |r| {
            r.status
                .archive
                .as_ref()
                .and_then(|a| a.last_archived.as_deref())
                .is_some_and(|f| f.starts_with("00000002"))
        })
        .await;
    assert!(
        report
            .status
            .archive
            .as_ref()
            .unwrap()
            .members
            .iter()
            .all(|m| m.conflict.is_none() && m.gaps.is_empty()),
        "{:?}",
        report.status.archive
    );
}

/// The S3 store goes away under writes: each host keeps its WAL, `ContinuousArchiving` turns
/// False well before the bound, and once the store is back everything waiting is archived.
/// Away for longer, past `pendingLimit`, the hosts let WAL go and declare the gap, and the
/// database stays writable throughout. The schedule's first base backup is taken at once; once
/// the store is back after the gap, the controller takes another, the recoverable window
/// restarts at it, and the gap no longer keeps `ContinuousArchiving` False.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_away_holds_wal_within_its_bound_then_declares_the_gap() {
    use support::{
        pg::*,
        pg_bed::{PgBed, ready_members, streaming_from},
    };
    if !available() {
        return;
    }
    let Some(binary) = support::garage_binary() else {
        return;
    };
    let mut bed = PgBed::new();
    let mut store =
        GarageProcess::start(&binary, &bed.dir.path().join("garage"), "backups").unwrap();
    bed.spec_extra = format!(
        "  backup:\n    repositories:\n      - name: offsite\n        s3: {{ bucket: backups, endpoint: \"{}\", region: {}, credentials: {{ accessKeyIdEnv: S3_KEY_ID, secretAccessKeyEnv: S3_SECRET }} }}\n    archive: {{ pendingLimit: 64Mi, pendingWarning: 32Mi }}\n    base: {{ schedule: \"0 3 * * *\" }}\n",
        store.endpoint,
        garage::REGION
    );
    let ctl = bed.controller(
        &bed.spec("a", "async"),
        &[
            ("S3_KEY_ID", garage::ACCESS_KEY_ID),
            ("S3_SECRET", garage::SECRET_ACCESS_KEY),
        ],
    );
    bed.wait_for("a started, b and c copied and streaming", &ctl, 90, |r| {
        ready_members(r, 3) && streaming_from(r, "b", "a") && streaming_from(r, "c", "a")
    })
    .await;
    let rw = bed.rw();
    sql(&rw, "CREATE TABLE t (v int); SELECT pg_switch_wal()").await;
    let report = bed
        .wait_for(
            "archiving to the store, and the first base backup",
            &ctl,
            120,
            |r| {
                archiving_soundly(r)
                    && condition(r, "BackupSucceeded").is_some_and(|c| c.status == "True")
            },
        )
        .await;
    let first = report.status.backup.clone().unwrap();
    let first_backup = first.last_backup.clone().unwrap();
    // Taken as the cluster came up: from the primary when no standby streamed yet.
    assert_eq!(first.backup_count, 1, "{first:?}");
    assert!(first_backup.size_bytes > 0, "{first:?}");

    // Away: three finished segments wait on the primary, past the warning, within the bound.
    store.stop();
    for i in 0..3 {
        sql(
            &rw,
            &format!("INSERT INTO t VALUES ({i}); SELECT pg_switch_wal()"),
        )
        .await;
    }
    let primary = |r: &replicant::runtime::report::ClusterReport| {
        r.status
            .archive
            .as_ref()
            .and_then(|a| a.members.iter().find(|m| m.member == "a").cloned())
            .unwrap()
    };
    // Every member archives (its standbys too), and each host's report comes in its own
    // time: the condition may rise on a standby's word before the primary's arrives.
    let report = bed
        .wait_for(
            "ContinuousArchiving False: a backlog on the primary",
            &ctl,
            60,
            |r| {
                condition(r, "ContinuousArchiving").is_some_and(|c| c.reason == "Backlog")
                    && primary(r).pending_bytes >= 32 << 20
            },
        )
        .await;
    let message = &condition(&report, "ContinuousArchiving").unwrap().message;
    assert!(message.contains("offsite has not taken"), "{message}");
    let waiting = primary(&report);
    assert!(waiting.pending_bytes >= 32 << 20, "{waiting:?}");
    assert!(
        waiting.gaps.is_empty(),
        "nothing let go within the bound: {waiting:?}"
    );
    assert!(report.status.archive.as_ref().unwrap().lag_bytes.unwrap() > 0);

    // Back: what waited is archived, and the condition clears.
    store.resume().unwrap();
    sql(&rw, "INSERT INTO t VALUES (10); SELECT pg_switch_wal()").await;
    let report = bed
        .wait_for(
            "everything archived once the store is back",
            &ctl,
            120,
            |r| {
                condition(r, "ContinuousArchiving").is_some_and(|c| c.status == "True")
                    && r.status
                        .archive
                        .as_ref()
                        .is_some_and(|a| a.members.iter().all(|m| m.pending_bytes == 0))
            },
        )
        .await;
    let through = primary(&report).last_archived.unwrap();
    let key = StoreKey::S3 {
        access_key_id: garage::ACCESS_KEY_ID.into(),
        secret_access_key: garage::SECRET_ACCESS_KEY.into(),
    };
    let spec = RepositorySpec {
        name: "offsite".into(),
        directory: None,
        s3: Some(S3Repository {
            bucket: "backups".into(),
            prefix: None,
            endpoint: Some(store.endpoint.clone()),
            region: Some(garage::REGION.into()),
            credentials: None,
        }),
        azure: None,
        gcs: None,
    };
    let listed = Repository::open(&spec, Some(&key))
        .unwrap()
        .list("default/orders")
        .await
        .unwrap();
    let mut numbers: Vec<String> = listed
        .iter()
        .filter_map(|l| {
            let name = l.path.rsplit('/').next()?.split('-').next()?.to_string();
            matches!(WalFile::parse(&name)?, WalFile::Segment { .. }).then_some(name)
        })
        .collect();
    numbers.sort();
    assert!(
        numbers.last().is_some_and(|n| *n >= through),
        "{through} archived: {numbers:?}"
    );

    // Away past the bound: the hosts let WAL go and say so; the primary takes writes.
    store.stop();
    for i in 0..6 {
        sql(
            &rw,
            &format!("INSERT INTO t VALUES ({}); SELECT pg_switch_wal()", 20 + i),
        )
        .await;
    }
    let report = bed
        .wait_for("the gap declared", &ctl, 90, |r| {
            condition(r, "ContinuousArchiving").is_some_and(|c| c.reason == "GapDeclared")
        })
        .await;
    let message = &condition(&report, "ContinuousArchiving").unwrap().message;
    assert!(message.contains("go unarchived"), "{message}");
    assert!(message.contains("pendingLimit"), "{message}");
    let declared = report.status.archive.as_ref().unwrap();
    assert!(
        declared.members.iter().any(|m| m.gap_count > 0),
        "{declared:?}"
    );
    try_sql(&rw, "INSERT INTO t VALUES (99)")
        .await
        .expect("the primary takes writes with its WAL let go");
    assert!(
        declared.members.iter().all(|m| m.pending_bytes <= 80 << 20),
        "WAL kept within the bound (64Mi, and the file in hand): {declared:?}"
    );
    let declared_at: jiff::Timestamp = declared
        .members
        .iter()
        .filter_map(|m| m.gaps.last())
        .map(|g| g.declared_at.parse().unwrap())
        .max()
        .unwrap();

    // Back after the gap: a new base backup at once, the window restarts at it, and the gap
    // no longer counts.
    store.resume().unwrap();
    sql(&rw, "INSERT INTO t VALUES (100); SELECT pg_switch_wal()").await;
    let report = bed
        .wait_for(
            "a base backup after the gap, and archiving sound again",
            &ctl,
            180,
            |r| {
                r.status.backup.as_ref().is_some_and(|b| {
                    b.backup_count == 2
                        && b.recoverable.last().is_some_and(|w| {
                            w.earliest.parse::<jiff::Timestamp>().unwrap() > declared_at
                        })
                }) && condition(r, "ContinuousArchiving").is_some_and(|c| c.status == "True")
                    && condition(r, "BackupSucceeded").is_some_and(|c| c.status == "True")
            },
        )
        .await;
    let backups = report.status.backup.unwrap();
    eprintln!("after the gap: {backups:#?}");
    assert!(
        backups.recoverable.len() >= 2,
        "the stretch before the gap and the one after: {backups:?}"
    );
    let newest = backups.last_backup.unwrap();
    assert!(newest.started_at.parse::<jiff::Timestamp>().unwrap() > declared_at);
    assert_ne!(
        newest.member, "a",
        "read from a streaming standby: {newest:?}"
    );
    assert!(backups.next_scheduled_at.is_some());
}

/// A server outside the cluster's control (a copy of it, promoted elsewhere) archives timeline
/// 2 into the cluster's repository first. When the cluster then fails over onto timeline 2,
/// its new primary's files are refused, never written over the other server's, its host
/// stops archiving that timeline, status names it as a second writer, and the database keeps
/// taking writes.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_writer_on_a_timeline_is_refused_by_the_archive_and_reported() {
    use replicant_testkit::postgres::{PostgresProcess, owned_dir};
    use support::pg::*;
    if !available() {
        return;
    }
    let (mut bed, repo, ctl) = archiving_bed("{}").await;
    let rw = bed.rw();
    sql(&rw, "CREATE TABLE t (v int); SELECT pg_switch_wal()").await;
    bed.wait_for("every host archiving", &ctl, 60, |r| {
        condition(r, "ContinuousArchiving").is_some_and(|c| c.status == "True")
    })
    .await;

    // The rogue: a copy of a, archiving with the cluster's own settings, promoted by hand.
    let rogue_dir = owned_dir(bed.dir.path(), "rogue").unwrap();
    let settings = std::fs::read_dir(bed.host("a").data.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|e| std::fs::read_dir(e.path()).unwrap().flatten())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".archive-settings.json"))
        .expect("a's agent keeps its archive settings beside its state");
    let rogue_state = rogue_dir.join("rogue.json");
    std::fs::copy(
        &settings,
        rogue_dir.join("rogue.json.archive-settings.json"),
    )
    .unwrap();
    let command = format!(
        "{} archive-wal --state {} %p",
        env!("CARGO_BIN_EXE_replicant"),
        rogue_state.display()
    );
    let rogue = PostgresProcess::standby_of_port(
        bed.spec_port("a"),
        &rogue_dir.join("pg"),
        &[("archive_mode", "always"), ("archive_command", &command)],
    )
    .unwrap();
    if let Some((uid, gid)) = replicant_testkit::postgres::server_user() {
        let settings = rogue_dir.join("rogue.json.archive-settings.json");
        nix::unistd::chown(
            &settings,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap();
    }
    let rogue_address = rogue.address();
    sql(&rogue_address, "SELECT pg_promote()").await;
    eventually_pg("the rogue promoted", async || {
        try_sql(&rogue_address, "INSERT INTO t VALUES (-1)")
            .await
            .is_ok()
    })
    .await;
    sql(&rogue_address, "SELECT pg_switch_wal()").await;
    eventually_pg("the rogue's timeline 2 archived", async || {
        archived(&repo)
            .iter()
            .any(|(name, _)| name.starts_with("000000020"))
    })
    .await;

    // The cluster fails over onto its own timeline 2.
    bed.node("a").kill_node();
    let report = bed
        .wait_for("a new primary", &ctl, 30, |r| {
            r.status
                .current_primary
                .as_deref()
                .is_some_and(|p| p != "a")
        })
        .await;
    let primary = report.status.current_primary.clone().unwrap();
    eventually_pg("writes through the read-write name again", async || {
        try_sql(&rw, "INSERT INTO t VALUES (100)").await.is_ok()
    })
    .await;
    sql(&rw, "INSERT INTO t VALUES (101); SELECT pg_switch_wal()").await;
    // Every member archives what it has, so a standby may report the conflict before the
    // primary does; the condition names the primary first once it has.
    let report = bed
        .wait_for("the second writer reported by the primary", &ctl, 60, |r| {
            condition(r, "ContinuousArchiving").is_some_and(|c| {
                c.reason == "SecondWriter" && c.message.starts_with(&format!("{primary}:"))
            })
        })
        .await;
    let message = &condition(&report, "ContinuousArchiving").unwrap().message;
    assert!(
        message.contains("another server wrote this timeline"),
        "{message}"
    );
    try_sql(&rw, "INSERT INTO t VALUES (102)")
        .await
        .expect("the database takes writes while its archive refuses it");
    // Nothing overwritten, nothing stored twice: one object per WAL file.
    let objects = archived(&repo);
    let mut names: Vec<&str> = objects
        .iter()
        .map(|(name, _)| name.split('-').next().unwrap())
        .collect();
    let all = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all, "{objects:?}");
    drop(rogue);
}

/// A cluster of three under agents (a with data, b and c copied from it), archiving to a
/// directory repository with `archive` as `spec.backup.archive`; returned once b and c stream
/// from a.
async fn archiving_bed(
    archive: &str,
) -> (
    support::pg_bed::PgBed,
    std::path::PathBuf,
    support::Controller,
) {
    archiving_bed_with(archive, "async").await
}

/// As [`archiving_bed`], with `replication` as `spec.replication` (a flow mapping's inside).
async fn archiving_bed_with(
    archive: &str,
    replication: &str,
) -> (
    support::pg_bed::PgBed,
    std::path::PathBuf,
    support::Controller,
) {
    use support::pg_bed::{PgBed, ready_members, streaming_from};
    let mut bed = PgBed::new();
    // The agents run as the database's user: the repository is theirs to write.
    let repo = replicant_testkit::postgres::owned_dir(bed.dir.path(), "repository").unwrap();
    bed.spec_extra = format!(
        "  backup:\n    repositories:\n      - name: local\n        directory: {{ path: \"{}\" }}\n    archive: {archive}\n",
        repo.display()
    );
    let ctl = bed.controller(&bed.spec("a", replication), &[]);
    bed.wait_for("a started, b and c copied and streaming", &ctl, 90, |r| {
        ready_members(r, 3) && streaming_from(r, "b", "a") && streaming_from(r, "c", "a")
    })
    .await;
    (bed, repo, ctl)
}

/// `replicant backup ...` against the bed's spec files, with the secrets they name.
fn backup_command(bed: &support::pg_bed::PgBed, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_replicant"))
        .arg("backup")
        .args(args)
        .arg("--specs")
        .arg(bed.specs())
        .env("PG_PASSWORD", replicant_testkit::postgres::PASSWORD)
        .env("AGENT_TOKEN", support::node::TOKEN)
        .env(AZURE_KEY_ENV, replicant_testkit::azurite::ACCOUNT_KEY)
        .output()
        .unwrap()
}

fn said(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Rewrite the backup's tar inside its zstd object with one byte of one relation file changed:
/// a backup whose files were damaged after it was taken.
fn damage_a_file(object: &std::path::Path) -> String {
    let compressed = std::fs::read(object).unwrap();
    let tar = zstd::stream::decode_all(compressed.as_slice()).unwrap();
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut out = tar::Builder::new(Vec::new());
    let mut damaged = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        let header = entry.header().clone();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        if damaged.is_none() && path.starts_with("base/") && content.len() > 100 {
            content[100] ^= 0xFF;
            damaged = Some(path.display().to_string());
        }
        out.append(&header, content.as_slice()).unwrap();
    }
    let tar = out.into_inner().unwrap();
    std::fs::write(object, zstd::bulk::compress(&tar, 3).unwrap()).unwrap();
    damaged.expect("a relation file to damage")
}

/// A base backup taken on demand comes from a standby, streams into the repository, is listed,
/// and passes `pg_verifybackup` once restored; after one of its files is damaged in the
/// repository, `verify` fails and names the file.
#[tokio::test(flavor = "multi_thread")]
async fn a_base_backup_from_a_standby_is_listed_verified_and_a_damaged_one_fails() {
    use support::pg::*;
    if !available() {
        return;
    }
    // Drills on a weekly schedule: the first runs as soon as there is a backup.
    let (bed, repo, controller) = archiving_bed("{}\n    drill: { schedule: \"0 5 * * 0\" }").await;
    sql(
        &bed.rw(),
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 10000)",
    )
    .await;

    let took = backup_command(&bed, &["take"]);
    assert!(took.status.success(), "{}", said(&took));
    let line = String::from_utf8_lossy(&took.stdout).to_string();
    assert!(
        line.contains("from b") || line.contains("from c"),
        "taken from a standby: {line}"
    );
    assert!(line.contains("timeline 1"), "{line}");

    let listed = backup_command(&bed, &["list"]);
    assert!(listed.status.success(), "{}", said(&listed));
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let id = line.split_whitespace().next().unwrap();
    assert!(listed.starts_with(id), "{listed}");

    let verified = backup_command(&bed, &["verify"]);
    assert!(verified.status.success(), "{}", said(&verified));
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("verified against its manifest"),
        "{}",
        said(&verified)
    );

    // The controller's first drill: restored, replayed, checked, timed.
    let report = bed
        .wait_for("the first restore drill passed", &controller, 120, |r| {
            condition(r, "RestoreDrillPassed").is_some_and(|c| c.status == "True")
        })
        .await;
    let drill = report.status.backup.unwrap().last_drill.unwrap();
    eprintln!("the drill: {drill:?}");
    assert_eq!(drill.backup_id.as_deref(), Some(id), "{drill:?}");
    assert!(
        drill.restore_seconds.is_some() && drill.reached_lsn.is_some(),
        "{drill:?}"
    );
    assert!(
        drill.reached_at.is_some(),
        "the rows written before the backup were replayed: {drill:?}"
    );
    assert!(drill.message.contains("pg_amcheck"), "{drill:?}");

    let object = find_file(&repo, "data.tar.zst").expect("the backup's data in the repository");
    let damaged = damage_a_file(&object);
    let verified = backup_command(&bed, &["verify", "--backup", id]);
    assert!(!verified.status.success(), "{}", said(&verified));
    let message = said(&verified);
    assert!(message.contains("damaged"), "{message}");
    assert!(message.contains(&damaged), "names {damaged}: {message}");

    // A drill on demand now fails, naming the file, and so does the condition.
    let drilled = backup_command(&bed, &["drill", "--timeout", "2m"]);
    assert!(!drilled.status.success(), "{}", said(&drilled));
    let message = said(&drilled);
    assert!(
        message.contains("FAILED") && message.contains(&damaged),
        "{message}"
    );
    let report = bed
        .wait_for("RestoreDrillPassed False", &controller, 60, |r| {
            condition(r, "RestoreDrillPassed").is_some_and(|c| c.reason == "DrillFailed")
        })
        .await;
    let said_there = &condition(&report, "RestoreDrillPassed").unwrap().message;
    assert!(said_there.contains(&damaged), "{said_there}");
}

/// What [`three_batches`] wrote, and the points between.
struct Batches {
    /// Before the base backup: outside the window.
    before_backup: jiff::Timestamp,
    /// After the second batch (and the restore point `before_three`).
    lsn: String,
    /// The second batch's transaction.
    xid: String,
    /// Between the second batch and the third.
    time: jiff::Timestamp,
}

/// On the bed's primary: table `t` with rows 1..100, a base backup, rows 101..200, a restore
/// point `before_three`, rows 201..300; returned once the third batch is archived.
async fn three_batches(bed: &support::pg_bed::PgBed) -> Batches {
    use support::pg::*;
    let rw = bed.rw();
    sql(
        &rw,
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await;
    let before_backup = jiff::Timestamp::now();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let took = backup_command(bed, &["take"]);
    assert!(took.status.success(), "{}", said(&took));

    let client = connect(&rw).await;
    let xid: i64 = client
        .query_one(
            "WITH second AS (INSERT INTO t SELECT generate_series(101, 200) RETURNING 1) SELECT txid_current()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    sql(&rw, "SELECT pg_create_restore_point('before_three')").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let time = jiff::Timestamp::now();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    sql(&rw, "INSERT INTO t SELECT generate_series(201, 300)").await;
    archived_through_now(&rw).await;
    Batches {
        before_backup,
        lsn,
        xid: xid.to_string(),
        time,
    }
}

/// Point-in-time recovery on real postgres under agents: after a base backup, rows are written
/// in three batches; restores to a time, a WAL position, the second batch's transaction and a
/// named restore point taken between the second and the third each come up holding the first
/// two batches and not the third. A target before the oldest backup, and a restore point the
/// archived WAL does not hold, are refused before anything is written, with the recoverable
/// window in the message.
#[tokio::test(flavor = "multi_thread")]
async fn point_in_time_recovery_to_a_time_a_position_and_a_named_point() {
    use replicant_testkit::postgres::owned_dir;
    use support::pg::*;
    if !available() {
        return;
    }
    let (bed, _repo, _controller) = archiving_bed("{}").await;
    let Batches {
        before_backup,
        lsn,
        xid,
        time,
    } = three_batches(&bed).await;

    // Too early: refused, nothing written.
    let early = owned_dir(bed.dir.path(), "restored-early").unwrap();
    let refused = backup_restore(&bed, &early, &["--time", &before_backup.to_string()]);
    assert!(!refused.status.success());
    let message = said(&refused);
    assert!(
        message.contains("outside what the repository can recover: from "),
        "{message}"
    );
    assert_eq!(std::fs::read_dir(&early).unwrap().count(), 0);
    // A restore point the archive does not hold: found missing by reading the archived WAL,
    // refused before anything is written.
    let refused = backup_restore(&bed, &early, &["--name", "never_made"]);
    assert!(!refused.status.success());
    let message = said(&refused);
    assert!(
        message.contains("restore point \"never_made\" is outside what the repository can recover")
            && message.contains("holds no record of it"),
        "{message}"
    );
    assert_eq!(std::fs::read_dir(&early).unwrap().count(), 0);

    for (label, target) in [
        ("xid", vec!["--xid".to_string(), xid.clone()]),
        ("time", vec!["--time".to_string(), time.to_string()]),
        ("lsn", vec!["--lsn".to_string(), lsn.clone()]),
        (
            "name",
            vec!["--name".to_string(), "before_three".to_string()],
        ),
    ] {
        let args: Vec<&str> = target.iter().map(String::as_str).collect();
        let (_server, address) = restored_server(&bed, label, &args).await;
        assert_eq!(
            number(&address, "SELECT count(*) FROM t").await,
            200,
            "{label}: the first two batches, not the third"
        );
        assert_eq!(
            number(&address, "SELECT max(v)::bigint FROM t").await,
            200,
            "{label}"
        );
    }
}

/// `replicant restore` of the bed's cluster to `point` into a new directory named after
/// `label`, and a postgres started on it once it replayed and promoted: the server and its
/// address.
async fn restored_server(
    bed: &support::pg_bed::PgBed,
    label: &str,
    point: &[&str],
) -> (replicant_testkit::postgres::PostgresProcess, String) {
    use replicant_testkit::postgres::{PostgresProcess, owned_dir, server_user};
    use support::pg::*;
    let data = owned_dir(bed.dir.path(), &format!("restored-{label}")).unwrap();
    let restored = backup_restore(bed, &data, point);
    assert!(restored.status.success(), "{label}: {}", said(&restored));
    // The restore ran as this test's user; the server runs as the database's.
    if let Some((uid, gid)) = server_user() {
        let settings = data.with_file_name(format!("restored-{label}.restore-settings.json"));
        nix::unistd::chown(
            &settings,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap();
    }
    let server = PostgresProcess::existing(&data, &[]).unwrap();
    let address = server.address();
    eventually_pg("recovery to end and promote", async || {
        try_number(
            &address,
            "SELECT count(*) FROM t WHERE NOT pg_is_in_recovery()",
        )
        .await
        .is_some_and(|n| n > 0)
    })
    .await;
    (server, address)
}

/// The environment variable the Azure test's spec reads its account key from; every command
/// here is given it (Azurite's published development key).
const AZURE_KEY_ENV: &str = "REPLICANT_TEST_AZURE_KEY";

/// `replicant restore` of the bed's cluster into `data`, to `target`.
fn backup_restore(
    bed: &support::pg_bed::PgBed,
    data: &std::path::Path,
    target: &[&str],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_replicant"))
        .arg("restore")
        .arg("--specs")
        .arg(bed.specs())
        .arg("--to")
        .arg(data)
        .args(target)
        .env("PG_PASSWORD", replicant_testkit::postgres::PASSWORD)
        .env("AGENT_TOKEN", support::node::TOKEN)
        .env(AZURE_KEY_ENV, replicant_testkit::azurite::ACCOUNT_KEY)
        .output()
        .unwrap()
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    files_in(dir)
        .into_iter()
        .map(|path| path.strip_prefix(dir).unwrap().display().to_string())
        .collect()
}

/// Retention keeps the recovery window's base and the newest `minFullBackups`: with three
/// backups, a one-second window and a minimum of two, the oldest backup and the WAL only it
/// needed go. The dry run lists exactly what pruning then deletes, and the newest backup still
/// restores and verifies. Then the controller does the same by itself: after a fourth backup,
/// it lets go the oldest and says so in status.
#[tokio::test(flavor = "multi_thread")]
async fn retention_lets_go_exactly_what_the_dry_run_listed() {
    use support::pg::*;
    if !available() {
        return;
    }
    let (bed, repo, controller) =
        archiving_bed("{}\n    retention: { window: 1s, minFullBackups: 2 }").await;
    // The controller would let go what expires by itself; first, the command does. Without
    // it, no virtual name: the primary is reached directly.
    drop(controller);
    let primary = bed.address("a");
    sql(&primary, "CREATE TABLE t (v int)").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        sql(
            &primary,
            &format!("INSERT INTO t VALUES ({i}); SELECT pg_switch_wal()"),
        )
        .await;
        let took = backup_command(&bed, &["take"]);
        assert!(took.status.success(), "{}", said(&took));
        let line = String::from_utf8_lossy(&took.stdout).to_string();
        ids.push(line.split_whitespace().next().unwrap().to_string());
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let dry = backup_command(&bed, &["prune", "--dry-run"]);
    assert!(dry.status.success(), "{}", said(&dry));
    let dry = String::from_utf8_lossy(&dry.stdout).to_string();
    assert!(
        dry.contains(&format!("would remove backup {}", ids[0])),
        "{dry}"
    );
    for kept in &ids[1..] {
        assert!(!dry.contains(kept.as_str()), "{kept} is kept: {dry}");
    }
    let listed_wal: std::collections::BTreeSet<String> = dry
        .lines()
        .filter_map(|l| l.strip_prefix("would remove WAL "))
        .map(str::to_string)
        .collect();
    assert!(
        !listed_wal.is_empty(),
        "WAL older than the second backup: {dry}"
    );

    let before = files_under(&repo);
    let pruned = backup_command(&bed, &["prune"]);
    assert!(pruned.status.success(), "{}", said(&pruned));
    let after = files_under(&repo);
    let gone: std::collections::BTreeSet<String> = before.difference(&after).cloned().collect();
    let mut expected = listed_wal.clone();
    let oldest = before
        .iter()
        .filter(|f| f.contains(&format!("/base/{}/", ids[0])))
        .cloned();
    expected.extend(oldest);
    assert_eq!(gone, expected, "the dry run listed exactly what went");

    let listed = backup_command(&bed, &["list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let backups = listed.lines().filter(|l| !l.starts_with("recoverable "));
    assert_eq!(backups.count(), 2, "{listed}");
    assert!(listed.contains("\nrecoverable from "), "{listed}");
    let verified = backup_command(&bed, &["verify"]);
    assert!(verified.status.success(), "{}", said(&verified));

    // The controller, back, lets go what a fourth backup makes expire, and says what went.
    let controller = bed.controller(&bed.spec("a", "async"), &[]);
    let took = backup_command(&bed, &["take"]);
    assert!(took.status.success(), "{}", said(&took));
    let report = bed
        .wait_for("the controller let the oldest go", &controller, 120, |r| {
            r.status.backup.as_ref().is_some_and(|b| {
                b.backup_count == 2
                    && b.last_prune
                        .as_ref()
                        .is_some_and(|p| p.backups == [ids[1].clone()])
            })
        })
        .await;
    let pruned = report.status.backup.unwrap().last_prune.unwrap();
    // A standby's backup starts at its last restartpoint, which may be older than the WAL
    // the one before it needed: how many WAL files go with it varies.
    assert!(pruned.error.is_none(), "{pruned:?}");
    assert!(
        !files_under(&repo)
            .iter()
            .any(|f| f.contains(&format!("/base/{}/", ids[1]))),
        "{} is gone from the repository",
        ids[1]
    );
}

/// A Redis cluster of two (a the primary, b its replica) under a controller, with a directory
/// repository `repository` in the bed's directory and `backup` (more of `spec.backup`, indented
/// under it).
async fn redis_bed(backup: &str) -> (support::Bed, support::Controller) {
    let bed = support::Bed::new(2);
    let repo = bed.dir.path().join("repository");
    let spec = bed.spec("a", &[], "    detectAfter: 1s").replacen(
        "\n---",
        &format!(
            "\n  backup:\n    repositories:\n      - name: local\n        directory: {{ path: \"{}\" }}\n{backup}---",
            repo.display()
        ),
        1,
    );
    let controller = bed.started(&spec).await;
    (bed, controller)
}

/// Redis: a snapshot read from a streaming replica over the replication protocol (no agent)
/// lands in the cluster's repository and is listed; written back out, it starts a fresh
/// redis-server holding the same keys. A time before any snapshot is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_snapshot_from_a_replica_restores_into_a_new_server() {
    use replicant_testkit::RedisProcess;
    use support::{eventually, set, value};
    if !replicant_testkit::redis_available() {
        return;
    }
    let (bed, _controller) = redis_bed("").await;
    let primary = bed.servers[0].address();
    for i in 0..500 {
        set(&primary, &format!("key:{i}"), &format!("value {i}"))
            .await
            .unwrap();
    }
    let replica = bed.servers[1].address();
    eventually("the replica has every key", 10, async || {
        value(&replica, "key:499").await.as_deref() == Some("value 499")
    })
    .await;
    let replicant = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_replicant"))
            .args(args)
            .args(["--specs", bed.specs().to_str().unwrap()])
            .output()
            .unwrap()
    };

    let took = replicant(&["backup", "take"]);
    assert!(took.status.success(), "{}", said(&took));
    let line = String::from_utf8_lossy(&took.stdout).to_string();
    assert!(line.contains(" from b:"), "read from the replica: {line}");
    let listed = replicant(&["backup", "list"]);
    let id = line.split_whitespace().next().unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).starts_with(id),
        "{}",
        said(&listed)
    );

    let restored = bed.dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    let file = restored.join("dump.rdb");
    let wrote = replicant(&["restore", "--to", file.to_str().unwrap()]);
    assert!(wrote.status.success(), "{}", said(&wrote));
    let fresh = RedisProcess::start(
        bed.dir.path(),
        &[
            "--dir",
            restored.to_str().unwrap(),
            "--dbfilename",
            "dump.rdb",
        ],
    )
    .unwrap();
    for i in [0, 250, 499] {
        assert_eq!(
            value(&fresh.address(), &format!("key:{i}"))
                .await
                .as_deref(),
            Some(format!("value {i}").as_str())
        );
    }
    let mut conn = support::connect(&fresh.address()).await.unwrap();
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(keys, 500);

    let early = replicant(&[
        "restore",
        "--to",
        restored.join("early.rdb").to_str().unwrap(),
        "--time",
        "2020-01-01T00:00:00Z",
    ]);
    assert!(!early.status.success());
    assert!(
        said(&early).contains("no snapshot finished by"),
        "{}",
        said(&early)
    );
    assert!(!restored.join("early.rdb").exists());
}

/// Recovery into a new cluster (`spec.bootstrap.recovery`): a cluster's backups and WAL
/// outlive its hosts; a new cluster of empty hosts asked to recover to a time before any
/// backup is refused with the window and nothing is written; asked for a position between two
/// batches of rows, its desired primary recovers to it and promotes, the other members are
/// copied from it, the virtual name leads to it, and it archives its own history in a place
/// of its own, while its members keep nothing that reads the source's archive.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_cluster_recovers_from_another_clusters_backups_with_its_replicas() {
    use replicant_testkit::postgres::owned_dir;
    use support::pg::*;
    use support::pg_bed::{PgBed, ready_members, streaming_from};
    if !available() {
        return;
    }
    // The repository outlives both clusters' hosts.
    let store = tempfile::tempdir().unwrap();
    let repo = owned_dir(store.path(), "repository").unwrap();
    let repositories = format!(
        "  backup:\n    repositories:\n      - name: local\n        directory: {{ path: \"{}\" }}\n    archive: {{}}\n",
        repo.display()
    );

    let (before_backup, lsn) = {
        let mut bed = PgBed::new();
        bed.spec_extra = repositories.clone();
        let controller = bed.controller(&bed.spec("a", "async"), &[]);
        bed.wait_for("orders up", &controller, 90, |r| {
            ready_members(r, 3) && streaming_from(r, "b", "a") && streaming_from(r, "c", "a")
        })
        .await;
        let batches = three_batches(&bed).await;
        (batches.before_backup, batches.lsn)
        // The source's controller, agents and servers end here.
    };

    let mut bed = PgBed::for_recovery("restored");
    let recovery = |target: String| {
        format!(
            "{repositories}  bootstrap:\n    recovery:\n      repository: local\n      source: {{ cluster: orders }}\n      target: {target}\n"
        )
    };
    bed.spec_extra = recovery(format!("{{ time: \"{before_backup}\" }}"));
    let controller = bed.controller(&bed.spec("a", "async"), &[]);
    let report = bed
        .wait_for("the early target refused", &controller, 60, |r| {
            condition(r, "Ready").is_some_and(|c| {
                c.message
                    .contains("outside what the repository can recover")
            })
        })
        .await;
    let message = &condition(&report, "Ready").unwrap().message;
    assert!(
        message.contains("recovering default/orders") && message.contains("can recover: from "),
        "names the source and the window: {message}"
    );
    for host in &bed.hosts {
        assert_eq!(
            std::fs::read_dir(&host.data).unwrap().count(),
            0,
            "{}: nothing written",
            host.name
        );
    }

    bed.spec_extra = recovery(format!("{{ lsn: \"{lsn}\" }}"));
    bed.write_spec(&bed.spec("a", "async"));
    bed.wait_for(
        "recovered, b and c copied and streaming",
        &controller,
        180,
        |r| ready_members(r, 3) && streaming_from(r, "b", "a") && streaming_from(r, "c", "a"),
    )
    .await;
    let rw = bed.rw();
    assert_eq!(
        number(&rw, "SELECT count(*) FROM t").await,
        200,
        "the first two batches, not the third"
    );
    assert_eq!(number(&rw, "SELECT max(v)::bigint FROM t").await, 200);
    sql(&rw, "INSERT INTO t VALUES (1000)").await;
    eventually_pg("b has the new row", async || {
        try_number(&bed.address("b"), "SELECT count(*) FROM t")
            .await
            .is_some_and(|n| n == 201)
    })
    .await;
    // The new cluster's history goes to a place of its own, the history file with it.
    eventually_pg(
        "the new timeline's history archived under restored",
        async || {
            files_in(&repo).iter().any(|path| {
                let text = path.display().to_string();
                text.contains("/restored/") && text.contains(".history")
            })
        },
    )
    .await;
    for host in &bed.hosts {
        let auto =
            std::fs::read_to_string(host.data.join("postgresql.auto.conf")).unwrap_or_default();
        assert!(
            !auto.contains("restore_command") && !auto.contains("recovery_target"),
            "{}: {auto}",
            host.name
        );
    }
    assert!(
        !files_in(bed.dir.path())
            .iter()
            .any(|p| p.display().to_string().contains("restore-settings")),
        "the source's settings (and key) were removed"
    );
}

/// `spec.replication.copyFrom: Backup`: while the repository holds no backup, new standbys are
/// copied from their upstream; once it holds one, a member that lost its disk is copied again
/// from the newest base backup, replays the archived WAL, and streams from the primary after,
/// with every row.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_replica_is_copied_again_from_the_newest_backup() {
    use support::pg::*;
    use support::pg_bed::streaming_from;
    if !available() {
        return;
    }
    let (mut bed, _repo, controller) = archiving_bed_with("{}", "async, copyFrom: Backup").await;
    assert!(
        bed.copied_from("c").contains("LABEL: pg_basebackup"),
        "no backup yet: c was copied from a: {}",
        bed.copied_from("c")
    );
    let rw = bed.rw();
    sql(
        &rw,
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await;
    let took = backup_command(&bed, &["take"]);
    assert!(took.status.success(), "{}", said(&took));
    let id = String::from_utf8_lossy(&took.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    sql(&rw, "INSERT INTO t SELECT generate_series(101, 200)").await;
    archived_through_now(&rw).await;

    bed.lose_disk("c");
    sql(&rw, "INSERT INTO t SELECT generate_series(201, 300)").await;
    // The report may still show c streaming from before its disk went: the copy's label
    // tells the new c apart.
    let label = format!("LABEL: replicant {id}");
    bed.wait_for(
        "c copied again from the backup and streaming from a",
        &controller,
        120,
        |r| streaming_from(r, "c", "a") && bed.copied_from("c").contains(&label),
    )
    .await;
    eventually_pg("c holds every row", async || {
        try_number(&bed.address("c"), "SELECT count(*) FROM t")
            .await
            .is_some_and(|n| n == 300)
    })
    .await;
    let auto = std::fs::read_to_string(bed.host("c").data.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("restore-wal --standby"), "{auto}");
}

/// Redis snapshots on a schedule: the controller reads them from the replica itself (no
/// agent), enters them in the repository, and lets go those retention no longer keeps;
/// `status.backup` shows the newest, the count kept and what went.
#[tokio::test(flavor = "multi_thread")]
async fn redis_snapshots_are_taken_on_a_schedule_and_expire_under_retention() {
    use support::{eventually, set};
    if !replicant_testkit::redis_available() {
        return;
    }
    let (bed, _controller) = redis_bed(
        "    base: { schedule: \"*/2 * * * * *\" }\n    retention: { window: 1s, minFullBackups: 2 }\n    compression: Lz4\n",
    )
    .await;
    let repo = bed.dir.path().join("repository");
    let primary = bed.servers[0].address();
    for i in 0..100 {
        set(&primary, &format!("key:{i}"), "v").await.unwrap();
    }
    let entries = || {
        files_in(&repo)
            .iter()
            .filter(|p| p.ends_with("snapshot.json"))
            .count()
    };
    eventually("snapshots taken and the oldest let go", 90, async || {
        bed.report().is_some_and(|r| {
            r.status.backup.as_ref().is_some_and(|b| {
                b.last_backup.as_ref().is_some_and(|l| l.member == "b")
                    && b.last_prune
                        .as_ref()
                        .is_some_and(|p| !p.backups.is_empty() && p.error.is_none())
            }) && condition(&r, "BackupSucceeded").is_some_and(|c| c.status == "True")
        })
    })
    .await;
    // Retention keeps two; a third may be on its way in between.
    eventually("two snapshots kept", 30, async || entries() == 2).await;
    let report = bed.report().unwrap();
    let backup = report.status.backup.unwrap();
    assert!(
        backup.recoverable.is_empty(),
        "a snapshot is a point, not a window"
    );
    let last = backup.last_backup.unwrap();
    assert!(last.size_bytes > 0);
    // lz4, as the spec asks: the newest reads back as the RDB file it was.
    let object = files_in(&repo)
        .into_iter()
        .find(|p| p.display().to_string().contains(&last.id) && p.ends_with("dump.rdb.lz4"))
        .expect("the newest snapshot, in lz4");
    let mut rdb = Vec::new();
    std::io::Read::read_to_end(
        &mut lz4_flex::frame::FrameDecoder::new(std::fs::File::open(object).unwrap()),
        &mut rdb,
    )
    .unwrap();
    assert!(rdb.starts_with(b"REDIS"), "an RDB file");
    assert_eq!(rdb.len() as u64, last.size_bytes);
}

/// Under hosts coordinated through etcd: the schedule's first base backup is taken at once
/// (in lz4); with `copyFrom: Backup`, a member whose host lost its disk is copied again from it; and a
/// second cluster whose spec asks for `bootstrap.recovery` comes up from the first one's
/// backup and WAL, with its replicas, on the same hosts.
#[tokio::test(flavor = "multi_thread")]
async fn copies_and_recovery_from_backups_under_hosts_coordinated_through_etcd() {
    use support::hosts::Hosts;
    use support::pg::*;
    use support::pg_bed::{PgBed, ready_members, streaming_from};
    if !available() || !support::etcd::available() {
        return;
    }
    let mut bed = PgBed::new();
    let repo = replicant_testkit::postgres::owned_dir(bed.dir.path(), "repository").unwrap();
    let repositories = format!(
        "  backup:\n    repositories:\n      - name: local\n        directory: {{ path: \"{}\" }}\n    archive: {{}}\n",
        repo.display()
    );
    bed.spec_extra =
        format!("{repositories}    base: {{ schedule: \"0 0 * * *\" }}\n    compression: Lz4\n");
    // One host: the runtime is the coordinated one (lease, journal and status in etcd).
    let mut hosts = Hosts::new(1).await;
    hosts
        .bed
        .write_spec("orders.yaml", &bed.spec("a", "async, copyFrom: Backup"));
    hosts.start(
        0,
        &[
            ("PG_PASSWORD", replicant_testkit::postgres::PASSWORD),
            ("AGENT_TOKEN", support::node::TOKEN),
        ],
    );
    let cluster = |overview: &replicant::runtime::etcd::status::Overview, name: &str| {
        overview.clusters.iter().find(|r| r.name == name).cloned()
    };
    let overview = hosts
        .wait_for("orders up with its first backup", 120, |o| {
            cluster(o, "orders").is_some_and(|r| {
                ready_members(&r, 3)
                    && condition(&r, "BackupSucceeded").is_some_and(|c| c.status == "True")
            })
        })
        .await;
    let report = cluster(&overview, "orders").unwrap();
    let id = report.status.backup.unwrap().last_backup.unwrap().id;
    assert!(
        find_file(&repo, "data.tar.lz4").is_some_and(|p| p.display().to_string().contains(&id)),
        "backup {id} is in lz4, as the spec asks"
    );
    let primary = bed.address("a");
    sql(
        &primary,
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 200)",
    )
    .await;

    bed.lose_disk("c");
    let label = format!("LABEL: replicant {id}");
    hosts
        .wait_for("c copied again from the backup and streaming", 120, |o| {
            cluster(o, "orders").is_some_and(|r| streaming_from(&r, "c", "a"))
                && bed.copied_from("c").contains(&label)
        })
        .await;
    eventually_pg("c holds every row", async || {
        try_number(&bed.address("c"), "SELECT count(*) FROM t")
            .await
            .is_some_and(|n| n == 200)
    })
    .await;

    archived_through_now(&primary).await;
    let mut restored = bed.for_recovery_beside("restored");
    restored.spec_extra = format!(
        "{repositories}  bootstrap:\n    recovery: {{ repository: local, source: {{ cluster: orders }} }}\n"
    );
    hosts
        .bed
        .write_spec("restored.yaml", &restored.spec("a", "async"));
    hosts
        .wait_for(
            "restored recovered, b and c copied and streaming",
            180,
            |o| {
                cluster(o, "restored").is_some_and(|r| {
                    ready_members(&r, 3)
                        && streaming_from(&r, "b", "a")
                        && streaming_from(&r, "c", "a")
                })
            },
        )
        .await;
    assert_eq!(
        number(&restored.address("a"), "SELECT count(*) FROM t").await,
        200,
        "every row orders archived"
    );
}

/// A cluster whose repository is an Azure container (on Azurite), its account key read from
/// an environment variable: every member archives there, a base backup taken on demand goes
/// there, and a restore to the latest point comes up with every archived row.
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_archives_backs_up_and_restores_through_azure_blob_storage() {
    use replicant_testkit::azurite::{self, AzuriteProcess};
    if !support::pg::available() {
        return;
    }
    let Some(binary) = support::azurite_binary() else {
        return;
    };
    let bed = support::pg_bed::PgBed::new();
    let store = AzuriteProcess::start(&binary, &bed.dir.path().join("azurite"), "backups").unwrap();
    let repository = format!(
        "azure: {{ account: {}, container: {}, endpoint: \"{}\", credentials: {{ accountKeyEnv: {AZURE_KEY_ENV} }} }}",
        azurite::ACCOUNT,
        store.container,
        store.endpoint
    );
    archives_backs_up_and_restores(bed, &repository).await;
}

/// The same through Google Cloud Storage, against a MOCK of its XML API (no GCS emulator runs
/// here: see `support/gcs_mock.rs`), the service account key read from a file: the agents,
/// the command line and the restore all reach it through the `gcs` repository.
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_archives_backs_up_and_restores_through_a_gcs_mock() {
    if !support::pg::available() {
        return;
    }
    let bed = support::pg_bed::PgBed::new();
    let store = support::gcs_mock::GcsMock::start("backups").await;
    // A key that tells the client not to ask Google for a token (the mock takes none).
    let key = bed.dir.path().join("gcs-key.json");
    std::fs::write(
        &key,
        r#"{"private_key": "unused", "private_key_id": "unused", "client_email": "tests@example.invalid", "disable_oauth": true}"#,
    )
    .unwrap();
    let repository = format!(
        "gcs: {{ bucket: {}, prefix: prod, endpoint: \"{}\", credentials: {{ serviceAccountKeyFile: \"{}\" }} }}",
        store.bucket,
        store.url,
        key.display()
    );
    archives_backs_up_and_restores(bed, &repository).await;
    let keys = store.keys();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("prod/default/orders/") && k.contains("/base/"))
            && keys.iter().any(|k| k.contains("/wal/")),
        "{keys:?}"
    );
}

/// On `bed`, with `repository` (a flow mapping naming one store) as its only repository: the
/// members archive there, a base backup taken on demand goes there, and a restore to the
/// latest point comes up with every archived row.
async fn archives_backs_up_and_restores(mut bed: support::pg_bed::PgBed, repository: &str) {
    use support::pg::*;
    use support::pg_bed::{ready_members, streaming_from};
    bed.spec_extra = format!(
        "  backup:\n    repositories:\n      - name: store\n        {repository}\n    archive: {{}}\n"
    );
    let controller = bed.controller(
        &bed.spec("a", "async"),
        &[(AZURE_KEY_ENV, replicant_testkit::azurite::ACCOUNT_KEY)],
    );
    bed.wait_for("up and archiving", &controller, 90, |r| {
        ready_members(r, 3)
            && streaming_from(r, "b", "a")
            && condition(r, "ContinuousArchiving").is_some_and(|c| c.status == "True")
    })
    .await;
    let rw = bed.rw();
    sql(
        &rw,
        "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await;
    let took = backup_command(&bed, &["take"]);
    assert!(took.status.success(), "{}", said(&took));
    sql(&rw, "INSERT INTO t SELECT generate_series(101, 200)").await;
    archived_through_now(&rw).await;
    let listed = backup_command(&bed, &["list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("zstd"),
        "{}",
        said(&listed)
    );
    let (_server, address) = restored_server(&bed, "store", &[]).await;
    assert_eq!(number(&address, "SELECT count(*) FROM t").await, 200);
}
