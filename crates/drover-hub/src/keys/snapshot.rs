//! A copy of the keys in the data directory, for a hub whose keys live in
//! PostgreSQL: a hub that starts while the database does not answer checks
//! keys against the copy its last run kept, rather than refusing everyone
//! until the database is back. It is what the keys were when the hub last
//! read them: a key revoked on another hub since then is known only once
//! the database answers (as it would be to a running hub cut off from it).
//! Written whole beside its place and renamed there, owner-only; it holds
//! key hashes and webhook secrets, as the database does. A SQLite store is
//! a local file that always answers: it needs no copy.

use std::io::Write;
use std::path::{Path, PathBuf};

use drover_store::StoredKey;
use serde::{Deserialize, Serialize};

use super::{KeyError, hex, random, unix_now};

/// Its name in the data directory.
pub const FILE: &str = "keys.snapshot.json";

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Snapshot {
    /// Which store it is a copy of ([`drover_store::Store::describe`]):
    /// another database's copy is never used.
    pub store: String,
    pub taken_unix: u64,
    pub keys: Vec<StoredKey>,
}

pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The copy in `dir`, if there is one that can be read.
pub(super) fn read(dir: &Path) -> Result<Option<Snapshot>, KeyError> {
    let path = path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(KeyError::Read {
                path: path.display().to_string(),
                error: e.to_string(),
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| KeyError::Read {
            path: path.display().to_string(),
            error: e.to_string(),
        })
}

/// Keeps `keys` as the copy of `store` in `dir`. The temporary file has a
/// name nobody can guess and is created exclusively, so nothing planted
/// beside the copy is written through or renamed into its place.
pub(super) fn write(dir: &Path, store: &str, keys: &[StoredKey]) -> Result<(), KeyError> {
    let path = path(dir);
    let failed = |error: String| KeyError::Read {
        path: path.display().to_string(),
        error: format!("cannot write it: {error}"),
    };
    let text = serde_json::to_vec(&Snapshot {
        store: store.to_string(),
        taken_unix: unix_now(),
        keys: keys.to_vec(),
    })
    .map_err(|e| failed(e.to_string()))?;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| failed(e.to_string()))?;
    let tmp = path.with_extension(format!("json.{}.tmp", hex(&random::<8>()?)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(|e| failed(e.to_string()))?;
    let written = file
        .write_all(&text)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(|e| failed(e.to_string()))
}
