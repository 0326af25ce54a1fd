//! `drover worker --capability NAME[,max=N] -- COMMAND ARGS...`: any
//! command as a capability worker (`docs/workers.md`). Each task runs the
//! command once: the task's input on its standard input (a JSON string as
//! its text, anything else as JSON), its output from its standard output
//! (JSON if it parses, else the text); a non-zero exit is a failure that
//! carries the tail of its standard error. The task is heartbeaten while
//! the command runs; a cancel kills the command. SIGTERM (or Ctrl-C)
//! drains: no new task, the running ones finish, then the worker leaves.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use http::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::http::Api;

/// Where `drover serve` listens unless told otherwise.
const DEFAULT_HUB: &str = "http://127.0.0.1:8700";
/// The most of a command's standard output a task keeps.
const MAX_OUTPUT: usize = 16 * 1024 * 1024;
/// How much of its standard error a failure carries.
const STDERR_TAIL: usize = 4096;

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The hub's URL.
    #[arg(long, env = "DROVER_HUB", default_value = DEFAULT_HUB)]
    pub hub: String,
    /// A worker key (`drover keys create NAME --kind worker`), if the hub
    /// has any.
    #[arg(long, env = "DROVER_WORKER_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// What it offers, and how many tasks of it run at once (default 1).
    #[arg(long, value_name = "NAME[,max=N]")]
    pub capability: String,
    /// How the hub shows it (default: the capability and this process).
    #[arg(long)]
    pub name: Option<String>,
    /// What the capability does, in a sentence: the planner (`drover tasks
    /// plan`) shows it to the model that turns requests into tasks.
    #[arg(long)]
    pub description: Option<String>,
    /// A JSON Schema file its tasks' input must meet: the hub refuses
    /// other input, and the planner holds the model's plans to it.
    #[arg(long, value_name = "FILE")]
    pub input_schema: Option<std::path::PathBuf>,
    /// A failed command may succeed on another try (on another worker).
    #[arg(long)]
    pub retryable: bool,
    /// The command, and its arguments, run once per task.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `NAME[,max=N]`.
fn capability(spec: &str) -> anyhow::Result<(String, u32)> {
    let mut parts = spec.split(',');
    let name = parts.next().unwrap_or_default().trim().to_string();
    if name.is_empty() {
        bail!("--capability needs a name: NAME[,max=N]");
    }
    let mut max = 1;
    for part in parts {
        match part.trim().split_once('=') {
            Some(("max", n)) => {
                max =
                    n.parse().ok().filter(|n| *n >= 1).with_context(|| {
                        format!("--capability {spec}: max must be a number from 1")
                    })?;
            }
            _ => bail!("--capability {spec}: unknown {part:?} (NAME[,max=N])"),
        }
    }
    Ok((name, max))
}

struct Worker {
    api: Api,
    id: String,
    lease: Duration,
    poll_wait: u64,
    command: Vec<String>,
    retryable: bool,
    in_flight: std::sync::atomic::AtomicU32,
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let (capability, max) = capability(&args.capability)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{capability}-{}", std::process::id()));
    let mut offer = json!({"name": capability, "max_concurrency": max});
    if let Some(description) = &args.description {
        offer["description"] = json!(description);
    }
    if let Some(path) = &args.input_schema {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --input-schema {}", path.display()))?;
        offer["input_schema"] = serde_json::from_str(&text)
            .with_context(|| format!("--input-schema {} is not JSON", path.display()))?;
    }
    let api = Api::new(&args.hub, args.key.clone());
    let (status, body) = api
        .call(
            Method::POST,
            "/v1/workers",
            Some(json!({"name": name, "capabilities": [offer]})),
        )
        .await
        .with_context(|| format!("cannot reach the hub at {}", args.hub))?;
    super::http::check(status, &body)?;
    let id = body["worker_id"]
        .as_str()
        .context("the hub's answer has no worker_id")?
        .to_string();
    let seconds = |field: &str, default: u64| body[field].as_u64().unwrap_or(default).max(1);
    let heartbeat = Duration::from_secs(seconds("heartbeat_s", 10));
    let worker = Arc::new(Worker {
        api,
        id,
        lease: Duration::from_secs(seconds("lease_s", 30)),
        poll_wait: seconds("poll_wait_max_s", 25),
        command: args.command,
        retryable: args.retryable,
        in_flight: Default::default(),
    });
    eprintln!(
        "worker {} ({name}) offers {capability} (max {max}) at {}",
        worker.id, args.hub
    );
    let drain = CancellationToken::new();
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..max {
        slots.spawn(slot(worker.clone(), drain.clone()));
    }
    let beat = tokio::spawn(heartbeats(worker.clone(), heartbeat, drain.clone()));
    let signals = tokio::spawn(drain_on_signal(drain.clone()));
    while let Some(ended) = slots.join_next().await {
        if let Ok(Err(e)) = ended {
            eprintln!("worker: {e:#}");
            drain.cancel();
        }
    }
    // The heartbeat ends by itself once it has said the worker drains.
    drain.cancel();
    let _ = beat.await;
    signals.abort();
    let _ = worker
        .api
        .call(Method::DELETE, &format!("/v1/workers/{}", worker.id), None)
        .await;
    eprintln!("worker {} left", worker.id);
    Ok(())
}

/// Cancels `drain` at SIGTERM or Ctrl-C.
async fn drain_on_signal(drain: CancellationToken) {
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("worker: draining (running tasks finish, no new one is taken)");
    drain.cancel();
}

/// Heartbeats the worker until it drains; the hub may ask it to drain.
/// Draining, it says so once, so the hub gives it nothing new while its
/// running tasks finish.
async fn heartbeats(worker: Arc<Worker>, every: Duration, drain: CancellationToken) {
    let path = format!("/v1/workers/{}/heartbeat", worker.id);
    let in_flight = || worker.in_flight.load(std::sync::atomic::Ordering::Relaxed);
    loop {
        tokio::select! {
            () = drain.cancelled() => {
                let beat = json!({"in_flight": in_flight(), "draining": true});
                let _ = worker.api.call(Method::POST, &path, Some(beat)).await;
                return;
            }
            () = tokio::time::sleep(every) => {}
        }
        match worker
            .api
            .call(Method::POST, &path, Some(json!({"in_flight": in_flight()})))
            .await
        {
            Ok((200, body)) if body["state"] == "drain" => {
                eprintln!("worker: the hub asks it to drain");
                drain.cancel();
            }
            Ok((404, _)) => {
                eprintln!(
                    "worker: the hub no longer knows this worker (it restarted, or gave up on it); stopping"
                );
                drain.cancel();
            }
            _ => {}
        }
    }
}

/// One slot: polls for a task, runs it, and again, until the worker
/// drains.
async fn slot(worker: Arc<Worker>, drain: CancellationToken) -> anyhow::Result<()> {
    let path = format!("/v1/workers/{}/poll", worker.id);
    loop {
        let polled = tokio::select! {
            () = drain.cancelled() => return Ok(()),
            polled = worker.api.call(
                Method::POST,
                &path,
                Some(json!({"max_tasks": 1, "wait_s": worker.poll_wait})),
            ) => polled,
        };
        match polled {
            Ok((204, _)) => {}
            Ok((200, body)) => {
                for task in body["tasks"].as_array().cloned().unwrap_or_default() {
                    worker
                        .in_flight
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let ran = run_task(&worker, &task).await;
                    worker
                        .in_flight
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    if let Err(e) = ran {
                        eprintln!("worker: task {}: {e:#}", task["id"]);
                    }
                }
            }
            Ok((404, _)) => bail!("the hub no longer knows this worker"),
            Ok((status, body)) => bail!("the hub answered a poll with {status}: {body}"),
            Err(e) => {
                eprintln!("worker: poll failed: {e:#}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// What the command is given: a JSON string as its text, anything else as
/// JSON.
fn stdin_of(input: &Value) -> Vec<u8> {
    match input {
        Value::String(text) => text.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

/// What the task answers: the output as JSON where it parses, else text.
fn output_of(stdout: &[u8]) -> Value {
    serde_json::from_slice(stdout)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(stdout).into_owned()))
}

async fn run_task(worker: &Worker, task: &Value) -> anyhow::Result<()> {
    let id = task["id"].as_str().context("a task without an id")?;
    let token = task["lease_token"]
        .as_str()
        .context("a task without a lease token")?;
    let mut child = tokio::process::Command::new(&worker.command[0])
        .args(&worker.command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", worker.command[0]))?;
    let input = stdin_of(&task["input"]);
    let mut stdin = child.stdin.take().context("no stdin")?;
    let writing = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    let reading = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = (&mut stdout)
            .take(MAX_OUTPUT as u64)
            .read_to_end(&mut out)
            .await;
        out
    });
    let erring = tokio::spawn(async move {
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err).await;
        let from = err.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&err[from..]).into_owned()
    });
    let beat_path = format!("/v1/tasks/{id}/heartbeat");
    let every = worker.lease / 3;
    let mut cancelled = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            () = tokio::time::sleep(every) => {
                match worker.api.call(Method::POST, &beat_path, Some(json!({"lease_token": token}))).await {
                    Ok((200, body)) if body["cancel_requested"] == true => {
                        cancelled = true;
                        let _ = child.start_kill();
                    }
                    Ok((409, _)) => {
                        // Given to another worker: this run counts for
                        // nothing; stop it and say nothing.
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        return Ok(());
                    }
                    _ => {}
                }
            }
        }
    };
    let _ = writing.await;
    let stdout = reading.await.unwrap_or_default();
    let stderr = erring.await.unwrap_or_default();
    let (verb, body) = if cancelled {
        (
            "fail",
            json!({"lease_token": token, "error": "cancelled: the command was stopped", "retryable": false}),
        )
    } else if status.success() {
        (
            "complete",
            json!({"lease_token": token, "output": output_of(&stdout)}),
        )
    } else {
        let code = status
            .code()
            .map_or_else(|| "a signal".to_string(), |c| format!("status {c}"));
        (
            "fail",
            json!({"lease_token": token, "error": format!("{} exited with {code}: {}", worker.command[0], stderr.trim()), "retryable": worker.retryable}),
        )
    };
    let (status, answer) = worker
        .api
        .call(Method::POST, &format!("/v1/tasks/{id}/{verb}"), Some(body))
        .await?;
    if status != 204 {
        bail!("the hub answered {verb} with {status}: {answer}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capability_is_a_name_and_at_most_a_max() {
        assert_eq!(capability("shell").unwrap(), ("shell".into(), 1));
        assert_eq!(capability("shell,max=4").unwrap(), ("shell".into(), 4));
        assert!(capability(",max=4").is_err());
        assert!(capability("shell,max=0").is_err());
        assert!(capability("shell,slots=2").is_err());
    }

    #[test]
    fn input_goes_in_as_text_or_json_and_output_comes_back_as_json_or_text() {
        assert_eq!(stdin_of(&json!("uname -a")), b"uname -a");
        assert_eq!(stdin_of(&json!({"a": 1})), br#"{"a":1}"#);
        assert_eq!(output_of(br#"{"b": 2}"#), json!({"b": 2}));
        assert_eq!(output_of(b"HELLO\n"), json!("HELLO\n"));
    }
}
