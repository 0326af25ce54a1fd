//! Many node agents at once, for `bench/agents.sh`: `--agents` agents join
//! the hub with one reusable join token, then each heartbeats every
//! `--heartbeat-ms` (their starts spread over one period, as machines
//! booted at different times) for `--seconds`, carrying facts the size a
//! real agent's are. Prints `name value` lines: how many joined, the
//! heartbeats answered and refused, and their latency.
//!
//!   cargo run --release -p drover-bench --example agents -- --hub http://127.0.0.1:8700 \
//!     --token drv_j_... --agents 1000 --heartbeat-ms 10000 --seconds 60

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::Parser;
use drover_backends::HttpClient;
use drover_bench::report::Percentiles;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "Many node agents heartbeating one hub")]
struct Args {
    #[arg(long)]
    hub: String,
    /// A reusable join token (drover nodes token create --reusable).
    #[arg(long)]
    token: String,
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// The hub's [nodes] heartbeat.
    #[arg(long, default_value_t = 10_000)]
    heartbeat_ms: u64,
    /// How long they heartbeat after all have joined.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

async fn post(
    client: &HttpClient,
    url: &str,
    body: &Value,
    bearer: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let uri: Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    let bytes = Bytes::from(body.to_string());
    let build = || {
        let mut req = Request::new(Full::new(bytes.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri.clone();
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        if let Some(b) = bearer
            && let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {b}"))
        {
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
        req
    };
    let resp = client
        .send(build)
        .await
        .map_err(|e| anyhow!("POST {url}: {e:?}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// Facts the size a real machine's are.
fn facts(i: usize) -> Value {
    json!({
        "hostname": format!("bench-node-{i}"), "os": "linux", "os_version": "Debian GNU/Linux 12 (bookworm)",
        "arch": "x86_64", "cpus": 32, "load_1m": 0.5,
        "memory_total_bytes": 128u64 << 30, "memory_available_bytes": 100u64 << 30,
        "gpus": [{"name": "NVIDIA RTX 4090", "memory_total_bytes": 24u64 << 30, "memory_used_bytes": 1u64 << 30}],
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // A connection an agent, as real agents each keep their own.
    let client = HttpClient::with_pool_size(Duration::from_secs(10), args.agents.max(1));
    let base = args.hub.trim_end_matches('/').to_string();
    let mut nodes = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let asked = json!({"token": args.token, "name": format!("bench-{i}"), "version": "0.1.0", "facts": facts(i)});
        let (status, joined) =
            post(&client, &format!("{base}/v1/nodes/join"), &asked, None).await?;
        if status != 200 {
            bail!("join {i}: {status} {joined}");
        }
        nodes.push((
            joined["node_id"]
                .as_str()
                .context("no node_id")?
                .to_string(),
            joined["credential"]
                .as_str()
                .context("no credential")?
                .to_string(),
        ));
    }
    println!("agents {}", nodes.len());
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let period = Duration::from_millis(args.heartbeat_ms);
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (id, credential)) in nodes.into_iter().enumerate() {
        let client = client.clone();
        let url = format!("{base}/v1/nodes/{id}/heartbeat");
        let (ok, refused) = (ok.clone(), refused.clone());
        let offset = period.mul_f64(i as f64 / args.agents.max(1) as f64);
        tasks.spawn(async move {
            let mut took = Vec::new();
            let mut next = start + offset;
            while next < end {
                tokio::time::sleep_until(next).await;
                let beat = json!({"version": "0.1.0", "facts": facts(i)});
                let sent = Instant::now();
                match post(&client, &url, &beat, Some(&credential)).await {
                    Ok((200, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        took.push(sent.elapsed());
                    }
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                next += period;
            }
            took
        });
    }
    let mut took = Vec::new();
    while let Some(done) = tasks.join_next().await {
        took.extend(done?);
    }
    let p = Percentiles::of(&mut took);
    println!("heartbeats {}", ok.load(Ordering::Relaxed));
    println!("refused {}", refused.load(Ordering::Relaxed));
    println!(
        "heartbeats_per_s {:.1}",
        ok.load(Ordering::Relaxed) as f64 / args.seconds.max(1) as f64
    );
    println!("heartbeat_p50_ms {:.3}", p.p50);
    println!("heartbeat_p99_ms {:.3}", p.p99);
    Ok(())
}
