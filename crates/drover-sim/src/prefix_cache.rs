//! Each slot's KV cache, as llama.cpp keeps it: a slot remembers the prompt
//! it last processed, and a new request reuses the slot whose prompt shares
//! the longest prefix with its own, paying prefill only for the rest. A
//! prompt is what a server renders from the request, in the order its chat
//! template puts it (system prompt, then the conversation), whatever the
//! order of the body's keys; cut into blocks and hashed cumulatively, the
//! next turn of a conversation shares every block before its new turns.

use std::sync::Mutex;

use crate::text::Fnv;

/// Bytes per block; about 64 tokens.
const BLOCK: usize = 256;
/// Bytes per token, as the simulator counts prompts.
const BYTES_PER_TOKEN: usize = 4;

/// A prompt's cumulative block hashes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Blocks(Vec<u64>);

/// The parts of a request a server renders into its prompt, in that order.
const PROMPT_FIELDS: [&str; 5] = ["system", "instructions", "messages", "input", "prompt"];

/// The prompt a server would render from a request body: its system prompt
/// and conversation (or prompt) as text, in template order.
pub(crate) fn rendered(body: &[u8]) -> Vec<u8> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
        return body.to_vec();
    };
    let mut out = Vec::with_capacity(body.len());
    for name in PROMPT_FIELDS {
        if let Some(value) = fields.get(name) {
            out.extend(value.to_string().into_bytes());
        }
    }
    out
}

impl Blocks {
    pub(crate) fn of(body: &[u8]) -> Blocks {
        let mut h = Fnv::new();
        Blocks(
            body.chunks(BLOCK)
                .filter(|c| c.len() == BLOCK)
                .map(|chunk| {
                    h = h.bytes(chunk);
                    h.finish()
                })
                .collect(),
        )
    }

    fn shared_with(&self, other: &Blocks) -> usize {
        self.0
            .iter()
            .zip(&other.0)
            .take_while(|(a, b)| a == b)
            .count()
    }
}

/// The slots' cached prompts, most recently used last.
#[derive(Debug)]
pub(crate) struct PrefixCache {
    slots: Mutex<Vec<Blocks>>,
    capacity: usize,
}

impl PrefixCache {
    pub(crate) fn new(slots: usize) -> Self {
        PrefixCache {
            slots: Mutex::new(Vec::new()),
            capacity: slots.max(1),
        }
    }

    /// Takes the slot that shares the longest prefix with `prompt` (or the
    /// least recently used one) for it, and returns how many of its prompt
    /// tokens were cached there.
    pub(crate) fn take(&self, prompt: &Blocks) -> usize {
        let mut slots = drover_core::sync::lock(&self.slots);
        let best = slots
            .iter()
            .enumerate()
            .map(|(i, cached)| (cached.shared_with(prompt), i))
            .max();
        let shared = match best {
            Some((shared, i)) if shared > 0 => {
                slots.remove(i);
                shared
            }
            _ => {
                if slots.len() >= self.capacity {
                    slots.remove(0);
                }
                0
            }
        };
        slots.push(prompt.clone());
        shared * BLOCK / BYTES_PER_TOKEN
    }

    pub(crate) fn clear(&self) {
        drover_core::sync::lock(&self.slots).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_turn_reuses_its_conversations_slot() {
        let cache = PrefixCache::new(2);
        let turn1 = "a".repeat(2048);
        let turn2 = format!("{turn1}{}", "b".repeat(1024));
        let other = "c".repeat(2048);
        assert_eq!(cache.take(&Blocks::of(turn1.as_bytes())), 0);
        assert_eq!(cache.take(&Blocks::of(other.as_bytes())), 0);
        // Eight blocks of turn 1 are cached: 512 tokens.
        assert_eq!(cache.take(&Blocks::of(turn2.as_bytes())), 512);
        // A third conversation evicts the least recently used (other).
        assert_eq!(cache.take(&Blocks::of("d".repeat(512).as_bytes())), 0);
        assert_eq!(cache.take(&Blocks::of(other.as_bytes())), 0);
    }
}
