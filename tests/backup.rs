//! Backups and WAL archiving against real stores: a directory repository, and a real
//! S3-compatible server (Garage) on loopback.

mod support;

use replicant::{
    api::{DirectoryRepository, Repository as RepositorySpec, S3Repository},
    repository::{
        Repository, S3Key,
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

/// Garage from `GARAGE`, else on the PATH, else where `scripts/install-garage` puts it.
pub fn garage_binary() -> Option<std::path::PathBuf> {
    support::tool(
        "garage",
        "GARAGE",
        "scripts/install-garage, then GARAGE=<its output>",
    )
}

#[tokio::test]
async fn an_s3_repository_on_a_real_store_stores_each_wal_file_once() {
    let Some(binary) = garage_binary() else {
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
    };
    let key = S3Key {
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
    let wrong = S3Key {
        access_key_id: garage::ACCESS_KEY_ID.into(),
        secret_access_key: "f".repeat(64),
    };
    let refused = Repository::open(&spec, Some(&wrong))
        .unwrap()
        .push_wal(
            &data_set(),
            &WalFile::parse("000000010000000000000009").unwrap(),
            &segment(SYSTEM, 1),
        )
        .await
        .unwrap_err();
    assert!(!refused.to_string().contains(&"f".repeat(64)), "{refused}");
    assert!(matches!(refused, PushError::Store(_)), "{refused}");
}
