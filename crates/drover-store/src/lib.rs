//! drover's durable store: what must outlive a hub's process.
//!
//! One [`Store`], two databases behind it: SQLite by default (a file in the
//! hub's data directory, nothing to install) and PostgreSQL
//! (`--database-url`), for several hubs on one fleet. Every operation is
//! written once: the SQL both databases take is the same text (`$1`
//! parameters, `RETURNING`, partial indexes, `ON CONFLICT`), and where the
//! dialects part (PostgreSQL's `FOR UPDATE SKIP LOCKED`, how a JSON list
//! becomes rows) each has its line. Versioned migrations
//! (`migrations/{sqlite,postgres}`) run at open.
//!
//! The store decides nothing about when a job runs: the hub's runner claims
//! a window of jobs, waits for their slots in the scheduler like any
//! request, and stores how each attempt ended under the lease it claimed it
//! with ([`job`]). A job that ends (a runner's finish, a cancel, expiry, a
//! runner lost once too often) has its follow-up (its callback, which the
//! hub makes) stored in the same transaction.
//!
//! Beside the jobs: the cluster's lease and its hubs (several hubs on one
//! PostgreSQL database, one of them leading, `cluster.rs`), nodes (the fleet's machines) and the join tokens that
//! let them in, plans (a plain-language request a model turned into
//! tasks, kept with the model's answer and the tasks' ids), API keys (every hub on the store knows the same ones),
//! the fleet's run-time changes, and settings: named values every hub on
//! the store shares (the secret job callbacks are signed with).
//!
//! Time is the caller's: every operation that depends on it takes `now`
//! (milliseconds since the Unix epoch), so tests move it at will.

mod batches;
mod cluster;
mod error;
mod files;
mod fleet;
pub mod job;
mod jobs;
mod keys;
mod location;
mod lock;
mod nodes;
mod open;
mod plans;
mod releases;
mod settings;
mod wake;

pub use batches::{Batch, BatchEnd, BatchFiles, BatchFilter};
pub use cluster::{Candidate, ClusterLease, HubRow};
pub use error::StoreError;
pub use files::{FileFilter, NewFile, StoredFile};
pub use job::*;
pub use keys::StoredKey;
pub use location::{Location, SQLITE_FILE};
pub use nodes::{JoinRefused, JoinToken, Node, NodeBeat, NodeCommand};
pub use plans::{NewPlan, Plan};
pub use releases::{Release, Rollout};
pub use wake::{Wakeup, Wakeups};

use sqlx::{PgPool, SqlitePool};

/// A handle on the store; clones share its connections.
#[derive(Clone, Debug)]
pub struct Store {
    inner: std::sync::Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    location: Location,
    /// SQLite's one-hub-per-file lock, held until the store is closed.
    lock: std::sync::Mutex<Option<lock::HubLock>>,
}

#[derive(Debug)]
enum Db {
    Sqlite {
        /// One connection: SQLite takes one writer at a time, and queueing
        /// writers here rather than on its file lock keeps them off
        /// `SQLITE_BUSY`.
        write: SqlitePool,
        /// Readers, which WAL lets run beside the writer.
        read: SqlitePool,
    },
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the pool for a write (`write`) or a
/// read (`read`) and `$pg` telling whether it is PostgreSQL. The body is
/// compiled once per database: sqlx's queries take their database from
/// the pool.
macro_rules! on_db {
    ($store:expr, write, |$pool:ident, $pg:ident| $body:expr) => {
        match &$store.inner.db {
            $crate::Db::Sqlite { write, .. } => {
                let $pool = write;
                #[allow(unused_variables)]
                let $pg = false;
                $body
            }
            $crate::Db::Postgres(pool) => {
                let $pool = pool;
                #[allow(unused_variables)]
                let $pg = true;
                $body
            }
        }
    };
    ($store:expr, read, |$pool:ident, $pg:ident| $body:expr) => {
        match &$store.inner.db {
            $crate::Db::Sqlite { read, .. } => {
                let $pool = read;
                #[allow(unused_variables)]
                let $pg = false;
                $body
            }
            $crate::Db::Postgres(pool) => {
                let $pool = pool;
                #[allow(unused_variables)]
                let $pg = true;
                $body
            }
        }
    };
}
pub(crate) use on_db;

impl Store {
    /// Where it is, for messages.
    pub fn describe(&self) -> String {
        self.inner.location.describe()
    }

    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    /// Whether it is one hub's alone (SQLite): a job another runner holds
    /// there can only be a dead process's.
    pub fn is_single_hub(&self) -> bool {
        matches!(self.inner.db, Db::Sqlite { .. })
    }

    /// Closes its connections, waiting for those in use, and lets another
    /// hub open its SQLite file.
    pub async fn close(&self) {
        match &self.inner.db {
            Db::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
            Db::Postgres(pool) => pool.close().await,
        }
        let lock = match self.inner.lock.lock() {
            Ok(mut held) => held.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(lock);
    }
}
