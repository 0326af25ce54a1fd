//! `drover jobs submit|ls|get|cancel|retry`: the jobs API from the shell.
//! Jobs are inference, so these commands take a client key (`--api-key`),
//! not the admin key, and see that key's jobs only.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use drover_proto::batch::List;
use drover_proto::jobs::{CreateJob, Deadline, Job};
use http::{HeaderName, HeaderValue, Method};
use serde_json::value::RawValue;

use super::http::{Api, ClientHub, segment};
use super::table::{self, Align};

#[derive(clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub target: ClientHub,
    /// Print the job (or the list) as the hub's JSON instead.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: JobsCommand,
}

#[derive(clap::Subcommand)]
pub enum JobsCommand {
    /// Hand a request over to run later; prints the job's id, or with
    /// --wait its answer.
    Submit(Box<SubmitArgs>),
    /// The key's jobs, newest first: id, state, model, attempts, created,
    /// ended.
    Ls {
        /// Only jobs in this state: queued, running, completed, failed,
        /// dead, cancelled or expired.
        #[arg(long)]
        state: Option<String>,
        /// Only this batch's jobs.
        #[arg(long, value_name = "BATCH_ID")]
        batch: Option<String>,
        /// Jobs a page, 1 to 100 (the hub's 20 unless given; 100 with
        /// --all).
        #[arg(long)]
        limit: Option<u32>,
        /// Every page, not only the newest.
        #[arg(long)]
        all: bool,
    },
    /// One job: its state, every attempt, and its answer once it has one.
    Get { id: String },
    /// Cancel a job: at once if it waits; a running one is asked to stop.
    Cancel { id: String },
    /// Queue again a job that ended without success, with the hub's
    /// jobs.max_attempts more attempts.
    Retry { id: String },
}

#[derive(clap::Args)]
pub struct SubmitArgs {
    /// The inference path the request goes to.
    #[arg(long, default_value = "/v1/chat/completions")]
    pub endpoint: String,
    /// The model, for a body made from --prompt.
    #[arg(long, required_unless_present = "body", conflicts_with = "body")]
    pub model: Option<String>,
    /// The text: one user message for chat (and /v1/messages), the prompt
    /// for /v1/completions, the input for /v1/embeddings and /v1/responses.
    #[arg(long, required_unless_present = "body", conflicts_with = "body")]
    pub prompt: Option<String>,
    /// The request body, JSON, from a file (- for stdin), sent as it is.
    #[arg(long, value_name = "FILE|-")]
    pub body: Option<PathBuf>,
    #[command(flatten)]
    pub terms: Terms,
}

/// How a job or a task is run, as `submit` takes it for either.
#[derive(clap::Args)]
pub struct Terms {
    /// 0 to 100 (default: the hub's jobs.priority, below interactive
    /// requests).
    #[arg(long)]
    pub priority: Option<u8>,
    /// Attempts before it is dead (default: the hub's jobs.max_attempts).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// When it must have run by: Unix seconds, or a duration from now
    /// (30m, 12h).
    #[arg(long)]
    pub deadline: Option<String>,
    /// Where the hub POSTs it once finished (signed, Standard Webhooks).
    #[arg(long)]
    pub callback_url: Option<String>,
    /// A pair kept with it; repeat for more.
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = pair)]
    pub metadata: Vec<(String, String)>,
    /// Submitting the same again with the same key returns what the first
    /// made rather than making another.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Wait until it ends and print its answer's body (a task's output);
    /// exit 1 unless it completed.
    #[arg(long)]
    pub wait: bool,
}

/// Jobs and tasks are read and listed alike; each has its own path and
/// name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Job,
    Task,
}

impl Kind {
    fn base(self) -> &'static str {
        match self {
            Kind::Job => "/v1/jobs",
            Kind::Task => "/v1/tasks",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Job => "job",
            Kind::Task => "task",
        }
    }
}

pub(super) const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Set on the answer when the key had made a job already.
pub(super) const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The longest pause between two looks at a job `--wait` waits for: short
/// enough that a quick job's answer is not kept waiting, long enough that
/// a day-long wait costs the hub little.
const MAX_POLL: Duration = Duration::from_secs(2);

pub async fn run(args: JobsArgs) -> anyhow::Result<()> {
    let api = args.target.api();
    let json = args.json;
    match args.command {
        JobsCommand::Submit(submit) => self::submit(&api, *submit, json).await,
        JobsCommand::Ls {
            state,
            batch,
            limit,
            all,
        } => ls(&api, Kind::Job, state, batch, limit, all, json).await,
        JobsCommand::Get { id } => show(&api, Kind::Job, &id, json).await,
        JobsCommand::Cancel { id } => cancel(&api, Kind::Job, &id, json).await,
        JobsCommand::Retry { id } => {
            let job = act(&api, Kind::Job, &id, "retry").await?;
            if json {
                return print_json(&job);
            }
            say(&format!(
                "{} is queued again ({} so far, at most {} in all)\n",
                job.id,
                plural(job.attempts.len(), "attempt"),
                job.max_attempts
            ))
        }
    }
}

/// `get ID`: the job or task for a person, or as JSON.
pub(super) async fn show(api: &Api, kind: Kind, id: &str, json: bool) -> anyhow::Result<()> {
    let job = get(api, kind, id).await?;
    if json {
        print_json(&job)
    } else {
        say(&describe(&job, now_secs()))
    }
}

/// `cancel ID`, and what came of it in one line.
pub(super) async fn cancel(api: &Api, kind: Kind, id: &str, json: bool) -> anyhow::Result<()> {
    let job = act(api, kind, id, "cancel").await?;
    if json {
        return print_json(&job);
    }
    let said = match job.state.as_str() {
        "cancelled" => format!("{} is cancelled", job.id),
        _ if job.cancel_requested => format!(
            "{} is {}: asked to stop (it ends cancelled, unless its answer comes first)",
            job.id, job.state
        ),
        "queued" | "running" => format!("{} is {}", job.id, job.state),
        ended => format!("{} had ended already ({ended}): nothing to cancel", job.id),
    };
    say(&format!("{said}\n"))
}

async fn submit(api: &Api, args: SubmitArgs, json: bool) -> anyhow::Result<()> {
    let body = match (&args.body, &args.model, &args.prompt) {
        (Some(path), _, _) => read_body(path)?,
        (None, Some(model), Some(prompt)) => {
            serde_json::value::to_raw_value(&prompt_body(&args.endpoint, model, prompt))?
        }
        // clap asks for --body, or --model with --prompt.
        _ => anyhow::bail!("give --model and --prompt, or --body"),
    };
    let terms = args.terms;
    let metadata = metadata_of(terms.metadata)?;
    let create = CreateJob {
        endpoint: args.endpoint,
        body,
        priority: terms.priority,
        max_attempts: terms.max_attempts,
        deadline: terms.deadline.as_deref().map(deadline),
        callback_url: terms.callback_url,
        metadata,
    };
    let payload = serde_json::to_vec(&create)?;
    let job = post_new(api, Kind::Job, payload, terms.idempotency_key.as_deref()).await?;
    finish_submit(api, Kind::Job, job, terms.wait, json).await
}

/// `--deadline`: Unix seconds, or a duration from now.
pub(super) fn deadline(d: &str) -> Deadline {
    match d.trim().parse::<i64>() {
        Ok(at) => Deadline::At(at),
        Err(_) => Deadline::In(d.trim().to_string()),
    }
}

/// `--metadata` pairs as an object, none if there are none.
pub(super) fn metadata_of(
    pairs: Vec<(String, String)>,
) -> anyhow::Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let mut metadata = serde_json::Map::new();
    for (key, value) in pairs {
        if metadata.contains_key(&key) {
            anyhow::bail!("--metadata {key:?} is given twice");
        }
        metadata.insert(key, serde_json::Value::String(value));
    }
    Ok((!metadata.is_empty()).then_some(metadata))
}

/// POSTs a new job or task with its idempotency key; what the hub made
/// (or, for a key used before, had made).
pub(super) async fn post_new(
    api: &Api,
    kind: Kind,
    payload: Vec<u8>,
    idempotency_key: Option<&str>,
) -> anyhow::Result<Job> {
    let mut headers = Vec::new();
    if let Some(key) = idempotency_key {
        let value = HeaderValue::from_str(key).map_err(|_| {
            anyhow::anyhow!("--idempotency-key {key:?} cannot be sent: use visible ASCII")
        })?;
        headers.push((HeaderName::from_static(IDEMPOTENCY_HEADER), value));
    }
    let answer = api
        .send(
            Method::POST,
            kind.base(),
            headers,
            Some(Bytes::from(payload)),
        )
        .await?;
    check(answer.status, &answer.json)?;
    let job: Job = serde_json::from_value(answer.json).context("unexpected answer")?;
    let replayed = answer
        .headers
        .get(REPLAYED_HEADER)
        .is_some_and(|v| v.as_bytes() == b"true");
    if replayed && let Some(key) = idempotency_key {
        note(&format!(
            "note: idempotency key {key:?} made {} before; this is that {} ({})",
            job.id,
            kind.noun(),
            job.state
        ));
    }
    if let Some(said) = &job.note {
        note(&format!("note: {said}"));
    }
    Ok(job)
}

/// After a submit: the id, or with `wait` the answer once it has ended
/// (an error unless it completed).
pub(super) async fn finish_submit(
    api: &Api,
    kind: Kind,
    job: Job,
    wait: bool,
    json: bool,
) -> anyhow::Result<()> {
    if !wait {
        if json {
            return print_json(&job);
        }
        return say(&format!("{}\n", job.id));
    }
    if !ended(&job) {
        note(&format!(
            "{} is {}; waiting for it to end (Ctrl-C stops waiting, not the {})",
            job.id,
            job.state,
            kind.noun()
        ));
    }
    let id = job.id.clone();
    let job = self::wait(api, kind, job).await.with_context(|| {
        format!(
            "waiting for {id}; `drover {}s get {id}` shows it later",
            kind.noun()
        )
    })?;
    if json {
        print_json(&job)?;
    }
    if job.state != "completed" {
        anyhow::bail!("{}", outcome(&job));
    }
    if !json {
        match &job.response {
            Some(response) => say(&format!("{}\n", body_text(&response.body)))?,
            None => anyhow::bail!("{} completed, but the hub sent no answer with it", job.id),
        }
    }
    Ok(())
}

/// A request body from a file or stdin, checked to be JSON and otherwise
/// sent as written: key order, numbers and escapes are the writer's.
pub(super) fn read_body(path: &Path) -> anyhow::Result<Box<RawValue>> {
    let (name, bytes) = if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read the body from stdin")?;
        ("stdin".to_string(), bytes)
    } else {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the body from {}", path.display()))?;
        (path.display().to_string(), bytes)
    };
    let text =
        String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("the body in {name} is not UTF-8"))?;
    serde_json::from_str(text.trim()).with_context(|| format!("the body in {name} is not JSON"))
}

/// The body `--prompt` makes for `endpoint`. An endpoint this does not
/// know gets a chat body: the hub says whether it takes jobs at all.
fn prompt_body(endpoint: &str, model: &str, prompt: &str) -> serde_json::Value {
    match endpoint {
        "/v1/completions" => serde_json::json!({"model": model, "prompt": prompt}),
        "/v1/embeddings" | "/v1/responses" => serde_json::json!({"model": model, "input": prompt}),
        _ => serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
        }),
    }
}

/// `KEY=VALUE`, split at the first `=`.
pub(super) fn pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// An error answer as the hub's message; a refused key also says where a
/// client key goes.
pub(super) fn check(status: u16, body: &serde_json::Value) -> anyhow::Result<()> {
    super::http::check(status, body).map_err(|e| {
        if status == 401 {
            anyhow::anyhow!("{e} (a client key goes in --api-key or DROVER_API_KEY)")
        } else {
            e
        }
    })
}

/// Whether a job has ended: anything but waiting or running.
pub(super) fn ended(job: &Job) -> bool {
    !matches!(job.state.as_str(), "queued" | "running")
}

/// Looks at `job` until it has ended, more slowly the longer it takes.
pub(super) async fn wait(api: &Api, kind: Kind, mut job: Job) -> anyhow::Result<Job> {
    let mut pause = Duration::from_millis(50);
    while !ended(&job) {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL);
        job = get(api, kind, &job.id).await?;
    }
    Ok(job)
}

/// Why a job that ended did not complete, in one line.
pub(super) fn outcome(job: &Job) -> String {
    let id = &job.id;
    match job.state.as_str() {
        "cancelled" => format!("{id} was cancelled"),
        "expired" => format!("{id} expired: its deadline passed before it ran"),
        state => match why(job) {
            Some(why) => format!("{id} ended {state}: {why}"),
            None => format!("{id} ended {state}"),
        },
    }
}

/// What the answer's error says, else the last attempt's error.
fn why(job: &Job) -> Option<String> {
    if let Some(response) = &job.response {
        let message = response.body["error"]["message"].as_str();
        return Some(match message {
            Some(message) => format!("{} {message}", response.status_code),
            None => format!("the answer's status was {}", response.status_code),
        });
    }
    let last = job.attempts.last()?;
    let error = last.error.as_deref()?;
    Some(format!(
        "{} ({error})",
        plural(job.attempts.len(), "attempt")
    ))
}

pub(super) async fn get(api: &Api, kind: Kind, id: &str) -> anyhow::Result<Job> {
    let (status, body) = api
        .call(
            Method::GET,
            &format!("{}/{}", kind.base(), segment(id)),
            None,
        )
        .await?;
    check(status, &body)?;
    serde_json::from_value(body).context("unexpected answer")
}

/// `POST /v1/jobs/{id}/{verb}`.
async fn act(api: &Api, kind: Kind, id: &str, verb: &str) -> anyhow::Result<Job> {
    let path = format!("{}/{}/{verb}", kind.base(), segment(id));
    let (status, body) = api.call(Method::POST, &path, None).await?;
    check(status, &body)?;
    serde_json::from_value(body).context("unexpected answer")
}

pub(super) async fn ls(
    api: &Api,
    kind: Kind,
    state: Option<String>,
    batch: Option<String>,
    limit: Option<u32>,
    all: bool,
    json: bool,
) -> anyhow::Result<()> {
    // Fewer round trips for every page; one page is the hub's own size.
    let limit = limit.or(all.then_some(100));
    let mut jobs: Vec<Job> = Vec::new();
    let mut after: Option<String> = None;
    let has_more = loop {
        let mut query = Vec::new();
        if let Some(state) = &state {
            query.push(format!("state={}", segment(state)));
        }
        if let Some(batch) = &batch {
            query.push(format!("batch_id={}", segment(batch)));
        }
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(after) = &after {
            query.push(format!("after={}", segment(after)));
        }
        let path = if query.is_empty() {
            kind.base().to_string()
        } else {
            format!("{}?{}", kind.base(), query.join("&"))
        };
        let (status, body) = api.call(Method::GET, &path, None).await?;
        check(status, &body)?;
        let page: List<Job> = serde_json::from_value(body).context("unexpected answer")?;
        jobs.extend(page.data);
        match page.last_id {
            // A cursor that does not move would loop for ever.
            Some(last) if all && page.has_more && after.as_ref() != Some(&last) => {
                after = Some(last);
            }
            _ => break page.has_more,
        }
    };
    if json {
        return print_json(&List::page(jobs, has_more, |j| &j.id));
    }
    if jobs.is_empty() {
        say(&format!("no {}s\n", kind.noun()))?;
    } else {
        say(&job_table(&jobs, kind, now_secs()))?;
    }
    if has_more && !all {
        note(&format!(
            "more {}s are older: --all lists every one",
            kind.noun()
        ));
    }
    Ok(())
}

pub(super) fn job_table(jobs: &[Job], kind: Kind, now: i64) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.state.clone(),
                j.model.clone(),
                format!("{}/{}", j.attempts.len(), j.max_attempts),
                ago(j.created_at, now),
                j.ended_at.map_or_else(|| "-".into(), |t| ago(t, now)),
            ]
        })
        .collect();
    use Align::{Left, Right};
    table::render(
        &[
            "ID",
            "STATE",
            match kind {
                Kind::Job => "MODEL",
                Kind::Task => "CAPABILITY",
            },
            "ATTEMPTS",
            "CREATED",
            "ENDED",
        ],
        &[Left, Left, Left, Right, Right, Right],
        &rows,
    )
}

/// A job for a person: what it is and where it stands, every attempt, and
/// its answer.
fn describe(job: &Job, now: i64) -> String {
    let mut out = format!("{}: {}", job.id, job.state);
    if job.cancel_requested {
        out.push_str(" (asked to stop)");
    }
    out.push('\n');
    // A task is a job of endpoint "task" whose model is its capability.
    let mut facts: Vec<(&str, String)> = if job.endpoint == "task" {
        vec![("capability", job.model.clone())]
    } else {
        vec![
            ("model", job.model.clone()),
            ("endpoint", job.endpoint.clone()),
        ]
    };
    facts.push(("priority", job.priority.to_string()));
    facts.push(("created", ago(job.created_at, now)));
    if let Some(t) = job.started_at {
        facts.push(("started", ago(t, now)));
    }
    if let Some(t) = job.ended_at {
        facts.push(("ended", ago(t, now)));
    }
    if let Some(t) = job.next_attempt_at.filter(|&t| t > now) {
        facts.push(("next try", format!("in {}", table::age((t - now) as f64))));
    }
    if let Some(t) = job.deadline {
        let when = if t > now {
            format!("in {}", table::age((t - now) as f64))
        } else {
            ago(t, now)
        };
        facts.push(("deadline", when));
    }
    if let Some(batch) = &job.batch_id {
        let line = match &job.custom_id {
            Some(custom) => format!("{batch} (custom_id {custom})"),
            None => batch.clone(),
        };
        facts.push(("batch", line));
    }
    if let Some(url) = &job.callback_url {
        facts.push(("callback", url.clone()));
    }
    if let Some(serde_json::Value::Object(m)) = &job.metadata {
        let pairs: Vec<String> = m
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        facts.push(("metadata", pairs.join(", ")));
    }
    let width = facts
        .iter()
        .map(|(name, _)| name.len() + 1)
        .max()
        .unwrap_or(0)
        .max(9);
    for (name, value) in facts {
        out.push_str(&format!("  {name:<width$} {value}\n"));
    }
    if job.attempts.is_empty() {
        out.push_str(&format!("no attempts yet (at most {})\n", job.max_attempts));
    } else {
        out.push_str(&format!(
            "{} of at most {}:\n",
            plural(job.attempts.len(), "attempt"),
            job.max_attempts
        ));
        let rows: Vec<Vec<String>> = job
            .attempts
            .iter()
            .map(|a| {
                vec![
                    a.number.to_string(),
                    if a.backends.is_empty() {
                        "-".into()
                    } else {
                        a.backends.join(", ")
                    },
                    a.status.map_or_else(|| "-".into(), |s| s.to_string()),
                    took(a.ended_at_ms.saturating_sub(a.started_at_ms)),
                    a.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        use Align::{Left, Right};
        let attempts = table::render(
            &["#", "BACKENDS", "STATUS", "TOOK", "ERROR"],
            &[Right, Left, Right, Right, Left],
            &rows,
        );
        for line in attempts.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if let Some(response) = &job.response {
        out.push_str(&format!("answer ({}):\n", response.status_code));
        out.push_str(&body_text(&response.body));
        out.push('\n');
    }
    out
}

/// An answer's body as text: its JSON pretty, or the text it was.
pub(super) fn body_text(body: &serde_json::Value) -> String {
    match body {
        serde_json::Value::String(text) => text.clone(),
        json => serde_json::to_string_pretty(json).unwrap_or_else(|_| json.to_string()),
    }
}

pub(super) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    say(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// Writes `text` to stdout. A reader that has gone (`drover jobs ls |
/// head`) ends the output quietly, as it ends other Unix tools', where
/// `println!` would panic.
pub(super) fn say(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// A line for the person at the terminal, on stderr; lost if nobody reads
/// it.
pub(super) fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A time in Unix seconds as an age: `42s ago`.
pub(super) fn ago(at: i64, now: i64) -> String {
    format!("{} ago", table::age(now.saturating_sub(at) as f64))
}

/// An attempt's length: `85ms`, `1.2s`, `3m`.
fn took(ms: i64) -> String {
    match ms.max(0) {
        ms @ 0..=999 => format!("{ms}ms"),
        ms @ 1000..=119_999 => format!("{:.1}s", ms as f64 / 1000.0),
        ms => table::age(ms as f64 / 1000.0),
    }
}

pub(super) fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

pub(super) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use drover_proto::jobs::{JobAttempt, JobResponse};

    fn job(state: &str) -> Job {
        Job {
            id: "job_1".into(),
            object: "job".into(),
            endpoint: "/v1/chat/completions".into(),
            model: "m".into(),
            state: state.into(),
            priority: 10,
            max_attempts: 3,
            attempts: Vec::new(),
            created_at: 1_000,
            started_at: None,
            ended_at: None,
            next_attempt_at: None,
            deadline: None,
            cancel_requested: false,
            batch_id: None,
            custom_id: None,
            callback_url: None,
            metadata: None,
            response: None,
            note: None,
        }
    }

    #[test]
    fn prompt_bodies_take_each_endpoints_shape() {
        let chat = prompt_body("/v1/chat/completions", "m", "hi");
        assert_eq!(chat["messages"][0]["content"], "hi");
        assert_eq!(chat["messages"][0]["role"], "user");
        assert_eq!(prompt_body("/v1/completions", "m", "hi")["prompt"], "hi");
        assert_eq!(prompt_body("/v1/embeddings", "m", "hi")["input"], "hi");
        assert_eq!(prompt_body("/v1/responses", "m", "hi")["input"], "hi");
        assert_eq!(prompt_body("/v1/embeddings", "m", "hi")["model"], "m");
    }

    #[test]
    fn metadata_pairs_split_at_the_first_equals_sign() {
        assert_eq!(pair("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(pair("a=").unwrap(), ("a".into(), String::new()));
        assert!(pair("a").unwrap_err().contains("KEY=VALUE"));
        assert!(pair("=b").is_err());
    }

    #[test]
    fn a_job_that_did_not_complete_says_why_in_one_line() {
        let mut failed = job("failed");
        failed.response = Some(JobResponse {
            status_code: 404,
            body: serde_json::json!({"error": {"message": "the model \"x\" does not exist"}}),
        });
        assert_eq!(
            outcome(&failed),
            "job_1 ended failed: 404 the model \"x\" does not exist"
        );
        let mut dead = job("dead");
        dead.attempts = vec![attempt(1, Some("connect refused")), attempt(2, Some("502"))];
        assert_eq!(outcome(&dead), "job_1 ended dead: 2 attempts (502)");
        assert_eq!(outcome(&job("cancelled")), "job_1 was cancelled");
    }

    fn attempt(number: u32, error: Option<&str>) -> JobAttempt {
        JobAttempt {
            number,
            started_at_ms: 1_000_000,
            ended_at_ms: 1_001_500,
            backends: vec!["a".into(), "b".into()],
            status: Some(502),
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn a_description_shows_every_attempt_and_the_answer() {
        let mut done = job("completed");
        done.started_at = Some(1_001);
        done.ended_at = Some(1_002);
        done.attempts = vec![attempt(1, Some("the server answered 502"))];
        done.response = Some(JobResponse {
            status_code: 200,
            body: serde_json::json!({"choices": [{"text": "hello"}]}),
        });
        let text = describe(&done, 1_062);
        assert!(text.starts_with("job_1: completed\n"), "{text}");
        assert!(text.contains("  model     m\n"), "{text}");
        assert!(text.contains("  created   62s ago\n"), "{text}");
        assert!(text.contains("1 attempt of at most 3:"), "{text}");
        let row = text.lines().find(|l| l.contains("a, b")).unwrap();
        assert!(row.contains("502") && row.contains("1.5s"), "{row}");
        assert!(row.ends_with("the server answered 502"), "{row}");
        assert!(text.contains("answer (200):\n{\n"), "{text}");
        assert!(text.contains("\"text\": \"hello\""), "{text}");
        // A body that was not JSON is shown as it came.
        done.response = Some(JobResponse {
            status_code: 200,
            body: serde_json::json!("plain words"),
        });
        assert!(describe(&done, 1_062).ends_with("answer (200):\nplain words\n"));
    }

    #[test]
    fn lengths_read_as_a_person_reads_them() {
        assert_eq!(took(85), "85ms");
        assert_eq!(took(1_240), "1.2s");
        assert_eq!(took(-5), "0ms");
        assert_eq!(took(600_000), "10m");
    }
}
