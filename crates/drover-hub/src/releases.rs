//! Releases of drover: an operator publishes a build (`drover release
//! publish ./drover --version V`); the hub keeps its bytes in the store
//! (a file, like every file) with its SHA-256, and node agents download it
//! when a roll-out tells them to, checking the hash themselves before
//! they run it. A version is published once: it is never replaced.

use drover_proto::releases::ReleaseInfo;
use drover_store::{NewFile, Release};
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::hub::HubState;

/// The largest build the hub takes.
pub const MAX_BYTES: usize = 512 * 1024 * 1024;
/// Files of releases are kept under this owner, which no API key has.
const OWNER: &str = "drover:releases";

fn bad(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::bad_request(message, Some(param), "invalid_release")
}

/// A version: 1 to 64 letters, digits and `.+-_`.
pub fn check_version(version: &str) -> Result<(), ApiError> {
    let ok = !version.is_empty()
        && version.len() <= 64
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+-_".contains(c));
    if ok {
        Ok(())
    } else {
        Err(bad(
            format!(
                "version {:?}: 1 to 64 letters, digits, '.', '+', '-' or '_'",
                crate::error::echo(version)
            ),
            "version",
        ))
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::keys::hex(&Sha256::digest(bytes))
}

pub fn info(r: Release) -> ReleaseInfo {
    ReleaseInfo {
        version: r.version,
        sha256: r.sha256,
        bytes: u64::try_from(r.bytes).unwrap_or(0),
        os: r.os,
        arch: r.arch,
        created_at: r.created_unix,
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Keeps a build as release `version`. The sender's SHA-256 (header
/// `x-drover-sha256`), where given, must be the bytes': a build damaged on
/// the way is refused.
pub async fn publish(
    hub: &HubState,
    version: &str,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<ReleaseInfo, ApiError> {
    check_version(version)?;
    let store = &crate::routes::store_of(hub)?.store;
    if bytes.is_empty() {
        return Err(bad(
            "the build is empty: send its bytes as the body",
            "body",
        ));
    }
    let sha256 = sha256_hex(bytes);
    if let Some(said) = header(headers, "x-drover-sha256")
        && !said.trim().eq_ignore_ascii_case(&sha256)
    {
        return Err(bad(
            format!(
                "the build arrived damaged: its SHA-256 is {sha256}, the sender's {}",
                crate::error::echo(said)
            ),
            "x-drover-sha256",
        ));
    }
    let text = |name: &str, default: &str| -> Result<String, ApiError> {
        let value = header(headers, name).unwrap_or(default);
        if value.is_empty()
            || value.len() > 32
            || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(bad(format!("{name}: a name such as {default}"), "headers"));
        }
        Ok(value.to_string())
    };
    let now = crate::jobs::now_ms();
    let release = Release {
        version: version.to_string(),
        file_id: crate::routes::files::new_file_id(),
        sha256,
        bytes: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        os: text("x-drover-os", std::env::consts::OS)?,
        arch: text("x-drover-arch", std::env::consts::ARCH)?,
        created_unix: now.div_euclid(1000),
    };
    let file = NewFile {
        id: release.file_id.clone(),
        key_id: OWNER.into(),
        purpose: "release".into(),
        filename: format!("drover-{version}"),
        created_at: now,
        expires_at: None,
    };
    if !store.put_release(&release, &file, bytes).await? {
        return Err(ApiError::Conflict(format!(
            "release {version} is published already, and a version is never replaced: publish the new build as another version"
        )));
    }
    tracing::info!(target: "drover::action", version, sha256 = %release.sha256, bytes = release.bytes, "release published");
    Ok(info(release))
}

pub async fn list(hub: &HubState) -> Result<Vec<ReleaseInfo>, ApiError> {
    let store = &crate::routes::store_of(hub)?.store;
    Ok(store.releases().await?.into_iter().map(info).collect())
}

/// A release and its bytes as stored: the agent checks them against the
/// SHA-256 its roll-out gave.
pub async fn bytes(hub: &HubState, version: &str) -> Result<(Release, Vec<u8>), ApiError> {
    let store = &crate::routes::store_of(hub)?.store;
    let not_found = || ApiError::NotFound {
        message: format!(
            "no release {:?}: publish it with drover release publish",
            crate::error::echo(version)
        ),
    };
    let release = store.release_of(version).await?.ok_or_else(not_found)?;
    let data = store
        .file_content(&release.file_id)
        .await?
        .ok_or_else(not_found)?;
    Ok((release, data))
}
