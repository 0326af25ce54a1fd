//! Files the CLI writes whole, and the hash it checks builds by.

use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes`, in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `bytes` to `path` whole or not at all (a file beside it, synced,
/// then renamed over), readable as `mode` says; its directory is made if
/// need be.
pub fn write_whole(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let partial = dir.join(format!(
        ".{}.partial",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("drover")
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(mode);
    let mut out = options
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    out.write_all(bytes)?;
    out.sync_all()?;
    // The mode again: an earlier partial file kept its own.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(mode))?;
    }
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))
}
