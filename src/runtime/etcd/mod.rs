//! The etcd runtime: several `replicant run` processes on plain hosts coordinated through etcd.
//! So far its journal store; leadership, routes and status follow.

pub mod journal;

pub use self::journal::{EtcdJournalStore, Fence, journal_key};
