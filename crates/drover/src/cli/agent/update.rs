//! The agent updating itself, when a roll-out says so. It downloads the
//! release from the hub, checks its SHA-256 against the roll-out's (a
//! build that does not match is refused and the old one keeps running),
//! checks that it runs and says the version asked for, keeps a copy of
//! itself, puts the new build in its place with one rename, stops its
//! services and executes the new build in its own process. The new build
//! answers the roll-out's command once it has heartbeated the hub; if it
//! cannot within the deadline it puts the old build back and executes
//! that, which answers the command failed. What is under way is kept in
//! `update.json` in the state directory, across the executions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Credential;
use crate::cli::VERSION;
use crate::cli::files::{sha256_hex, write_whole};
use crate::cli::http::Api;

const PENDING_FILE: &str = "update.json";
const PREVIOUS_FILE: &str = "drover.previous";
/// A build that does not answer `--version` within this does not run.
const TRY_WITHIN: Duration = Duration::from_secs(10);

/// An update under way, kept across the executions.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pending {
    /// The roll-out's command, answered by whichever build ends it.
    pub command: String,
    pub from: String,
    pub to: String,
    /// The binary that runs, and the copy of the old build.
    pub exe: PathBuf,
    pub previous: PathBuf,
    /// How long the new build has to heartbeat the hub.
    pub deadline_ms: u64,
    /// Why the new build was rolled back, once it was.
    #[serde(default)]
    pub failed: Option<String>,
}

/// A new build downloaded, checked and tried, ready to take this one's
/// place.
pub struct Prepared {
    pending: Pending,
    new_file: PathBuf,
}

fn pending_file(state: &Path) -> PathBuf {
    state.join(PENDING_FILE)
}

fn write_pending(state: &Path, pending: &Pending) -> anyhow::Result<()> {
    write_whole(
        &pending_file(state),
        &serde_json::to_vec_pretty(pending)?,
        0o600,
    )
}

/// What a roll-out's `update` comes to before this build steps aside:
/// `Ok(None)` when it runs the version asked for already, `Err` with why
/// it is refused (answered failed; this build keeps running).
pub async fn prepare(
    api: &Api,
    node: &Credential,
    state: &Path,
    command: &str,
    args: &Value,
) -> Result<Option<Prepared>, String> {
    let version = args["version"]
        .as_str()
        .ok_or("the update names no version")?;
    let sha256 = args["sha256"]
        .as_str()
        .ok_or("the update names no SHA-256")?;
    let deadline_ms = args["deadline_ms"].as_u64().unwrap_or(60_000);
    if version == VERSION {
        return Ok(None);
    }
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| format!("cannot tell where this binary is: {e}"))?;
    let path = format!(
        "/v1/nodes/{}/releases/{}",
        node.node_id,
        crate::cli::http::segment(version)
    );
    let (status, _, bytes) = api
        .fetch(&path)
        .await
        .map_err(|e| format!("cannot download release {version}: {e:#}"))?;
    if status != 200 {
        return Err(format!(
            "the hub answered the download of {version} with {status}"
        ));
    }
    let got = sha256_hex(&bytes);
    if !got.eq_ignore_ascii_case(sha256) {
        return Err(format!(
            "the downloaded build's SHA-256 is {got}, not {sha256} as the roll-out says: refused; {VERSION} keeps running"
        ));
    }
    let name = exe
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("drover")
        .to_string();
    let new_file = exe.with_file_name(format!(".{name}-{version}.new"));
    if let Err(e) = write_whole(&new_file, &bytes, 0o755) {
        return Err(format!("{e:#}"));
    }
    // It must run, and be the version asked for.
    let tried = tokio::time::timeout(
        TRY_WITHIN,
        tokio::process::Command::new(&new_file)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await;
    let said = match tried {
        Ok(Ok(out)) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(Ok(out)) => format!("it exited with {}", out.status),
        Ok(Err(e)) => format!("it cannot run here: {e}"),
        Err(_) => format!(
            "it did not answer --version within {}s",
            TRY_WITHIN.as_secs()
        ),
    };
    if !said.split_whitespace().any(|w| w == version) {
        let _ = std::fs::remove_file(&new_file);
        return Err(format!(
            "the new build is not {version} or does not run ({}); {VERSION} keeps running",
            said.trim()
        ));
    }
    let previous = state.join(PREVIOUS_FILE);
    if let Err(e) = std::fs::copy(&exe, &previous) {
        let _ = std::fs::remove_file(&new_file);
        return Err(format!(
            "cannot keep a copy of this build at {}: {e}",
            previous.display()
        ));
    }
    let pending = Pending {
        command: command.to_string(),
        from: VERSION.to_string(),
        to: version.to_string(),
        exe,
        previous,
        deadline_ms,
        failed: None,
    };
    if let Err(e) = write_pending(state, &pending) {
        let _ = std::fs::remove_file(&new_file);
        return Err(format!("{e:#}"));
    }
    Ok(Some(Prepared { pending, new_file }))
}

/// Executes `exe` in this process with this run's arguments; returns only
/// if it could not.
fn exec(exe: &Path) -> anyhow::Error {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .exec();
        anyhow::Error::new(err).context(format!("cannot execute {}", exe.display()))
    }
    #[cfg(not(unix))]
    {
        anyhow::anyhow!("updating in place needs a Unix system ({})", exe.display())
    }
}

/// Puts `from` in place of `exe` with one rename (a copy beside `exe`
/// first when `from` is elsewhere, so the rename stays on one file system).
fn replace(exe: &Path, from: &Path, copy: bool) -> anyhow::Result<()> {
    let source = if copy {
        let beside = exe.with_extension("restore");
        std::fs::copy(from, &beside)
            .with_context(|| format!("cannot copy {} beside {}", from.display(), exe.display()))?;
        beside
    } else {
        from.to_path_buf()
    };
    std::fs::rename(&source, exe).with_context(|| {
        format!(
            "cannot put {} in place of {}",
            source.display(),
            exe.display()
        )
    })
}

/// The new build takes this one's place and runs in this process. Returns
/// only if it could not, the old build back in place.
pub fn switch(prepared: Prepared) -> anyhow::Error {
    let Prepared { pending, new_file } = prepared;
    eprintln!("agent: updating from {} to {}", pending.from, pending.to);
    if let Err(e) = replace(&pending.exe, &new_file, false) {
        return e;
    }
    let err = exec(&pending.exe);
    let _ = replace(&pending.exe, &pending.previous, true);
    err
}

/// What an update under way asks of this start.
pub enum OnStart {
    Nothing,
    /// This is the new build: it must heartbeat within the deadline.
    Trial(Pending),
    /// The new build was rolled back (or never came up): say so.
    Failed(Pending),
}

pub fn on_start(state: &Path) -> OnStart {
    let Ok(bytes) = std::fs::read(pending_file(state)) else {
        return OnStart::Nothing;
    };
    match serde_json::from_slice::<Pending>(&bytes) {
        Ok(p) if p.to == VERSION && p.failed.is_none() => OnStart::Trial(p),
        Ok(p) => OnStart::Failed(p),
        Err(_) => {
            let _ = std::fs::remove_file(pending_file(state));
            OnStart::Nothing
        }
    }
}

async fn answer(api: &Api, node: &Credential, command: &str, ok: bool, result: &str) -> bool {
    let path = format!("/v1/nodes/{}/commands/{command}", node.node_id);
    // 409: answered already (by a run before this one).
    matches!(
        api.call(
            Method::POST,
            &path,
            Some(json!({"ok": ok, "result": result}))
        )
        .await,
        Ok((204 | 409, _))
    )
}

/// The new build's trial: once a heartbeat got through, the update is
/// done and said so; `Err` with why when the deadline passed first.
pub async fn trial(
    api: &Api,
    node: &Credential,
    state: &Path,
    pending: &Pending,
    healthy: &tokio::sync::Notify,
) -> Result<(), String> {
    let deadline = Duration::from_millis(pending.deadline_ms);
    tokio::select! {
        () = healthy.notified() => {}
        () = tokio::time::sleep(deadline) => {
            return Err(format!(
                "{} did not heartbeat the hub within {}s",
                pending.to,
                deadline.as_secs_f64()
            ));
        }
    }
    let said = format!("updated from {} to {}", pending.from, pending.to);
    eprintln!("agent: {said}");
    answer(api, node, &pending.command, true, &said).await;
    let _ = std::fs::remove_file(pending_file(state));
    let _ = std::fs::remove_file(&pending.previous);
    Ok(())
}

/// The new build failed its trial: the old one back in place, run in this
/// process. Returns only if that could not be done.
pub fn roll_back(state: &Path, mut pending: Pending, why: String) -> anyhow::Error {
    eprintln!("agent: {why}: rolling back to {}", pending.from);
    pending.failed = Some(why);
    if let Err(e) = write_pending(state, &pending) {
        return e;
    }
    if let Err(e) = replace(&pending.exe, &pending.previous, true) {
        return e;
    }
    exec(&pending.exe)
}

/// The old build, back: answers the roll-out's command failed.
pub async fn report_failure(api: &Api, node: &Credential, state: &Path, pending: &Pending) {
    let why = pending
        .failed
        .clone()
        .unwrap_or_else(|| format!("{} did not come up", pending.to));
    let said = format!("{why}; rolled back to {VERSION}");
    eprintln!("agent: update to {} failed: {said}", pending.to);
    if answer(api, node, &pending.command, false, &said).await {
        let _ = std::fs::remove_file(pending_file(state));
    }
}
