//! Opening a store: connections, the one-hub lock on SQLite, migrations.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::lock::HubLock;
use crate::{Db, Inner, Location, Store, StoreError};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a call waits for a connection before the store counts as
/// unreachable: job calls answer 503 quickly rather than hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

impl Store {
    /// Opens (creating if needed) the store at `location` and brings its
    /// schema up to date. `holder` says who this hub is (its process and
    /// address), for a second hub refused the same SQLite file to name.
    pub async fn open(location: Location, holder: &str) -> Result<Store, StoreError> {
        let store = Store::connect(location, holder).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// The store at `location`, its schema not yet brought up to date
    /// ([`Store::migrate`]). A SQLite file is opened (and locked) now; a
    /// PostgreSQL server is not reached until first used, so a hub can
    /// start while it is away and serve jobs once it answers.
    pub async fn connect(location: Location, holder: &str) -> Result<Store, StoreError> {
        Store::connect_as(location, Some(holder)).await
    }

    /// Opens the store at `location` beside the hub that may be running on
    /// it, without its one-hub lock, and brings its schema up to date: for
    /// a short-lived tool (`drover keys --data-dir`) whose few writes
    /// SQLite queues behind the hub's.
    pub async fn open_beside(location: Location) -> Result<Store, StoreError> {
        let store = Store::connect_as(location, None).await?;
        store.migrate().await?;
        Ok(store)
    }

    async fn connect_as(location: Location, holder: Option<&str>) -> Result<Store, StoreError> {
        let (db, lock) = match &location {
            Location::Sqlite(path) => {
                own_file(path)?;
                let lock = holder
                    .map(|holder| HubLock::take(path, holder))
                    .transpose()?;
                let db = open_sqlite(&location, path).await?;
                (db, lock)
            }
            Location::Postgres { url, schema } => {
                (open_postgres(&location, url, schema.as_deref())?, None)
            }
        };
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                location,
                lock: std::sync::Mutex::new(lock),
            }),
        })
    }

    /// Brings the schema up to date (on PostgreSQL, making the store's own
    /// schema first if it has one).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let location = self.describe();
        let result = match &self.inner.db {
            Db::Sqlite { write, .. } => SQLITE_MIGRATIONS.run(write).await,
            Db::Postgres(pool) => {
                if let Location::Postgres {
                    schema: Some(schema),
                    ..
                } = &self.inner.location
                {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
                    )))
                    .execute(pool)
                    .await?;
                }
                POSTGRES_MIGRATIONS.run(pool).await
            }
        };
        result.map_err(|error| match error {
            MigrateError::VersionMissing(version) => StoreError::Newer { location, version },
            MigrateError::Execute(e) => match StoreError::from(e) {
                StoreError::Other(reason) => StoreError::Corrupt { location, reason },
                other => other,
            },
            other => StoreError::Corrupt {
                location,
                reason: other.to_string(),
            },
        })
    }
}

/// Makes the database file, and the directories it is in, its owner's
/// alone before SQLite opens it: it holds key hashes and webhook secrets.
/// SQLite gives its `-wal` and `-shm` files the database's permissions.
fn own_file(path: &std::path::Path) -> Result<(), StoreError> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(io(dir))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

async fn open_sqlite(location: &Location, path: &std::path::Path) -> Result<Db, StoreError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a job the hub said it accepted survives a power cut too,
        // not only a crash of the process. Writes are grouped by the
        // runner, so the sync per commit is shared.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let named = |e: sqlx::Error| match StoreError::from(e) {
        StoreError::Other(reason) | StoreError::Unreachable(reason) => StoreError::Corrupt {
            location: location.describe(),
            reason,
        },
        other => other,
    };
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.clone())
        .await
        .map_err(named)?;
    // A file that is not a database opens without complaint; the first
    // read says so.
    sqlx::query("SELECT count(*) FROM sqlite_master")
        .execute(&write)
        .await
        .map_err(named)?;
    let read = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.read_only(true))
        .await
        .map_err(named)?;
    Ok(Db::Sqlite { write, read })
}

fn open_postgres(location: &Location, url: &str, schema: Option<&str>) -> Result<Db, StoreError> {
    let bad = |reason: String| StoreError::BadUrl {
        url: location.describe(),
        reason,
    };
    let mut options = PgConnectOptions::from_str(url).map_err(|e| bad(e.to_string()))?;
    if let Some(schema) = schema {
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(bad(format!(
                "schema {schema:?}: use letters, digits and underscores"
            )));
        }
        options = options.options([("search_path", schema)]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options);
    Ok(Db::Postgres(pool))
}
