//! A closed-loop load generator: `concurrency` workers, each sending its
//! next request as soon as the previous one ends, until `requests` are done.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use drover_backends::HttpClient;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};

use crate::args::{BenchArgs, Endpoint};
use crate::models::{Listed, default_model};
use crate::progress::{self, Style, Tally};
use crate::report::{Percentiles, Report, print_table};

/// drover's own pooled client: like the hub, it resends a request that met
/// a closed reused connection on a fresh one, so a server that closes
/// connections after streams (llama-server) is not charged with errors
/// that are the pool's.
type Http = HttpClient;

struct Sample {
    latency: Duration,
    ttfb: Duration,
    error: Option<String>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.requests == 0 {
        bail!("--concurrency and --requests must be at least 1");
    }
    let path = args.endpoint.path();
    let client: Http = HttpClient::with_pool_size(Duration::from_secs(10), args.concurrency);
    let model = match &args.model {
        Some(m) => m.clone(),
        None => {
            let hub = list_models(&client, &args.url).await?;
            let direct = match &args.direct {
                Some(d) => Some(list_models(&client, d).await?),
                None => None,
            };
            default_model(&hub, direct.as_deref(), args.endpoint)
                .map_err(|e| anyhow!("{}: {e}", args.url))?
        }
    };
    println!("model: {model} (the same on every target)");
    let body = Bytes::from(request_body(&args, &model).to_string());
    let mut reports = Vec::new();
    let targets: Vec<(&str, &String)> = std::iter::once(("hub", &args.url))
        .chain(args.direct.iter().map(|d| ("direct", d)))
        .collect();
    for (label, url) in targets {
        let base = url.trim_end_matches('/');
        let url = format!("{base}{path}");
        let warmup = format!("{label} (warm-up)");
        phase(&client, &url, &body, args.warmup, &args, &warmup).await;
        let cpu_before = cpu_seconds(&client, base).await;
        let started = Instant::now();
        let samples = phase(&client, &url, &body, args.requests, &args, label).await;
        let seconds = started.elapsed().as_secs_f64();
        let cpu_after = cpu_seconds(&client, base).await;
        // Ticks of 10 ms: under a second of CPU the figure is mostly
        // rounding.
        let cpu = match (cpu_before, cpu_after) {
            (Some(a), Some(b)) if b - a >= 1.0 => Some((b - a) * 1e6 / args.requests as f64),
            _ => None,
        };
        reports.push(summarize(label, samples, seconds, cpu));
    }
    print_table(&reports);
    println!(
        "cpu us/req: the target process's CPU over the run (process_cpu_seconds_total, \
         in 10 ms ticks) per request; the whole process, simulators included under \
         `drover demo`; '-' where it used under a second, too little to tell"
    );
    if let [hub, direct] = reports.as_slice() {
        println!(
            "\nthrough drover ({}) / direct ({}), {model}, requests per second: {:.3}",
            args.url,
            args.direct.as_deref().unwrap_or_default(),
            hub.requests_per_sec / direct.requests_per_sec.max(f64::MIN_POSITIVE)
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

fn request_body(args: &BenchArgs, model: &str) -> serde_json::Value {
    match args.endpoint {
        Endpoint::Embeddings => serde_json::json!({"model": model, "input": "drover bench"}),
        Endpoint::Completions => serde_json::json!({
            "model": model, "prompt": "drover bench", "max_tokens": args.max_tokens, "stream": args.stream
        }),
        Endpoint::Chat => serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "drover bench"}],
            "max_tokens": args.max_tokens,
            "stream": args.stream,
        }),
    }
}

/// `n` requests at `url`, with a progress line on stderr while they run.
async fn phase(
    client: &Http,
    url: &str,
    body: &Bytes,
    n: usize,
    args: &BenchArgs,
    label: &str,
) -> Vec<Sample> {
    if n == 0 {
        return Vec::new();
    }
    let tally = Arc::new(Tally::default());
    let work = load(client, url, body, n, args, Arc::clone(&tally));
    let mut stderr = std::io::stderr();
    progress::watch(label, n, &tally, Style::of_stderr(), &mut stderr, work).await
}

async fn load(
    client: &Http,
    url: &str,
    body: &Bytes,
    n: usize,
    args: &BenchArgs,
    tally: Arc<Tally>,
) -> Vec<Sample> {
    let next = Arc::new(AtomicUsize::new(0));
    let timeout = Duration::from_secs_f64(args.timeout.max(0.001));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.min(n) {
        let (client, url, body, next, tally) = (
            client.clone(),
            url.to_string(),
            body.clone(),
            next.clone(),
            tally.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let sample = one(&client, &url, &body, timeout).await;
                tally.record(sample.error.is_none());
                samples.push(sample);
            }
            samples
        }));
    }
    let mut all = Vec::with_capacity(n);
    for w in workers {
        if let Ok(samples) = w.await {
            all.extend(samples);
        }
    }
    all
}

async fn one(client: &Http, url: &str, body: &Bytes, timeout: Duration) -> Sample {
    let started = Instant::now();
    let attempt = async {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let build = || {
            let mut req = Request::new(Full::new(body.clone()));
            *req.method_mut() = Method::POST;
            *req.uri_mut() = uri.clone();
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            req
        };
        let resp = client.send(build).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut ttfb = None;
        let mut tail = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            if ttfb.is_none() {
                ttfb = Some(started.elapsed());
            }
            if let Ok(data) = frame.into_data() {
                // Keep only the end: enough to spot an SSE error event.
                tail.extend_from_slice(&data);
                if tail.len() > 4096 {
                    tail.drain(..tail.len() - 4096);
                }
            }
        }
        let ttfb = ttfb.unwrap_or_else(|| started.elapsed());
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&tail)));
        }
        if tail.windows(10).any(|w| w == b"{\"error\":{") {
            return Err(format!("error event: {}", String::from_utf8_lossy(&tail)));
        }
        Ok(ttfb)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(ttfb)) => Sample {
            latency: started.elapsed(),
            ttfb,
            error: None,
        },
        Ok(Err(e)) => Sample {
            latency: started.elapsed(),
            ttfb: started.elapsed(),
            error: Some(e),
        },
        Err(_) => Sample {
            latency: started.elapsed(),
            ttfb: started.elapsed(),
            error: Some(format!("no answer within {timeout:?}")),
        },
    }
}

fn summarize(label: &str, samples: Vec<Sample>, seconds: f64, cpu_us: Option<f64>) -> Report {
    let requests = samples.len();
    let mut latency: Vec<Duration> = samples
        .iter()
        .filter(|s| s.error.is_none())
        .map(|s| s.latency)
        .collect();
    let mut ttfb: Vec<Duration> = samples
        .iter()
        .filter(|s| s.error.is_none())
        .map(|s| s.ttfb)
        .collect();
    let mut error_samples: Vec<String> = samples.iter().filter_map(|s| s.error.clone()).collect();
    let errors = error_samples.len();
    error_samples.sort();
    error_samples.dedup();
    error_samples.truncate(3);
    Report {
        target: label.to_string(),
        requests,
        ok: requests - errors,
        errors,
        seconds,
        requests_per_sec: (requests - errors) as f64 / seconds.max(f64::MIN_POSITIVE),
        latency_ms: Percentiles::of(&mut latency),
        ttfb_ms: Percentiles::of(&mut ttfb),
        cpu_us_per_request: cpu_us,
        error_samples,
    }
}

/// The models GET /v1/models lists, in its order, with whether each is
/// loaded where the listing says (drover's: per backend).
async fn list_models(client: &Http, base: &str) -> anyhow::Result<Vec<Listed>> {
    let url = format!("{}/v1/models", base.trim_end_matches('/'));
    let uri: Uri = url.parse().with_context(|| format!("bad --url {base:?}"))?;
    let resp = client
        .send(|| get(&uri))
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let body = resp.into_body().collect().await?.to_bytes();
    let v: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("{url} did not answer JSON"))?;
    let data = v["data"].as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(data
        .iter()
        .filter_map(|m| {
            let id = m["id"].as_str()?.to_string();
            let loaded = m["backends"]
                .as_array()
                .map(|b| b.iter().any(|p| p["state"] == "loaded"));
            Some(Listed { id, loaded })
        })
        .collect())
}

/// The target's `process_cpu_seconds_total`, if it exposes `/metrics`.
async fn cpu_seconds(client: &Http, base: &str) -> Option<f64> {
    let uri: Uri = format!("{base}/metrics").parse().ok()?;
    let resp = client.send(|| get(&uri)).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
}

fn get(uri: &Uri) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = uri.clone();
    req
}
