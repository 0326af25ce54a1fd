//! Prefix hashes for affinity. A chat is hashed message by message,
//! cumulatively: the hash of messages 1..k names the conversation up to k.
//! The next turn of a conversation carries the previous request's messages
//! as its prefix, so its hash of 1..n-1 (or shorter) finds the backend that
//! served the previous turn and holds that prefix in its KV cache.
//!
//! Prefixes made only of system messages are never looked up: a system
//! prompt shared by every client would otherwise pull all traffic to one
//! backend. Plain prompts are hashed in blocks, and only prefixes covering
//! at least half of the prompt are looked up, for the same reason.

use std::hash::{DefaultHasher, Hash, Hasher};

use drover_proto::openai::{MessageRole, RequestPeek};
use drover_scheduler::Affinity;

const PROMPT_BLOCK: usize = 256;

pub fn for_request(model: &str, peek: &RequestPeek<'_>) -> Affinity {
    if let Some(messages) = &peek.messages {
        return chat(model, messages.iter().map(|m| m.get()));
    }
    if let Some(prompt) = peek.prompt {
        return prompt_blocks(model, prompt.get());
    }
    Affinity::default()
}

fn seeded(model: &str) -> DefaultHasher {
    // DefaultHasher::new() uses fixed keys, so hashes are stable within a
    // process, which is all the index needs.
    let mut h = DefaultHasher::new();
    model.hash(&mut h);
    h
}

fn chat<'a>(model: &str, messages: impl Iterator<Item = &'a str>) -> Affinity {
    let mut h = seeded(model);
    let mut record = Vec::new();
    let mut first_conversational = None;
    for (i, raw) in messages.enumerate() {
        raw.hash(&mut h);
        record.push(h.finish());
        if first_conversational.is_none() {
            let role = serde_json::from_str::<MessageRole<'_>>(raw)
                .ok()
                .and_then(|m| m.role.map(|r| r.into_owned()));
            if !matches!(role.as_deref(), Some("system") | Some("developer")) {
                first_conversational = Some(i);
            }
        }
    }
    let lookup = match first_conversational {
        Some(first) => record[first..].iter().rev().copied().collect(),
        None => Vec::new(),
    };
    Affinity { lookup, record }
}

fn prompt_blocks(model: &str, raw_prompt: &str) -> Affinity {
    let bytes = raw_prompt.as_bytes();
    let mut h = seeded(model);
    let mut record = Vec::new();
    let mut covered = Vec::new();
    for chunk in bytes.chunks(PROMPT_BLOCK) {
        chunk.hash(&mut h);
        record.push(h.finish());
        covered.push(record.len() * PROMPT_BLOCK);
    }
    let half = bytes.len() / 2;
    let lookup = record
        .iter()
        .zip(&covered)
        .rev()
        .take_while(|(_, c)| **c >= half)
        .map(|(h, _)| *h)
        .collect();
    Affinity { lookup, record }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peek(body: &str) -> Affinity {
        let p: RequestPeek<'_> = serde_json::from_str(body).unwrap();
        for_request("m", &p)
    }

    #[test]
    fn the_next_turn_finds_the_previous_turns_full_conversation() {
        let t1 = peek(
            r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#,
        );
        let t2 = peek(
            r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},
                {"role":"assistant","content":"hello"},{"role":"user","content":"more"}]}"#,
        );
        let prev_full = *t1.record.last().unwrap();
        assert!(t2.lookup.contains(&prev_full));
        // Longest first.
        assert_eq!(t2.lookup[0], *t2.record.last().unwrap());
    }

    #[test]
    fn a_shared_system_prompt_alone_is_never_looked_up() {
        let a = peek(
            r#"{"messages":[{"role":"system","content":"shared"},{"role":"user","content":"a"}]}"#,
        );
        let b = peek(
            r#"{"messages":[{"role":"system","content":"shared"},{"role":"user","content":"b"}]}"#,
        );
        assert_eq!(
            a.record[0], b.record[0],
            "same system prompt, same first hash"
        );
        assert!(!b.lookup.contains(&a.record[0]));
        assert!(!b.lookup.contains(&a.record[1]));
    }

    #[test]
    fn models_do_not_share_prefixes() {
        let body = r#"{"messages":[{"role":"user","content":"a"}]}"#;
        let p: RequestPeek<'_> = serde_json::from_str(body).unwrap();
        assert_ne!(for_request("x", &p).record, for_request("y", &p).record);
    }

    #[test]
    fn long_prompts_match_on_most_of_their_length() {
        let base = "x".repeat(2000);
        let first = peek(&format!(r#"{{"prompt":"{base}"}}"#));
        let longer = peek(&format!(r#"{{"prompt":"{base}{}"}}"#, "y".repeat(300)));
        assert!(longer.lookup.iter().any(|h| first.record.contains(h)));
        let unrelated_tail = peek(&format!(
            r#"{{"prompt":"{}{}"}}"#,
            &base[..300],
            "z".repeat(2000)
        ));
        assert!(
            !unrelated_tail
                .lookup
                .iter()
                .any(|h| first.record.contains(h))
        );
    }
}
