//! `drover jobs` from the shell: the real binary against a real `drover
//! serve` (its own data directory, a simulated server behind it), each
//! command's output and exit code as a person or a script sees them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use drover_sim::{SimHandle, SimServer};
use drover_tests::{Client, openai, wait_until_within};
use http::Method;
use serde_json::Value;
use tokio::net::TcpListener;

/// The binary with none of the test runner's DROVER_* variables.
fn drover() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drover"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DROVER_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("DROVER_LOG", "warn");
    cmd
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-jobs-cli-{name}-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `drover serve` process, killed (and its directory removed) when
/// dropped, so a failing test leaves nothing running.
struct Hub {
    child: Child,
    url: String,
    dir: PathBuf,
    /// A client key, for the hub's own readiness checks.
    key: Option<String>,
    client: Client,
    _sim: SimHandle,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a simulated server for model `m` (answers after `ttft_ms`) and
/// `drover serve` on a port of its choosing in `dir`, with quick job
/// retries; returns once the server's model is listed.
async fn start(dir: PathBuf, ttft_ms: u64, env: &[(&str, &str)], key: Option<&str>) -> Hub {
    let sim = SimServer::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        openai(&["m"], 1, ttft_ms),
    )
    .unwrap();
    let mut cmd = drover();
    cmd.env("DROVER_JOBS__POLL_INTERVAL", "50ms")
        .env("DROVER_JOBS__BACKOFF", "20ms")
        .env("DROVER_JOBS__MAX_BACKOFF", "100ms")
        .envs(env.iter().copied())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .args(["--backend", &format!("openai={},name=sim", sim.url())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("drover serve starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // The banner names the port; the rest of its log goes on to the
    // test's stderr, and the pipe never fills.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest.split_whitespace().next().unwrap_or_default();
                let _ = tx.send(url.to_string());
            }
            eprintln!("hub: {line}");
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("drover serve prints where it listens");
    let hub = Hub {
        child,
        client: Client::new(&url),
        url,
        dir,
        key: key.map(str::to_string),
        _sim: sim,
    };
    wait_until_within("the hub lists m", Duration::from_secs(30), || {
        let client = hub.client.clone();
        let auth = hub.key.as_ref().map(|k| format!("Bearer {k}"));
        async move {
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            let r = client
                .call(Method::GET, "/v1/models", &headers, Bytes::new())
                .await;
            r.status == 200 && r.json()["data"].to_string().contains("\"m\"")
        }
    })
    .await;
    hub
}

impl Hub {
    /// `drover jobs --hub URL ARGS...`.
    fn jobs(&self, args: &[&str]) -> Command {
        let mut cmd = drover();
        cmd.args(["jobs", "--hub", &self.url]).args(args);
        cmd
    }

    /// A job as the hub has it, through the API (not the command under
    /// test).
    async fn job(&self, id: &str) -> Value {
        let auth = self.key.as_ref().map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        self.client
            .call(
                Method::GET,
                &format!("/v1/jobs/{id}"),
                &headers,
                Bytes::new(),
            )
            .await
            .json()
    }

    async fn until_state(&self, id: &str, state: &str) {
        wait_until_within(
            &format!("{id} is {state}"),
            Duration::from_secs(20),
            || async move { self.job(id).await["state"] == state },
        )
        .await;
    }
}

/// What a command printed and how it ended.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{self:?}");
        self
    }

    /// Exit 1 with `words` on stderr, once, and nothing on stdout.
    fn refused(self, words: &str) -> Self {
        assert_eq!(self.code, Some(1), "{self:?}");
        assert_eq!(self.stderr.matches(words).count(), 1, "{words:?}: {self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// The table's rows under its head.
    fn rows(&self) -> Vec<&str> {
        self.stdout.lines().skip(1).collect()
    }
}

/// Runs `cmd` (off the runtime: the simulator runs on it), with `stdin`.
async fn run(mut cmd: Command, stdin: Option<&str>) -> Out {
    let stdin = stdin.map(str::to_string);
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("the command ends within a minute")
        .unwrap();
    let out = Out {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    assert!(!out.stderr.contains("panicked"), "{out:?}");
    out
}

/// The first `job_...` word in `text`.
fn job_id(text: &str) -> String {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.starts_with("job_"))
        .unwrap_or_else(|| panic!("no job id in {text:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_prints_the_answer_and_ls_and_get_show_the_job() {
    let hub = start(fresh_dir("answer"), 0, &[], None).await;

    // --wait: the answer's body, and nothing else, on stdout.
    let out = run(
        hub.jobs(&["submit", "--model", "m", "--prompt", "hello", "--wait"]),
        None,
    )
    .await
    .ok();
    let answer = out.json();
    assert!(
        answer["choices"][0]["message"]["content"].is_string(),
        "{out:?}"
    );
    let first = job_id(&run(hub.jobs(&["ls", "--json"]), None).await.ok().stdout);

    // Without it: the id alone.
    let out = run(
        hub.jobs(&[
            "submit",
            "--model",
            "m",
            "--prompt",
            "again",
            "--metadata",
            "run=7",
            "--metadata",
            "who=me",
        ]),
        None,
    )
    .await
    .ok();
    let second = out.stdout.trim().to_string();
    assert!(
        second.starts_with("job_") && !second.contains(char::is_whitespace),
        "{out:?}"
    );
    hub.until_state(&second, "completed").await;

    // A body from stdin goes as written, to the endpoint named.
    let out = run(
        hub.jobs(&[
            "submit",
            "--endpoint",
            "/v1/completions",
            "--body",
            "-",
            "--json",
        ]),
        Some(r#"{"prompt": "x", "model": "m", "max_tokens": 3}"#),
    )
    .await
    .ok();
    let third = out.json();
    assert_eq!(third["endpoint"], "/v1/completions", "{out:?}");
    assert_eq!(third["model"], "m", "{out:?}");
    let third = third["id"].as_str().unwrap().to_string();
    hub.until_state(&third, "completed").await;

    // ls: a table, newest first.
    let out = run(hub.jobs(&["ls"]), None).await.ok();
    let head = out.stdout.lines().next().unwrap();
    for column in ["ID", "STATE", "MODEL", "ATTEMPTS", "CREATED", "ENDED"] {
        assert!(head.contains(column), "{out:?}");
    }
    let rows = out.rows();
    assert_eq!(rows.len(), 3, "{out:?}");
    assert!(rows[0].starts_with(&third), "{out:?}");
    assert!(rows[2].starts_with(&first), "{out:?}");
    let cells: Vec<&str> = rows[2].split_whitespace().collect();
    assert_eq!(&cells[1..4], ["completed", "m", "1/3"], "{out:?}");
    assert!(rows[2].ends_with("ago"), "{out:?}");

    // A page, then every page.
    let out = run(hub.jobs(&["ls", "--limit", "2"]), None).await.ok();
    assert_eq!(out.rows().len(), 2, "{out:?}");
    assert!(out.stderr.contains("--all"), "{out:?}");
    let out = run(hub.jobs(&["ls", "--limit", "2", "--all"]), None)
        .await
        .ok();
    assert_eq!(out.rows().len(), 3, "{out:?}");
    let out = run(hub.jobs(&["ls", "--limit", "1", "--all", "--json"]), None)
        .await
        .ok();
    let list = out.json();
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "{out:?}");
    assert_eq!(list["has_more"], false, "{out:?}");
    let out = run(hub.jobs(&["ls", "--state", "dead"]), None).await.ok();
    assert_eq!(out.stdout, "no jobs\n", "{out:?}");

    // get: where it stands, every attempt, the answer.
    let out = run(hub.jobs(&["get", &first]), None).await.ok();
    let text = &out.stdout;
    assert!(
        text.starts_with(&format!("{first}: completed\n")),
        "{out:?}"
    );
    assert!(text.contains("  model     m\n"), "{out:?}");
    assert!(
        text.contains("  endpoint  /v1/chat/completions\n"),
        "{out:?}"
    );
    assert!(text.contains("1 attempt of at most 3:"), "{out:?}");
    let attempts: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("# "))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(attempts.len(), 1, "{out:?}");
    assert_eq!(attempts[0][..3], ["1", "sim", "200"], "{out:?}");
    assert!(text.contains("answer (200):\n{\n"), "{out:?}");
    assert!(text.contains("\"choices\""), "{out:?}");
    let out = run(hub.jobs(&["get", &second]), None).await.ok();
    assert!(
        out.stdout.contains("  metadata  run=7, who=me\n"),
        "{out:?}"
    );
    let out = run(hub.jobs(&["get", "--json", &first]), None).await.ok();
    let job = out.json();
    assert_eq!(job["attempts"][0]["backends"][0], "sim", "{out:?}");
    assert_eq!(job["response"]["status_code"], 200, "{out:?}");

    // A reader that goes away (`| head`) ends the output, not in a panic.
    let mut cmd = hub.jobs(&["get", &first]);
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    // A completed job is not retried: the hub's word.
    run(hub.jobs(&["retry", &first]), None)
        .await
        .refused("only a job that ended without success can be retried");

    // The same idempotency key and request: the same job, said so.
    let again = ["submit", "--model", "m", "--prompt", "once"];
    let keyed = [&again[..], &["--idempotency-key", "k-1"]].concat();
    let one = run(hub.jobs(&keyed), None).await.ok();
    let two = run(hub.jobs(&keyed), None).await.ok();
    assert_eq!(one.stdout, two.stdout, "{two:?}");
    assert!(two.stderr.contains("made"), "{two:?}");
    let other = [
        "submit",
        "--model",
        "m",
        "--prompt",
        "twice",
        "--idempotency-key",
        "k-1",
    ];
    run(hub.jobs(&other), None)
        .await
        .refused("was used for job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_problem() {
    let hub = start(fresh_dir("bad"), 0, &[], None).await;

    let out = run(
        hub.jobs(&[
            "submit",
            "--endpoint",
            "/v1/images",
            "--model",
            "m",
            "--prompt",
            "x",
        ]),
        None,
    )
    .await
    .refused("endpoint \"/v1/images\" cannot be a job");
    assert!(
        out.stderr.starts_with("drover: the hub answered 400: "),
        "{out:?}"
    );
    run(hub.jobs(&["submit", "--body", "-"]), Some("[1, 2]"))
        .await
        .refused("body must be a JSON object");
    run(
        hub.jobs(&["submit", "--model", "m", "--prompt", "x", "--deadline", "1"]),
        None,
    )
    .await
    .refused("deadline has passed already");
    run(
        hub.jobs(&[
            "submit",
            "--model",
            "m",
            "--prompt",
            "x",
            "--deadline",
            "soon",
        ]),
        None,
    )
    .await
    .refused("deadline \"soon\" is neither");
    run(
        hub.jobs(&[
            "submit",
            "--model",
            "m",
            "--prompt",
            "x",
            "--priority",
            "101",
        ]),
        None,
    )
    .await
    .refused("priority must be from 0 to 100");
    run(hub.jobs(&["ls", "--state", "lost"]), None)
        .await
        .refused("state \"lost\" is none of");
    run(hub.jobs(&["ls", "--limit", "0"]), None)
        .await
        .refused("limit must be from 1 to 100");
    run(hub.jobs(&["get", "job_nope"]), None)
        .await
        .refused("no job \"job_nope\"");
    run(hub.jobs(&["cancel", "../../admin/backends"]), None)
        .await
        .refused("no job");
    run(hub.jobs(&["retry", "job nope?"]), None)
        .await
        .refused("no job \"job nope?\"");

    // What the command itself can tell, before asking the hub.
    run(hub.jobs(&["submit", "--body", "-"]), Some("{\"model\": "))
        .await
        .refused("the body in stdin is not JSON");
    let missing = hub.dir.join("missing.json");
    run(
        hub.jobs(&["submit", "--body", missing.to_str().unwrap()]),
        None,
    )
    .await
    .refused("cannot read the body from");
    run(
        hub.jobs(&[
            "submit",
            "--model",
            "m",
            "--prompt",
            "x",
            "--metadata",
            "a=1",
            "--metadata",
            "a=2",
        ]),
        None,
    )
    .await
    .refused("--metadata \"a\" is given twice");
    run(
        hub.jobs(&[
            "submit",
            "--model",
            "m",
            "--prompt",
            "x",
            "--idempotency-key",
            "line\nbreak",
        ]),
        None,
    )
    .await
    .refused("--idempotency-key");
    run(hub.jobs(&["--api-key", "two\nlines", "ls"]), None)
        .await
        .refused("the key has characters a header cannot carry");
    // Usage errors are clap's: exit 2, naming the flag.
    let out = run(hub.jobs(&["submit", "--model", "m"]), None).await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--prompt"), "{out:?}");
    let out = run(
        hub.jobs(&[
            "submit",
            "--model",
            "m",
            "--prompt",
            "x",
            "--metadata",
            "novalue",
        ]),
        None,
    )
    .await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("\"novalue\" is not KEY=VALUE"),
        "{out:?}"
    );

    // A hub that is not there is named.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut cmd = drover();
    cmd.args(["jobs", "ls", "--hub", &gone]);
    run(cmd, None)
        .await
        .refused(&format!("cannot reach the hub at {gone}"));
    let mut cmd = drover();
    cmd.args(["jobs", "get", "job_x"])
        .env("DROVER_HUB", "no url at all");
    run(cmd, None).await.refused("no url at all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_retry_say_what_happened() {
    // One job claimed at a time, each running a minute: the second waits.
    let hub = start(
        fresh_dir("cancel"),
        60_000,
        &[("DROVER_JOBS__WINDOW", "1")],
        None,
    )
    .await;

    // No backend serves its model: it fails, and --wait says so.
    let out = run(
        hub.jobs(&[
            "submit",
            "--model",
            "nobody-serves-this",
            "--prompt",
            "x",
            "--wait",
        ]),
        None,
    )
    .await;
    let failed = job_id(&out.stderr);
    let out = out.refused(&format!("{failed} ended failed: 404 "));
    assert!(out.stderr.contains("nobody-serves-this"), "{out:?}");
    let out = run(hub.jobs(&["retry", &failed]), None).await.ok();
    assert_eq!(
        out.stdout,
        format!("{failed} is queued again (1 attempt so far, at most 4 in all)\n"),
        "{out:?}"
    );
    hub.until_state(&failed, "failed").await;
    let out = run(hub.jobs(&["cancel", &failed]), None).await.ok();
    assert_eq!(
        out.stdout,
        format!("{failed} had ended already (failed): nothing to cancel\n"),
        "{out:?}"
    );

    let out = run(
        hub.jobs(&["submit", "--model", "m", "--prompt", "long"]),
        None,
    )
    .await
    .ok();
    let running = out.stdout.trim().to_string();
    hub.until_state(&running, "running").await;
    let out = run(
        hub.jobs(&["submit", "--model", "m", "--prompt", "later"]),
        None,
    )
    .await
    .ok();
    let waiting = out.stdout.trim().to_string();
    assert_eq!(hub.job(&waiting).await["state"], "queued");

    let out = run(hub.jobs(&["cancel", &waiting]), None).await.ok();
    assert_eq!(out.stdout, format!("{waiting} is cancelled\n"), "{out:?}");
    let out = run(hub.jobs(&["cancel", &running]), None).await.ok();
    assert!(
        out.stdout
            .starts_with(&format!("{running} is running: asked to stop")),
        "{out:?}"
    );
    hub.until_state(&running, "cancelled").await;
    let out = run(hub.jobs(&["get", &running]), None).await.ok();
    assert!(
        out.stdout.starts_with(&format!("{running}: cancelled\n")),
        "{out:?}"
    );
    assert!(out.stdout.contains("cancelled while it ran"), "{out:?}");

    // A cancelled job may be retried; --json prints the job.
    let out = run(hub.jobs(&["retry", "--json", &waiting]), None)
        .await
        .ok();
    assert_eq!(out.json()["state"], "queued", "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_key_comes_from_api_key_or_drover_api_key() {
    let dir = fresh_dir("keys");
    let key = |args: &[&str]| {
        let out = drover()
            .args(["keys", "create", "--data-dir"])
            .arg(&dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let client = key(&["batch"]);
    let admin = key(&["ops", "--kind", "admin"]);
    let hub = start(dir.clone(), 0, &[], Some(&client)).await;

    let out = run(hub.jobs(&["ls"]), None)
        .await
        .refused("this hub needs an API key");
    assert!(
        out.stderr.contains("--api-key or DROVER_API_KEY"),
        "{out:?}"
    );
    run(hub.jobs(&["--api-key", &admin, "ls"]), None)
        .await
        .refused("inference needs a client key");

    let out = run(
        hub.jobs(&[
            "--api-key",
            &client,
            "submit",
            "--model",
            "m",
            "--prompt",
            "hi",
            "--wait",
        ]),
        None,
    )
    .await
    .ok();
    assert!(out.json()["choices"].is_array(), "{out:?}");
    let mut cmd = drover();
    cmd.args(["jobs", "ls"])
        .env("DROVER_HUB", &hub.url)
        .env("DROVER_API_KEY", &client);
    let out = run(cmd, None).await.ok();
    assert_eq!(out.rows().len(), 1, "{out:?}");
    assert!(out.rows()[0].contains("completed"), "{out:?}");
}

// `drover worker`: a command as a capability worker; its tasks are jobs of
// kind `task`, read back with the same helpers.

/// A `drover worker` process, killed when the test ends however it ends.
struct Running(Child);

impl Running {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Hub {
    /// `drover worker --hub URL --capability CAP -- COMMAND...`, running.
    fn worker(&self, capability: &str, command: &[&str]) -> Running {
        let mut cmd = drover();
        cmd.args([
            "worker",
            "--hub",
            &self.url,
            "--capability",
            capability,
            "--",
        ])
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        Running(cmd.spawn().expect("drover worker starts"))
    }

    async fn task(&self, capability: &str, input: Value) -> String {
        let r = self
            .client
            .post(
                "/v1/tasks",
                &serde_json::json!({"capability": capability, "input": input}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_string()
    }

    /// The workers the hub knows: (id, tasks held).
    async fn workers(&self) -> Vec<(String, u64)> {
        let listed = self.client.get("/admin/workers").await.json();
        listed["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["id"].as_str().unwrap().to_string(),
                    w["in_flight"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    async fn until_workers(&self, n: usize) {
        wait_until_within(
            &format!("{n} workers registered"),
            Duration::from_secs(20),
            || async move { self.workers().await.len() == n },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_is_a_worker_its_stdout_the_output_and_a_failure_its_stderr() {
    let hub = start(fresh_dir("worker"), 0, &[], None).await;
    let _upper = hub.worker("upper,max=2", &["sh", "-c", "tr a-z A-Z"]);
    let _echo = hub.worker("echo", &["cat"]);
    let _broken = hub.worker("broken", &["sh", "-c", "echo boom >&2; exit 3"]);
    hub.until_workers(3).await;

    let text = hub.task("upper", Value::from("hello")).await;
    let json = hub.task("echo", serde_json::json!({"a": [1, 2]})).await;
    let failing = hub.task("broken", Value::from("x")).await;
    hub.until_state(&text, "completed").await;
    assert_eq!(hub.job(&text).await["response"]["body"], "HELLO");
    hub.until_state(&json, "completed").await;
    assert_eq!(
        hub.job(&json).await["response"]["body"],
        serde_json::json!({"a": [1, 2]})
    );
    hub.until_state(&failing, "failed").await;
    let failed = hub.job(&failing).await;
    let error = failed["attempts"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("status 3") && error.contains("boom"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_has_its_task_finished_by_another_once() {
    let hub = start(
        fresh_dir("worker-killed"),
        0,
        &[("DROVER_WORKERS__HEARTBEAT", "200ms")],
        None,
    )
    .await;
    let mut slow = hub.worker("shell", &["sh", "-c", "sleep 5; echo slow"]);
    hub.until_workers(1).await;
    let task = hub.task("shell", Value::from("")).await;
    wait_until_within(
        "the slow worker holds the task",
        Duration::from_secs(20),
        || async {
            hub.workers()
                .await
                .first()
                .is_some_and(|(_, held)| *held == 1)
        },
    )
    .await;
    let _fast = hub.worker("shell", &["sh", "-c", "echo fast"]);
    hub.until_workers(2).await;
    // SIGKILL: the worker says nothing more.
    slow.kill();
    hub.until_state(&task, "completed").await;
    let done = hub.job(&task).await;
    assert_eq!(done["response"]["body"], "fast\n", "{done}");
    let attempts = done["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "once on each: {done}");
    assert_eq!(attempts[0]["status"], 503, "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_worker_its_task_finishes_and_it_leaves() {
    let hub = start(fresh_dir("worker-drain"), 0, &[], None).await;
    let mut worker = hub.worker("shell", &["sh", "-c", "sleep 1; echo done"]);
    hub.until_workers(1).await;
    let task = hub.task("shell", Value::from("")).await;
    wait_until_within(
        "the worker holds the task",
        Duration::from_secs(20),
        || async {
            hub.workers()
                .await
                .first()
                .is_some_and(|(_, held)| *held == 1)
        },
    )
    .await;
    let pid = worker.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || worker.0.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    hub.until_state(&task, "completed").await;
    assert_eq!(hub.job(&task).await["response"]["body"], "done\n");
    assert!(hub.workers().await.is_empty(), "it left");
}

impl Hub {
    /// `drover tasks --hub URL ARGS...`.
    fn tasks(&self, args: &[&str]) -> Command {
        let mut cmd = drover();
        cmd.args(["tasks", "--hub", &self.url]).args(args);
        cmd
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_submit_ls_get_cancel_and_a_plan_from_the_shell() {
    let hub = start(fresh_dir("tasks-cli"), 0, &[], None).await;
    let _upper = hub.worker("upper", &["sh", "-c", "tr a-z A-Z"]);
    hub.until_workers(1).await;

    // Words that are not JSON go as a string; --wait prints the output.
    let out = run(
        hub.tasks(&[
            "submit",
            "--capability",
            "upper",
            "--input",
            "hello there",
            "--wait",
        ]),
        None,
    )
    .await
    .ok();
    assert_eq!(out.stdout, "HELLO THERE\n", "{out:?}");
    let id = run(
        hub.tasks(&["submit", "--capability", "upper", "--input", "{\"a\": 1}"]),
        None,
    )
    .await
    .ok()
    .stdout
    .trim()
    .to_string();
    assert!(id.starts_with("task_"), "{id}");
    hub.until_state(&id, "completed").await;
    let ls = run(hub.tasks(&["ls"]), None).await.ok();
    assert!(ls.stdout.starts_with("ID "), "{ls:?}");
    assert!(
        ls.stdout.lines().next().unwrap().contains("CAPABILITY"),
        "{ls:?}"
    );
    assert_eq!(ls.rows().len(), 2, "{ls:?}");
    let get = run(hub.tasks(&["get", &id]), None).await.ok();
    assert!(get.stdout.contains("  capability  upper\n"), "{get:?}");
    assert!(get.stdout.contains("answer (200):"), "{get:?}");

    // A capability nobody offers: taken, with a note, and cancellable.
    let waiting = run(
        hub.tasks(&["submit", "--capability", "nobody", "--input", "1"]),
        None,
    )
    .await
    .ok();
    assert!(
        waiting.stderr.contains("no worker offers \"nobody\" yet"),
        "{waiting:?}"
    );
    let waiting = waiting.stdout.trim().to_string();
    let cancel = run(hub.tasks(&["cancel", &waiting]), None).await.ok();
    // Between two looks for a worker it is queued; during one, running.
    assert!(
        cancel.stdout.ends_with("is cancelled\n") || cancel.stdout.contains("asked to stop"),
        "{cancel:?}"
    );
    hub.until_state(&waiting, "cancelled").await;

    // No input: named. A plan from the fleet's model (the simulator meets
    // the plan's JSON schema, as llama.cpp's server does) runs on the
    // worker, and --wait prints each task with its output.
    run(hub.tasks(&["submit", "--capability", "upper"]), None)
        .await
        .refused("give the task's input");
    let plan = run(
        hub.tasks(&["plan", "shout hello", "--model", "m", "--wait"]),
        None,
    )
    .await
    .ok();
    assert!(
        plan.stdout.contains("\"shout hello\" planned by m"),
        "{plan:?}"
    );
    assert!(plan.stdout.contains(" upper "), "{plan:?}");
    assert!(plan.stdout.contains(": completed\n"), "{plan:?}");
    let plans = run(hub.tasks(&["plans"]), None).await.ok();
    assert_eq!(plans.rows().len(), 1, "{plans:?}");
    assert!(plans.rows()[0].contains(" done "), "{plans:?}");
}

impl Hub {
    /// `drover agent --hub URL --state-dir DIR [--token T]`, running.
    fn agent(&self, state: &std::path::Path, token: Option<&str>) -> Running {
        let mut cmd = drover();
        cmd.args(["agent", "--hub", &self.url, "--name", "box", "--state-dir"])
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(token) = token {
            cmd.args(["--token", token]);
        }
        Running(cmd.spawn().expect("drover agent starts"))
    }

    /// The nodes, as `drover nodes ls --json` prints them.
    async fn nodes(&self) -> Vec<Value> {
        let mut cmd = drover();
        cmd.args(["nodes", "ls", "--json", "--hub", &self.url]);
        run(cmd, None).await.ok().json()["nodes"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn until_node(&self, up: bool) -> Value {
        wait_until_within(
            &format!("the node is {}", if up { "up" } else { "down" }),
            Duration::from_secs(20),
            || async move { self.nodes().await.first().is_some_and(|n| n["up"] == up) },
        )
        .await;
        self.nodes().await.remove(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_joins_with_a_token_keeps_its_credential_and_comes_back_without_one() {
    let hub = start(
        fresh_dir("agent"),
        0,
        &[("DROVER_NODES__HEARTBEAT", "100ms")],
        None,
    )
    .await;
    let mut cmd = drover();
    cmd.args(["nodes", "token", "create", "--hub", &hub.url]);
    let made = run(cmd, None).await.ok();
    let token = made.stdout.trim().to_string();
    assert!(token.starts_with("drv_j_"), "{made:?}");
    assert!(made.stderr.contains("one machine, for 24h"), "{made:?}");

    let state = hub.dir.join("agent-state");
    let agent = hub.agent(&state, Some(&token));
    let node = hub.until_node(true).await;
    assert_eq!(node["name"], "box");
    assert!(node["facts"]["cpus"].as_u64().unwrap() >= 1, "{node}");
    assert!(
        node["facts"]["memory_total_bytes"].as_u64().unwrap() > 0,
        "{node}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state.join("node.json")), 0o600);
        assert_eq!(mode(&state), 0o700);
    }

    // Killed, it is down; started again with no token, it is the same node.
    drop(agent);
    hub.until_node(false).await;
    let _again = hub.agent(&state, None);
    let back = hub.until_node(true).await;
    assert_eq!(back["id"], node["id"]);
    assert_eq!(hub.nodes().await.len(), 1);

    // The token was for one machine: another is refused, saying so, and
    // keeps nothing.
    let mut other = drover();
    other
        .args(["agent", "--hub", &hub.url, "--token", &token, "--state-dir"])
        .arg(hub.dir.join("other-state"));
    run(other, None)
        .await
        .refused("one has joined with it already");
    assert!(!hub.dir.join("other-state").join("node.json").exists());
}

impl Hub {
    /// Stops `drover serve` and starts it again on the same address and
    /// data directory, with `env`; returns once it answers.
    async fn restart(&mut self, env: &[(&str, &str)]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let listen = self.url.trim_start_matches("http://").to_string();
        let mut cmd = drover();
        cmd.envs(env.iter().copied())
            .args(["serve", "--listen", &listen, "--data-dir"])
            .arg(&self.dir)
            .args(["--backend", &format!("openai={},name=sim", self._sim.url())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        self.child = cmd.spawn().expect("drover serve starts again");
        wait_until_within("the hub answers again", Duration::from_secs(30), || {
            let client = self.client.clone();
            async move { client.try_get("/health").await.is_some_and(|s| s == 200) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reconnects_by_itself_when_its_hub_restarts() {
    let env = [("DROVER_NODES__HEARTBEAT", "100ms")];
    let mut hub = start(fresh_dir("agent-restart"), 0, &env, None).await;
    let mut cmd = drover();
    cmd.args(["nodes", "token", "create", "--hub", &hub.url]);
    let token = run(cmd, None).await.ok().stdout.trim().to_string();
    let _agent = hub.agent(&hub.dir.join("agent-state"), Some(&token));
    let node = hub.until_node(true).await;
    // Away for longer than three heartbeats: the node it kept is stale
    // when the hub comes back, until the agent beats again by itself.
    let _ = hub.child.kill();
    let _ = hub.child.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    hub.restart(&env).await;
    let back = hub.until_node(true).await;
    assert_eq!(back["id"], node["id"]);
}
