//! The lines of a batch's output and error files: one JSON document a
//! line, in OpenAI's `BatchOutputLine` shape (`drover_proto::batch`),
//! written as each request of the batch ends. Successes go to the output
//! file; failed answers and lines that got none go to the error file
//! ([`goes_to_error_file`]).
//!
//! An answer's JSON goes into its line as the server wrote it (its keys'
//! order, its numbers' spelling, its escapes), as drover passes answers
//! through everywhere else; only the line breaks between its tokens go,
//! so that it stays one line.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;

/// The line for a request the server answered, whatever the status.
/// `body` is the answer's JSON; an answer that is not JSON (a proxy's
/// HTML error page, a cut answer) goes in as a string, any bytes that are
/// not UTF-8 replaced.
pub fn output_line(
    line_id: &str,
    custom_id: &str,
    status: u16,
    request_id: &str,
    body: &[u8],
) -> Vec<u8> {
    write(&Output {
        id: line_id,
        custom_id,
        response: Some(Response {
            status_code: status,
            request_id,
            body: Body::of(body),
        }),
        error: None,
    })
}

/// The line for a request that got no answer (the batch expired or was
/// cancelled first, its model went away, every attempt failed before an
/// answer): `response` is null and `error` says why.
pub fn error_line(line_id: &str, custom_id: &str, code: &str, message: &str) -> Vec<u8> {
    write(&Output {
        id: line_id,
        custom_id,
        response: None,
        error: Some(LineError { code, message }),
    })
}

/// Whether a line goes to the error file: every answer but a 2xx, and
/// every line without one (`None`).
pub fn goes_to_error_file(status: Option<u16>) -> bool {
    !matches!(status, Some(200..=299))
}

#[derive(Serialize)]
struct Output<'a> {
    id: &'a str,
    custom_id: &'a str,
    response: Option<Response<'a>>,
    error: Option<LineError<'a>>,
}

#[derive(Serialize)]
struct Response<'a> {
    status_code: u16,
    request_id: &'a str,
    body: Body<'a>,
}

#[derive(Serialize)]
struct LineError<'a> {
    code: &'a str,
    message: &'a str,
}

/// An answer's body as it goes into its line.
#[derive(Serialize)]
#[serde(untagged)]
enum Body<'a> {
    /// JSON on one line already, as most servers write it.
    Json(&'a RawValue),
    /// JSON written over several lines, joined into one.
    Joined(Box<RawValue>),
    Text(Cow<'a, str>),
}

impl<'a> Body<'a> {
    fn of(body: &'a [u8]) -> Self {
        let Ok(json) = serde_json::from_slice::<&RawValue>(body) else {
            return Body::Text(String::from_utf8_lossy(body));
        };
        let text = json.get();
        if !text.contains(['\n', '\r']) {
            return Body::Json(json);
        }
        // Valid JSON has no raw line break inside a string, so every one
        // is whitespace between tokens, and none is needed there.
        match RawValue::from_string(text.replace(['\n', '\r'], "")) {
            Ok(joined) => Body::Joined(joined),
            Err(_) => Body::Text(String::from_utf8_lossy(body)),
        }
    }
}

/// One line of JSONL.
fn write(line: &Output) -> Vec<u8> {
    // Serializing these borrowed strings and raw JSON cannot fail (no map
    // has keys that are not strings); an empty line is the fallback
    // nothing reaches, as for the hub's error bodies.
    let mut out = serde_json::to_vec(line).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use drover_proto::batch::{BatchLineError, BatchOutputLine};
    use serde_json::json;

    use super::*;

    /// `line` is one line, ending in its only newline, and reads back as
    /// OpenAI's output line.
    fn read(line: &[u8]) -> BatchOutputLine {
        assert_eq!(
            line.last(),
            Some(&b'\n'),
            "{}",
            String::from_utf8_lossy(line)
        );
        let inside = &line[..line.len() - 1];
        assert!(
            !inside.contains(&b'\n') && !inside.contains(&b'\r'),
            "{}",
            String::from_utf8_lossy(line)
        );
        serde_json::from_slice(inside).unwrap()
    }

    #[test]
    fn an_answer_is_its_status_request_id_and_json() {
        let body = br#"{"id":"chatcmpl-1","choices":[{"message":{"content":"hi"}}]}"#;
        let line = read(&output_line("batch_req_1", "a", 200, "req_9", body));
        assert_eq!(line.id, "batch_req_1");
        assert_eq!(line.custom_id, "a");
        assert_eq!(line.error, None);
        let response = line.response.unwrap();
        assert_eq!(response.status_code, 200);
        assert_eq!(response.request_id, "req_9");
        assert_eq!(response.body["choices"][0]["message"]["content"], "hi");
    }

    #[test]
    fn the_answers_json_is_kept_byte_for_byte() {
        let body =
            br#"{"z": 1, "a": 1.0e2, "big": 123456789012345678901234567890, "s": "caf\u00e9"}"#;
        let line = output_line("batch_req_1", "a", 200, "req_9", body);
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(text.contains(std::str::from_utf8(body).unwrap()), "{text}");
        read(&line);
    }

    #[test]
    fn a_pretty_printed_answer_still_makes_one_line() {
        let body = b"{\r\n  \"id\": \"x\",\n  \"text\": \"two\\nlines\"\n}\n";
        let line = read(&output_line("batch_req_1", "a", 200, "req_9", body));
        assert_eq!(
            line.response.unwrap().body,
            json!({"id": "x", "text": "two\nlines"})
        );
    }

    #[test]
    fn an_answer_that_is_not_json_becomes_a_json_string() {
        let cases: &[(&[u8], &str)] = &[
            (b"Bad Gateway\n", "Bad Gateway\n"),
            (b"", ""),
            (b"{\"cut\": ", "{\"cut\": "),
            (b"ok \xff", "ok \u{fffd}"),
        ];
        for &(body, text) in cases {
            let line = read(&output_line("batch_req_1", "a", 502, "req_9", body));
            assert_eq!(line.response.unwrap().body, json!(text), "{body:?}");
        }
    }

    #[test]
    fn json_that_is_not_an_object_stays_json() {
        for body in ["\"ok\"", "[1,2]", "42", "null"] {
            let line = read(&output_line(
                "batch_req_1",
                "a",
                200,
                "req_9",
                body.as_bytes(),
            ));
            let expected: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(line.response.unwrap().body, expected, "{body}");
        }
    }

    #[test]
    fn a_line_without_an_answer_says_why_with_response_null() {
        let bytes = error_line(
            "batch_req_2",
            "b \"quoted\"\n",
            "batch_expired",
            "The batch's window closed\nbefore this line ran.",
        );
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""response":null"#), "{text}");
        let line = read(&bytes);
        assert_eq!(line.custom_id, "b \"quoted\"\n");
        assert_eq!(line.response, None);
        assert_eq!(
            line.error,
            Some(BatchLineError {
                code: "batch_expired".into(),
                message: "The batch's window closed\nbefore this line ran.".into(),
            })
        );
    }

    #[test]
    fn an_answer_writes_error_null() {
        let text = String::from_utf8(output_line("batch_req_1", "a", 200, "r", b"{}")).unwrap();
        assert!(text.contains(r#""error":null"#), "{text}");
    }

    #[test]
    fn only_successes_go_to_the_output_file() {
        for status in [200, 201, 204, 299] {
            assert!(!goes_to_error_file(Some(status)), "{status}");
        }
        for status in [100, 199, 300, 304, 400, 404, 429, 500, 503] {
            assert!(goes_to_error_file(Some(status)), "{status}");
        }
        assert!(goes_to_error_file(None), "a line without an answer");
    }

    mod fuzzed {
        use proptest::prelude::*;
        use proptest::test_runner::Config;

        use super::*;

        /// Bodies a server might send: JSON spread over lines, cut JSON,
        /// text, bytes that are not UTF-8.
        fn body() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..256),
                "[ -~\n\r\t]{0,64}".prop_map(String::into_bytes),
                (
                    prop::collection::vec(("[a-z\n\r\"\\\\]{0,6}", -1e9f64..1e9), 0..5),
                    any::<bool>()
                )
                    .prop_map(|(fields, pretty)| {
                        let object: serde_json::Map<_, _> = fields
                            .into_iter()
                            .map(|(k, v)| (k, serde_json::Value::from(v)))
                            .collect();
                        let value = serde_json::Value::Object(object);
                        if pretty {
                            serde_json::to_vec_pretty(&value).unwrap()
                        } else {
                            serde_json::to_vec(&value).unwrap()
                        }
                    }),
            ]
        }

        proptest! {
            #![proptest_config(Config {
                cases: 300,
                failure_persistence: None,
                ..Config::default()
            })]

            #[test]
            fn every_answer_makes_one_line_that_reads_back(
                custom_id in "\\PC{0,16}",
                status in any::<u16>(),
                body in body(),
            ) {
                let line = read(&output_line("batch_req_1", &custom_id, status, "req_1", &body));
                prop_assert_eq!(&line.custom_id, &custom_id);
                let response = line.response.unwrap();
                prop_assert_eq!(response.status_code, status);
                match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(json) => prop_assert_eq!(response.body, json),
                    Err(_) => prop_assert_eq!(
                        response.body,
                        serde_json::Value::from(String::from_utf8_lossy(&body).into_owned())
                    ),
                }
            }
        }
    }
}
