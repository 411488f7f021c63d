//! The etcd runtime: several `replicant run` processes on plain hosts coordinated through etcd.
//! So far leadership and the journal store; routes, status and the runtime itself follow.

pub mod journal;
pub mod leader;

pub use self::{
    journal::{EtcdJournalStore, Fence, journal_key},
    leader::{ElectionOptions, Leadership, campaign},
};
