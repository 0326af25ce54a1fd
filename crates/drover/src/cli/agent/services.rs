//! Managed services: the commands the agent keeps running on its machine
//! (`ollama serve`, `llama-server -m ... --port 8080`, `lms server start`),
//! listed in its config file. Each has a task of its own that starts it,
//! restarts it with back-off when it exits by itself (1 s, doubling to a
//! minute; back to 1 s after a run of a minute), stops it on request
//! (SIGTERM, then SIGKILL after a grace), watches its health URL, and keeps
//! the tail of what it prints for the hub to show.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use drover_proto::nodes::ServiceState;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The agent's config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
}

/// One service, as the config file lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Its working directory.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// A URL that answers 2xx while it is healthy.
    #[serde(default)]
    pub health: Option<String>,
    /// Started with the agent (default); else only when the hub asks.
    #[serde(default = "yes")]
    pub autostart: bool,
}

fn yes() -> bool {
    true
}

impl AgentConfig {
    pub fn read(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let config: AgentConfig =
            toml::from_str(&text).with_context(|| format!("{} is not valid", file.display()))?;
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in config.services.iter().enumerate() {
            let ok = !s.name.is_empty()
                && s.name.len() <= 64
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                bail!(
                    "{}: services[{i}].name {:?}: 1 to 64 letters, digits, '.', '_' or '-'",
                    file.display(),
                    s.name
                );
            }
            if !names.insert(s.name.as_str()) {
                bail!("{}: two services are named {:?}", file.display(), s.name);
            }
            if s.command.trim().is_empty() {
                bail!("{}: services[{i}].command is empty", file.display());
            }
        }
        Ok(config)
    }
}

/// Lines of output kept a service, and bytes of them at most.
const TAIL_LINES: usize = 500;
const TAIL_BYTES: usize = 128 * 1024;
/// How long a stopped service gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run this long resets the back-off.
const STABLE: Duration = Duration::from_secs(60);
const HEALTH_EVERY: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Status {
    state: &'static str,
    pid: Option<u32>,
    restarts: u32,
    last_exit: Option<String>,
    healthy: Option<bool>,
}

struct Service {
    spec: ServiceSpec,
    /// Whether it should run; its task follows.
    wanted: watch::Sender<bool>,
    /// Bumped to have a running service stopped and started again.
    restart: watch::Sender<u64>,
    status: Mutex<Status>,
    tail: Mutex<VecDeque<String>>,
}

pub struct Services {
    all: Vec<Arc<Service>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Services {
    /// Starts a task for every service (running those that autostart).
    pub fn start(specs: Vec<ServiceSpec>) -> Self {
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let all: Vec<Arc<Service>> = specs
            .into_iter()
            .map(|spec| {
                let service = Arc::new(Service {
                    wanted: watch::Sender::new(spec.autostart),
                    restart: watch::Sender::new(0),
                    status: Mutex::new(Status {
                        state: "stopped",
                        ..Status::default()
                    }),
                    tail: Mutex::new(VecDeque::new()),
                    spec,
                });
                tasks.spawn(supervise(service.clone(), stop.clone()));
                service
            })
            .collect();
        Services { all, tasks, stop }
    }

    /// Every service as it is now, for a heartbeat.
    pub fn states(&self) -> Vec<ServiceState> {
        self.all
            .iter()
            .map(|s| {
                let st = drover_core::sync::lock(&s.status);
                ServiceState {
                    name: s.spec.name.clone(),
                    state: st.state.to_string(),
                    pid: st.pid,
                    restarts: st.restarts,
                    last_exit: st.last_exit.clone(),
                    healthy: st.healthy,
                }
            })
            .collect()
    }

    fn named(&self, service: &str) -> Result<Vec<&Arc<Service>>, String> {
        if service.is_empty() {
            return Ok(self.all.iter().collect());
        }
        match self.all.iter().find(|s| s.spec.name == service) {
            Some(s) => Ok(vec![s]),
            None => Err(format!(
                "no service {service:?} on this node (its agent's config lists {})",
                if self.all.is_empty() {
                    "none".to_string()
                } else {
                    self.all
                        .iter()
                        .map(|s| s.spec.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )),
        }
    }

    /// Carries out a hub's command: `Ok` with what to tell it, or why not.
    pub fn command(&self, action: &str, service: &str) -> Result<String, String> {
        let targets = self.named(service)?;
        let names = || {
            targets
                .iter()
                .map(|s| s.spec.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match action {
            "start" => {
                for s in &targets {
                    s.wanted.send_replace(true);
                }
                Ok(format!("started: {}", names()))
            }
            "stop" => {
                for s in &targets {
                    s.wanted.send_replace(false);
                }
                Ok(format!("stopping: {}", names()))
            }
            "restart" => {
                for s in &targets {
                    if *s.wanted.borrow() {
                        s.restart.send_modify(|n| *n += 1);
                    } else {
                        s.wanted.send_replace(true);
                    }
                }
                Ok(format!("restarting: {}", names()))
            }
            "logs" => {
                let tail = drover_core::sync::lock(&targets[0].tail);
                Ok(tail.iter().map(|l| format!("{l}\n")).collect())
            }
            other => Err(format!("this agent does not know the action {other:?}")),
        }
    }

    /// Stops every service and waits for their tasks.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

fn keep_line(service: &Service, line: String) {
    let mut tail = drover_core::sync::lock(&service.tail);
    tail.push_back(line);
    let mut bytes: usize = tail.iter().map(String::len).sum();
    while tail.len() > TAIL_LINES || bytes > TAIL_BYTES {
        match tail.pop_front() {
            Some(l) => bytes -= l.len(),
            None => break,
        }
    }
}

fn set(service: &Service, f: impl FnOnce(&mut Status)) {
    f(&mut drover_core::sync::lock(&service.status));
}

/// Runs one service for as long as the agent runs.
async fn supervise(service: Arc<Service>, stop: CancellationToken) {
    let mut wanted = service.wanted.subscribe();
    let mut restart = service.restart.subscribe();
    let mut backoff = FIRST_BACKOFF;
    loop {
        if !*wanted.borrow_and_update() {
            set(&service, |s| {
                s.state = "stopped";
                s.pid = None;
                s.healthy = None;
            });
            tokio::select! {
                () = stop.cancelled() => return,
                changed = wanted.changed() => if changed.is_err() { return },
            }
            continue;
        }
        restart.borrow_and_update();
        let started = tokio::time::Instant::now();
        let ended = run_once(&service, &stop, &mut wanted, &mut restart).await;
        match ended {
            Ended::Stopped | Ended::Restart => backoff = FIRST_BACKOFF,
            Ended::Shutdown => return,
            Ended::Exited(how) => {
                eprintln!("agent: service {} {how}", service.spec.name);
                if started.elapsed() >= STABLE {
                    backoff = FIRST_BACKOFF;
                }
                set(&service, |s| {
                    s.state = "backoff";
                    s.pid = None;
                    s.healthy = None;
                    s.last_exit = Some(how);
                    s.restarts += 1;
                });
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                    // Stopped meanwhile: it is not started again.
                    _ = wanted.changed() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

enum Ended {
    /// It exited by itself: how.
    Exited(String),
    Stopped,
    Restart,
    Shutdown,
}

async fn run_once(
    service: &Arc<Service>,
    stop: &CancellationToken,
    wanted: &mut watch::Receiver<bool>,
    restart: &mut watch::Receiver<u64>,
) -> Ended {
    let spec = &service.spec;
    let mut cmd = tokio::process::Command::new(&spec.command);
    cmd.args(&spec.args)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &spec.dir {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return Ended::Exited(format!("could not start: {e}")),
    };
    let pid = child.id();
    set(service, |s| {
        s.state = if spec.health.is_some() {
            "starting"
        } else {
            "running"
        };
        s.pid = pid;
        s.healthy = None;
    });
    eprintln!(
        "agent: service {} started (pid {})",
        spec.name,
        pid.unwrap_or(0)
    );
    let readers = TaskTracker::new();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let service = service.clone();
        readers.spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                keep_line(&service, line);
            }
        });
    }
    readers.close();
    let mut health = tokio::time::interval(HEALTH_EVERY);
    let ended = loop {
        tokio::select! {
            status = child.wait() => {
                break Ended::Exited(match status {
                    Ok(status) => exit_of(status),
                    Err(e) => format!("could not be waited for: {e}"),
                });
            }
            () = stop.cancelled() => break Ended::Shutdown,
            _ = wanted.changed() => if !*wanted.borrow() { break Ended::Stopped },
            _ = restart.changed() => break Ended::Restart,
            _ = health.tick(), if spec.health.is_some() => {
                let ok = healthy(spec.health.as_deref().unwrap_or_default()).await;
                set(service, |s| {
                    s.healthy = Some(ok);
                    if ok {
                        s.state = "running";
                    }
                });
            }
        }
    };
    if !matches!(ended, Ended::Exited(_)) {
        terminate(&mut child).await;
        if let Ended::Stopped = ended {
            eprintln!("agent: service {} stopped", spec.name);
        }
    }
    readers.wait().await;
    ended
}

/// SIGTERM, then SIGKILL if it has not exited within the grace.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

fn exit_of(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("was killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "exited".to_string(),
    }
}

/// Whether `url` answers 2xx within the health check's period (plain
/// HTTP: a health URL is the machine's own).
async fn healthy(url: &str) -> bool {
    let api = crate::cli::http::Api::new(url, None);
    tokio::time::timeout(HEALTH_EVERY, api.call(http::Method::GET, "", None))
        .await
        .is_ok_and(|r| r.is_ok_and(|(status, _)| (200..300).contains(&status)))
}
