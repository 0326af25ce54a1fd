//! `drover agent --hub URL --token JOIN_TOKEN`: a machine joins the fleet.
//! At first contact the join token is traded for a node credential, kept
//! in the state directory (0600, in a 0700 directory), so later starts
//! need no token. Then it heartbeats what the machine is and has (host,
//! OS, CPUs and load, memory, GPUs with their memory where `nvidia-smi` or
//! the amdgpu driver tells) and the LLM servers it finds on the machine
//! (`servers.rs`), which the hub makes backends of the node, until it is
//! stopped. Every call goes from the agent to the hub: a node needs no
//! inbound port for management (the hub reaches the servers themselves for
//! inference).

mod commands;
mod servers;
mod services;
mod update;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use drover_proto::nodes::{Gpu, JoinRequest, Joined, NodeFacts, NodeHeartbeat};
use http::Method;
use serde::{Deserialize, Serialize};

use super::http::Api;

/// Where `drover serve` listens unless told otherwise.
const DEFAULT_HUB: &str = "http://127.0.0.1:8700";
use super::VERSION;

/// A build made with `DROVER_BUILD_BROKEN_HEARTBEAT` set heartbeats a path
/// the hub does not serve: a real build that fails its health check after
/// an update, for the roll-out's rollback test. Never set otherwise.
const BROKEN_HEARTBEAT: bool = option_env!("DROVER_BUILD_BROKEN_HEARTBEAT").is_some();
/// The longest wait between two tries to reach a hub that does not answer.
const MAX_RETRY: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    /// The hub's URL.
    #[arg(long, env = "DROVER_HUB", default_value = DEFAULT_HUB)]
    pub hub: String,
    /// A join token (`drover nodes token create`), for the first start;
    /// later starts use the credential kept in --state-dir.
    #[arg(long, env = "DROVER_JOIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where the node's credential is kept (default:
    /// $XDG_STATE_HOME/drover-agent, else ~/.local/state/drover-agent).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// How the hub shows this machine (default: its host name).
    #[arg(long)]
    pub name: Option<String>,
    /// An LLM server on this machine to report besides those on the usual
    /// ports (LM Studio 1234, Ollama 11434, llama.cpp 8080, vLLM 8000);
    /// repeat for more.
    #[arg(long = "server", value_name = "URL")]
    pub servers: Vec<String>,
    /// The ports to look for servers on, on this machine; repeat for more.
    #[arg(long = "scan-port", value_name = "PORT", default_values_t = servers::USUAL_PORTS)]
    pub scan_ports: Vec<u16>,
    /// Do not look for servers on any port: only --server ones.
    #[arg(long)]
    pub no_scan: bool,
    /// The host or address the hub reaches this machine's servers at
    /// (default: the address the hub sees the agent's heartbeats from).
    #[arg(long, value_name = "HOST")]
    pub advertise: Option<String>,
    /// The agent's config file: the services it runs (`[[services]]` with
    /// name, command, args, env, dir, health, autostart).
    #[arg(long, env = "DROVER_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub action: Option<AgentAction>,
}

#[derive(clap::Subcommand)]
pub enum AgentAction {
    /// Write a systemd unit and environment file (a launchd plist on
    /// macOS) that run the agent as a service; --dry-run only prints them.
    Install(super::install::AgentInstallArgs),
}

/// What the agent keeps between starts.
#[derive(Serialize, Deserialize)]
struct Credential {
    hub: String,
    node_id: String,
    credential: String,
}

const CREDENTIAL_FILE: &str = "node.json";

fn state_dir(asked: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = asked {
        return Ok(dir);
    }
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(state).join("drover-agent"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("no --state-dir, XDG_STATE_HOME or HOME: say where to keep the node's credential with --state-dir")?;
    Ok(PathBuf::from(home).join(".local/state/drover-agent"))
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    if let Some(AgentAction::Install(install)) = args.action {
        return super::install::agent(install);
    }
    let dir = state_dir(args.state_dir)?;
    let file = dir.join(CREDENTIAL_FILE);
    let stop = super::shutdown_token();
    let config = match &args.config {
        Some(file) => services::AgentConfig::read(file)?,
        None => services::AgentConfig::default(),
    };
    let scan: &[u16] = if args.no_scan { &[] } else { &args.scan_ports };
    let mut finder = servers::Finder::new(&args.servers, scan, &args.hub)?;
    let kept = read_credential(&file)?;
    let node = match kept {
        Some(kept) if kept.hub == args.hub => kept,
        Some(kept) => bail!(
            "{} holds this machine's credential for {}, not {}: remove it to join another hub",
            file.display(),
            kept.hub,
            args.hub
        ),
        None => {
            let Some(token) = args.token.as_deref() else {
                bail!(
                    "this machine has not joined {} yet: give a join token with --token (drover nodes token create)",
                    args.hub
                );
            };
            let name = match args.name.clone() {
                Some(name) => name,
                None => host_name(),
            };
            let joined = join(&args.hub, token, &name, &stop).await?;
            let kept = Credential {
                hub: args.hub.clone(),
                node_id: joined.node_id,
                credential: joined.credential,
            };
            write_credential(&dir, &file, &kept)?;
            eprintln!("agent: joined {} as {name} ({})", args.hub, kept.node_id);
            kept
        }
    };
    let api = Api::new(&node.hub, Some(node.credential.clone()));
    let on_start = update::on_start(&dir);
    if let update::OnStart::Failed(pending) = &on_start {
        update::report_failure(&api, &node, &dir, pending).await;
    }
    let services = services::Services::start(config.services);
    // Heartbeats, the poll for commands and, after an update, the new
    // build's trial run side by side; any of them ending (stopped, the
    // credential refused, an update to carry out, a failed trial) ends the
    // others.
    let done = stop.child_token();
    let healthy = tokio::sync::Notify::new();
    let (beats, polls, trial) = tokio::join!(
        async {
            let r = heartbeats(
                &api,
                &node,
                &mut finder,
                &services,
                args.advertise.as_deref(),
                &healthy,
                &done,
            )
            .await;
            done.cancel();
            r
        },
        async {
            let r = commands::run(&api, &node, &services, &dir, &done).await;
            done.cancel();
            r
        },
        async {
            let update::OnStart::Trial(pending) = on_start else {
                return None;
            };
            tokio::select! {
                () = done.cancelled() => None,
                r = update::trial(&api, &node, &dir, &pending, &healthy) => match r {
                    Ok(()) => None,
                    Err(why) => {
                        done.cancel();
                        Some((pending, why))
                    }
                },
            }
        }
    );
    services.shutdown().await;
    if let Some((pending, why)) = trial {
        return Err(update::roll_back(&dir, pending, why));
    }
    if let Ok(Some(prepared)) = polls {
        return Err(update::switch(prepared));
    }
    beats.and(polls.map(|_| ()))
}

/// Joins with the token, trying again while the hub cannot be reached; a
/// refusal ends the agent with the hub's reason.
async fn join(
    hub: &str,
    token: &str,
    name: &str,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Joined> {
    let api = Api::new(hub, None);
    let asked = JoinRequest {
        token: token.trim().to_string(),
        name: name.to_string(),
        version: VERSION.to_string(),
        facts: facts(),
    };
    let mut pause = Duration::from_millis(500);
    loop {
        match api
            .call(
                Method::POST,
                "/v1/nodes/join",
                Some(serde_json::to_value(&asked)?),
            )
            .await
        {
            Ok((200, body)) => return serde_json::from_value(body).context("unexpected answer"),
            Ok((status, body)) if status < 500 => {
                super::http::check(status, &body)?;
                bail!("the hub answered the join with {status}");
            }
            Ok((status, _)) => eprintln!("agent: the hub answered {status}; trying again"),
            Err(e) => eprintln!("agent: cannot reach {hub} ({e:#}); trying again"),
        }
        tokio::select! {
            () = stop.cancelled() => bail!("stopped before joining"),
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_RETRY);
    }
}

/// Heartbeats until stopped. A hub away (restarting, unreachable) is
/// tried again, more slowly, for as long as it takes; a credential the
/// hub no longer takes ends the agent, saying so.
async fn heartbeats(
    api: &Api,
    node: &Credential,
    finder: &mut servers::Finder,
    services: &services::Services,
    advertise: Option<&str>,
    healthy: &tokio::sync::Notify,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let path = format!(
        "/v1/nodes/{}/heartbeat{}",
        node.node_id,
        if BROKEN_HEARTBEAT { "-broken" } else { "" }
    );
    let mut every = Duration::from_secs(10);
    let mut away = false;
    loop {
        let servers = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            servers = finder.look() => servers,
        };
        let beat = NodeHeartbeat {
            version: VERSION.to_string(),
            facts: facts(),
            servers,
            address: advertise.map(str::to_string),
            services: services.states(),
        };
        let pause = match api
            .call(Method::POST, &path, Some(serde_json::to_value(&beat)?))
            .await
        {
            Ok((200, body)) => {
                healthy.notify_one();
                if std::mem::take(&mut away) {
                    eprintln!("agent: {} answers again", node.hub);
                }
                if let Some(ms) = body["heartbeat_ms"].as_u64() {
                    every = Duration::from_millis(ms.max(10));
                }
                every
            }
            Ok((status @ (401 | 403), body)) => {
                super::http::check(status, &body)?;
                bail!("the hub refused this node's credential ({status})");
            }
            Ok((status, _)) => {
                eprintln!("agent: the hub answered a heartbeat with {status}");
                every
            }
            Err(e) => {
                if !std::mem::replace(&mut away, true) {
                    eprintln!("agent: cannot reach {} ({e:#}); trying again", node.hub);
                }
                every.min(MAX_RETRY)
            }
        };
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(pause) => {}
        }
    }
}

fn read_credential(file: &Path) -> anyhow::Result<Option<Credential>> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
            format!(
                "{} is not a node credential this agent wrote",
                file.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", file.display()))),
    }
}

/// Writes the credential for its owner only, whole or not at all, in a
/// directory only its owner may enter.
fn write_credential(dir: &Path, file: &Path, kept: &Credential) -> anyhow::Result<()> {
    #[cfg(unix)]
    use std::os::unix::fs::DirBuilderExt;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot make {}", dir.display()))?;
    super::files::write_whole(file, &serde_json::to_vec_pretty(kept)?, 0o600)
}

/// The machine's name as the hub should show it: its host name, kept to
/// the characters names take.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() { "node".into() } else { name }
}

/// What this machine is and has now, from what the OS tells without
/// privileges.
fn facts() -> NodeFacts {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib.saturating_mul(1024))
    };
    let total = field("MemTotal");
    let available = field("MemAvailable").min(total);
    NodeFacts {
        hostname: host_name(),
        os: std::env::consts::OS.to_string(),
        os_version: os_release(),
        arch: std::env::consts::ARCH.to_string(),
        cpus: std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        load_1m: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse().ok()),
        memory_total_bytes: total,
        memory_available_bytes: available,
        gpus: gpus(),
    }
}

/// The machine's GPUs with their memory, where it can tell without
/// privileges: NVIDIA's through `nvidia-smi`, AMD's from sysfs, Apple's
/// from `system_profiler` and `sysctl`.
fn gpus() -> Vec<Gpu> {
    let mut gpus = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,memory.used",
            "--format=csv,noheader,nounits",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| nvidia(&String::from_utf8_lossy(&out.stdout)))
        .unwrap_or_default();
    gpus.extend(amd(Path::new("/sys/class/drm")));
    gpus.extend(apple_gpus());
    gpus
}

/// `nvidia-smi --query-gpu=name,memory.total,memory.used
/// --format=csv,noheader,nounits`: a line a GPU, memory in MiB.
fn nvidia(csv: &str) -> Vec<Gpu> {
    csv.lines()
        .filter_map(|line| {
            let mut fields = line.rsplitn(3, ',').map(str::trim);
            let used: u64 = fields.next()?.parse().ok()?;
            let total: u64 = fields.next()?.parse().ok()?;
            let name = fields.next()?.to_string();
            Some(Gpu {
                name,
                memory_total_bytes: total.saturating_mul(1 << 20),
                memory_used_bytes: used.min(total).saturating_mul(1 << 20),
            })
        })
        .collect()
}

/// AMD GPUs as the amdgpu driver shows them in sysfs
/// (`card*/device/mem_info_vram_total`, `mem_info_vram_used`, bytes).
fn amd(drm: &Path) -> Vec<Gpu> {
    let Ok(cards) = std::fs::read_dir(drm) else {
        return Vec::new();
    };
    let mut names: Vec<_> = cards
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("card") && n[4..].chars().all(|c| c.is_ascii_digit()))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|card| {
            let device = drm.join(&card).join("device");
            let read = |f: &str| -> Option<u64> {
                std::fs::read_to_string(device.join(f))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            };
            let total = read("mem_info_vram_total")?;
            let name = std::fs::read_to_string(device.join("product_name"))
                .map(|n| n.trim().to_string())
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("AMD GPU ({card})"));
            Some(Gpu {
                name: name.chars().take(200).collect(),
                memory_total_bytes: total,
                memory_used_bytes: read("mem_info_vram_used").unwrap_or(0).min(total),
            })
        })
        .collect()
}

/// Apple's GPUs, on macOS: `system_profiler SPDisplaysDataType -json` for
/// their names, `sysctl -n hw.memsize` for the memory one shares with the
/// machine (Apple silicon).
fn apple_gpus() -> Vec<Gpu> {
    if !cfg!(target_os = "macos") {
        return Vec::new();
    }
    let run = |program: &str, args: &[&str]| -> Option<String> {
        std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let memory = run("sysctl", &["-n", "hw.memsize"])
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(0);
    run("system_profiler", &["SPDisplaysDataType", "-json"])
        .map(|json| apple(&json, memory))
        .unwrap_or_default()
}

/// GPUs from `system_profiler SPDisplaysDataType -json`: one with its own
/// memory says it (`spdisplays_vram`, "8 GB"); one that shares the
/// machine's (Apple silicon) gets what Metal lets a GPU use by default,
/// three quarters of `memory`.
fn apple(json: &str, memory: u64) -> Vec<Gpu> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    doc["SPDisplaysDataType"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| {
            let name = g["sppci_model"].as_str().or(g["_name"].as_str())?;
            let own = ["spdisplays_vram", "spdisplays_vram_shared"]
                .iter()
                .find_map(|k| g[*k].as_str().and_then(vram));
            let shared = g["spdisplays_vendor"]
                .as_str()
                .is_some_and(|v| v.contains("Apple"))
                || name.starts_with("Apple");
            let total = own.or(shared.then_some(memory / 4 * 3))?;
            Some(Gpu {
                name: name.chars().take(200).collect(),
                memory_total_bytes: total,
                memory_used_bytes: 0,
            })
        })
        .collect()
}

/// "8 GB", "1536 MB" in bytes.
fn vram(text: &str) -> Option<u64> {
    let mut parts = text.split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    let unit = match parts.next()? {
        "GB" => 1 << 30,
        "MB" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// The distribution's `PRETTY_NAME`, where there is one.
fn os_release() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(line.trim_matches('"').chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn nvidia_smi_lines_become_gpus_in_bytes() {
        let out = "NVIDIA GeForce RTX 4090, 24564, 1234\nNVIDIA A100-SXM4-80GB, 81920, 0\n";
        let gpus = nvidia(out);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].name, "NVIDIA GeForce RTX 4090");
        assert_eq!(gpus[0].memory_total_bytes, 24564 << 20);
        assert_eq!(gpus[0].memory_used_bytes, 1234 << 20);
        assert_eq!(gpus[1].memory_total_bytes, 81920 << 20);
        // A name with a comma in it, and lines that are not GPUs.
        let odd = nvidia("Tesla, the card, 100, 5\nNo devices were found\n[N/A], 1\n");
        assert_eq!(odd.len(), 1);
        assert_eq!(odd[0].name, "Tesla, the card");
    }

    #[test]
    fn apple_gpus_are_read_from_system_profiler() {
        let silicon = r#"{"SPDisplaysDataType": [{"_name": "kHW_AppleM2MaxItem",
            "sppci_cores": "38", "sppci_model": "Apple M2 Max",
            "spdisplays_vendor": "sppci_vendor_Apple"}]}"#;
        let gpus = apple(silicon, 64 << 30);
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].name, "Apple M2 Max");
        assert_eq!(
            gpus[0].memory_total_bytes,
            48 << 30,
            "three quarters of 64 GiB"
        );
        let intel = r#"{"SPDisplaysDataType": [
            {"sppci_model": "Intel UHD Graphics 630", "spdisplays_vram": "1536 MB"},
            {"sppci_model": "AMD Radeon Pro 5500M", "spdisplays_vram": "8 GB"},
            {"sppci_model": "Unknown thing"}]}"#;
        let gpus = apple(intel, 32 << 30);
        assert_eq!(gpus.len(), 2, "one that says no memory is left out");
        assert_eq!(gpus[0].memory_total_bytes, 1536 << 20);
        assert_eq!(gpus[1].memory_total_bytes, 8 << 30);
        assert!(apple("not json", 1).is_empty());
    }

    #[test]
    fn amd_cards_are_read_from_sysfs() {
        let drm = std::env::temp_dir().join(format!("drover-drm-{}", std::process::id()));
        let device = drm.join("card0").join("device");
        std::fs::create_dir_all(&device).unwrap();
        std::fs::create_dir_all(drm.join("card0-DP-1")).unwrap();
        std::fs::write(device.join("mem_info_vram_total"), "17163091968\n").unwrap();
        std::fs::write(device.join("mem_info_vram_used"), "1048576\n").unwrap();
        std::fs::write(device.join("product_name"), "Radeon RX 7800 XT\n").unwrap();
        let gpus = amd(&drm);
        std::fs::remove_dir_all(&drm).unwrap();
        assert_eq!(gpus.len(), 1, "connectors are not cards");
        assert_eq!(gpus[0].name, "Radeon RX 7800 XT");
        assert_eq!(gpus[0].memory_total_bytes, 17_163_091_968);
        assert_eq!(gpus[0].memory_used_bytes, 1_048_576);
        assert!(amd(Path::new("/nonexistent")).is_empty());
    }
}
