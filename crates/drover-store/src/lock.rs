//! One hub per SQLite file. Two hubs on one file would each believe it
//! alone claims and rescues jobs (and each would take the other's running
//! jobs for orphans at its start), so the second refuses to start and names
//! the first. The lock is the operating system's on a file beside the
//! database: it goes with the process that held it, a `kill -9` included,
//! so a crashed hub never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::StoreError;

/// Held for as long as the hub uses the file.
#[derive(Debug)]
pub struct HubLock {
    _file: File,
}

impl HubLock {
    /// Takes the lock beside `database`, writing `holder` (who this hub is)
    /// into it for the next one to read.
    pub fn take(database: &Path, holder: &str) -> Result<HubLock, StoreError> {
        let path = lock_path(database);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut held_by = String::new();
                let _ = file.read_to_string(&mut held_by);
                let held_by = held_by.trim();
                return Err(StoreError::Locked {
                    location: database.display().to_string(),
                    holder: if held_by.is_empty() {
                        "a process that has not said who it is".into()
                    } else {
                        held_by.into()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(holder.as_bytes()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(HubLock { _file: file })
    }
}

fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}
