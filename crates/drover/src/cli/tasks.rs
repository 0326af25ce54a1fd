//! `drover tasks submit|ls|get|cancel|plan|plans`: work for capability
//! workers from the shell. A task is a job for a worker (`drover jobs`
//! reads it too), so these take a client key (`--api-key`) and see that
//! key's tasks only.

use std::path::PathBuf;

use anyhow::Context;
use drover_proto::batch::List;
use drover_proto::workers::{CreateTask, PlanRequest, PlanView};
use http::Method;

use super::http::{Api, ClientHub, segment};
use super::jobs::{self, Kind, note, print_json, say};
use super::table::{self, Align};

#[derive(clap::Args)]
pub struct TasksArgs {
    #[command(flatten)]
    pub target: ClientHub,
    /// Print the hub's JSON instead.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: TasksCommand,
}

#[derive(clap::Subcommand)]
pub enum TasksCommand {
    /// Hand a task to the workers offering its capability; prints its id,
    /// or with --wait its output.
    Submit(Box<SubmitArgs>),
    /// The key's tasks, newest first: id, state, capability, attempts,
    /// created, ended.
    Ls {
        /// Only tasks in this state: queued, running, completed, failed,
        /// dead, cancelled or expired.
        #[arg(long)]
        state: Option<String>,
        /// Tasks a page, 1 to 100 (the hub's 20 unless given; 100 with
        /// --all).
        #[arg(long)]
        limit: Option<u32>,
        /// Every page, not only the newest.
        #[arg(long)]
        all: bool,
    },
    /// One task: its state, every attempt (each naming its worker), and
    /// its output once it has one.
    Get { id: String },
    /// Cancel a task: at once if it waits; a running one's worker is told
    /// to stop.
    Cancel { id: String },
    /// Ask a model to turn a request in plain language into tasks, and
    /// submit them; prints the plan, or with --wait the tasks' outputs.
    Plan(Box<PlanArgs>),
    /// The key's plans, newest first; with an id, that plan with its
    /// model's answer and its tasks' outputs.
    Plans {
        id: Option<String>,
        /// Plans a page, 1 to 100 (20 unless given).
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(clap::Args)]
pub struct SubmitArgs {
    /// The capability a worker offers (`drover worker --capability NAME`).
    #[arg(long)]
    pub capability: String,
    /// The task's input: JSON, or text (sent as a JSON string).
    #[arg(long, conflicts_with = "input_file")]
    pub input: Option<String>,
    /// The task's input as JSON from a file (- for stdin).
    #[arg(long, value_name = "FILE|-")]
    pub input_file: Option<PathBuf>,
    /// A task for a capability no worker offers yet waits for one until
    /// its --deadline.
    #[command(flatten)]
    pub terms: jobs::Terms,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    /// What to do, in plain language.
    pub request: String,
    /// The model that plans (default: the hub's workers.planner_model).
    #[arg(long)]
    pub model: Option<String>,
    /// The tasks' priority, 0 to 100.
    #[arg(long)]
    pub priority: Option<u8>,
    /// When the tasks must have run by: Unix seconds, or a duration.
    #[arg(long)]
    pub deadline: Option<String>,
    /// Wait until every task has ended and print their outputs; exit 1
    /// unless all completed.
    #[arg(long)]
    pub wait: bool,
}

pub async fn run(args: TasksArgs) -> anyhow::Result<()> {
    let api = args.target.api();
    let json = args.json;
    match args.command {
        TasksCommand::Submit(submit) => self::submit(&api, *submit, json).await,
        TasksCommand::Ls { state, limit, all } => {
            jobs::ls(&api, Kind::Task, state, None, limit, all, json).await
        }
        TasksCommand::Get { id } => jobs::show(&api, Kind::Task, &id, json).await,
        TasksCommand::Cancel { id } => jobs::cancel(&api, Kind::Task, &id, json).await,
        TasksCommand::Plan(plan) => self::plan(&api, *plan, json).await,
        TasksCommand::Plans { id: Some(id), .. } => {
            let (status, body) = api
                .call(
                    Method::GET,
                    &format!("/v1/tasks/plans/{}", segment(&id)),
                    None,
                )
                .await?;
            jobs::check(status, &body)?;
            let plan: PlanView = serde_json::from_value(body).context("unexpected answer")?;
            if json {
                return print_json(&plan);
            }
            say(&describe_plan(&plan, jobs::now_secs()))
        }
        TasksCommand::Plans { id: None, limit } => {
            let path = match limit {
                Some(n) => format!("/v1/tasks/plans?limit={n}"),
                None => "/v1/tasks/plans".to_string(),
            };
            let (status, body) = api.call(Method::GET, &path, None).await?;
            jobs::check(status, &body)?;
            let page: List<PlanView> = serde_json::from_value(body).context("unexpected answer")?;
            if json {
                return print_json(&page);
            }
            if page.data.is_empty() {
                return say("no plans\n");
            }
            say(&plan_table(&page.data, jobs::now_secs()))
        }
    }
}

async fn submit(api: &Api, args: SubmitArgs, json: bool) -> anyhow::Result<()> {
    let input = match (&args.input, &args.input_file) {
        (_, Some(path)) => serde_json::to_value(jobs::read_body(path)?)?,
        // JSON where it parses; otherwise the words as a string, as a
        // shell user means `--input 'hello world'`.
        (Some(text), None) => {
            serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.clone()))
        }
        (None, None) => anyhow::bail!("give the task's input: --input JSON or --input-file FILE"),
    };
    let terms = args.terms;
    let create = CreateTask {
        capability: args.capability,
        input,
        priority: terms.priority,
        max_attempts: terms.max_attempts,
        deadline: terms.deadline.as_deref().map(jobs::deadline),
        callback_url: terms.callback_url,
        metadata: jobs::metadata_of(terms.metadata)?,
    };
    let payload = serde_json::to_vec(&create)?;
    let task = jobs::post_new(api, Kind::Task, payload, terms.idempotency_key.as_deref()).await?;
    jobs::finish_submit(api, Kind::Task, task, terms.wait, json).await
}

async fn plan(api: &Api, args: PlanArgs, json: bool) -> anyhow::Result<()> {
    let asked = PlanRequest {
        request: args.request,
        model: args.model,
        priority: args.priority,
        max_attempts: None,
        deadline: args.deadline.as_deref().map(jobs::deadline),
    };
    let payload = bytes::Bytes::from(serde_json::to_vec(&asked)?);
    let answer = api
        .send(Method::POST, "/v1/tasks/plan", Vec::new(), Some(payload))
        .await?;
    if answer.status == 422 {
        // The model's answer is worth seeing: it is why.
        if let Ok(plan) = serde_json::from_value::<PlanView>(answer.json["plan"].clone()) {
            note(&describe_plan(&plan, jobs::now_secs()));
        }
    }
    jobs::check(answer.status, &answer.json)?;
    let mut plan: PlanView = serde_json::from_value(answer.json).context("unexpected answer")?;
    if !args.wait {
        if json {
            return print_json(&plan);
        }
        return say(&describe_plan(&plan, jobs::now_secs()));
    }
    note(&format!(
        "{}: {} submitted; waiting for them to end (Ctrl-C stops waiting, not the tasks)",
        plan.id,
        jobs::plural(plan.tasks.len(), "task")
    ));
    let mut ended = Vec::with_capacity(plan.tasks.len());
    for task in std::mem::take(&mut plan.tasks) {
        ended.push(jobs::wait(api, Kind::Task, task).await?);
    }
    plan.tasks = ended;
    if json {
        print_json(&plan)?;
    } else {
        say(&describe_plan(&plan, jobs::now_secs()))?;
    }
    if let Some(task) = plan.tasks.iter().find(|t| t.state != "completed") {
        anyhow::bail!("{}", jobs::outcome(task));
    }
    Ok(())
}

/// A plan for a person: the request, the model's answer when the plan was
/// refused, and each task with where it stands (and its output).
fn describe_plan(plan: &PlanView, now: i64) -> String {
    let mut out = format!(
        "{}: {:?} planned by {} {}\n",
        plan.id,
        plan.request,
        plan.model,
        jobs::ago(plan.created_at, now)
    );
    if let Some(error) = &plan.error {
        out.push_str(&format!(
            "refused: {error}\nthe model answered:\n{}\n",
            plan.answer
        ));
        return out;
    }
    for (i, task) in plan.tasks.iter().enumerate() {
        let input = plan
            .plan
            .as_ref()
            .and_then(|p| p["tasks"].get(i))
            .map(|step| step["input"].to_string())
            .unwrap_or_default();
        out.push_str(&format!(
            "  {}. {} {} {input}: {}\n",
            i + 1,
            task.id,
            task.model,
            task.state
        ));
        if let Some(response) = &task.response {
            for line in jobs::body_text(&response.body).lines() {
                out.push_str(&format!("     {line}\n"));
            }
        }
    }
    out
}

fn plan_table(plans: &[PlanView], now: i64) -> String {
    let rows: Vec<Vec<String>> = plans
        .iter()
        .map(|p| {
            let done = p.tasks.iter().filter(|t| t.state == "completed").count();
            vec![
                p.id.clone(),
                if p.error.is_some() {
                    "refused".into()
                } else {
                    format!("{done}/{} done", p.tasks.len())
                },
                p.model.clone(),
                jobs::ago(p.created_at, now),
                clip(&p.request, 48),
            ]
        })
        .collect();
    use Align::{Left, Right};
    table::render(
        &["ID", "TASKS", "MODEL", "CREATED", "REQUEST"],
        &[Left, Left, Left, Right, Left],
        &rows,
    )
}

/// `text` on one line, cut to `max` characters.
fn clip(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let cut: String = line.chars().take(max.saturating_sub(3)).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_long_request_is_cut_on_one_line() {
        assert_eq!(clip("play\nweezer", 48), "play weezer");
        assert_eq!(clip(&"a".repeat(60), 10), "aaaaaaa...");
    }

    #[test]
    fn a_refused_plan_shows_the_models_answer() {
        let plan = PlanView {
            id: "plan_1".into(),
            object: "plan".into(),
            request: "play weezer".into(),
            model: "m".into(),
            answer: "the river".into(),
            plan: None,
            error: Some("the model's answer is not JSON".into()),
            tasks: Vec::new(),
            created_at: 100,
        };
        let text = describe_plan(&plan, 160);
        assert!(
            text.starts_with("plan_1: \"play weezer\" planned by m 60s ago\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "refused: the model's answer is not JSON\nthe model answered:\nthe river\n"
            ),
            "{text}"
        );
    }
}
