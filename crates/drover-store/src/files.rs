//! Files: their bytes in the store, in chunks, so that one backup of the
//! database holds everything and every hub sharing it reads the same.

use sqlx::QueryBuilder;

use crate::{Store, StoreError, on_db};

/// Bytes a chunk holds: small enough for either database's row, large
/// enough that a 200 MB batch input is 200 rows.
pub(crate) const CHUNK: usize = 1024 * 1024;

/// A file to store.
#[derive(Clone, Debug)]
pub struct NewFile {
    pub id: String,
    pub key_id: String,
    pub purpose: String,
    pub filename: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// A stored file, without its bytes.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredFile {
    pub id: String,
    pub key_id: String,
    pub purpose: String,
    pub filename: String,
    pub bytes: i64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// Which files to list.
#[derive(Clone, Debug, Default)]
pub struct FileFilter {
    pub key_id: String,
    pub purpose: Option<String>,
    /// The cursor: files past this one in the listing's order.
    pub after: Option<String>,
    pub limit: u32,
    /// Oldest first (`order=asc`); newest first otherwise.
    pub oldest_first: bool,
}

/// Inserts a file's row and chunks on `$tx`.
macro_rules! insert_file {
    ($tx:expr, $file:expr, $data:expr) => {{
        let file: &NewFile = $file;
        let data: &[u8] = $data;
        sqlx::query(
            "INSERT INTO files (id, key_id, purpose, filename, bytes, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&file.id)
        .bind(&file.key_id)
        .bind(&file.purpose)
        .bind(&file.filename)
        .bind(i64::try_from(data.len()).unwrap_or(i64::MAX))
        .bind(file.created_at)
        .bind(file.expires_at)
        .execute(&mut *$tx)
        .await?;
        for (seq, chunk) in data.chunks($crate::files::CHUNK).enumerate() {
            sqlx::query("INSERT INTO file_chunks (file_id, seq, data) VALUES ($1, $2, $3)")
                .bind(&file.id)
                .bind(i64::try_from(seq).unwrap_or(i64::MAX))
                .bind(chunk)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}
pub(crate) use insert_file;

impl Store {
    /// Stores a file whole, or not at all.
    pub async fn put_file(&self, file: &NewFile, data: &[u8]) -> Result<StoredFile, StoreError> {
        on_db!(self, write, |pool, pg| {
            let mut tx = pool.begin().await?;
            insert_file!(tx, file, data);
            tx.commit().await?;
        });
        Ok(StoredFile {
            id: file.id.clone(),
            key_id: file.key_id.clone(),
            purpose: file.purpose.clone(),
            filename: file.filename.clone(),
            bytes: i64::try_from(data.len()).unwrap_or(i64::MAX),
            created_at: file.created_at,
            expires_at: file.expires_at,
        })
    }

    pub async fn file(&self, id: &str) -> Result<Option<StoredFile>, StoreError> {
        Ok(on_db!(self, read, |pool, pg| {
            sqlx::query_as(
                "SELECT id, key_id, purpose, filename, bytes, created_at, expires_at \
                 FROM files WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// A page of a key's files, and whether more follow.
    pub async fn files(&self, filter: &FileFilter) -> Result<(Vec<StoredFile>, bool), StoreError> {
        let limit = filter.limit.clamp(1, 10_000);
        let mut rows: Vec<StoredFile> = on_db!(self, read, |pool, pg| {
            let mut query = QueryBuilder::new(
                "SELECT id, key_id, purpose, filename, bytes, created_at, expires_at \
                 FROM files WHERE key_id = ",
            );
            query.push_bind(&filter.key_id);
            if let Some(purpose) = &filter.purpose {
                query.push(" AND purpose = ").push_bind(purpose);
            }
            if let Some(after) = &filter.after {
                query
                    .push(if filter.oldest_first {
                        " AND id > "
                    } else {
                        " AND id < "
                    })
                    .push_bind(after);
            }
            query
                .push(if filter.oldest_first {
                    " ORDER BY id ASC LIMIT "
                } else {
                    " ORDER BY id DESC LIMIT "
                })
                .push_bind(i64::from(limit) + 1);
            query.build_query_as().fetch_all(pool).await?
        });
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Ok((rows, more))
    }

    /// A file's bytes, if it exists.
    pub async fn file_content(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if self.file(id).await?.is_none() {
            return Ok(None);
        }
        let chunks: Vec<Vec<u8>> = on_db!(self, read, |pool, pg| {
            sqlx::query_scalar("SELECT data FROM file_chunks WHERE file_id = $1 ORDER BY seq")
                .bind(id)
                .fetch_all(pool)
                .await?
        });
        Ok(Some(chunks.concat()))
    }

    /// Deletes a file and its bytes; whether it existed.
    pub async fn delete_file(&self, id: &str) -> Result<bool, StoreError> {
        Ok(on_db!(self, write, |pool, pg| {
            sqlx::query("DELETE FROM files WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
                == 1
        }))
    }
}
