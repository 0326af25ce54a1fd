//! API keys with powers: a client key may run inference, an admin key may
//! use the management API, and neither may do the other's work. A key is
//! shown once, when it is created; the hub keeps only its SHA-256, in its
//! store (`drover.db` in the data directory, or PostgreSQL), so every hub
//! on one database knows the same keys, and finds a caller's key by that
//! hash in memory: no query per request, and inference goes on while
//! PostgreSQL is away. Every change is written to the store first; the hub
//! reads the store again every few seconds ([`Keys::reload`]), so a key
//! revoked on another hub, or by `drover keys --data-dir` beside this one,
//! stops working within seconds. Without a store the hub keeps no keys and
//! says so when asked to create one.
//!
//! Keys used to live in `<data_dir>/keys.json`: a hub that finds that file
//! imports it once and renames it `keys.json.imported`.
//!
//! A hub whose keys are in PostgreSQL keeps a copy of them in its data
//! directory ([`snapshot`]) and starts on it while the database does not
//! answer. Without one, until the keys have been read once, nobody's key
//! can be checked: requests that need one are answered 503, never let
//! through.

mod snapshot;

pub use snapshot::FILE as SNAPSHOT_FILE;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use drover_proto::admin::{KeyInfo, KeyKind, KeyLimits};
use drover_store::{Store, StoreError, StoredKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::name::check_name;
use crate::webhook::WebhookSecret;

/// What `keys.json` held: every key ever created, revoked ones too.
#[derive(Debug, Default, Deserialize)]
struct KeyFile {
    keys: Vec<FileRecord>,
}

#[derive(Debug, Clone, Deserialize)]
struct FileRecord {
    id: String,
    name: String,
    kind: KeyKind,
    sha256: String,
    prefix: String,
    created_unix: u64,
    #[serde(default)]
    revoked_unix: Option<u64>,
    #[serde(default)]
    limits: KeyLimits,
}

impl FileRecord {
    fn stored(&self) -> StoredKey {
        StoredKey {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.kind.as_str().to_string(),
            sha256: self.sha256.clone(),
            prefix: self.prefix.clone(),
            created_unix: seconds(self.created_unix),
            revoked_unix: self.revoked_unix.map(seconds),
            limits: limits_json(&self.limits),
            webhook_secret: None,
        }
    }
}

fn seconds(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

fn limits_json(limits: &KeyLimits) -> String {
    serde_json::to_string(limits).unwrap_or_else(|_| "{}".into())
}

/// A key as the hub holds it.
#[derive(Debug, Clone)]
struct Record {
    info: KeyInfo,
    sha256: String,
    /// Its own webhook secret; unreadable ones were said and dropped.
    webhook_secret: Option<WebhookSecret>,
}

impl Record {
    /// The stored key, or why it cannot be used: a row this build cannot
    /// read (a kind it does not know, limits it cannot parse) matches no
    /// request, as a revoked key.
    fn read(stored: StoredKey) -> Result<Record, String> {
        let kind = KeyKind::parse(&stored.kind)
            .ok_or_else(|| format!("key {}: unknown kind {:?}", stored.id, stored.kind))?;
        let limits: KeyLimits = serde_json::from_str(&stored.limits)
            .map_err(|e| format!("key {}: unreadable limits: {e}", stored.id))?;
        let webhook_secret = match &stored.webhook_secret {
            Some(text) => Some(
                text.parse::<WebhookSecret>()
                    .map_err(|e| format!("key {}: unreadable webhook secret: {e}", stored.id))?,
            ),
            None => None,
        };
        let unix = |s: i64| u64::try_from(s).unwrap_or(0);
        Ok(Record {
            info: KeyInfo {
                id: stored.id,
                name: stored.name,
                kind,
                prefix: stored.prefix,
                created_unix: unix(stored.created_unix),
                revoked_unix: stored.revoked_unix.map(unix),
                limits,
                own_webhook_secret: webhook_secret.is_some(),
            },
            sha256: stored.sha256,
            webhook_secret,
        })
    }

    fn holder(&self) -> Holder {
        Holder {
            id: self.info.id.clone(),
            name: self.info.name.clone(),
            kind: self.info.kind,
            limits: self.info.limits.clone(),
        }
    }

    fn active(&self) -> bool {
        self.info.revoked_unix.is_none()
    }
}

/// A key a caller presented, found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub id: String,
    pub name: String,
    pub kind: KeyKind,
    pub limits: KeyLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "this hub keeps no keys: it has no data directory and no database (set data_dir or \
         database_url, or pass --data-dir or --database-url)"
    )]
    NoStore,
    #[error("{0}")]
    Invalid(String),
    #[error("an active key is already named {0:?}")]
    Duplicate(String),
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: String },
    #[error("{0}")]
    Store(#[from] StoreError),
}

#[derive(Debug, Default)]
struct Inner {
    records: Vec<Record>,
    /// Hash to index in `records`, active keys only.
    active: HashMap<String, usize>,
    /// Id to index in `records`, active keys only.
    by_id: HashMap<String, usize>,
}

impl Inner {
    fn index(records: Vec<Record>) -> Inner {
        let active = records.iter().enumerate().filter(|(_, r)| r.active());
        Inner {
            active: active.clone().map(|(i, r)| (r.sha256.clone(), i)).collect(),
            by_id: active.map(|(i, r)| (r.info.id.clone(), i)).collect(),
            records,
        }
    }

    fn any_active(&self, kind: KeyKind) -> bool {
        self.records
            .iter()
            .any(|r| r.active() && r.info.kind == kind)
    }
}

#[derive(Debug)]
pub struct Keys {
    store: Option<Store>,
    inner: RwLock<Inner>,
    /// Whether the keys have been read from the store since the start.
    loaded: AtomicBool,
    /// A `keys.json` still to import (its store was away at the start).
    legacy: Mutex<Option<PathBuf>>,
    /// The rows this build could not read, said once each.
    unreadable: Mutex<Vec<String>>,
    /// Where the copy of a PostgreSQL store's keys is kept, and what it
    /// holds now (written again only when the keys change).
    snapshot: Option<PathBuf>,
    copied: Mutex<Option<Vec<StoredKey>>>,
}

/// Every record in `path`; none if there is no such file.
fn read_file(path: &Path) -> Result<Vec<FileRecord>, KeyError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let read = |error: String| KeyError::Read {
        path: path.display().to_string(),
        error,
    };
    let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
    let parsed: KeyFile = serde_json::from_str(&text).map_err(|e| read(e.to_string()))?;
    Ok(parsed.keys)
}

/// A key just created: what the listing shows, the key itself (shown this
/// once), and what changed for the hub's callers, if anything.
#[derive(Debug)]
pub struct Created {
    pub info: KeyInfo,
    pub key: String,
    pub note: Option<String>,
}

/// The name of the file keys were kept in before the store.
pub const LEGACY_FILE: &str = "keys.json";

impl Keys {
    /// The keys in `store`, after importing `<data_dir>/keys.json` into it
    /// if there is one (a damaged file is an error naming it). A store that
    /// does not answer leaves the keys unknown until [`Keys::reload`]
    /// reads them.
    pub async fn open(store: Option<Store>, data_dir: Option<&Path>) -> Result<Keys, KeyError> {
        let legacy = data_dir.map(|d| d.join(LEGACY_FILE)).filter(|f| f.exists());
        if let Some(file) = &legacy {
            // Read now: a file that cannot be imported stops the start.
            read_file(file)?;
            if store.is_none() {
                return Err(KeyError::NoStore);
            }
        }
        let snapshot = data_dir.filter(|_| store.as_ref().is_some_and(|s| !s.is_single_hub()));
        let keys = Keys {
            loaded: AtomicBool::new(store.is_none()),
            store,
            inner: RwLock::new(Inner::default()),
            legacy: Mutex::new(legacy),
            unreadable: Mutex::new(Vec::new()),
            snapshot: snapshot.map(Path::to_path_buf),
            copied: Mutex::new(None),
        };
        match keys.reload().await {
            Ok(()) => {}
            Err(KeyError::Store(e)) if e.is_unavailable() => {
                if !keys.start_on_snapshot() {
                    tracing::warn!(error = %e, "the API keys cannot be read: requests that need a key are answered 503 until the store answers");
                }
            }
            Err(e) => return Err(e),
        }
        Ok(keys)
    }

    /// Takes the keys from the copy of this store in the data directory, if
    /// there is one; whether there was.
    fn start_on_snapshot(&self) -> bool {
        let (Some(dir), Some(store)) = (&self.snapshot, &self.store) else {
            return false;
        };
        let copy = match snapshot::read(dir) {
            Ok(Some(copy)) => copy,
            Ok(None) => return false,
            // A copy only: one that cannot be read is said and passed by.
            Err(e) => {
                tracing::warn!(error = %e, "the copy of the API keys cannot be used");
                return false;
            }
        };
        if copy.store != store.describe() {
            tracing::warn!(
                "{} is a copy of the keys of {}, not of {}: not used",
                snapshot::path(dir).display(),
                copy.store,
                store.describe()
            );
            return false;
        }
        let age = unix_now().saturating_sub(copy.taken_unix);
        tracing::warn!(
            keys = copy.keys.len(),
            age_s = age,
            "{} does not answer: the API keys are checked against the copy in {} until it does (a key revoked elsewhere meanwhile still works here)",
            store.describe(),
            snapshot::path(dir).display()
        );
        self.take(copy.keys);
        true
    }

    /// Makes `rows` the keys in force.
    fn take(&self, rows: Vec<StoredKey>) {
        let mut records = Vec::new();
        for stored in rows {
            match Record::read(stored) {
                Ok(record) => records.push(record),
                Err(reason) => {
                    let mut said = drover_core::sync::lock(&self.unreadable);
                    if !said.contains(&reason) {
                        tracing::warn!("{reason}: the key matches no request");
                        said.push(reason);
                    }
                }
            }
        }
        *drover_core::sync::write(&self.inner) = Inner::index(records);
        self.loaded.store(true, Ordering::Release);
    }

    /// Keeps the copy of `rows` in the data directory when they changed.
    fn copy(&self, store: &Store, rows: &[StoredKey]) {
        let Some(dir) = &self.snapshot else {
            return;
        };
        let mut copied = drover_core::sync::lock(&self.copied);
        if copied.as_deref() == Some(rows) {
            return;
        }
        match snapshot::write(dir, &store.describe(), rows) {
            Ok(()) => *copied = Some(rows.to_vec()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot keep a copy of the API keys: a restart while the database is away will refuse requests that need a key")
            }
        }
    }

    /// Reads every key from the store again (importing a `keys.json` still
    /// waiting first): a key created or revoked elsewhere is in force now.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        self.import(store).await?;
        let rows = store.keys().await?;
        self.copy(store, &rows);
        self.take(rows);
        Ok(())
    }

    /// Imports the keys of a `keys.json` into the store, and renames the
    /// file so that it is imported once. A key whose id or hash the store
    /// already has, or whose name an active key there has, is left out and
    /// said.
    async fn import(&self, store: &Store) -> Result<(), KeyError> {
        let Some(file) = drover_core::sync::lock(&self.legacy).clone() else {
            return Ok(());
        };
        let mut imported = 0;
        for record in read_file(&file)? {
            if store.insert_key(&record.stored()).await? {
                imported += 1;
            } else {
                tracing::warn!(key = %record.id, name = %record.name, "not imported from {}: the store has a key with its id, its hash, or (active) its name", file.display());
            }
        }
        let done = file.with_extension("json.imported");
        std::fs::rename(&file, &done).map_err(|e| KeyError::Read {
            path: file.display().to_string(),
            error: format!("imported, but cannot rename it to {}: {e}", done.display()),
        })?;
        tracing::info!(
            imported,
            "API keys imported from {} into {}; the file is now {}",
            file.display(),
            store.describe(),
            done.display()
        );
        *drover_core::sync::lock(&self.legacy) = None;
        Ok(())
    }

    /// Why no key can be checked now, if none can: the store has not
    /// answered since the start.
    pub fn unknown(&self) -> Option<StoreError> {
        if self.loaded.load(Ordering::Acquire) {
            return None;
        }
        let place = self
            .store
            .as_ref()
            .map_or_else(String::new, Store::describe);
        Some(StoreError::Unreachable(format!(
            "the API keys are kept in {place}, which has not answered since this hub started: \
             requests that need a key are refused until it does"
        )))
    }

    /// The store, for a change.
    fn store(&self) -> Result<&Store, KeyError> {
        self.store.as_ref().ok_or(KeyError::NoStore)
    }

    /// The active key `token` is, if any.
    pub fn find(&self, token: &str) -> Option<Holder> {
        let inner = drover_core::sync::read(&self.inner);
        Some(inner.records[*inner.active.get(&digest(token))?].holder())
    }

    /// The active key with this id, if any: a stored job runs as the key
    /// that submitted it, found again by id (its secret is not kept).
    pub fn holder(&self, id: &str) -> Option<Holder> {
        let inner = drover_core::sync::read(&self.inner);
        Some(inner.records[*inner.by_id.get(id)?].holder())
    }

    /// The webhook secret of the active key `id`, if it has its own.
    pub fn webhook_secret(&self, id: &str) -> Option<WebhookSecret> {
        let inner = drover_core::sync::read(&self.inner);
        inner.records[*inner.by_id.get(id)?].webhook_secret.clone()
    }

    /// Whether an active key of `kind` exists.
    pub fn any(&self, kind: KeyKind) -> bool {
        drover_core::sync::read(&self.inner).any_active(kind)
    }

    /// Whether a key of `kind` was ever created, revoked or not: inference
    /// stays closed once client keys are in use, even when every one has
    /// been revoked.
    pub fn ever(&self, kind: KeyKind) -> bool {
        drover_core::sync::read(&self.inner)
            .records
            .iter()
            .any(|r| r.info.kind == kind)
    }

    /// Creates a key; returns what the listing shows, the key itself, which
    /// is never shown again, and what it changed for the hub's callers.
    pub async fn create(
        &self,
        name: &str,
        kind: KeyKind,
        limits: KeyLimits,
    ) -> Result<Created, KeyError> {
        check_name("key", name).map_err(KeyError::Invalid)?;
        check_limits(kind, &limits).map_err(KeyError::Invalid)?;
        let store = self.store()?;
        let secret = format!(
            "drv_{}_{}",
            match kind {
                KeyKind::Client => "c",
                KeyKind::Admin => "a",
                KeyKind::Metrics => "m",
                KeyKind::Worker => "w",
            },
            hex(&random::<32>()?)
        );
        let info = KeyInfo {
            id: format!("key_{}", hex(&random::<6>()?)),
            name: name.to_string(),
            kind,
            prefix: secret.chars().take(12).collect(),
            created_unix: unix_now(),
            revoked_unix: None,
            limits,
            own_webhook_secret: false,
        };
        self.reload().await?;
        let note = match kind {
            KeyKind::Client if !self.ever(KeyKind::Client) => {
                Some("inference now needs a client key: requests without one are refused (401)")
            }
            KeyKind::Admin if !self.any(KeyKind::Admin) => {
                Some("the management API and the dashboard now need an admin key")
            }
            _ => None,
        };
        let stored = StoredKey {
            id: info.id.clone(),
            name: info.name.clone(),
            kind: kind.as_str().to_string(),
            sha256: digest(&secret),
            prefix: info.prefix.clone(),
            created_unix: seconds(info.created_unix),
            revoked_unix: None,
            limits: limits_json(&info.limits),
            webhook_secret: None,
        };
        if !store.insert_key(&stored).await? {
            return Err(KeyError::Duplicate(name.to_string()));
        }
        self.reload().await?;
        Ok(Created {
            info,
            key: secret,
            note: note.map(String::from),
        })
    }

    /// The key `id` as the hub holds it now.
    fn info(&self, id: &str) -> Option<KeyInfo> {
        drover_core::sync::read(&self.inner)
            .records
            .iter()
            .find(|r| r.info.id == id)
            .map(|r| r.info.clone())
    }

    /// Every key, revoked ones too, oldest first.
    pub fn list(&self) -> Vec<KeyInfo> {
        drover_core::sync::read(&self.inner)
            .records
            .iter()
            .map(|r| r.info.clone())
            .collect()
    }

    /// The key with id `id_or_name`, or else the active key of that name,
    /// as the store has it now.
    async fn named(&self, id_or_name: &str) -> Result<Option<KeyInfo>, KeyError> {
        self.reload().await?;
        let inner = drover_core::sync::read(&self.inner);
        let by_id = inner.records.iter().find(|r| r.info.id == id_or_name);
        let by_name = || {
            inner
                .records
                .iter()
                .find(|r| r.active() && r.info.name == id_or_name)
        };
        Ok(by_id.or_else(by_name).map(|r| r.info.clone()))
    }

    /// Revokes a key by id, or the active key of that name: `Ok(None)` if
    /// there is no such key; the key as it now is otherwise (revoking twice
    /// changes nothing), with what that changed for the hub's callers.
    pub async fn revoke(
        &self,
        id_or_name: &str,
    ) -> Result<Option<(KeyInfo, Option<String>)>, KeyError> {
        let store = self.store()?;
        let Some(info) = self.named(id_or_name).await? else {
            return Ok(None);
        };
        if info.revoked_unix.is_some() {
            return Ok(Some((info, None)));
        }
        store.revoke_key(&info.id, seconds(unix_now())).await?;
        self.reload().await?;
        let now = self.info(&info.id).unwrap_or(info);
        let note = match now.kind {
            KeyKind::Client if !self.any(KeyKind::Client) => Some(
                "no client key is active now: inference stays closed to everyone (401) until one is created; `drover keys purge` forgets revoked keys and opens inference to anyone again",
            ),
            KeyKind::Admin if !self.any(KeyKind::Admin) => Some(
                "no admin key is active now: on loopback the management API is open to the local operator again; elsewhere only admin_key or a key made with `drover keys create --data-dir` opens it",
            ),
            _ => None,
        };
        Ok(Some((now, note.map(String::from))))
    }

    /// Forgets every revoked key: how many, and what that changed. Once no
    /// client key was ever kept, inference is open to anyone again.
    pub async fn purge(&self) -> Result<(usize, Option<String>), KeyError> {
        let store = self.store()?;
        self.reload().await?;
        let had_clients = self.ever(KeyKind::Client);
        let purged = store.purge_keys().await?;
        self.reload().await?;
        let note = (had_clients && !self.ever(KeyKind::Client))
            .then(|| "no client key is kept now: inference is open to anyone again".to_string());
        Ok((usize::try_from(purged).unwrap_or(usize::MAX), note))
    }

    /// Gives the active key `id_or_name` a new webhook secret of its own,
    /// which signs its jobs' callbacks from now on (`Some`, shown this
    /// once), or takes it away, back to the hub's (`None`). `Ok(None)`: no
    /// such active key.
    pub async fn set_webhook_secret(
        &self,
        id_or_name: &str,
        own: bool,
    ) -> Result<Option<(KeyInfo, Option<WebhookSecret>)>, KeyError> {
        let store = self.store()?;
        let Some(info) = self
            .named(id_or_name)
            .await?
            .filter(|k| k.revoked_unix.is_none())
        else {
            return Ok(None);
        };
        let secret = own
            .then(WebhookSecret::generate)
            .transpose()
            .map_err(|e| KeyError::Invalid(format!("no randomness: {e}")))?;
        let text = secret.as_ref().map(ToString::to_string);
        if !store
            .set_key_webhook_secret(&info.id, text.as_deref())
            .await?
        {
            return Ok(None);
        }
        self.reload().await?;
        let now = self.info(&info.id).unwrap_or(info);
        Ok(Some((now, secret)))
    }
}

/// A secret's SHA-256, as the store keeps secrets.
pub(crate) fn digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Invalid(format!("no randomness: {e}")))?;
    Ok(bytes)
}

/// `N` random bytes as lowercase hex behind `prefix`: a secret, a token,
/// an id.
pub(crate) fn random_hex<const N: usize>(prefix: &str) -> Result<String, crate::error::ApiError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| crate::error::ApiError::Internal(format!("no randomness: {e}")))?;
    Ok(format!("{prefix}{}", hex(&bytes)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Limits belong to client keys and must make sense.
fn check_limits(kind: KeyKind, l: &KeyLimits) -> Result<(), String> {
    if kind != KeyKind::Client && *l != KeyLimits::default() {
        return Err(format!(
            "limits are for client keys; {} key runs no inference",
            article(kind)
        ));
    }
    if l.requests_per_minute == Some(0)
        || l.tokens_per_minute == Some(0)
        || l.max_concurrent == Some(0)
    {
        return Err(
            "requests_per_minute, tokens_per_minute and max_concurrent must be at least 1".into(),
        );
    }
    if l.priority.is_some_and(|p| p > 100) || l.max_priority.is_some_and(|p| p > 100) {
        return Err("priority and max_priority must be from 0 to 100".into());
    }
    if let (Some(p), Some(max)) = (l.priority, l.max_priority)
        && p > max
    {
        return Err(format!("priority {p} is above max_priority {max}"));
    }
    if l.models.as_ref().is_some_and(|m| m.is_empty()) {
        return Err("models, when given, must name at least one".into());
    }
    Ok(())
}

/// "an admin", "a metrics", "a client".
pub fn article(kind: KeyKind) -> String {
    match kind {
        KeyKind::Admin => "an admin".into(),
        other => format!("a {}", other.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_store::Location;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("drover-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    async fn store(d: &Path) -> Store {
        Store::open_beside(Location::Sqlite(d.join(drover_store::SQLITE_FILE)))
            .await
            .unwrap()
    }

    async fn keys(d: &Path) -> Keys {
        Keys::open(Some(store(d).await), Some(d)).await.unwrap()
    }

    #[tokio::test]
    async fn a_key_is_kept_hashed_found_by_itself_and_revoked_at_once() {
        let d = dir("basic");
        let keys = keys(&d).await;
        let Created {
            info,
            key: secret,
            note,
        } = keys
            .create("batch", KeyKind::Client, KeyLimits::default())
            .await
            .unwrap();
        assert!(note.unwrap().contains("401"));
        assert!(
            secret.starts_with("drv_c_") && secret.len() == 6 + 64,
            "{secret}"
        );
        assert_eq!(keys.find(&secret).map(|h| h.name), Some("batch".into()));
        assert_eq!(keys.holder(&info.id).map(|h| h.name), Some("batch".into()));
        assert_eq!(keys.find("drv_c_nope"), None);
        let db = std::fs::read(d.join(drover_store::SQLITE_FILE)).unwrap();
        assert!(
            !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the store holds no key"
        );
        // Kept across a restart.
        let again = super::tests::keys(&d).await;
        assert!(again.find(&secret).is_some());
        assert!(matches!(
            again
                .create("batch", KeyKind::Client, KeyLimits::default())
                .await,
            Err(KeyError::Duplicate(_))
        ));
        let (revoked, note) = again.revoke(&info.id).await.unwrap().unwrap();
        assert!(revoked.revoked_unix.is_some());
        assert!(note.unwrap().contains("purge"));
        assert_eq!(again.find(&secret), None);
        assert_eq!(again.holder(&info.id), None);
        assert_eq!(super::tests::keys(&d).await.find(&secret), None);
        assert!(again.revoke("key_none").await.unwrap().is_none());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn without_a_store_no_key_is_created() {
        let keys = Keys::open(None, None).await.unwrap();
        assert!(matches!(
            keys.create("x", KeyKind::Admin, KeyLimits::default()).await,
            Err(KeyError::NoStore)
        ));
        assert!(!keys.any(KeyKind::Client));
        assert!(keys.unknown().is_none(), "no store: no keys, known");
    }

    #[tokio::test]
    async fn a_keys_file_is_imported_once_and_a_damaged_one_is_an_error_naming_it() {
        let d = dir("import");
        std::fs::create_dir_all(&d).unwrap();
        let file = d.join(LEGACY_FILE);
        std::fs::write(&file, "{not json").unwrap();
        let e = Keys::open(Some(store(&d).await), Some(&d))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("keys.json"), "{e}");
        // What an earlier drover wrote: one active key, one revoked.
        let token = "drv_a_0123456789";
        let text = serde_json::json!({"keys": [
            {"id": "key_1", "name": "ops", "kind": "admin", "sha256": digest(token),
             "prefix": "drv_a_012345", "created_unix": 1},
            {"id": "key_2", "name": "old", "kind": "client", "sha256": "ab",
             "prefix": "drv_c_ab", "created_unix": 2, "revoked_unix": 3,
             "limits": {"max_concurrent": 2}},
        ]});
        std::fs::write(&file, text.to_string()).unwrap();
        let keys = super::tests::keys(&d).await;
        assert_eq!(keys.find(token).map(|h| h.name), Some("ops".into()));
        assert!(keys.ever(KeyKind::Client) && !keys.any(KeyKind::Client));
        assert_eq!(keys.list()[1].limits.max_concurrent, Some(2));
        assert!(!file.exists() && d.join("keys.json.imported").exists());
        // Once: a revoked key purged stays purged at the next start.
        keys.purge().await.unwrap();
        let again = super::tests::keys(&d).await;
        assert_eq!(again.list().len(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_store_is_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("fresh").join("nested");
        let keys = keys(&d).await;
        keys.create("k", KeyKind::Admin, KeyLimits::default())
            .await
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&d.join(drover_store::SQLITE_FILE)), 0o600);
        let _ = std::fs::remove_dir_all(d.parent().unwrap());
    }

    #[tokio::test]
    async fn a_key_is_revoked_by_name_and_revoked_keys_are_purged() {
        let d = dir("names");
        let keys = keys(&d).await;
        let first = keys
            .create("app", KeyKind::Client, KeyLimits::default())
            .await
            .unwrap();
        let (revoked, note) = keys.revoke("app").await.unwrap().unwrap();
        assert_eq!(revoked.id, first.info.id);
        assert!(
            note.is_some(),
            "the last client key: inference stays closed"
        );
        assert!(keys.ever(KeyKind::Client));
        // The name is free again; revoking by it finds the active one.
        let second = keys
            .create("app", KeyKind::Client, KeyLimits::default())
            .await
            .unwrap();
        assert!(second.note.is_none(), "client keys existed before");
        let (revoked, _) = keys.revoke("app").await.unwrap().unwrap();
        assert_eq!(revoked.id, second.info.id);
        assert!(keys.revoke("nobody").await.unwrap().is_none());
        let (purged, note) = keys.purge().await.unwrap();
        assert_eq!(purged, 2);
        assert!(note.unwrap().contains("open to anyone"));
        assert!(!keys.ever(KeyKind::Client));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_change_by_another_writer_is_picked_up_at_the_next_reload() {
        let d = dir("writers");
        let hub = keys(&d).await;
        let beside = super::tests::keys(&d).await;
        let made_beside = beside
            .create("made-beside", KeyKind::Admin, KeyLimits::default())
            .await
            .unwrap();
        assert!(hub.find(&made_beside.key).is_none());
        hub.reload().await.unwrap();
        assert!(hub.find(&made_beside.key).is_some());
        beside.revoke("made-beside").await.unwrap();
        hub.reload().await.unwrap();
        assert!(hub.find(&made_beside.key).is_none());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_key_may_have_its_own_webhook_secret() {
        let d = dir("secret");
        let keys = keys(&d).await;
        let k = keys
            .create("app", KeyKind::Client, KeyLimits::default())
            .await
            .unwrap();
        assert!(keys.webhook_secret(&k.info.id).is_none());
        let (_, shown) = keys.set_webhook_secret("app", true).await.unwrap().unwrap();
        let shown = shown.unwrap().to_string();
        assert_eq!(
            keys.webhook_secret(&k.info.id).map(|s| s.to_string()),
            Some(shown)
        );
        keys.set_webhook_secret(&k.info.id, false)
            .await
            .unwrap()
            .unwrap();
        assert!(keys.webhook_secret(&k.info.id).is_none());
        keys.revoke("app").await.unwrap();
        assert!(
            keys.set_webhook_secret(&k.info.id, true)
                .await
                .unwrap()
                .is_none()
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
