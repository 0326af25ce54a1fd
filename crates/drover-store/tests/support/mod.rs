//! Fresh stores for the tests: a SQLite file in a directory of its own, or
//! a PostgreSQL schema of its own, dropped when the test ends well.

#![allow(dead_code)]

use std::path::PathBuf;

use drover_store::{Location, NewJob, Store};

/// The PostgreSQL the tests use; they fail, never skip, when it does not
/// answer (`scripts/setup` starts one).
pub fn postgres_url() -> String {
    std::env::var("DROVER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub struct Db {
    pub store: Store,
    dir: Option<PathBuf>,
    schema: Option<String>,
}

impl Db {
    pub async fn sqlite() -> Db {
        let dir = std::env::temp_dir().join(format!("drover-store-{}", uuid::Uuid::now_v7()));
        let store = Store::open(Location::Sqlite(dir.join("drover.db")), "test hub")
            .await
            .unwrap_or_else(|e| panic!("SQLite store: {e}"));
        Db {
            store,
            dir: Some(dir),
            schema: None,
        }
    }

    pub async fn postgres() -> Db {
        let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
        let store = Store::open(
            Location::Postgres {
                url: postgres_url(),
                schema: Some(schema.clone()),
            },
            "test hub",
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} (run scripts/setup to start one): {e}",
                postgres_url()
            )
        });
        Db {
            store,
            dir: None,
            schema: Some(schema),
        }
    }

    pub async fn done(self) {
        self.store.close().await;
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(schema) = self.schema
            && let Ok(admin) = sqlx::PgPool::connect(&postgres_url()).await
        {
            let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
            admin.close().await;
        }
    }
}

/// A second handle on the same store, as a second hub would hold: its own
/// connections on PostgreSQL; on SQLite, which one hub alone may open, the
/// same handle.
pub trait Reopen {
    async fn reopen(&self) -> Store;
}

impl Reopen for Store {
    async fn reopen(&self) -> Store {
        match self.location() {
            Location::Sqlite(_) => self.clone(),
            location => Store::open(location.clone(), "second hub")
                .await
                .unwrap_or_else(|e| panic!("reopen: {e}")),
        }
    }
}

/// A queued inference job with the given priority, runnable from `run_at`.
pub fn new_job(id: &str, priority: u8, run_at: i64) -> NewJob {
    NewJob {
        priority,
        run_at,
        created_at: run_at,
        ..NewJob::chat(id, "m", format!("{{\"id\":\"{id}\"}}").into_bytes())
    }
}
