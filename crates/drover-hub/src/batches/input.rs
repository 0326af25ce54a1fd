//! A batch's input file, checked whole before any of its lines runs:
//! OpenAI's JSONL of requests (`{"custom_id", "method", "url", "body"}` a
//! line), read into the [`Line`]s that become the batch's jobs, or refused
//! with what is wrong and where, in the shape of OpenAI's batch
//! `errors.data`.
//!
//! Unlike OpenAI, drover lets each line name its own model: every line is
//! routed by its body's `model`, which is why every body needs one.
//!
//! The input is a client's: whatever its bytes, [`parse`] answers, and it
//! reads at most [`Limits::max_bytes`] of them.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use bytes::Bytes;
use drover_proto::batch::BatchError;
use serde::Deserialize;
use serde_json::error::Category;
use serde_json::value::RawValue;

use crate::error::echo;

/// The endpoints a batch may target in drover: the OpenAI inference paths
/// the hub forwards whose answer is one JSON document.
pub const ENDPOINTS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
];

/// Errors about lines reported before checking stops: enough to show a
/// pattern, few enough for the batch object that carries them to stay
/// small. When lines are left unchecked, one more error says how many.
pub const MAX_ERRORS: usize = 100;

/// The longest `custom_id`, in bytes.
pub const MAX_CUSTOM_ID_BYTES: usize = 512;

/// How much one batch may hold (`batches.max_lines`, `batches.max_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests: lines that are not empty.
    pub max_lines: usize,
    /// The whole file.
    pub max_bytes: u64,
}

impl Default for Limits {
    /// OpenAI's: 50,000 requests and 200 MB, taken as MiB so that whatever
    /// OpenAI accepts, drover does too.
    fn default() -> Self {
        Limits {
            max_lines: 50_000,
            max_bytes: 200 * 1024 * 1024,
        }
    }
}

/// One request of a batch, ready to become a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Its line in the file, counted from 1 with the empty lines, as an
    /// editor shows it.
    pub number: usize,
    pub custom_id: String,
    /// `POST`.
    pub method: String,
    /// The batch's endpoint.
    pub url: String,
    /// The body's JSON exactly as the file has it, to forward untouched.
    pub body: Bytes,
    /// The body's `model`, which routes the line.
    pub model: String,
}

/// One thing wrong with an input file, in the shape of OpenAI's batch
/// `errors.data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// `None` for the file as a whole.
    pub line: Option<usize>,
    /// OpenAI's code where it has one.
    pub code: &'static str,
    /// The field at fault, such as `body.model`.
    pub param: Option<&'static str>,
    /// What is wrong, in plain words.
    pub message: String,
}

impl LineError {
    fn file(code: &'static str, message: String) -> Self {
        LineError {
            line: None,
            code,
            param: None,
            message,
        }
    }
}

impl From<LineError> for BatchError {
    fn from(e: LineError) -> Self {
        BatchError {
            code: e.code.to_string(),
            line: e.line.and_then(|n| u64::try_from(n).ok()),
            message: e.message,
            param: e.param.map(str::to_string),
        }
    }
}

/// A `CreateBatch.endpoint` that is not one of [`ENDPOINTS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEndpoint(pub String);

impl std::fmt::Display for UnknownEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} is not an endpoint a batch may target; drover's batches target {}",
            echo(&self.0),
            ENDPOINTS.join(", ")
        )
    }
}

impl std::error::Error for UnknownEndpoint {}

/// Whether a batch may target `endpoint` (a `CreateBatch.endpoint`); the
/// path must be written exactly, as each line's `url` must then match it.
pub fn check_endpoint(endpoint: &str) -> Result<(), UnknownEndpoint> {
    if ENDPOINTS.contains(&endpoint) {
        Ok(())
    } else {
        Err(UnknownEndpoint(endpoint.to_string()))
    }
}

/// Checks a batch's whole input file and reads its requests, for a batch
/// whose `endpoint` passed [`check_endpoint`].
///
/// Empty lines (nothing but spaces, tabs and a CR) are skipped, and a
/// UTF-8 byte order mark at the start is ignored. A file over
/// `limits.max_bytes` is refused unread; one with more than
/// `limits.max_lines` requests, or none, is refused with that one error.
/// Otherwise each line gets at most one error, its first problem; after
/// [`MAX_ERRORS`] of them checking stops, and one last error (code
/// `too_many_errors`, no line) says after which line, and how many
/// requests were left unchecked.
pub fn parse(input: &[u8], endpoint: &str, limits: &Limits) -> Result<Vec<Line>, Vec<LineError>> {
    let size = u64::try_from(input.len()).unwrap_or(u64::MAX);
    if size > limits.max_bytes {
        return Err(vec![LineError::file(
            "file_too_large",
            format!(
                "The input file is {size} bytes; a batch's input may be at most {} bytes. \
                 Split it into several batches, or raise `batches.max_bytes` in the hub's config.",
                limits.max_bytes
            ),
        )]);
    }
    let input = input.strip_prefix(b"\xef\xbb\xbf").unwrap_or(input);
    let requests = numbered(input).count();
    if requests == 0 {
        return Err(vec![LineError::file(
            "empty_file",
            "The input file holds no requests: every line is empty.".to_string(),
        )]);
    }
    if requests > limits.max_lines {
        return Err(vec![LineError::file(
            "too_many_requests",
            format!(
                "The input file holds {requests} requests; a batch may hold at most {}. \
                 Split it into several batches, or raise `batches.max_lines` in the hub's config.",
                limits.max_lines
            ),
        )]);
    }

    let mut lines = Vec::with_capacity(requests);
    let mut errors = Vec::new();
    // Each custom_id's first line, to name it when another line repeats it.
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(requests);
    let mut last_checked = 0;
    for (checked, (number, text)) in numbered(input).enumerate() {
        if errors.len() == MAX_ERRORS {
            let left = requests - checked;
            errors.push(LineError::file(
                "too_many_errors",
                format!(
                    "Checking stopped at {MAX_ERRORS} errors, after line {last_checked}: \
                     the {left} requests after it were not checked."
                ),
            ));
            break;
        }
        last_checked = number;
        let read = read_line(text, number, endpoint, &mut seen);
        match read {
            // Once the file is refused its lines are not needed: no copies.
            Ok(line) if errors.is_empty() => lines.push(line.into_line(number, endpoint)),
            Ok(_) => {}
            Err(p) => errors.push(LineError {
                line: Some(number),
                code: p.code,
                param: p.param,
                message: p.message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(errors)
    }
}

/// The file's requests: its lines that are not empty, with their numbers.
fn numbered(input: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    input
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, text)| !text.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')))
        .map(|(i, text)| (i + 1, text))
}

/// What is wrong with one line, before it is given its number.
struct Problem {
    code: &'static str,
    param: Option<&'static str>,
    message: String,
}

impl Problem {
    fn new(code: &'static str, param: Option<&'static str>, message: String) -> Self {
        Problem {
            code,
            param,
            message,
        }
    }

    fn missing(param: &'static str, why: &str) -> Self {
        Problem::new(
            "missing_required_parameter",
            Some(param),
            format!("{param} is missing; {why}"),
        )
    }
}

/// A line's four fields, each kept raw until checked. `null` reads as
/// absent, as it does for the hub's other requests.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    custom_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    url: Option<&'a RawValue>,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
}

/// The body's fields the batch checks; the rest is the server's to judge.
#[derive(Deserialize)]
struct BodyPeek<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
}

/// A line that passed, borrowing from the file until it is kept.
struct Checked<'a> {
    custom_id: String,
    body: &'a RawValue,
    model: String,
}

impl Checked<'_> {
    fn into_line(self, number: usize, endpoint: &str) -> Line {
        Line {
            number,
            custom_id: self.custom_id,
            method: "POST".to_string(),
            url: endpoint.to_string(),
            body: Bytes::copy_from_slice(self.body.get().as_bytes()),
            model: self.model,
        }
    }
}

/// Checks one line, and notes its custom_id in `seen` as soon as it is
/// known good: a line wrong in another way still claims its name.
fn read_line<'a>(
    text: &'a [u8],
    number: usize,
    endpoint: &str,
    seen: &mut HashMap<String, usize>,
) -> Result<Checked<'a>, Problem> {
    let not_json = |e: serde_json::Error| {
        Problem::new(
            "invalid_json_line",
            None,
            format!("This line is not valid JSON: {}.", json_error(&e)),
        )
    };
    // Checked whole first: the fields a line may carry beyond its four are
    // skipped unread, and skipping does not look at the bytes of strings.
    let text = std::str::from_utf8(text).map_err(|e| {
        Problem::new(
            "invalid_json_line",
            None,
            format!(
                "This line is not valid JSON: its byte {} is not UTF-8 text.",
                e.valid_up_to() + 1
            ),
        )
    })?;
    if !text.trim_start_matches([' ', '\t']).starts_with('{') {
        let raw: &RawValue = serde_json::from_str(text).map_err(not_json)?;
        return Err(Problem::new(
            "invalid_json_line",
            None,
            format!(
                "This line is {}; each line must be one JSON object with custom_id, method, url \
                 and body.",
                kind(raw)
            ),
        ));
    }
    let fields: Fields = serde_json::from_str(text).map_err(|e| match e.classify() {
        Category::Data => Problem::new(
            "invalid_request",
            None,
            format!("This line's fields cannot be read: {}.", json_error(&e)),
        ),
        _ => not_json(e),
    })?;

    let custom_id = fields.custom_id.ok_or_else(|| {
        Problem::missing(
            "custom_id",
            "every line needs one: its answer carries it back.",
        )
    })?;
    let custom_id = string(custom_id, "custom_id")?;
    if custom_id.is_empty() {
        return Err(Problem::new(
            "invalid_request",
            Some("custom_id"),
            "custom_id is empty; every line needs one: its answer carries it back.".to_string(),
        ));
    }
    if custom_id.len() > MAX_CUSTOM_ID_BYTES {
        return Err(Problem::new(
            "invalid_request",
            Some("custom_id"),
            format!(
                "custom_id is {} bytes long; at most {MAX_CUSTOM_ID_BYTES} are allowed.",
                custom_id.len()
            ),
        ));
    }
    match seen.entry(custom_id.clone()) {
        Entry::Occupied(first) => {
            return Err(Problem::new(
                "duplicate_custom_id",
                Some("custom_id"),
                format!(
                    "custom_id {:?} is also line {}'s; each line's must be unique, \
                     as answers are matched to their requests by it.",
                    echo(&custom_id),
                    first.get()
                ),
            ));
        }
        Entry::Vacant(slot) => {
            slot.insert(number);
        }
    }

    let method = fields
        .method
        .ok_or_else(|| Problem::missing("method", "it must be \"POST\"."))?;
    let method = string(method, "method")?;
    if method != "POST" {
        return Err(Problem::new(
            "invalid_request",
            Some("method"),
            format!(
                "method is {:?}; a batch sends every request with \"POST\".",
                echo(&method)
            ),
        ));
    }

    let url = fields.url.ok_or_else(|| {
        Problem::missing(
            "url",
            &format!("it must be this batch's endpoint, {endpoint:?}."),
        )
    })?;
    let wrong_url = |code| {
        Problem::new(
            code,
            Some("url"),
            format!(
                "url is {} but this batch's endpoint is {endpoint:?}; every line must target \
                 its batch's endpoint.",
                echo(url.get())
            ),
        )
    };
    match serde_json::from_str::<String>(url.get()) {
        Ok(u) if u == endpoint => {}
        Ok(u) if ENDPOINTS.contains(&u.as_str()) => return Err(wrong_url("mismatched_endpoint")),
        _ => return Err(wrong_url("invalid_url")),
    }

    let body = fields.body.ok_or_else(|| {
        Problem::missing(
            "body",
            "it is the request to send, the JSON object the endpoint takes.",
        )
    })?;
    if !body.get().starts_with('{') {
        return Err(Problem::new(
            "invalid_request",
            Some("body"),
            format!(
                "body is {}; it must be the request to send, the JSON object the endpoint takes.",
                kind(body)
            ),
        ));
    }
    let peek: BodyPeek = serde_json::from_str(body.get()).map_err(|e| {
        Problem::new(
            "invalid_request",
            Some("body"),
            format!("body cannot be read: {}.", json_error(&e)),
        )
    })?;
    let model = peek.model.ok_or_else(|| {
        Problem::missing(
            "body.model",
            "drover routes each line by its own model, so every body names one.",
        )
    })?;
    let model = string(model, "body.model")?;
    if model.trim().is_empty() {
        return Err(Problem::missing(
            "body.model",
            "drover routes each line by its own model, so every body names one.",
        ));
    }
    if peek.stream.is_some_and(|s| s.get() == "true") {
        return Err(Problem::new(
            "invalid_request",
            Some("body.stream"),
            "body.stream is true, but a batch keeps each answer whole in its output file; \
             it cannot be a stream. Leave stream out or set it to false."
                .to_string(),
        ));
    }

    Ok(Checked {
        custom_id,
        body,
        model,
    })
}

/// A field that must be a string.
fn string(raw: &RawValue, param: &'static str) -> Result<String, Problem> {
    let refused = |why: String| Problem::new("invalid_request", Some(param), why);
    if !raw.get().starts_with('"') {
        return Err(refused(format!(
            "{param} must be a string, not {}.",
            kind(raw)
        )));
    }
    serde_json::from_str(raw.get()).map_err(|e| {
        refused(format!(
            "{param} is not a valid string: {}.",
            json_error(&e)
        ))
    })
}

/// What kind of JSON value `raw` is, for messages.
fn kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// serde_json's words for what went wrong, without its "at line 1": the
/// JSON is one line of the file, whose number the error carries.
fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let place = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&place) {
        Some(what) => format!("{what} (column {})", e.column()),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = "/v1/chat/completions";

    fn line(custom_id: &str, model: &str) -> String {
        format!(
            r#"{{"custom_id": "{custom_id}", "method": "POST", "url": "{CHAT}", "body": {{"model": "{model}", "messages": [{{"role": "user", "content": "hi"}}]}}}}"#
        )
    }

    fn ok(input: &str) -> Vec<Line> {
        match parse(input.as_bytes(), CHAT, &Limits::default()) {
            Ok(lines) => lines,
            Err(errors) => panic!("refused: {errors:#?}"),
        }
    }

    fn errors(input: &str, limits: &Limits) -> Vec<LineError> {
        match parse(input.as_bytes(), CHAT, limits) {
            Ok(lines) => panic!("accepted: {lines:#?}"),
            Err(errors) => errors,
        }
    }

    /// The one error a file made of `bad` alone gets, as (line, code, param).
    fn check(bad: &str) -> (Option<usize>, &'static str, Option<&'static str>) {
        let errors = errors(bad, &Limits::default());
        assert_eq!(errors.len(), 1, "{bad}: {errors:#?}");
        assert!(!errors[0].message.is_empty());
        (errors[0].line, errors[0].code, errors[0].param)
    }

    #[test]
    fn a_valid_file_becomes_its_lines_with_bodies_byte_for_byte() {
        let body = r#"{ "messages":[{"role":"user","content":"caf\u00e9 ☕"}],  "model" :"qwen3-8b","n":1.50}"#;
        let input = format!(
            "{}\n{{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"{CHAT}\",\"body\":{body}}}\n",
            line("a", "llama-3.1-8b")
        );
        let lines = ok(&input);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].number, 1);
        assert_eq!(lines[0].custom_id, "a");
        assert_eq!(lines[0].model, "llama-3.1-8b");
        assert_eq!(lines[1].number, 2);
        assert_eq!(lines[1].custom_id, "b");
        assert_eq!(lines[1].method, "POST");
        assert_eq!(lines[1].url, CHAT);
        assert_eq!(lines[1].model, "qwen3-8b");
        assert_eq!(lines[1].body, body.as_bytes());
    }

    #[test]
    fn empty_lines_crlf_and_a_missing_last_newline_are_fine() {
        let input = format!("\r\n{}\r\n\r\n   \t\n{}", line("a", "m1"), line("b", "m2"));
        let lines = ok(&input);
        let numbers: Vec<_> = lines.iter().map(|l| l.number).collect();
        assert_eq!(
            numbers,
            [2, 5],
            "numbers count every line, as an editor does"
        );
        assert!(lines[0].body.ends_with(b"}"));
    }

    #[test]
    fn a_byte_order_mark_before_the_first_line_is_skipped() {
        let lines = ok(&format!("\u{feff}{}\n", line("a", "m")));
        assert_eq!(lines.len(), 1);
    }

    #[test]
    fn each_rule_names_its_line_code_and_param() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("{not json", "invalid_json_line", None),
            ("[1, 2]", "invalid_json_line", None),
            ("\"a string\"", "invalid_json_line", None),
            (r#"{"custom_id": "a"} trailing"#, "invalid_json_line", None),
            (
                r#"{"method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}"#,
                "missing_required_parameter",
                Some("custom_id"),
            ),
            (
                r#"{"custom_id": null, "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}"#,
                "missing_required_parameter",
                Some("custom_id"),
            ),
            (
                r#"{"custom_id": 7, "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}"#,
                "invalid_request",
                Some("custom_id"),
            ),
            (
                r#"{"custom_id": "", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}"#,
                "invalid_request",
                Some("custom_id"),
            ),
            (
                r#"{"custom_id": "a", "url": "/v1/chat/completions", "body": {"model": "m"}}"#,
                "missing_required_parameter",
                Some("method"),
            ),
            (
                r#"{"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {"model": "m"}}"#,
                "invalid_request",
                Some("method"),
            ),
            (
                r#"{"custom_id": "a", "method": "post", "url": "/v1/chat/completions", "body": {"model": "m"}}"#,
                "invalid_request",
                Some("method"),
            ),
            (
                r#"{"custom_id": "a", "method": ["POST"], "url": "/v1/chat/completions", "body": {"model": "m"}}"#,
                "invalid_request",
                Some("method"),
            ),
            (
                r#"{"custom_id": "a", "method": "POST", "body": {"model": "m"}}"#,
                "missing_required_parameter",
                Some("url"),
            ),
            (
                r#"{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}"#,
                "mismatched_endpoint",
                Some("url"),
            ),
            (
                r#"{"custom_id": "a", "method": "POST", "url": "/v1/moderations", "body": {"model": "m"}}"#,
                "invalid_url",
                Some("url"),
            ),
            (
                r#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions?x=1", "body": {"model": "m"}}"#,
                "invalid_url",
                Some("url"),
            ),
            (
                r#"{"custom_id": "a", "method": "POST", "url": ["/v1/chat/completions"], "body": {"model": "m"}}"#,
                "invalid_url",
                Some("url"),
            ),
            (
                r#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}"#,
                "missing_required_parameter",
                Some("body"),
            ),
            (
                r#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": "{\"model\": \"m\"}"}"#,
                "invalid_request",
                Some("body"),
            ),
            (
                r#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "model": "n"}}"#,
                "invalid_request",
                Some("body"),
            ),
            (
                r#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}"#,
                "missing_required_parameter",
                Some("body.model"),
            ),
            (
                r#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "  "}}"#,
                "missing_required_parameter",
                Some("body.model"),
            ),
            (
                r#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": 3}}"#,
                "invalid_request",
                Some("body.model"),
            ),
            (
                r#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "stream": true}}"#,
                "invalid_request",
                Some("body.stream"),
            ),
            (
                r#"{"custom_id": "a", "custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}"#,
                "invalid_request",
                None,
            ),
        ];
        for &(bad, code, param) in cases {
            let input = format!("{}\n\n{bad}\n{}\n", line("first", "m"), line("last", "m"));
            let errors = errors(&input, &Limits::default());
            assert_eq!(errors.len(), 1, "{bad}: {errors:#?}");
            let e = &errors[0];
            assert_eq!(
                (e.line, e.code, e.param),
                (Some(3), code, param),
                "{bad}: {e:#?}"
            );
        }
    }

    #[test]
    fn messages_say_what_is_wrong_in_plain_words() {
        let say = |bad: &str| errors(bad, &Limits::default()).remove(0).message;
        let message = say(
            r#"{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}"#,
        );
        assert!(
            message.contains("/v1/embeddings") && message.contains(CHAT),
            "{message}"
        );
        let message = say(
            r#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "stream": true}}"#,
        );
        assert!(message.contains("stream"), "{message}");
        let message = say("{\"custom_id\": ");
        assert!(
            !message.contains("line 1"),
            "the JSON's own line is not the file's: {message}"
        );
        let message = say("[1]");
        assert!(message.contains("object"), "{message}");
    }

    #[test]
    fn a_stream_that_is_not_true_is_the_servers_to_judge() {
        for stream in ["false", "null", "\"true\"", "1"] {
            let input = format!(
                r#"{{"custom_id": "a", "method": "POST", "url": "{CHAT}", "body": {{"model": "m", "stream": {stream}}}}}"#
            );
            assert_eq!(ok(&input).len(), 1, "{stream}");
        }
    }

    #[test]
    fn a_custom_id_may_have_512_bytes_not_513() {
        let longest = "é".repeat(256);
        assert_eq!(longest.len(), MAX_CUSTOM_ID_BYTES);
        assert_eq!(ok(&line(&longest, "m"))[0].custom_id, longest);
        assert_eq!(
            check(&line(&format!("{longest}x"), "m")),
            (Some(1), "invalid_request", Some("custom_id"))
        );
    }

    #[test]
    fn strings_are_read_with_their_escapes() {
        let lines = ok(&line("tab\\there \\\"quoted\\\"", "m").replace("POST", "P\\u004fST"));
        assert_eq!(lines[0].custom_id, "tab\there \"quoted\"");
        assert_eq!(lines[0].method, "POST");
    }

    #[test]
    fn a_custom_id_used_twice_is_refused_on_its_second_line_naming_the_first() {
        let input = [
            line("a", "m"),
            line("b", "m"),
            line("a", "m"),
            line("a", "m"),
        ]
        .join("\n");
        let errors = errors(&input, &Limits::default());
        let found: Vec<_> = errors.iter().map(|e| (e.line, e.code, e.param)).collect();
        assert_eq!(
            found,
            [
                (Some(3), "duplicate_custom_id", Some("custom_id")),
                (Some(4), "duplicate_custom_id", Some("custom_id")),
            ]
        );
        assert!(
            errors[0].message.contains("line 1"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn a_line_wrong_in_another_way_still_claims_its_custom_id() {
        let input = [
            line("a", "").replace(CHAT, "/v1/embeddings"),
            line("a", "m"),
        ]
        .join("\n");
        let found: Vec<_> = errors(&input, &Limits::default())
            .iter()
            .map(|e| (e.line, e.code))
            .collect();
        assert_eq!(
            found,
            [
                (Some(1), "mismatched_endpoint"),
                (Some(2), "duplicate_custom_id")
            ]
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_not_json() {
        let good = line("a", "m");
        // The first `at` in the good line, replaced by `with`.
        let splice = |at: &str, with: &[u8]| {
            let i = good.find(at).unwrap();
            [
                &good.as_bytes()[..i],
                with,
                &good.as_bytes()[i + at.len()..],
            ]
            .concat()
        };
        for bad in [
            splice("\"a\"", b"\"a\xff\""),
            splice("{", b"{\"extra\": \"\xc3\x28\", "),
            splice("hi", b"h\xffi"),
        ] {
            let input = [line("first", "m").as_bytes(), b"\n", &bad].concat();
            let errors = parse(&input, CHAT, &Limits::default()).unwrap_err();
            let found: Vec<_> = errors.iter().map(|e| (e.line, e.code)).collect();
            assert_eq!(found, [(Some(2), "invalid_json_line")], "{bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_no_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(check(&deep), (Some(1), "invalid_json_line", None));
        // Inside a body it is skipped over, not parsed: the server judges
        // it, as it would the same body sent to the hub directly.
        let in_body = format!(
            r#"{{"custom_id": "a", "method": "POST", "url": "{CHAT}", "body": {{"model": "m", "x": {deep}}}}}"#
        );
        assert!(ok(&in_body)[0].body.ends_with(b"]]]}"));
    }

    #[test]
    fn lines_may_name_different_models() {
        let input = [line("a", "m1"), line("b", "m2")].join("\n");
        let models: Vec<_> = ok(&input).into_iter().map(|l| l.model).collect();
        assert_eq!(models, ["m1", "m2"]);
    }

    #[test]
    fn each_batch_endpoint_takes_lines_for_it() {
        for &endpoint in ENDPOINTS {
            let input = format!(
                r#"{{"custom_id": "a", "method": "POST", "url": "{endpoint}", "body": {{"model": "m", "input": "x"}}}}"#
            );
            let lines = parse(input.as_bytes(), endpoint, &Limits::default()).unwrap();
            assert_eq!(lines[0].url, endpoint);
        }
    }

    #[test]
    fn a_file_over_max_lines_gets_one_error_naming_the_limit_and_its_key() {
        let limits = Limits {
            max_lines: 2,
            ..Limits::default()
        };
        let two = [line("a", "m"), String::new(), line("b", "m")].join("\n");
        assert!(parse(two.as_bytes(), CHAT, &limits).is_ok());
        let three = [line("a", "m"), line("b", "m"), "{bad".to_string()].join("\n");
        let errors = errors(&three, &limits);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(
            (errors[0].line, errors[0].code),
            (None, "too_many_requests")
        );
        let message = &errors[0].message;
        assert!(
            message.contains('3') && message.contains('2') && message.contains("batches.max_lines"),
            "{message}"
        );
    }

    #[test]
    fn a_file_over_max_bytes_gets_one_error_naming_the_limit_and_its_key() {
        let input = [line("a", "m"), "{bad".to_string()].join("\n");
        let size = input.len() as u64;
        let exact = Limits {
            max_bytes: size,
            ..Limits::default()
        };
        assert_eq!(errors(&input, &exact)[0].code, "invalid_json_line");
        let under = Limits {
            max_bytes: size - 1,
            ..Limits::default()
        };
        let errors = errors(&input, &under);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!((errors[0].line, errors[0].code), (None, "file_too_large"));
        let message = &errors[0].message;
        assert!(
            message.contains(&size.to_string())
                && message.contains(&(size - 1).to_string())
                && message.contains("batches.max_bytes"),
            "{message}"
        );
    }

    #[test]
    fn a_file_without_requests_is_refused() {
        for input in ["", "\n", "\r\n  \n"] {
            let errors = errors(input, &Limits::default());
            assert_eq!(errors.len(), 1, "{input:?}");
            assert_eq!((errors[0].line, errors[0].code), (None, "empty_file"));
        }
    }

    #[test]
    fn a_line_gets_one_error_its_first() {
        assert_eq!(
            check(r#"{"method": "GET", "url": "/nowhere", "body": 1}"#),
            (Some(1), "missing_required_parameter", Some("custom_id"))
        );
    }

    #[test]
    fn checking_stops_after_max_errors_and_says_how_many_lines_it_left() {
        let mut input = vec![line("ok", "m")];
        input.extend((0..MAX_ERRORS + 50).map(|_| "{bad".to_string()));
        input.push(line("ok2", "m"));
        let errors = errors(&input.join("\n"), &Limits::default());
        assert_eq!(errors.len(), MAX_ERRORS + 1);
        assert!(
            errors[..MAX_ERRORS]
                .iter()
                .all(|e| e.code == "invalid_json_line")
        );
        assert_eq!(errors[MAX_ERRORS - 1].line, Some(MAX_ERRORS + 1));
        let last = &errors[MAX_ERRORS];
        assert_eq!(
            (last.line, last.code, last.param),
            (None, "too_many_errors", None)
        );
        assert!(
            last.message.contains("51") && last.message.contains(&(MAX_ERRORS + 1).to_string()),
            "the 50 bad lines and the good one after line 101 were not checked: {}",
            last.message
        );
    }

    #[test]
    fn exactly_max_errors_needs_no_note() {
        let input: Vec<_> = (0..MAX_ERRORS).map(|_| "{bad".to_string()).collect();
        let errors = errors(&input.join("\n"), &Limits::default());
        assert_eq!(errors.len(), MAX_ERRORS);
    }

    #[test]
    fn the_endpoint_check_takes_drovers_four_and_nothing_else() {
        for endpoint in ENDPOINTS {
            assert_eq!(check_endpoint(endpoint), Ok(()));
        }
        for endpoint in [
            "/v1/moderations",
            "/v1/messages",
            "/v1/chat/completions/",
            "v1/chat/completions",
            "",
        ] {
            let refused = check_endpoint(endpoint).unwrap_err();
            assert!(refused.to_string().contains("/v1/responses"), "{refused}");
        }
        let long = "x".repeat(10_000);
        assert!(check_endpoint(&long).unwrap_err().to_string().len() < 500);
    }

    #[test]
    fn a_line_error_becomes_openais_batch_error() {
        let error = BatchError::from(LineError {
            line: Some(4),
            code: "invalid_url",
            param: Some("url"),
            message: "wrong".to_string(),
        });
        assert_eq!(
            serde_json::to_value(error).unwrap(),
            serde_json::json!({"code": "invalid_url", "line": 4, "message": "wrong", "param": "url"})
        );
    }

    /// Arbitrary and mutated files: `parse` always answers, and what it
    /// answers keeps its promises. A bounded number of cases, as in
    /// `drover-tests`' `fuzzed_input.rs`.
    mod fuzzed {
        use std::collections::HashSet;

        use proptest::prelude::*;
        use proptest::test_runner::Config;

        use super::*;

        /// Small limits, so that mutations reach them too.
        const LIMITS: Limits = Limits {
            max_lines: 6,
            max_bytes: 4096,
        };

        /// Tokens that break parsers or this one's rules, spliced in.
        const TOKENS: &[&[u8]] = &[
            b"\"",
            b"{",
            b"}",
            b"[",
            b",",
            b":",
            b"\\",
            b"\\ud800",
            b"\0",
            b"\xff\xfe",
            b"\xef\xbb\xbf",
            b"1e309",
            b"null",
            b"\n",
            b"\r\n",
            b"\r",
            b"\"stream\":true,",
            b"\"custom_id\":\"a\",",
            b"\"model\":",
            b"\"url\":\"/v1/embeddings\",",
        ];

        fn seed() -> Vec<u8> {
            [
                line("a", "m1"),
                String::new(),
                r#"{"body":{"input":["x","y"],"model":"caf\u00e9 ☕"},"url":"/v1/chat/completions","method":"POST","custom_id":"b"}"#.to_string(),
                line("c\\\"", "m2") + "\r",
                line("d", "m1"),
            ]
            .join("\n")
            .into_bytes()
        }

        #[derive(Debug, Clone)]
        enum Op {
            Flip(usize, u8),
            Delete(usize, usize),
            Truncate(usize),
            Token(usize, usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Op::Flip(p, b)),
                (any::<usize>(), 1..32usize).prop_map(|(p, n)| Op::Delete(p, n)),
                any::<usize>().prop_map(Op::Truncate),
                (any::<usize>(), 0..TOKENS.len()).prop_map(|(p, t)| Op::Token(p, t)),
            ]
        }

        fn mutate(mut out: Vec<u8>, ops: &[Op]) -> Vec<u8> {
            for op in ops {
                let at = |p: usize| p % (out.len() + 1);
                match *op {
                    Op::Flip(p, b) => {
                        if !out.is_empty() {
                            let i = p % out.len();
                            out[i] ^= b | 1;
                        }
                    }
                    Op::Delete(p, n) => {
                        let i = at(p);
                        let end = (i + n).min(out.len());
                        out.drain(i..end);
                    }
                    Op::Truncate(p) => {
                        let i = at(p);
                        out.truncate(i);
                    }
                    Op::Token(p, t) => {
                        let i = at(p);
                        out.splice(i..i, TOKENS[t].iter().copied());
                    }
                }
            }
            out
        }

        #[derive(Deserialize)]
        struct Body<'a> {
            model: String,
            #[serde(borrow, default)]
            stream: Option<&'a RawValue>,
        }

        /// What `parse` promises, whatever it was given.
        fn keeps_its_promises(input: &[u8]) -> Result<(), TestCaseError> {
            let file_lines = input.split(|&b| b == b'\n').count();
            match parse(input, CHAT, &LIMITS) {
                Ok(lines) => {
                    prop_assert!(!lines.is_empty() && lines.len() <= LIMITS.max_lines);
                    let mut ids = HashSet::new();
                    let mut last = 0;
                    for line in &lines {
                        prop_assert!(line.number > last && line.number <= file_lines);
                        last = line.number;
                        prop_assert!(ids.insert(line.custom_id.clone()), "{line:?}");
                        prop_assert!(
                            !line.custom_id.is_empty()
                                && line.custom_id.len() <= MAX_CUSTOM_ID_BYTES
                        );
                        prop_assert_eq!(&line.method, "POST");
                        prop_assert_eq!(&line.url, CHAT);
                        // Read as the hub reads a body it forwards: what it
                        // does not need is skipped, not decoded (a lone
                        // surrogate is JSON's grammar, though not serde's).
                        let body: Body = serde_json::from_slice(&line.body)
                            .map_err(|e| TestCaseError::fail(format!("{e}: {line:?}")))?;
                        prop_assert_eq!(&body.model, &line.model);
                        prop_assert!(!line.model.trim().is_empty());
                        prop_assert!(body.stream.is_none_or(|s| s.get() != "true"));
                    }
                }
                Err(errors) => {
                    prop_assert!(!errors.is_empty() && errors.len() <= MAX_ERRORS + 1);
                    for e in &errors {
                        prop_assert!(!e.message.is_empty(), "{e:?}");
                        prop_assert!(e.line.is_none_or(|n| n >= 1 && n <= file_lines));
                    }
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(Config {
                cases: 500,
                failure_persistence: None,
                ..Config::default()
            })]

            #[test]
            fn any_bytes_get_an_answer(input in prop::collection::vec(any::<u8>(), 0..512)) {
                keeps_its_promises(&input)?;
            }

            #[test]
            fn mutated_files_get_an_answer(ops in prop::collection::vec(op(), 0..8)) {
                let input = mutate(seed(), &ops);
                if ops.is_empty() {
                    prop_assert_eq!(parse(&input, CHAT, &LIMITS).map(|l| l.len()), Ok(4));
                }
                keeps_its_promises(&input)?;
            }
        }
    }
}
