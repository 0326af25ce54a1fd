//! Who this hub is across its restarts: an id kept in its data directory,
//! so that a hub restarted after a crash takes its own lease back at once
//! instead of waiting it out as a stranger would.

use std::path::Path;

/// The file in the data directory that keeps the hub's id.
pub const HUB_ID_FILE: &str = "hub.id";

/// The hub's id: the one kept in `data_dir`, made and kept there the first
/// time; without a data directory, a new one each start.
pub fn hub_id(data_dir: Option<&Path>) -> std::io::Result<String> {
    let fresh = || format!("hub-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let Some(dir) = data_dir else {
        return Ok(fresh());
    };
    let path = dir.join(HUB_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if valid(text.trim()) => return Ok(text.trim().to_string()),
        Ok(_) => {
            tracing::warn!(file = %path.display(), "the hub's id file holds no id; a new one replaces it")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)?;
    let id = fresh();
    std::fs::write(&path, format!("{id}\n"))?;
    Ok(id)
}

fn valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The file in the data directory that says whether this hub was alone in
/// its cluster at its last look.
const ALONE_FILE: &str = "cluster-alone";

/// Whether this hub was alone in its cluster at its last look (kept in its
/// data directory; a hub that never looked has seen no other): restarted
/// while its store is away, such a hub leads rather than serve nothing.
pub fn was_alone(data_dir: Option<&Path>) -> bool {
    data_dir.is_some_and(|d| {
        std::fs::read_to_string(d.join(ALONE_FILE)).map_or(true, |s| s.starts_with("alone"))
    })
}

/// Keeps whether this hub is alone in its cluster now.
pub fn set_alone(data_dir: Option<&Path>, alone: bool) {
    let Some(dir) = data_dir else { return };
    let path = dir.join(ALONE_FILE);
    let kept = std::fs::write(
        &path,
        if alone {
            "alone: no other hub of the cluster was alive at the last look\n"
        } else {
            "shared: other hubs of the cluster were alive at the last look\n"
        },
    );
    if let Err(e) = kept {
        tracing::warn!(file = %path.display(), error = %e, "cannot keep whether this hub is alone in its cluster");
    }
}

/// The machine's name, for the address other hubs reach this one at.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_kept_across_starts_and_a_broken_file_replaced() {
        let dir = std::env::temp_dir().join(format!("drover-hubid-{}", uuid::Uuid::now_v7()));
        let first = hub_id(Some(&dir)).unwrap();
        assert_eq!(hub_id(Some(&dir)).unwrap(), first);
        std::fs::write(dir.join(HUB_ID_FILE), "not an id; drop table\n").unwrap();
        let second = hub_id(Some(&dir)).unwrap();
        assert_ne!(second, first);
        assert!(valid(&second));
        assert_ne!(hub_id(None).unwrap(), hub_id(None).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
