//! The answers of the coding agents' APIs, as the OpenAI Responses API and
//! Anthropic's Messages API write them (backend-apis.md §7): whole JSON
//! bodies, and the typed SSE events of their streams
//! (`event: TYPE` + `data: JSON`).

use bytes::Bytes;
use serde_json::{Value, json};

/// The id of the one output message of a response.
pub(crate) fn item_id(response_id: &str) -> String {
    format!("msg_{}", response_id.trim_start_matches("resp_"))
}

fn output_message(response_id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message",
        "id": item_id(response_id),
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

/// A Responses API response object.
pub(crate) fn response(
    id: &str,
    created: u64,
    model: &str,
    text: &str,
    input_tokens: usize,
    output_tokens: usize,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": "completed",
        "model": model,
        "output": [output_message(id, text, "completed")],
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    })
}

/// Anthropic's `stop_reason` for a finish reason.
fn stop_reason(finish_reason: &str) -> &'static str {
    if finish_reason == "length" {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// An Anthropic message object.
pub(crate) fn message(
    id: &str,
    model: &str,
    text: &str,
    finish_reason: &str,
    input_tokens: usize,
    output_tokens: usize,
) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason(finish_reason),
        "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    })
}

/// Typed SSE events, appended to one buffer.
#[derive(Default)]
pub(crate) struct Events {
    buf: Vec<u8>,
}

impl Events {
    pub(crate) fn push(mut self, kind: &str, data: &Value) -> Self {
        self.buf.extend_from_slice(b"event: ");
        self.buf.extend_from_slice(kind.as_bytes());
        self.buf.extend_from_slice(b"\ndata: ");
        self.buf
            .extend(serde_json::to_vec(data).unwrap_or_default());
        self.buf.extend_from_slice(b"\n\n");
        self
    }

    pub(crate) fn bytes(self) -> Bytes {
        Bytes::from(self.buf)
    }
}

/// A Responses stream's events, numbered as they go.
pub(crate) struct ResponseEvents<'a> {
    pub(crate) id: &'a str,
    pub(crate) created: u64,
    pub(crate) model: &'a str,
}

impl ResponseEvents<'_> {
    fn object(&self, status: &str, output: Value, usage: Value) -> Value {
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.model,
            "output": output,
            "usage": usage,
        })
    }

    pub(crate) fn start(&self, seq: &mut u64) -> Bytes {
        let mut next = || {
            *seq += 1;
            *seq - 1
        };
        let response = self.object("in_progress", json!([]), Value::Null);
        Events::default()
            .push(
                "response.created",
                &json!({"type": "response.created", "sequence_number": next(), "response": response}),
            )
            .push(
                "response.in_progress",
                &json!({"type": "response.in_progress", "sequence_number": next(), "response": response}),
            )
            .push(
                "response.output_item.added",
                &json!({"type": "response.output_item.added", "sequence_number": next(),
                        "output_index": 0, "item": output_message(self.id, "", "in_progress")}),
            )
            .push(
                "response.content_part.added",
                &json!({"type": "response.content_part.added", "sequence_number": next(),
                        "item_id": item_id(self.id), "output_index": 0, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []}}),
            )
            .bytes()
    }

    pub(crate) fn delta(&self, seq: &mut u64, delta: &str) -> Bytes {
        let n = *seq;
        *seq += 1;
        Events::default()
            .push(
                "response.output_text.delta",
                &json!({"type": "response.output_text.delta", "sequence_number": n,
                        "item_id": item_id(self.id), "output_index": 0, "content_index": 0,
                        "delta": delta}),
            )
            .bytes()
    }

    pub(crate) fn end(
        &self,
        seq: &mut u64,
        text: &str,
        input_tokens: usize,
        output_tokens: usize,
    ) -> Bytes {
        let mut next = || {
            *seq += 1;
            *seq - 1
        };
        let item = output_message(self.id, text, "completed");
        let usage = json!({"input_tokens": input_tokens, "output_tokens": output_tokens,
                           "total_tokens": input_tokens + output_tokens});
        Events::default()
            .push(
                "response.output_text.done",
                &json!({"type": "response.output_text.done", "sequence_number": next(),
                        "item_id": item_id(self.id), "output_index": 0, "content_index": 0,
                        "text": text}),
            )
            .push(
                "response.content_part.done",
                &json!({"type": "response.content_part.done", "sequence_number": next(),
                        "item_id": item_id(self.id), "output_index": 0, "content_index": 0,
                        "part": {"type": "output_text", "text": text, "annotations": []}}),
            )
            .push(
                "response.output_item.done",
                &json!({"type": "response.output_item.done", "sequence_number": next(),
                        "output_index": 0, "item": item}),
            )
            .push(
                "response.completed",
                &json!({"type": "response.completed", "sequence_number": next(),
                        "response": self.object("completed", json!([item]), usage)}),
            )
            .bytes()
    }
}

/// An Anthropic Messages stream's events.
/// A Messages stream's opening events; `with_start`: its `message_start`
/// too (llama-server leaves it out of some streams).
pub(crate) fn message_start(id: &str, model: &str, input_tokens: usize, with_start: bool) -> Bytes {
    let mut events = Events::default();
    if with_start {
        events = events.push(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": 0}}}),
        );
    }
    events
        .push(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
        )
        .push("ping", &json!({"type": "ping"}))
        .bytes()
}

pub(crate) fn message_delta(text: &str) -> Bytes {
    Events::default()
        .push(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": text}}),
        )
        .bytes()
}

pub(crate) fn message_end(finish_reason: &str, output_tokens: usize) -> Bytes {
    Events::default()
        .push(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        )
        .push(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(finish_reason), "stop_sequence": null},
                    "usage": {"output_tokens": output_tokens}}),
        )
        .push("message_stop", &json!({"type": "message_stop"}))
        .bytes()
}
