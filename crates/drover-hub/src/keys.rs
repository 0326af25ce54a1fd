//! API keys with powers: a client key may run inference, an admin key may
//! use the management API, and neither may do the other's work. A key is
//! shown once, when it is created; the hub keeps only its SHA-256, in
//! `<data_dir>/keys.json` (written whole to a temporary file and renamed
//! over the old one, so a crash leaves one or the other, readable by its
//! owner only), and finds a caller's key by that hash. Revoking takes
//! effect at the next request. Without a data directory the hub keeps no
//! keys and says so when asked to create one.
//!
//! The file may also be changed while the hub runs, by `drover keys
//! --data-dir` (keys made before a hub ever runs, or a way back in when
//! every admin key is gone): every change re-reads it first, so nothing
//! another writer added is lost, and the hub picks up such changes by
//! [`Keys::reload_if_changed`].

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use drover_proto::admin::{KeyInfo, KeyKind, KeyLimits};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::name::check_name;

/// What the file holds: every key ever created, revoked ones too (they
/// are listed as revoked and match nothing).
#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<Record>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    name: String,
    kind: KeyKind,
    /// SHA-256 of the whole key, hex.
    sha256: String,
    /// The key's first characters, to tell keys apart in a listing.
    prefix: String,
    created_unix: u64,
    #[serde(default)]
    revoked_unix: Option<u64>,
    #[serde(default)]
    limits: KeyLimits,
}

impl Record {
    fn info(&self) -> KeyInfo {
        KeyInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.kind,
            prefix: self.prefix.clone(),
            created_unix: self.created_unix,
            revoked_unix: self.revoked_unix,
            limits: self.limits.clone(),
        }
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
    #[error("this hub keeps no keys: it has no data directory (set data_dir, or --data-dir)")]
    NoDataDir,
    #[error("{0}")]
    Invalid(String),
    #[error("an active key is already named {0:?}")]
    Duplicate(String),
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: String },
}

#[derive(Debug, Default)]
struct Inner {
    records: Vec<Record>,
    /// Hash to index in `records`, active keys only.
    active: HashMap<String, usize>,
}

impl Inner {
    fn index(records: Vec<Record>) -> Inner {
        let active = records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.revoked_unix.is_none())
            .map(|(i, r)| (r.sha256.clone(), i))
            .collect();
        Inner { records, active }
    }
}

#[derive(Debug)]
pub struct Keys {
    file: Option<PathBuf>,
    inner: RwLock<Inner>,
    /// The file as last read or written, to tell when someone else changed
    /// it.
    seen: Mutex<Option<Stamp>>,
}

/// A file's modification time and length.
type Stamp = (SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Every record in `path`; none if there is no such file.
fn read_file(path: &Path) -> Result<Vec<Record>, KeyError> {
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

impl Keys {
    /// The keys in `data_dir`, if it has any; none without a directory.
    pub fn open(data_dir: Option<&Path>) -> Result<Keys, KeyError> {
        let file = data_dir.map(|d| d.join("keys.json"));
        let records = match &file {
            Some(path) => read_file(path)?,
            None => Vec::new(),
        };
        Ok(Keys {
            seen: Mutex::new(file.as_deref().and_then(stamp)),
            file,
            inner: RwLock::new(Inner::index(records)),
        })
    }

    /// Reads the file again if someone else changed it since this hub last
    /// read or wrote it; whether it did.
    pub fn reload_if_changed(&self) -> Result<bool, KeyError> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let now = stamp(path);
        if now == *drover_core::sync::lock(&self.seen) {
            return Ok(false);
        }
        let records = read_file(path)?;
        let mut inner = drover_core::sync::write(&self.inner);
        *inner = Inner::index(records);
        *drover_core::sync::lock(&self.seen) = now;
        Ok(true)
    }

    /// Changes the records as `change` says, on the file as it is now (so
    /// nothing another writer added is lost), and saves them.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut Vec<Record>) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let file = self.file.as_ref().ok_or(KeyError::NoDataDir)?;
        let mut inner = drover_core::sync::write(&self.inner);
        let mut records = read_file(file)?;
        let out = change(&mut records)?;
        save(file, &records)?;
        *drover_core::sync::lock(&self.seen) = stamp(file);
        *inner = Inner::index(records);
        Ok(out)
    }

    /// The active key `token` is, if any.
    pub fn find(&self, token: &str) -> Option<Holder> {
        let inner = drover_core::sync::read(&self.inner);
        let r = &inner.records[*inner.active.get(&digest(token))?];
        Some(Holder {
            id: r.id.clone(),
            name: r.name.clone(),
            kind: r.kind,
            limits: r.limits.clone(),
        })
    }

    /// The active key with this id, if any: a stored job runs as the key
    /// that submitted it, found again by id (its secret is not kept).
    pub fn holder(&self, id: &str) -> Option<Holder> {
        let inner = drover_core::sync::read(&self.inner);
        inner
            .active
            .values()
            .map(|&i| &inner.records[i])
            .find(|r| r.id == id)
            .map(|r| Holder {
                id: r.id.clone(),
                name: r.name.clone(),
                kind: r.kind,
                limits: r.limits.clone(),
            })
    }

    /// Whether an active key of `kind` exists.
    pub fn any(&self, kind: KeyKind) -> bool {
        let inner = drover_core::sync::read(&self.inner);
        inner
            .active
            .values()
            .any(|&i| inner.records[i].kind == kind)
    }

    /// Whether a key of `kind` was ever created, revoked or not: inference
    /// stays closed once client keys are in use, even when every one has
    /// been revoked.
    pub fn ever(&self, kind: KeyKind) -> bool {
        drover_core::sync::read(&self.inner)
            .records
            .iter()
            .any(|r| r.kind == kind)
    }

    /// Creates a key; returns what the listing shows, the key itself, which
    /// is never shown again, and what it changed for the hub's callers.
    pub fn create(
        &self,
        name: &str,
        kind: KeyKind,
        limits: KeyLimits,
    ) -> Result<Created, KeyError> {
        check_name("key", name).map_err(KeyError::Invalid)?;
        check_limits(kind, &limits).map_err(KeyError::Invalid)?;
        let secret = format!(
            "drv_{}_{}",
            match kind {
                KeyKind::Client => "c",
                KeyKind::Admin => "a",
                KeyKind::Metrics => "m",
            },
            hex(&random::<32>()?)
        );
        let record = Record {
            id: format!("key_{}", hex(&random::<6>()?)),
            name: name.to_string(),
            kind,
            sha256: digest(&secret),
            prefix: secret.chars().take(12).collect(),
            created_unix: unix_now(),
            revoked_unix: None,
            limits,
        };
        let note = self.change(|records| {
            if records
                .iter()
                .any(|r| r.revoked_unix.is_none() && r.name == name)
            {
                return Err(KeyError::Duplicate(name.to_string()));
            }
            let note = match kind {
                KeyKind::Client if !records.iter().any(|r| r.kind == KeyKind::Client) => {
                    Some("inference now needs a client key: requests without one are refused (401)")
                }
                KeyKind::Admin
                    if !records
                        .iter()
                        .any(|r| r.kind == KeyKind::Admin && r.revoked_unix.is_none()) =>
                {
                    Some("the management API and the dashboard now need an admin key")
                }
                _ => None,
            };
            records.push(record.clone());
            Ok(note.map(String::from))
        })?;
        Ok(Created {
            info: record.info(),
            key: secret,
            note,
        })
    }

    /// Every key, revoked ones too, oldest first.
    pub fn list(&self) -> Vec<KeyInfo> {
        drover_core::sync::read(&self.inner)
            .records
            .iter()
            .map(Record::info)
            .collect()
    }

    /// Revokes a key by id, or the active key of that name: `Ok(None)` if
    /// there is no such key; the key as it now is otherwise (revoking twice
    /// changes nothing), with what that changed for the hub's callers.
    pub fn revoke(&self, id_or_name: &str) -> Result<Option<(KeyInfo, Option<String>)>, KeyError> {
        self.change(|records| {
            let Some(i) = records
                .iter()
                .position(|r| r.id == id_or_name)
                .or_else(|| {
                    records
                        .iter()
                        .position(|r| r.revoked_unix.is_none() && r.name == id_or_name)
                })
            else {
                return Ok(None);
            };
            if records[i].revoked_unix.is_some() {
                return Ok(Some((records[i].info(), None)));
            }
            records[i].revoked_unix = Some(unix_now());
            let none_active = |kind| {
                !records
                    .iter()
                    .any(|r| r.kind == kind && r.revoked_unix.is_none())
            };
            let note = match records[i].kind {
                KeyKind::Client if none_active(KeyKind::Client) => Some(
                    "no client key is active now: inference stays closed to everyone (401) until one is created; `drover keys purge` forgets revoked keys and opens inference to anyone again",
                ),
                KeyKind::Admin if none_active(KeyKind::Admin) => Some(
                    "no admin key is active now: on loopback the management API is open to the local operator again; elsewhere only admin_key or a key made with `drover keys create --data-dir` opens it",
                ),
                _ => None,
            };
            Ok(Some((records[i].info(), note.map(String::from))))
        })
    }

    /// Forgets every revoked key: how many, and what that changed. Once no
    /// client key was ever kept, inference is open to anyone again.
    pub fn purge(&self) -> Result<(usize, Option<String>), KeyError> {
        self.change(|records| {
            let before = records.len();
            let had_clients = records.iter().any(|r| r.kind == KeyKind::Client);
            records.retain(|r| r.revoked_unix.is_none());
            let note =
                (had_clients && !records.iter().any(|r| r.kind == KeyKind::Client)).then(|| {
                    "no client key is kept now: inference is open to anyone again".to_string()
                });
            Ok((before - records.len(), note))
        })
    }
}

/// Writes the whole file beside its place and renames it there: readers
/// see the old file or the new one, never half of one. The temporary file
/// has a name nobody can guess and is created exclusively, so a file or a
/// link planted beside `keys.json` is never written through nor renamed
/// into its place; a directory this makes is its owner's alone.
fn save(path: &Path, records: &[Record]) -> Result<(), KeyError> {
    let failed = |error: std::io::Error| KeyError::Write {
        path: path.display().to_string(),
        error,
    };
    if let Some(dir) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(failed)?;
    }
    let text = serde_json::to_vec_pretty(&KeyFile {
        keys: records.to_vec(),
    })
    .map_err(|e| failed(e.into()))?;
    let suffix = hex(&random::<8>().map_err(|e| failed(std::io::Error::other(e.to_string())))?);
    let tmp = path.with_extension(format!("json.{suffix}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    // create_new is O_CREAT | O_EXCL: it fails on anything already there,
    // a symbolic link included, and never follows one.
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).map_err(failed)?;
    let written = f
        .write_all(&text)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(failed)
}

fn digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Invalid(format!("no randomness: {e}")))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
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

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("drover-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_key_is_kept_hashed_found_by_itself_and_revoked_at_once() {
        let d = dir("basic");
        let keys = Keys::open(Some(&d)).unwrap();
        let Created {
            info,
            key: secret,
            note,
        } = keys
            .create("batch", KeyKind::Client, KeyLimits::default())
            .unwrap();
        assert!(note.unwrap().contains("401"));
        assert!(
            secret.starts_with("drv_c_") && secret.len() == 6 + 64,
            "{secret}"
        );
        assert_eq!(keys.find(&secret).map(|h| h.name), Some("batch".into()));
        assert_eq!(keys.find("drv_c_nope"), None);
        let text = std::fs::read_to_string(d.join("keys.json")).unwrap();
        assert!(!text.contains(&secret), "the file holds no key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.join("keys.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Kept across a restart.
        let again = Keys::open(Some(&d)).unwrap();
        assert!(again.find(&secret).is_some());
        assert!(matches!(
            again.create("batch", KeyKind::Client, KeyLimits::default()),
            Err(KeyError::Duplicate(_))
        ));
        let (revoked, note) = again.revoke(&info.id).unwrap().unwrap();
        assert!(revoked.revoked_unix.is_some());
        assert!(note.unwrap().contains("purge"));
        assert_eq!(again.find(&secret), None);
        assert_eq!(Keys::open(Some(&d)).unwrap().find(&secret), None);
        assert!(again.revoke("key_none").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn without_a_data_directory_no_key_is_created() {
        let keys = Keys::open(None).unwrap();
        assert!(matches!(
            keys.create("x", KeyKind::Admin, KeyLimits::default()),
            Err(KeyError::NoDataDir)
        ));
        assert!(!keys.any(KeyKind::Client));
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let d = dir("damaged");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("keys.json"), "{not json").unwrap();
        let e = Keys::open(Some(&d)).unwrap_err().to_string();
        assert!(e.contains("keys.json"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_temporary_file_is_not_written_through() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("planted");
        let victim = dir("planted-victim");
        std::fs::write(&victim, "the victim's own text").unwrap();
        std::fs::create_dir_all(&d).unwrap();
        // Whatever name a stale or planted temporary file has, the hub
        // neither writes through it nor renames it into place.
        for name in ["keys.json.tmp", "keys.json.json.tmp"] {
            std::os::unix::fs::symlink(&victim, d.join(name)).unwrap();
        }
        let keys = Keys::open(Some(&d)).unwrap();
        keys.create("k", KeyKind::Admin, KeyLimits::default())
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "the victim's own text"
        );
        let meta = std::fs::symlink_metadata(d.join("keys.json")).unwrap();
        assert!(meta.file_type().is_file(), "keys.json is a file of its own");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_file(&victim);
    }

    #[cfg(unix)]
    #[test]
    fn the_data_directory_is_made_for_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("fresh").join("nested");
        let keys = Keys::open(Some(&d)).unwrap();
        keys.create("k", KeyKind::Admin, KeyLimits::default())
            .unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let _ = std::fs::remove_dir_all(d.parent().unwrap());
    }

    #[test]
    fn a_key_is_revoked_by_name_and_revoked_keys_are_purged() {
        let d = dir("names");
        let keys = Keys::open(Some(&d)).unwrap();
        let first = keys
            .create("app", KeyKind::Client, KeyLimits::default())
            .unwrap();
        let (revoked, note) = keys.revoke("app").unwrap().unwrap();
        assert_eq!(revoked.id, first.info.id);
        assert!(
            note.is_some(),
            "the last client key: inference stays closed"
        );
        assert!(keys.ever(KeyKind::Client));
        // The name is free again; revoking by it finds the active one.
        let second = keys
            .create("app", KeyKind::Client, KeyLimits::default())
            .unwrap();
        assert!(second.note.is_none(), "client keys existed before");
        let (revoked, _) = keys.revoke("app").unwrap().unwrap();
        assert_eq!(revoked.id, second.info.id);
        assert!(keys.revoke("nobody").unwrap().is_none());
        let (purged, note) = keys.purge().unwrap();
        assert_eq!(purged, 2);
        assert!(note.unwrap().contains("open to anyone"));
        assert!(!keys.ever(KeyKind::Client));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_change_by_another_writer_is_kept_and_picked_up() {
        let d = dir("writers");
        let hub = Keys::open(Some(&d)).unwrap();
        let offline = Keys::open(Some(&d)).unwrap();
        let made_offline = offline
            .create("made-offline", KeyKind::Admin, KeyLimits::default())
            .unwrap();
        // The hub's next change keeps it...
        hub.create("made-by-hub", KeyKind::Client, KeyLimits::default())
            .unwrap();
        assert!(hub.find(&made_offline.key).is_some());
        let on_disk = Keys::open(Some(&d)).unwrap().list();
        assert_eq!(on_disk.len(), 2);
        // ...and a change alone is picked up when the hub looks.
        offline.revoke("made-offline").unwrap();
        assert!(hub.find(&made_offline.key).is_some());
        assert!(hub.reload_if_changed().unwrap());
        assert!(hub.find(&made_offline.key).is_none());
        assert!(!hub.reload_if_changed().unwrap());
        let _ = std::fs::remove_dir_all(&d);
    }
}
