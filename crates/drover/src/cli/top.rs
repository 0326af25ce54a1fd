//! `drover top`: the fleet at a glance in a terminal, for a person on SSH:
//! every backend and its models with busy/slots and state, the queue per
//! model, requests and errors a second, time to first byte, breaker states,
//! the backends' last errors and, where the hub keeps jobs, one line of
//! them. Redrawn in place every `--interval`;
//! quits with `q`. `--once` prints one frame (rates over one interval) and
//! exits, for scripts.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use drover_proto::admin::BackendList;
use drover_proto::dashboard::{JobsOverview, Overview, QueueOverview};
use drover_proto::workers::WorkerInfo;
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
    /// The job store, where the hub keeps one.
    jobs: Option<JobsOverview>,
    /// The capability workers registered with the hub.
    workers: Vec<WorkerInfo>,
    /// The hub that leads the cluster, where there is one.
    leader: Option<String>,
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
    let jobs = overview.jobs;
    let workers = overview.workers;
    let leader = overview.leader;
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
        jobs,
        workers,
        leader,
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
    let led = now
        .leader
        .as_ref()
        .map_or_else(String::new, |l| format!("   led by {l}"));
    out.push_str(&format!(
        "drover top  {hub}{led}   requests/s {:.1}   errors/s {:.1}   first byte {ttfb}   waiting {}\n\n",
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
    if let Some(jobs) = &now.jobs {
        out.push_str(&format!("\n{}\n", jobs_line(jobs)));
    }
    out.push_str(&workers_part(&now.workers, now.jobs.as_ref()));
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

/// The jobs in one line: waiting and running in the store (every hub's),
/// held by this hub, batches open; and why the figures are old, if they
/// are.
fn jobs_line(jobs: &JobsOverview) -> String {
    let count = |state: &str| {
        jobs.by_state
            .iter()
            .find(|c| c.state == state)
            .map_or(0, |c| c.jobs)
    };
    let mut line = if jobs.by_state.is_empty() {
        format!("JOBS  {} held by this hub", jobs.held)
    } else {
        format!(
            "JOBS  {} waiting, {} running, {} held by this hub, {} {} open",
            count("queued"),
            count("running"),
            jobs.held,
            jobs.batches_open,
            if jobs.batches_open == 1 {
                "batch"
            } else {
                "batches"
            }
        )
    };
    if let Some(error) = &jobs.error {
        line.push_str(&format!("  (the job store: {error})"));
    }
    line
}

/// The workers, one line each (capabilities, tasks in flight, when last
/// heard of, draining), under a heading with the tasks by state; nothing
/// for a hub without workers or tasks.
fn workers_part(workers: &[WorkerInfo], jobs: Option<&JobsOverview>) -> String {
    let tasks = jobs.map_or(&[][..], |j| j.tasks_by_state.as_slice());
    let count = |state: &str| {
        tasks
            .iter()
            .find(|c| c.state == state)
            .map_or(0, |c| c.jobs)
    };
    if workers.is_empty() && tasks.iter().all(|c| c.jobs == 0) {
        return String::new();
    }
    let mut out = format!(
        "\nWORKERS  {} ({} draining)  tasks: {} waiting, {} running, {} completed, {} failed or dead\n",
        workers.len(),
        workers.iter().filter(|w| w.draining).count(),
        count("queued"),
        count("running"),
        count("completed"),
        count("failed") + count("dead"),
    );
    let w = workers.iter().map(|w| w.name.len()).max().unwrap_or(0);
    for worker in workers {
        let offers: Vec<String> = worker
            .capabilities
            .iter()
            .map(|c| format!("{} x{}", c.name, c.max_concurrency))
            .collect();
        out.push_str(&format!(
            "  {:<w$} {:>3} in flight  heard {:>3} s ago  {}{}\n",
            worker.name,
            worker.in_flight,
            worker.last_seen_s,
            offers.join(", "),
            if worker.draining { "  (draining)" } else { "" }
        ));
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

#[cfg(test)]
mod tests {
    use drover_proto::dashboard::JobStateCount;

    use super::*;

    fn sample(jobs: Option<JobsOverview>) -> Sample {
        Sample {
            backends: BackendList {
                backends: Vec::new(),
            },
            queue: QueueOverview {
                waiting: 0,
                bytes: 0,
                oldest_ms: None,
                by_model: Vec::new(),
                by_priority: Vec::new(),
                by_client: Vec::new(),
            },
            jobs,
            workers: Vec::new(),
            leader: None,
            requests: 0.0,
            errors: 0.0,
            ttfb_sum: 0.0,
            ttfb_count: 0.0,
        }
    }

    fn jobs_lines(jobs: Option<JobsOverview>) -> Vec<String> {
        let s = sample(jobs);
        frame("hub", &s, &s, Duration::from_secs(1))
            .lines()
            .filter(|l| l.starts_with("JOBS"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_first_line_names_the_hub_that_leads() {
        let mut s = sample(None);
        let alone = frame("hub", &s, &s, Duration::from_secs(1));
        assert!(!alone.lines().next().unwrap().contains("led by"));
        s.leader = Some("hub-b".into());
        let led = frame("hub", &s, &s, Duration::from_secs(1));
        assert!(
            led.lines().next().unwrap().contains("led by hub-b"),
            "{led}"
        );
    }

    #[test]
    fn a_hub_that_keeps_no_jobs_gets_no_jobs_line() {
        assert!(jobs_lines(None).is_empty());
    }

    #[test]
    fn one_line_says_what_waits_runs_is_held_and_which_batches_are_open() {
        let count = |state: &str, jobs| JobStateCount {
            state: state.into(),
            jobs,
        };
        let jobs = JobsOverview {
            by_state: vec![count("queued", 7), count("running", 3), count("dead", 2)],
            held: 2,
            batches_open: 1,
            ..JobsOverview::default()
        };
        assert_eq!(
            jobs_lines(Some(jobs.clone())),
            ["JOBS  7 waiting, 3 running, 2 held by this hub, 1 batch open"]
        );
        let late = JobsOverview {
            error: Some("it has not answered for 4 s".into()),
            batches_open: 2,
            ..jobs
        };
        assert_eq!(
            jobs_lines(Some(late)),
            [
                "JOBS  7 waiting, 3 running, 2 held by this hub, 2 batches open  (the job store: it has not answered for 4 s)"
            ]
        );
        let never = JobsOverview {
            held: 0,
            error: Some("it has not answered since the hub started".into()),
            ..JobsOverview::default()
        };
        assert_eq!(
            jobs_lines(Some(never)),
            [
                "JOBS  0 held by this hub  (the job store: it has not answered since the hub started)"
            ]
        );
    }

    #[test]
    fn each_worker_has_a_line_under_the_tasks_by_state() {
        use drover_proto::workers::Capability;
        let worker = |name: &str, draining| WorkerInfo {
            id: format!("wrk_{name}"),
            name: name.into(),
            labels: Default::default(),
            capabilities: vec![Capability {
                name: "shell".into(),
                version: None,
                description: None,
                input_schema: None,
                max_concurrency: 2,
            }],
            in_flight: 1,
            last_seen_s: 3,
            draining,
        };
        let jobs = JobsOverview {
            tasks_by_state: vec![
                JobStateCount {
                    state: "queued".into(),
                    jobs: 4,
                },
                JobStateCount {
                    state: "dead".into(),
                    jobs: 1,
                },
            ],
            ..JobsOverview::default()
        };
        let text = workers_part(&[worker("box-1", false), worker("b2", true)], Some(&jobs));
        assert_eq!(
            text,
            "\nWORKERS  2 (1 draining)  tasks: 4 waiting, 0 running, 0 completed, 1 failed or dead\n\
             \x20 box-1   1 in flight  heard   3 s ago  shell x2\n\
             \x20 b2      1 in flight  heard   3 s ago  shell x2  (draining)\n"
        );
        assert_eq!(workers_part(&[], None), "");
    }
}
