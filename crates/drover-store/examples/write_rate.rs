//! The store's own limit, for `bench/jobs.sh` to set drover's jobs per
//! second against: pgbench-style transactions (insert a row, update it,
//! commit) on the same database with the settings the store uses (SQLite:
//! WAL, synchronous FULL, one writer; PostgreSQL: a pool), for a few
//! seconds, from several clients at once.
//!
//!   cargo run --release -p drover-store --example write_rate -- sqlite:DIR/x.db [SECONDS] [CLIENTS]
//!   cargo run --release -p drover-store --example write_rate -- postgres://u@h/db?schema=s [SECONDS] [CLIENTS]

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .ok_or("usage: write_rate URL [SECONDS] [CLIENTS]")?;
    let seconds: u64 = args.get(1).map_or(Ok(5), |s| s.parse())?;
    let clients: usize = args.get(2).map_or(Ok(8), |s| s.parse())?;
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    if let Some(path) = url.strip_prefix("sqlite:") {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS write_rate (id INTEGER PRIMARY KEY, state TEXT NOT NULL, body BLOB NOT NULL)")
            .execute(&pool)
            .await?;
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (pool, done) = (pool.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < until {
                    let mut tx = pool.begin().await?;
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO write_rate (state, body) VALUES ('queued', x'7b7d') RETURNING id",
                    )
                    .fetch_one(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE write_rate SET state = 'done' WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, sqlx::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
    } else {
        let (base, schema) = match url.split_once("?schema=") {
            Some((base, schema)) => (base.to_string(), Some(schema.to_string())),
            None => (url.clone(), None),
        };
        let mut options = PgConnectOptions::from_str(&base)?;
        if let Some(schema) = &schema {
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            )))
            .execute(&admin)
            .await?;
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(clients as u32)
            .connect_with(options)
            .await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS write_rate (id BIGSERIAL PRIMARY KEY, state TEXT NOT NULL, body BYTEA NOT NULL)")
            .execute(&pool)
            .await?;
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (pool, done) = (pool.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < until {
                    let mut tx = pool.begin().await?;
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO write_rate (state, body) VALUES ('queued', '\\x7b7d') RETURNING id",
                    )
                    .fetch_one(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE write_rate SET state = 'done' WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, sqlx::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.0}");
    Ok(())
}
