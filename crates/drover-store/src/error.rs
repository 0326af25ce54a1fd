use std::path::PathBuf;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database does not answer (PostgreSQL down, the network cut): the
    /// hub keeps serving inference from memory and says so on job calls.
    #[error("the job store is unreachable: {0}")]
    Unreachable(String),
    #[error(
        "{location} is held by another hub ({holder}); stop it, or give this one another data \
         directory or database"
    )]
    Locked { location: String, holder: String },
    #[error("{location} is not a drover database, or it is damaged: {reason}")]
    Corrupt { location: String, reason: String },
    #[error(
        "{location} was written by a newer drover (its schema has migration {version}, which \
         this one does not know); run that drover, or a newer one"
    )]
    Newer { location: String, version: i64 },
    #[error("the job store is full (no space left on its disk): {0}")]
    Full(String),
    #[error("the job store cannot be written: {0}")]
    ReadOnly(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad database URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// A stored value this code cannot read.
    #[error("a stored {what} cannot be read: {reason}")]
    Data { what: &'static str, reason: String },
    #[error("the job store failed: {0}")]
    Other(String),
}

impl StoreError {
    /// Whether trying again later may succeed (the database was away).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unreachable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unreachable(error.to_string()),
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                match code.as_str() {
                    // SQLite's extended result codes keep the primary one in
                    // their low byte: SQLITE_FULL (13), SQLITE_READONLY (8),
                    // SQLITE_CORRUPT (11), SQLITE_NOTADB (26).
                    c if sqlite_primary(c) == Some(13) => StoreError::Full(db.message().into()),
                    c if sqlite_primary(c) == Some(8) => StoreError::ReadOnly(db.message().into()),
                    // PostgreSQL: disk full, and the server shutting down or
                    // refusing connections.
                    "53100" => StoreError::Full(db.message().into()),
                    "57P01" | "57P02" | "57P03" | "53300" => {
                        StoreError::Unreachable(db.message().into())
                    }
                    _ => StoreError::Other(error.to_string()),
                }
            }
            _ => StoreError::Other(error.to_string()),
        }
    }
}

fn sqlite_primary(code: &str) -> Option<i64> {
    code.parse::<i64>().ok().map(|c| c & 0xff)
}
