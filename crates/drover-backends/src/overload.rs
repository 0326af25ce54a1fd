//! Answers that say the server ran out of room for a request it would run
//! alone: overload, not a broken server. llama.cpp's `llama-server` whose
//! slots share one context (`--kv-unified`, router mode's default) fails
//! requests with `500 {"error":{"code":500,"message":"Context size has
//! been exceeded.","type":"server_error"}}` once their contexts together
//! fill it, as a plain answer or as an SSE stream's error event, first or
//! after some tokens; each of those requests alone would have fit.

/// The words llama-server uses, compared without regard to case.
const CONTEXT_FULL: &[u8] = b"context size has been exceeded";

/// Whether `body` (an answer, or part of a stream) says the server ran out
/// of room in a shared context.
pub fn out_of_room(body: &[u8]) -> bool {
    body.windows(CONTEXT_FULL.len())
        .any(|w| w.eq_ignore_ascii_case(CONTEXT_FULL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_servers_shared_context_filling_is_out_of_room() {
        assert!(out_of_room(
            br#"{"error":{"code":500,"message":"Context size has been exceeded.","type":"server_error"}}"#
        ));
        assert!(out_of_room(
            b"data: {\"error\":{\"code\":500,\"message\":\"Context size has been exceeded.\",\"type\":\"server_error\"}}\n\n"
        ));
        // A request too large for any slot is the client's, not overload.
        assert!(!out_of_room(
            br#"{"error":{"code":400,"message":"request (6423 tokens) exceeds the available context size (512 tokens), try increasing it","type":"exceed_context_size_error"}}"#
        ));
        assert!(!out_of_room(
            br#"{"error":{"message":"CUDA error: out of memory"}}"#
        ));
    }
}
