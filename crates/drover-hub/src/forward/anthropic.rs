//! Repairs a Messages stream that would break Anthropic's clients: every
//! stream must open with `message_start` (the SDK's stream helper and
//! Claude Code build the message from it), and llama-server leaves it out
//! of about one stream in five, starting at `content_block_start`. Where
//! the first event is something else, the hub puts in the one that is
//! missing, built from what it knows: an id of its own, the model as the
//! client named it, the prompt's estimated tokens. Everything the server
//! sent follows unchanged.

use bytes::{Bytes, BytesMut};
use serde_json::json;

/// `first` (a Messages stream's first bytes) with a `message_start` event
/// before it, if it does not open with one.
pub(super) fn with_message_start(first: Bytes, id: &str, model: &str, input_tokens: u32) -> Bytes {
    if opens_with_message_start(&first) {
        return first;
    }
    let start = json!({
        "type": "message_start",
        "message": {
            "id": format!("msg_{id}"),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model,
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        },
    });
    let mut out = BytesMut::with_capacity(first.len() + 256);
    out.extend_from_slice(b"event: message_start\ndata: ");
    out.extend_from_slice(start.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    out.extend_from_slice(&first);
    out.freeze()
}

/// Whether the stream's first event (its `event:` line, or else its data's
/// `"type"`) is `message_start`. An empty start says nothing either way.
fn opens_with_message_start(first: &[u8]) -> bool {
    let text = String::from_utf8_lossy(first);
    let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return true;
    };
    if let Some(event) = line.strip_prefix("event:") {
        return event.trim() == "message_start";
    }
    line.strip_prefix("data:")
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok())
        .is_none_or(|v| v["type"] == "message_start")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_without_message_start_gets_one_and_keeps_the_rest() {
        let from_llama = Bytes::from_static(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        );
        let repaired = with_message_start(from_llama.clone(), "req-1", "tiny-a", 12);
        let text = String::from_utf8(repaired.to_vec()).unwrap();
        assert!(text.starts_with("event: message_start\ndata: {"), "{text}");
        assert!(text.ends_with(std::str::from_utf8(&from_llama).unwrap()));
        let data = text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["message"]["id"], "msg_req-1");
        assert_eq!(v["message"]["model"], "tiny-a");
        assert_eq!(v["message"]["role"], "assistant");
        assert_eq!(v["message"]["usage"]["input_tokens"], 12);
    }

    #[test]
    fn a_stream_that_opens_well_is_left_alone() {
        for ok in [
            &b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"[..],
            b"\n\nevent: message_start\ndata: {}\n\n",
            b"data: {\"type\":\"message_start\",\"message\":{}}\n\n",
            b"",
        ] {
            let first = Bytes::copy_from_slice(ok);
            assert_eq!(with_message_start(first.clone(), "r", "m", 1), first);
        }
    }
}
