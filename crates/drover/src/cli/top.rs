//! `drover top`: the fleet at a glance in a terminal, for a person on SSH:
//! every backend and its models with busy/slots and state, the queue per
//! model, requests and errors a second, time to first byte, breaker states
//! and the backends' last errors. Redrawn in place every `--interval`;
//! quits with `q`. `--once` prints one frame (rates over one interval) and
//! exits, for scripts.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use drover_proto::admin::BackendList;
use drover_proto::dashboard::{Overview, QueueOverview};
use http::Method;

use super::http::{Api, Hub, check};

#[derive(clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub target: Hub,
    /// Seconds between frames.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Print one frame and exit.
    #[arg(long)]
    pub once: bool,
}

/// One reading of the hub.
struct Sample {
    backends: BackendList,
    queue: QueueOverview,
    /// Counters from `/metrics`: every request, the failed ones, and the
    /// time-to-first-byte histogram's sum and count.
    requests: f64,
    errors: f64,
    ttfb_sum: f64,
    ttfb_count: f64,
}

pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    let api = args.target.api();
    let interval = Duration::from_secs_f64(args.interval.clamp(0.1, 3600.0));
    let mut last = sample(&api).await?;
    if args.once || !std::io::stdout().is_terminal() {
        tokio::time::sleep(interval).await;
        let now = sample(&api).await?;
        print!("{}", frame(&args.target.hub, &last, &now, interval));
        return Ok(());
    }
    let _screen = Screen::enter()?;
    loop {
        if quit_within(interval).await? {
            return Ok(());
        }
        let now = match sample(&api).await {
            Ok(s) => s,
            Err(e) => {
                draw(&format!("drover top: {e:#}\r\n(retrying; q quits)\r\n"))?;
                continue;
            }
        };
        draw(&frame(&args.target.hub, &last, &now, interval).replace('\n', "\r\n"))?;
        last = now;
    }
}

async fn sample(api: &Api) -> anyhow::Result<Sample> {
    // The dashboard's overview: the fleet and the whole queue, which the
    // admin key may read (`/v1/queue` is the clients' view).
    let (status, body) = api.call(Method::GET, "/admin/overview", None).await?;
    check(status, &body)?;
    let overview: Overview = serde_json::from_value(body).context("unexpected answer")?;
    let backends = BackendList {
        backends: overview.backends,
    };
    let queue = overview.queue;
    let (_, metrics) = api.call(Method::GET, "/metrics", None).await?;
    let text = metrics.as_str().unwrap_or_default();
    let sum = |name: &str, keep: &dyn Fn(&str) -> bool| -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
                (metric == name && keep(labels)).then(|| value.parse::<f64>().ok())?
            })
            .sum()
    };
    let failed = |labels: &str| {
        labels
            .split("status=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|s| s.parse::<u16>().ok())
            .is_some_and(|s| s >= 400)
    };
    Ok(Sample {
        backends,
        queue,
        requests: sum("drover_requests_total", &|_| true),
        errors: sum("drover_requests_total", &failed),
        ttfb_sum: sum("drover_time_to_first_byte_seconds_sum", &|_| true),
        ttfb_count: sum("drover_time_to_first_byte_seconds_count", &|_| true),
    })
}

/// One screenful, from two samples `interval` apart.
fn frame(hub: &str, before: &Sample, now: &Sample, interval: Duration) -> String {
    let secs = interval.as_secs_f64();
    let rate = |a: f64, b: f64| ((b - a).max(0.0)) / secs;
    let answered = now.ttfb_count - before.ttfb_count;
    let ttfb = if answered > 0.0 {
        format!("{:.2} s", (now.ttfb_sum - before.ttfb_sum) / answered)
    } else {
        "-".into()
    };
    let mut out = String::new();
    out.push_str(&format!(
        "drover top  {hub}   requests/s {:.1}   errors/s {:.1}   first byte {ttfb}   waiting {}\n\n",
        rate(before.requests, now.requests),
        rate(before.errors, now.errors),
        now.queue.waiting
    ));
    let w = now
        .backends
        .backends
        .iter()
        .flat_map(|b| b.models.iter().map(|m| m.id.len()))
        .chain(now.queue.by_model.iter().map(|q| q.model.len()))
        .max()
        .unwrap_or(0)
        .max(5);
    out.push_str(&format!(
        "{:<18} {:<10} {:<w$} {:>9}  {}\n",
        "BACKEND", "BREAKER", "MODEL", "BUSY/SLOT", "STATE"
    ));
    for b in &now.backends.backends {
        let breaker = if b.draining {
            "draining"
        } else {
            b.breaker.as_str()
        };
        if b.models.is_empty() {
            out.push_str(&format!("{:<18} {breaker:<10} -\n", b.name));
        }
        for (i, m) in b.models.iter().enumerate() {
            let (name, breaker) = if i == 0 {
                (b.name.as_str(), breaker)
            } else {
                ("", "")
            };
            let state = m
                .residency
                .clone()
                .unwrap_or_else(|| if m.loaded { "loaded" } else { "unloaded" }.into());
            out.push_str(&format!(
                "{name:<18} {breaker:<10} {:<w$} {:>9}  {state}{}\n",
                m.id,
                format!("{}/{}", m.busy + m.external, m.slots),
                if m.pinned { ", pinned" } else { "" }
            ));
        }
    }
    let waiting: Vec<_> = now
        .queue
        .by_model
        .iter()
        .filter(|q| q.waiting > 0)
        .collect();
    out.push_str("\nQUEUE\n");
    if waiting.is_empty() {
        out.push_str("  nothing waits\n");
    }
    for q in waiting {
        out.push_str(&format!(
            "  {:<w$} {:>5} waiting, the oldest {:.1} s, expected {:.1} s{}\n",
            q.model,
            q.waiting,
            q.oldest_ms.unwrap_or(0) as f64 / 1000.0,
            q.expected_wait_ms as f64 / 1000.0,
            if q.loading { " (loading)" } else { "" }
        ));
    }
    let errors: BTreeMap<&str, &str> = now
        .backends
        .backends
        .iter()
        .filter_map(|b| Some((b.name.as_str(), b.last_error.as_deref()?)))
        .collect();
    out.push_str("\nRECENT ERRORS\n");
    if errors.is_empty() {
        out.push_str("  none\n");
    }
    for (backend, error) in errors {
        out.push_str(&format!("  {backend}: {error}\n"));
    }
    out
}

/// Waits up to `interval` for a key; true when it was `q` (or Ctrl-C).
async fn quit_within(interval: Duration) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
        use crossterm::event::{Event, KeyCode, KeyModifiers, poll, read};
        let deadline = std::time::Instant::now() + interval;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || !poll(left)? {
                return Ok(false);
            }
            if let Event::Key(k) = read()? {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                    return Ok(true);
                }
            }
        }
    })
    .await?
}

fn draw(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    crossterm::queue!(
        out,
        crossterm::cursor::MoveTo(0, 0),
        crossterm::terminal::Clear(crossterm::terminal::ClearType::All)
    )?;
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The terminal in raw mode on its alternate screen, restored on drop
/// however `top` ends.
struct Screen;

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        crossterm::terminal::enable_raw_mode()?;
        crossterm::execute!(
            std::io::stdout(),
            crossterm::terminal::EnterAlternateScreen,
            crossterm::cursor::Hide
        )?;
        draw("drover top: reading the hub...\r\n")?;
        Ok(Screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = crossterm::execute!(
            std::io::stdout(),
            crossterm::cursor::Show,
            crossterm::terminal::LeaveAlternateScreen
        );
        let _ = crossterm::terminal::disable_raw_mode();
    }
}
