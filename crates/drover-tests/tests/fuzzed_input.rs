//! Fuzzed input, tested for good: arbitrary and mutated input at every
//! parser of outside input that exists, through the real interfaces where
//! there is one, for a bounded number of cases (proptest; shrunk to a
//! minimal failing input when one fails).
//!
//! - Request bodies and headers, at a running hub over loopback: the hub
//!   always answers; an error it makes itself has the path's error shape;
//!   afterwards nothing is left waiting or holding a slot, and a plain
//!   request still works.
//! - Discovery answers of every kind of server: a hostile server answers
//!   each path a kind's adapter reads with a mutation of what that kind
//!   really answers (taken from the simulator); detection and discovery end
//!   in a result or an error, never a panic or a hang.
//! - Answers from a backend (SSE streams with usage, a Responses stream, a
//!   JSON answer, from the simulator), mutated and cut into chunks
//!   anywhere, through a running hub (which reads ids and usage from them):
//!   the client gets them byte for byte and the slot is free afterwards.
//! - Config files (mutations of the README's example), sizes and URLs.
//! - Key files (mutations of a `keys.json` an earlier drover wrote): the
//!   hub imports it into its store and starts, or says why not naming it.
//!
//! Seeds are valid inputs; mutations flip, insert, delete, duplicate and
//! truncate bytes and splice in tokens that break parsers (quotes,
//! brackets, huge numbers, NULs, invalid UTF-8).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use drover_backends::{BackendKind, Endpoint, HttpClient, adapter_for, detect};
use drover_tests::{ClusterBuilder, Dialect, HubConfig, SimConfig, chat_body, openai};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases per property: enough to find the shallow faults every run, few
/// enough to keep the suite's time bounded (a few seconds each).
const CASES: u32 = 300;

/// Tokens that break parsers, spliced in by mutation.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\",
    b"\\u0000",
    b"\0",
    b"\xff\xfe",
    b"1e309",
    b"-0",
    b"null",
    b"true",
    b"18446744073709551616",
    b"\"model\"",
    b"\n",
    b"data: ",
    b"\r\n\r\n",
    b"NaN",
    b"=",
    b"[[",
    b"#",
    // What the hub looks for in answers passing through.
    b"\"completion_tokens\"",
    b"\"output_tokens\":",
    b"\"content\":\"",
    b"\"id\":\"",
];

#[derive(Clone, Debug)]
enum Op {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
    Token(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Op::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Op::Insert(p, b)),
        (any::<usize>(), 1..64usize).prop_map(|(p, n)| Op::Delete(p, n)),
        (any::<usize>(), 1..64usize).prop_map(|(p, n)| Op::Duplicate(p, n)),
        any::<usize>().prop_map(Op::Truncate),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(p, t)| Op::Token(p, t)),
    ]
}

/// Up to eight mutations, or none (the seed itself must pass too).
fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 0..8)
}

fn mutate(seed: &[u8], ops: &[Op]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for op in ops {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
        match *op {
            Op::Flip(p, b) if !out.is_empty() => {
                let i = p % out.len();
                out[i] ^= b | 1;
            }
            Op::Flip(..) => {}
            Op::Insert(p, b) => {
                let i = at(p, out.len());
                out.insert(i, b);
            }
            Op::Delete(p, n) => {
                let i = at(p, out.len());
                let end = (i + n).min(out.len());
                out.drain(i..end);
            }
            Op::Duplicate(p, n) => {
                let i = at(p, out.len());
                let end = (i + n).min(out.len());
                let piece = out[i..end].to_vec();
                out.splice(i..i, piece);
            }
            Op::Truncate(p) => {
                let i = at(p, out.len());
                out.truncate(i);
            }
            Op::Token(p, t) => {
                let i = at(p, out.len());
                out.splice(i..i, TOKENS[t].iter().copied());
            }
        }
    }
    out
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A header value as a client could send it: visible ASCII and spaces
/// (the HTTP stack refuses anything else before the hub sees it).
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u32..=120).prop_map(|n| n.to_string()),
        2 => "[ -~]{0,40}",
        1 => prop::sample::select(vec!["0.5", "-1", "101", "1e9", "99999999999999999999", "Bearer ", ""])
            .prop_map(str::to_string),
    ]
}

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        Just(Value::from("m")),
        Just(Value::from("x".repeat(5000))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// The fields the hub or a server reads.
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "max_tokens",
    "user",
    "input",
    "instructions",
    "system",
    "previous_response_id",
    "prompt",
    "tools",
    "content",
    "role",
    "n",
    "stream_options",
];

#[derive(Clone, Debug)]
struct Call {
    path: &'static str,
    seed: usize,
    /// Fields of the seed set to other JSON values.
    fields: Vec<(usize, serde_json::Value)>,
    ops: Vec<Op>,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
}

const PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
];

const HEADERS: &[&str] = &[
    "x-drover-priority",
    "x-drover-queue-timeout",
    "authorization",
    "x-api-key",
    "x-request-id",
    "accept",
];

fn call(seeds: usize) -> impl Strategy<Value = Call> {
    (
        0..PATHS.len(),
        0..seeds,
        prop::collection::vec((0..FIELDS.len(), json()), 0..3),
        // Half the bodies stay valid JSON, to reach what lies past parsing.
        prop_oneof![Just(Vec::new()), ops()],
        prop::option::of(prop::sample::select(vec![
            "application/json",
            "text/plain",
            "application/json; charset=utf-8",
            "multipart/form-data",
        ])),
        prop::collection::vec((0..HEADERS.len(), header_value()), 0..4),
    )
        .prop_map(|(p, seed, fields, ops, content_type, headers)| Call {
            path: PATHS[p],
            seed,
            fields,
            ops,
            content_type,
            headers: headers.into_iter().map(|(h, v)| (HEADERS[h], v)).collect(),
        })
}

fn body(seed: &serde_json::Value, c: &Call) -> Vec<u8> {
    let mut value = seed.clone();
    if let Some(object) = value.as_object_mut() {
        for (field, v) in &c.fields {
            object.insert(FIELDS[*field].to_string(), v.clone());
        }
    }
    mutate(&serde_json::to_vec(&value).unwrap(), &c.ops)
}

fn body_seeds() -> Vec<serde_json::Value> {
    let chat = chat_body("m", "hello");
    [
        chat.clone(),
        serde_json::json!({"model": "m", "prompt": "once", "max_tokens": 4}),
        serde_json::json!({"model": "m", "input": ["a", "b"]}),
        serde_json::json!({"model": "m", "input": "hi", "instructions": "be brief",
                           "previous_response_id": "resp_1"}),
        serde_json::json!({"model": "m", "max_tokens": 8, "system": "s",
                           "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
        serde_json::json!({"model": "m", "stream": true, "user": "u1",
                           "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]}),
    ]
    .to_vec()
}

#[test]
fn request_bodies_and_headers_get_an_answer_in_the_paths_shape_and_leak_nothing() {
    let rt = runtime();
    let cluster = rt.block_on(async {
        let mut sim = openai(&["m", "other"], 4, 0);
        sim.output_tokens = 2;
        ClusterBuilder::new()
            .sim("s", sim)
            .hub(|c| c.queue.timeout = Duration::from_secs(2))
            .start()
            .await
    });
    let seeds = body_seeds();
    let mut runner = runner();
    let result = runner.run(&call(seeds.len()), |c| {
        let body = body(&seeds[c.seed], &c);
        let (status, headers, text) = rt.block_on(async {
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(cluster.client.url(c.path));
            if let Some(ct) = c.content_type {
                request = request.header("content-type", ct);
            }
            for (name, value) in &c.headers {
                request = request.header(*name, value.as_str());
            }
            let request = request.body(Full::new(Bytes::from(body.clone()))).unwrap();
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Full<Bytes>>();
            let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
                .await
                .expect("the hub answers within 10 s")
                .expect("the hub answers");
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (parts.status, parts.headers, bytes)
        });
        prop_assert!(headers.contains_key("x-request-id"));
        prop_assert!(headers.contains_key("x-drover-queue-ms"));
        // An error the hub made itself (no backend answered it) has the
        // path's shape.
        if !status.is_success() && !headers.contains_key("x-drover-backend") {
            let json: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|e| TestCaseError::fail(format!("{status}: not JSON ({e}): {text:?}")))?;
            if c.path.starts_with("/v1/messages") {
                prop_assert_eq!(&json["type"], "error", "{}", json);
                prop_assert!(json["error"]["message"].is_string(), "{}", json);
            } else {
                prop_assert!(json["error"]["message"].is_string(), "{}", json);
                prop_assert!(json["error"]["type"].is_string(), "{}", json);
            }
            prop_assert!(
                status != StatusCode::INTERNAL_SERVER_ERROR || c.path.starts_with("/v1/messages"),
                "the hub failed itself: {} {}",
                status,
                json
            );
        }
        Ok(())
    });
    rt.block_on(async {
        // Nothing waits, nothing holds a slot, and the hub still serves.
        drover_tests::wait_until("every slot is free", || {
            cluster.busy("s") == 0 && cluster.waiting() == 0
        })
        .await;
        let r = cluster
            .client
            .post("/v1/chat/completions", &chat_body("m", "still there?"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        cluster.shutdown().await;
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The paths each kind's adapter reads, with what that kind answers there.
const DIALECT_PATHS: &[(Dialect, BackendKind, &[&str])] = &[
    (
        Dialect::LmStudio,
        BackendKind::LmStudio,
        &["/api/v1/models", "/api/v0/models", "/v1/models"],
    ),
    (
        Dialect::Ollama,
        BackendKind::Ollama,
        &["/api/version", "/api/tags", "/api/ps", "/v1/models"],
    ),
    (
        Dialect::LlamaCpp,
        BackendKind::LlamaCpp,
        &["/health", "/v1/models", "/props", "/slots", "/metrics"],
    ),
    (
        Dialect::LlamaCppRouter,
        BackendKind::LlamaCpp,
        &["/health", "/v1/models", "/models"],
    ),
    (
        Dialect::Vllm,
        BackendKind::Vllm,
        &["/health", "/version", "/v1/models", "/metrics"],
    ),
    (Dialect::OpenAi, BackendKind::OpenAi, &["/v1/models"]),
];

type Answers = Arc<Mutex<HashMap<String, Bytes>>>;

/// A server that answers each path with what the current case says, 404
/// elsewhere.
async fn hostile_server(answers: Answers) -> (String, tokio::task::JoinHandle<()>) {
    hostile_server_cutting(answers, Arc::new(Mutex::new(Vec::new()))).await
}

/// As [`hostile_server`], sending each answer in pieces cut at `cuts`, as
/// an event stream where it starts like one.
async fn hostile_server_cutting(
    answers: Answers,
    cuts: Arc<Mutex<Vec<usize>>>,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let answers = answers.clone();
            let cuts = cuts.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = answers.lock().unwrap().get(req.uri().path()).cloned();
                    let cuts = cuts.lock().unwrap().clone();
                    async move {
                        Ok::<_, Infallible>(match body {
                            Some(b) => {
                                let kind = if b.starts_with(b"data:") || b.starts_with(b"event:") {
                                    "text/event-stream"
                                } else {
                                    "application/json"
                                };
                                Response::builder()
                                    .header("content-type", kind)
                                    .body(pieces(b, &cuts))
                                    .unwrap()
                            }
                            None => Response::builder()
                                .status(404)
                                .body(pieces(Bytes::from_static(b"{}"), &[]))
                                .unwrap(),
                        })
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, task)
}

type Pieces = http_body_util::StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, Infallible>>>,
>;

/// `body` as frames cut at `cuts` (positions past its end are ignored).
fn pieces(body: Bytes, cuts: &[usize]) -> Pieces {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    at.sort_unstable();
    let mut frames = Vec::new();
    let mut from = 0;
    for cut in at.into_iter().chain([body.len()]) {
        if cut > from {
            frames.push(Ok(hyper::body::Frame::data(body.slice(from..cut))));
            from = cut;
        }
    }
    http_body_util::StreamBody::new(futures_util::stream::iter(frames))
}

#[test]
fn discovery_of_every_kind_survives_mutated_answers() {
    let rt = runtime();
    // What each kind really answers, from the simulator of that kind.
    let seeds: Vec<(BackendKind, HashMap<String, Bytes>)> = rt.block_on(async {
        let mut all = Vec::new();
        for (dialect, kind, paths) in DIALECT_PATHS {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let sim = drover_sim::SimServer::start(
                listener,
                SimConfig {
                    dialect: *dialect,
                    models: vec!["m".into(), "e-embed".into()],
                    loaded: vec!["m".into()],
                    load_time: Duration::ZERO,
                    ..SimConfig::default()
                },
            )
            .unwrap();
            let client = drover_tests::Client::new(&sim.url());
            let mut answers = HashMap::new();
            for path in *paths {
                let query = if *dialect == Dialect::LlamaCppRouter && *path != "/models" {
                    "?model=m"
                } else {
                    ""
                };
                let r = client.get(&format!("{path}{query}")).await;
                answers.insert(path.to_string(), Bytes::from(r.text()));
            }
            all.push((*kind, answers));
            sim.shutdown().await;
        }
        all
    });
    let answers: Answers = Arc::new(Mutex::new(HashMap::new()));
    let (url, server) = rt.block_on(hostile_server(answers.clone()));
    let endpoint = Endpoint::parse(&url).unwrap();
    let client = HttpClient::new(Duration::from_secs(2));
    let mut runner = runner();
    let result = runner.run(&(0..seeds.len(), ops()), |(which, ops)| {
        let (kind, bodies) = &seeds[which];
        *answers.lock().unwrap() = bodies
            .iter()
            .map(|(path, seed)| (path.clone(), Bytes::from(mutate(seed, &ops))))
            .collect();
        rt.block_on(async {
            let adapter = adapter_for(
                *kind,
                endpoint.clone(),
                client.clone(),
                None,
                Duration::from_secs(2),
            );
            let within = Duration::from_secs(10);
            let discovered = tokio::time::timeout(within, adapter.discover()).await;
            prop_assert!(discovered.is_ok(), "{kind} discovery hung");
            let detected = tokio::time::timeout(
                within,
                detect(&endpoint, &client, None, Duration::from_secs(2)),
            )
            .await;
            prop_assert!(detected.is_ok(), "detection hung");
            Ok(())
        })
    });
    server.abort();
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn config_files_sizes_and_urls_are_read_or_refused_never_a_panic() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let seeds: Vec<&[u8]> = vec![
        &readme.as_bytes()[start..end],
        b"[manager]\nttl = \"30m\"\n[[models]]\nname = \"m\"\nsize = \"4.5G\"\nwarm = true\n",
        b"4.5G",
        b"http://user:pass@10.0.0.1:1234/v1",
    ];
    let mut runner = runner();
    let result = runner.run(&(0..seeds.len(), ops()), |(which, ops)| {
        let bytes = mutate(seeds[which], &ops);
        let text = String::from_utf8_lossy(&bytes);
        let _ = HubConfig::from_toml(&text, &[]);
        let env = [("DROVER_QUEUE__TIMEOUT".to_string(), text.to_string())];
        let _ = HubConfig::from_toml("", &env);
        let _ = drover_core::size::parse(&text);
        let _ = Endpoint::parse(&text);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn answers_from_a_backend_mutated_and_cut_anywhere_reach_the_client_and_free_the_slot() {
    let rt = runtime();
    // What a server really answers, from the simulator: a chat stream with
    // usage, a Responses stream, a plain JSON answer.
    let seeds: Vec<(&str, Bytes)> = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = drover_sim::SimServer::start(listener, openai(&["m"], 1, 0)).unwrap();
        let client = drover_tests::Client::new(&sim.url());
        let mut stream = chat_body("m", "hi");
        stream["stream"] = true.into();
        stream["stream_options"] = serde_json::json!({"include_usage": true});
        let responses = serde_json::json!({"model": "m", "input": "hi", "stream": true});
        let seeds = vec![
            (
                "/v1/chat/completions",
                client.post("/v1/chat/completions", &stream).await.body,
            ),
            (
                "/v1/responses",
                client.post("/v1/responses", &responses).await.body,
            ),
            (
                "/v1/chat/completions",
                client
                    .post("/v1/chat/completions", &chat_body("m", "hi"))
                    .await
                    .body,
            ),
        ];
        sim.shutdown().await;
        seeds
    });
    let models = Bytes::from_static(br#"{"object":"list","data":[{"id":"m","object":"model"}]}"#);
    let answers: Answers = Arc::new(Mutex::new(HashMap::from([(
        "/v1/models".to_string(),
        models.clone(),
    )])));
    let cuts = Arc::new(Mutex::new(Vec::new()));
    let (url, server) = rt.block_on(hostile_server_cutting(answers.clone(), cuts.clone()));
    let cluster = rt.block_on(
        ClusterBuilder::new()
            .external(drover_hub::BackendSpec {
                name: Some("hostile".into()),
                kind: "openai".into(),
                url,
                slots: Some(1),
                responses: Some(true),
                ..Default::default()
            })
            .hub(|c| c.health.failure_threshold = u32::MAX)
            .start(),
    );
    let mut runner = runner();
    let strategy = (
        0..seeds.len(),
        ops(),
        proptest::collection::vec(any::<usize>(), 0..8),
    );
    let result = runner.run(&strategy, |(which, ops, at)| {
        let (path, seed) = &seeds[which];
        let answer = Bytes::from(mutate(seed, &ops));
        answers
            .lock()
            .unwrap()
            .insert(path.to_string(), answer.clone());
        *cuts.lock().unwrap() = at;
        rt.block_on(async {
            let body = if *path == "/v1/responses" {
                serde_json::json!({"model": "m", "input": "hi", "stream": true})
            } else {
                chat_body("m", "hi")
            };
            let r = tokio::time::timeout(Duration::from_secs(10), cluster.client.post(path, &body))
                .await;
            let Ok(r) = r else {
                return Err(TestCaseError::fail("no answer within ten seconds"));
            };
            // Passed through byte for byte, however odd.
            prop_assert_eq!(r.status, 200, "{}", r.text());
            prop_assert!(r.body == answer, "the answer changed on its way");
            let mut freed = false;
            for _ in 0..500 {
                if cluster.busy("hostile") == 0 && cluster.waiting() == 0 {
                    freed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            prop_assert!(freed, "the slot is still held");
            Ok(())
        })
    });
    rt.block_on(cluster.shutdown());
    server.abort();
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn key_files_are_read_or_refused_by_name_never_a_panic() {
    let rt = runtime();
    let dir = std::env::temp_dir().join(format!("drover-fuzz-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A keys file as an earlier drover wrote it (two keys made through its
    // management API), which a hub imports into its store at its start.
    let seed = br#"{
  "keys": [
    {
      "id": "key_3f2a9c01b7de",
      "name": "app",
      "kind": "client",
      "sha256": "5b1c0f0e8a7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170f1e2d3c",
      "prefix": "drv_c_4e1f0a",
      "created_unix": 1764892800,
      "revoked_unix": null,
      "limits": {
        "models": ["m"],
        "requests_per_minute": 5
      }
    },
    {
      "id": "key_9a8b7c6d5e4f",
      "name": "ops",
      "kind": "admin",
      "sha256": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
      "prefix": "drv_a_77c0d2",
      "created_unix": 1764892801,
      "limits": {}
    }
  ]
}"#
    .to_vec();
    let mut runner = runner();
    let result = runner.run(&ops(), |ops| {
        // A store of its own each time: every mutation is imported afresh.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keys.json"), mutate(&seed, &ops)).unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let config = HubConfig {
                data_dir: Some(dir.clone()),
                ..HubConfig::default()
            };
            match drover_hub::start(config, listener).await {
                Ok(hub) => hub.shutdown(Duration::from_secs(1)).await,
                Err(e) => prop_assert!(e.to_string().contains("keys.json"), "{e}"),
            }
            Ok(())
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        panic!("{e}");
    }
}
