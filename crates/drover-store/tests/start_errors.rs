//! What a store says at start when it cannot be used: a SQLite file held
//! by another hub, not a database at all, or written by a newer drover; a
//! PostgreSQL schema from a newer drover; a PostgreSQL that does not
//! answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use drover_store::{Location, Store, StoreError};

fn fresh_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-sqlite-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_second_hub_on_one_file_is_refused_and_told_who_holds_it() {
    let dir = fresh_dir();
    let file = dir.join("drover.db");
    let first = Store::open(
        Location::Sqlite(file.clone()),
        "pid 4242 at http://127.0.0.1:8080",
    )
    .await
    .unwrap();
    let err = Store::open(Location::Sqlite(file.clone()), "pid 1")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("pid 4242 at http://127.0.0.1:8080"),
        "{message}"
    );
    assert!(message.contains(&file.display().to_string()), "{message}");
    // Once the first is gone, the file is free (a process's death frees it
    // the same way).
    first.close().await;
    drop(first);
    let again = Store::open(Location::Sqlite(file), "pid 1").await.unwrap();
    again.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_named_at_start() {
    let dir = fresh_dir();
    let file = dir.join("drover.db");
    std::fs::write(&file, vec![0x5a; 8192]).unwrap();
    let err = Store::open(Location::Sqlite(file.clone()), "hub")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_database_from_a_newer_drover_is_refused_at_start() {
    let dir = fresh_dir();
    let file = dir.join("drover.db");
    let store = Store::open(Location::Sqlite(file.clone()), "hub")
        .await
        .unwrap();
    store.close().await;
    drop(store);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", file.display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99999, 'from the future', true, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let err = Store::open(Location::Sqlite(file.clone()), "hub")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Newer { version: 99999, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_unreachable_postgres_is_said_to_be_unreachable() {
    let err = Store::open(
        Location::Postgres {
            url: "postgres://postgres@127.0.0.1:1/test".into(),
            schema: None,
        },
        "hub",
    )
    .await
    .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn a_postgres_schema_from_a_newer_drover_is_refused_at_start() {
    let url = std::env::var("DROVER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("newer_{}", uuid::Uuid::now_v7().simple());
    let location = Location::Postgres {
        url: url.clone(),
        schema: Some(schema.clone()),
    };
    let store = Store::open(location.clone(), "hub").await.unwrap();
    store.close().await;
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO \"{schema}\"._sqlx_migrations (version, description, success, checksum, \
         execution_time) VALUES (99999, 'from the future', true, '\\x00', 0)"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let err = Store::open(location, "hub").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Newer { version: 99999, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&schema), "{err}");
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&admin)
    .await;
    admin.close().await;
}
