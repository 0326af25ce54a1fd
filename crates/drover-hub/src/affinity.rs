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
//!
//! Both lists are bounded, whatever the request: the dispatcher records and
//! looks them up under its lock, and a body of a million empty messages
//! once held that lock for seconds. The next turn of a conversation finds
//! the previous one as long as fewer than [`MAX_LOOKUP`] messages (or
//! prompt blocks) were added in between.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};

use drover_proto::openai::{MessageRole, RequestPeek};
use drover_scheduler::Affinity;

const PROMPT_BLOCK: usize = 256;
/// Prefixes looked up per request, the longest first.
pub const MAX_LOOKUP: usize = 128;
/// Prefixes remembered per request: the longest, where the next turn of the
/// conversation will look.
pub const MAX_RECORD: usize = 16;

/// The last [`MAX_LOOKUP`] cumulative hashes, each with how much of the
/// request it covers (messages, or bytes for prompts).
#[derive(Default)]
struct Window {
    hashes: VecDeque<(u64, usize)>,
}

impl Window {
    fn push(&mut self, hash: u64, covered: usize) {
        if self.hashes.len() == MAX_LOOKUP {
            self.hashes.pop_front();
        }
        self.hashes.push_back((hash, covered));
    }

    /// Remembers the longest prefixes; looks up those `worth` accepts,
    /// longest first.
    fn affinity(&self, worth: impl Fn(usize) -> bool) -> Affinity {
        let record = self
            .hashes
            .iter()
            .skip(self.hashes.len().saturating_sub(MAX_RECORD))
            .map(|(h, _)| *h)
            .collect();
        let lookup = self
            .hashes
            .iter()
            .rev()
            .take_while(|(_, covered)| worth(*covered))
            .map(|(h, _)| *h)
            .collect();
        Affinity { lookup, record }
    }
}

/// The prefix hashes of any request the hub forwards: chat messages
/// (after an Anthropic `system` prompt), Responses `instructions` and
/// `input` items, or a completion prompt. A system prompt counts as a
/// system message, so it alone is never looked up.
pub fn for_request(model: &str, peek: &RequestPeek<'_>) -> Affinity {
    let system = peek.system.or(peek.instructions).map(|s| s.get());
    if let Some(messages) = &peek.messages {
        return chat(model, system, messages.iter().map(|m| m.get()));
    }
    if let Some(input) = peek.input {
        // A list of items is a conversation; a plain string is one user
        // turn, whose prompt is hashed in blocks like a completion's.
        return match serde_json::from_str::<Vec<&serde_json::value::RawValue>>(input.get()) {
            Ok(items) => chat(model, system, items.iter().map(|m| m.get())),
            Err(_) => prompt_blocks(model, input.get()),
        };
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

fn chat<'a>(
    model: &str,
    system: Option<&str>,
    messages: impl Iterator<Item = &'a str>,
) -> Affinity {
    let mut h = seeded(model);
    let mut window = Window::default();
    let mut first_conversational = None;
    let mut offset = 0;
    if let Some(system) = system {
        ("system", system).hash(&mut h);
        window.push(h.finish(), 0);
        offset = 1;
    }
    for (i, raw) in messages.enumerate() {
        let i = i + offset;
        raw.hash(&mut h);
        window.push(h.finish(), i);
        if first_conversational.is_none() {
            let role = serde_json::from_str::<MessageRole<'_>>(raw)
                .ok()
                .and_then(|m| m.role.map(|r| r.into_owned()));
            // Responses items without a role (tool outputs, reasoning) are
            // conversation too.
            if !matches!(role.as_deref(), Some("system") | Some("developer")) {
                first_conversational = Some(i);
            }
        }
    }
    match first_conversational {
        Some(first) => window.affinity(|i| i >= first),
        None => window.affinity(|_| false),
    }
}

fn prompt_blocks(model: &str, raw_prompt: &str) -> Affinity {
    let bytes = raw_prompt.as_bytes();
    let mut h = seeded(model);
    let mut window = Window::default();
    for (i, chunk) in bytes.chunks(PROMPT_BLOCK).enumerate() {
        chunk.hash(&mut h);
        window.push(h.finish(), (i + 1) * PROMPT_BLOCK);
    }
    let half = bytes.len() / 2;
    window.affinity(|covered| covered >= half)
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
    fn a_million_messages_give_a_bounded_handful_of_hashes() {
        let body = format!(r#"{{"messages":[{}{{}}]}}"#, "{},".repeat(1_000_000));
        let a = peek(&body);
        assert!(a.record.len() <= MAX_RECORD, "{}", a.record.len());
        assert!(a.lookup.len() <= MAX_LOOKUP, "{}", a.lookup.len());
        let prompt = peek(&format!(r#"{{"prompt":"{}"}}"#, "x".repeat(4_000_000)));
        assert!(prompt.record.len() <= MAX_RECORD && prompt.lookup.len() <= MAX_LOOKUP);
    }

    #[test]
    fn a_long_conversation_still_finds_its_previous_turn() {
        let turn = |n: usize| {
            let messages: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"role":"user","content":"m{i}"}}"#))
                .collect();
            peek(&format!(r#"{{"messages":[{}]}}"#, messages.join(",")))
        };
        let before = turn(500);
        let after = turn(510);
        let prev_full = *before.record.last().unwrap();
        assert_eq!(after.lookup.iter().position(|h| *h == prev_full), Some(10));
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

    #[test]
    fn anthropic_turns_find_the_previous_turn_but_not_a_shared_system_prompt() {
        let t1 = peek(
            r#"{"system":"You are Claude Code.","messages":[{"role":"user","content":"fix it"}]}"#,
        );
        let t2 = peek(
            r#"{"system":"You are Claude Code.","messages":[{"role":"user","content":"fix it"},
                {"role":"assistant","content":"done"},{"role":"user","content":"test it"}]}"#,
        );
        let other = peek(
            r#"{"system":"You are Claude Code.","messages":[{"role":"user","content":"other"}]}"#,
        );
        assert!(t2.lookup.contains(t1.record.last().unwrap()));
        assert_eq!(
            t1.record[0], other.record[0],
            "the system prompt hashes alike"
        );
        assert!(!other.lookup.contains(&t1.record[0]));
        assert!(!other.lookup.contains(t1.record.last().unwrap()));
    }

    #[test]
    fn responses_items_and_instructions_hash_like_a_chat() {
        let t1 = peek(r#"{"instructions":"be a coder","input":[{"role":"user","content":"a"}]}"#);
        let t2 = peek(
            r#"{"instructions":"be a coder","input":[{"role":"user","content":"a"},
                {"type":"message","role":"assistant","content":"b"},
                {"type":"function_call_output","call_id":"c","output":"ok"}]}"#,
        );
        assert!(t2.lookup.contains(t1.record.last().unwrap()));
        let text = peek(&format!(r#"{{"input":"{}"}}"#, "x".repeat(2000)));
        assert!(!text.record.is_empty(), "a string input is a prompt");
    }
}
