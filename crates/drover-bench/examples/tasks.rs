//! Capability workers under load, for `bench/tasks.sh`: `--workers` no-op
//! workers register with the hub, each parked in its long poll, answering
//! every task it is given at once with a tiny output.
//!
//! 1. Latency: one task at a time (the next once the previous is stored
//!    `completed`), the time from the start of its `POST /v1/tasks` to the
//!    worker's poll answer carrying it, both read on this process's clock;
//!    beside each, a `GET /health` round trip, the hub's floor.
//! 2. Throughput: `--tasks` tasks submitted by `--submitters` clients at
//!    once, from the first submit to the hub's store counting the last one
//!    `completed` (`drover_jobs{state="completed"}` in `/metrics`, read only
//!    once every worker's `complete` has been answered, so the scrapes cost
//!    the run nothing).
//!
//! Prints `name value` lines (`#` starts a comment line) for the script.
//!
//!   cargo run --release -p drover-bench --example tasks -- --hub http://127.0.0.1:8700 \
//!     --workers 10 --tasks 5000 --submitters 8 --latency-samples 500

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::Parser;
use drover_backends::HttpClient;
use drover_bench::report::Percentiles;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "Capability workers' tasks per second and submit-to-worker latency")]
struct Args {
    /// The hub, e.g. http://127.0.0.1:8700
    #[arg(long)]
    hub: String,
    /// No-op workers, each with one slot, each parked in its long poll.
    #[arg(long, default_value_t = 10)]
    workers: usize,
    /// Tasks for the throughput run.
    #[arg(long, default_value_t = 5000)]
    tasks: usize,
    /// Clients submitting the throughput run's tasks at once.
    #[arg(long, default_value_t = 8)]
    submitters: usize,
    /// Tasks for the latency run, one at a time.
    #[arg(long, default_value_t = 500)]
    latency_samples: usize,
    /// Latency tasks sent first and not counted.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// The capability the workers offer and the tasks ask for.
    #[arg(long, default_value = "bench-noop")]
    capability: String,
    /// A client key, for a hub that has keys.
    #[arg(long, env = "DROVER_API_KEY")]
    api_key: Option<String>,
    /// A worker key, for a hub that has worker keys.
    #[arg(long, env = "DROVER_WORKER_KEY")]
    worker_key: Option<String>,
    /// A key that may read /metrics (admin or metrics), for a hub with keys.
    #[arg(long, env = "DROVER_METRICS_KEY")]
    metrics_key: Option<String>,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
}

/// The hub, through drover's own pooled client.
#[derive(Clone)]
struct Hub {
    client: HttpClient,
    base: String,
}

impl Hub {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .with_context(|| format!("bad URL {}{path}", self.base))?;
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let build = || {
            let mut req = Request::new(Full::new(body.clone()));
            *req.method_mut() = method.clone();
            *req.uri_mut() = uri.clone();
            if !body.is_empty() {
                req.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
            }
            if let Some(key) = key
                && let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {key}"))
            {
                req.headers_mut().insert(header::AUTHORIZATION, v);
            }
            req
        };
        let resp = self
            .client
            .send(build)
            .await
            .map_err(|e| anyhow!("{method} {path}: {e:?}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// A JSON answer of 2xx, or the error it was.
    async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> anyhow::Result<Value> {
        let (status, bytes) = self.call(method.clone(), path, body, key).await?;
        if !status.is_success() {
            bail!(
                "{method} {path}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{method} {path}: not JSON"))
    }

    /// `drover_jobs{state="completed"}` from /metrics: tasks and jobs the
    /// store holds as completed.
    async fn completed(&self, key: Option<&str>) -> anyhow::Result<u64> {
        let (status, bytes) = self.call(Method::GET, "/metrics", None, key).await?;
        if !status.is_success() {
            bail!(
                "GET /metrics: {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(metric(&bytes, "drover_jobs{state=\"completed\"}").map_or(0, |v| v as u64))
    }

    /// The hub's `process_cpu_seconds_total`.
    async fn cpu_seconds(&self, key: Option<&str>) -> Option<f64> {
        let (status, bytes) = self.call(Method::GET, "/metrics", None, key).await.ok()?;
        status
            .is_success()
            .then(|| metric(&bytes, "process_cpu_seconds_total"))
            .flatten()
    }
}

fn metric(text: &[u8], name: &str) -> Option<f64> {
    String::from_utf8_lossy(text).lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// What the workers saw, in the order they saw it.
enum Seen {
    /// A poll answered with this task, at this instant.
    Received(String, Instant),
    /// The hub took this task's output (204).
    Completed(String),
}

/// One no-op worker: registers, then polls and completes until aborted.
async fn worker(
    hub: Hub,
    id: String,
    key: Option<String>,
    seen: mpsc::UnboundedSender<Seen>,
    done: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let poll_path = format!("/v1/workers/{id}/poll");
    let poll = json!({"max_tasks": 1, "wait_s": 25});
    let output = json!({"ok": true});
    loop {
        let (status, bytes) = hub
            .call(Method::POST, &poll_path, Some(&poll), key.as_deref())
            .await?;
        let at = Instant::now();
        if status == StatusCode::NO_CONTENT {
            continue;
        }
        if !status.is_success() {
            bail!(
                "poll of {id}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let polled: Value = serde_json::from_slice(&bytes)?;
        let tasks = polled["tasks"].as_array().cloned().unwrap_or_default();
        for task in &tasks {
            let task_id = task["id"].as_str().unwrap_or_default().to_string();
            let _ = seen.send(Seen::Received(task_id.clone(), at));
        }
        for task in tasks {
            let task_id = task["id"].as_str().unwrap_or_default().to_string();
            let complete = json!({"lease_token": task["lease_token"], "output": output});
            let (status, bytes) = hub
                .call(
                    Method::POST,
                    &format!("/v1/tasks/{task_id}/complete"),
                    Some(&complete),
                    key.as_deref(),
                )
                .await?;
            if !status.is_success() {
                bail!(
                    "complete of {task_id}: {status}: {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            done.fetch_add(1, Ordering::Relaxed);
            let _ = seen.send(Seen::Completed(task_id));
        }
    }
}

/// The submit-to-worker and /health round trips of one task at a time.
struct Latency {
    to_worker: Vec<Duration>,
    submit_rtt: Vec<Duration>,
    health: Vec<Duration>,
    /// Tasks a worker had before their submit was answered.
    before_answer: usize,
}

async fn latency(
    hub: &Hub,
    args: &Args,
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    n: usize,
) -> anyhow::Result<Latency> {
    let mut out = Latency {
        to_worker: Vec::with_capacity(n),
        submit_rtt: Vec::with_capacity(n),
        health: Vec::with_capacity(n),
        before_answer: 0,
    };
    let task = json!({"capability": args.capability, "input": {"n": 0}});
    let key = args.api_key.as_deref();
    let limit = Duration::from_secs(args.timeout_s);
    // Received or completed early, before the submit's answer named it.
    let mut received: HashMap<String, Instant> = HashMap::new();
    let mut completed: HashSet<String> = HashSet::new();
    for _ in 0..n {
        let started = Instant::now();
        let (status, _) = hub.call(Method::GET, "/health", None, None).await?;
        if !status.is_success() {
            bail!("GET /health: {status}");
        }
        out.health.push(started.elapsed());

        let started = Instant::now();
        let job = hub
            .json(Method::POST, "/v1/tasks", Some(&task), key)
            .await?;
        let answered = Instant::now();
        out.submit_rtt.push(answered - started);
        let id = job["id"]
            .as_str()
            .ok_or_else(|| anyhow!("POST /v1/tasks answered no id: {job}"))?
            .to_string();
        let deadline = Instant::now() + limit;
        let mut got = received.remove(&id);
        let mut done = completed.remove(&id);
        while got.is_none() || !done {
            let next = tokio::time::timeout_at(deadline, seen.recv())
                .await
                .map_err(|_| anyhow!("task {id}: no worker got it within {limit:?}"))?
                .ok_or_else(|| anyhow!("every worker stopped"))?;
            match next {
                Seen::Received(t, at) if t == id => got = Some(at),
                Seen::Received(t, at) => {
                    received.insert(t, at);
                }
                Seen::Completed(t) if t == id => done = true,
                Seen::Completed(t) => {
                    completed.insert(t);
                }
            }
        }
        let at = got.ok_or_else(|| anyhow!("task {id}: no worker got it"))?;
        if at < answered {
            out.before_answer += 1;
        }
        out.to_worker.push(at - started);
        // The next only once this one is stored: its store write is not
        // charged to the next sample.
        loop {
            let job = hub
                .json(Method::GET, &format!("/v1/tasks/{id}"), None, key)
                .await?;
            match job["state"].as_str() {
                Some("completed") => break,
                Some("queued" | "running") => {}
                other => bail!("task {id} ended {other:?}: {job}"),
            }
            if Instant::now() > deadline {
                bail!("task {id} not stored completed within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(out)
}

fn ms(d: f64) -> String {
    format!("{d:.3}")
}

// One thread: the bench's side is light (a few requests per task), and the
// machine's other cores are left to the hub and its store.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.workers == 0 || args.submitters == 0 {
        bail!("--workers and --submitters must be at least 1");
    }
    let hub = Hub {
        client: HttpClient::with_pool_size(
            Duration::from_secs(10),
            args.workers + args.submitters + 8,
        ),
        base: args.hub.trim_end_matches('/').to_string(),
    };
    let metrics_key = args.metrics_key.as_deref();
    let worker_key = args.worker_key.as_deref();

    // The workers, one slot each, each parked in its long poll.
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let done = Arc::new(AtomicUsize::new(0));
    let mut ids = Vec::new();
    let mut running = Vec::new();
    for i in 0..args.workers {
        let registered = hub
            .json(
                Method::POST,
                "/v1/workers",
                Some(&json!({
                    "name": format!("bench-{i}"),
                    "capabilities": [{"name": args.capability, "max_concurrency": 1}],
                })),
                worker_key,
            )
            .await?;
        let id = registered["worker_id"]
            .as_str()
            .ok_or_else(|| anyhow!("POST /v1/workers answered no worker_id: {registered}"))?
            .to_string();
        ids.push(id.clone());
        running.push(tokio::spawn(worker(
            hub.clone(),
            id,
            args.worker_key.clone(),
            seen_tx.clone(),
            done.clone(),
        )));
    }
    drop(seen_tx);
    println!(
        "# {} workers registered, offering {}",
        args.workers, args.capability
    );
    // Let every worker reach its poll.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 1. Latency, one task at a time.
    latency(&hub, &args, &mut seen, args.warmup).await?;
    let mut l = latency(&hub, &args, &mut seen, args.latency_samples).await?;
    let to_worker = Percentiles::of(&mut l.to_worker);
    let submit = Percentiles::of(&mut l.submit_rtt);
    let health = Percentiles::of(&mut l.health);
    println!("latency_samples {}", l.to_worker.len());
    println!("submit_to_worker_p50_ms {}", ms(to_worker.p50));
    println!("submit_to_worker_p99_ms {}", ms(to_worker.p99));
    println!("submit_to_worker_max_ms {}", ms(to_worker.max));
    println!("submit_answer_p50_ms {}", ms(submit.p50));
    println!("submit_answer_p99_ms {}", ms(submit.p99));
    println!("health_p50_ms {}", ms(health.p50));
    println!("health_p99_ms {}", ms(health.p99));
    println!(
        "submit_to_worker_over_health_p50 {:.1}",
        to_worker.p50 / health.p50.max(f64::MIN_POSITIVE)
    );
    println!("received_before_submit_answered {}", l.before_answer);

    // 2. Throughput: every task submitted at once by the submitters.
    while seen.try_recv().is_ok() {}
    let before = hub.completed(metrics_key).await?;
    let completed_before = done.load(Ordering::Relaxed);
    let cpu_before = hub.cpu_seconds(metrics_key).await;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut submitters = Vec::new();
    for _ in 0..args.submitters.min(args.tasks.max(1)) {
        let (hub, next, key) = (hub.clone(), next.clone(), args.api_key.clone());
        let task = json!({"capability": args.capability, "input": {"n": 1}});
        let n = args.tasks;
        submitters.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                hub.json(Method::POST, "/v1/tasks", Some(&task), key.as_deref())
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for s in submitters {
        s.await??;
    }
    let submitted = started.elapsed();
    let deadline = started + Duration::from_secs(args.timeout_s);
    // Every worker's complete answered: then the store's count, read
    // until it has them all.
    while done.load(Ordering::Relaxed) < completed_before + args.tasks {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} tasks completed by the workers within {}s",
                done.load(Ordering::Relaxed) - completed_before,
                args.tasks,
                args.timeout_s
            );
        }
        if let Some(ended) = running.iter().position(|w| w.is_finished()) {
            let w = running.swap_remove(ended);
            w.await??;
            bail!("a worker stopped");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let workers_done = started.elapsed();
    let mut scrapes = 0;
    loop {
        let n = hub.completed(metrics_key).await?;
        scrapes += 1;
        if n >= before + args.tasks as u64 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the store holds {} of {} tasks completed after {}s",
                n - before,
                args.tasks,
                args.timeout_s
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = hub.cpu_seconds(metrics_key).await;
    println!("tasks {}", args.tasks);
    println!("tasks_seconds {seconds:.3}");
    println!("tasks_per_s {:.1}", args.tasks as f64 / seconds);
    println!("tasks_submitted_s {:.3}", submitted.as_secs_f64());
    println!("tasks_workers_done_s {:.3}", workers_done.as_secs_f64());
    println!("tasks_store_scrapes {scrapes}");
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        println!(
            "hub_cpu_us_per_task {:.0}",
            (b - a) * 1e6 / args.tasks as f64
        );
    }

    for w in &running {
        w.abort();
    }
    for id in &ids {
        let _ = hub
            .call(
                Method::DELETE,
                &format!("/v1/workers/{id}"),
                None,
                worker_key,
            )
            .await;
    }
    Ok(())
}
