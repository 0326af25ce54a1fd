//! Which backend holds each stored response: a Responses API request that
//! continues one (`previous_response_id`) must go to the server that
//! produced it, as only that server holds its state. Bounded: the oldest
//! entries are forgotten first, and a forgotten or unknown id routes
//! freely (the server that gets it says whether it knows it).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use drover_core::BackendId;

/// How many response ids the hub remembers.
pub const CAPACITY: usize = 100_000;

/// The longest response id remembered; longer ones are not ids any server
/// here makes.
const MAX_ID: usize = 256;

#[derive(Default)]
struct Inner {
    owners: HashMap<String, BackendId>,
    order: VecDeque<String>,
}

pub struct ResponseOwners {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl ResponseOwners {
    pub fn new(capacity: usize) -> Self {
        ResponseOwners {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    pub fn record(&self, id: &str, backend: BackendId) {
        if id.is_empty() || id.len() > MAX_ID {
            return;
        }
        let mut inner = drover_core::sync::lock(&self.inner);
        if inner.owners.insert(id.to_string(), backend).is_some() {
            return;
        }
        inner.order.push_back(id.to_string());
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.owners.remove(&old);
            }
        }
    }

    pub fn owner(&self, id: &str) -> Option<BackendId> {
        drover_core::sync::lock(&self.inner).owners.get(id).copied()
    }
}

/// Finds a response's id in the start of its answer: the first `"id"`
/// string, which is the response's own in both a JSON answer
/// (`{"id":"resp_...",...}`) and a stream (whose first event,
/// `response.created`, carries the response). Reads `window` only, so a
/// search costs at most that.
pub struct IdSniffer {
    seen: Vec<u8>,
    window: usize,
    done: bool,
}

impl IdSniffer {
    pub fn new(window: usize) -> Self {
        IdSniffer {
            seen: Vec::new(),
            window,
            done: false,
        }
    }

    /// Feeds the next bytes of the answer; the id once it is found.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<String> {
        if self.done {
            return None;
        }
        let room = self.window.saturating_sub(self.seen.len());
        self.seen.extend_from_slice(&bytes[..bytes.len().min(room)]);
        let found = first_id(&self.seen);
        if found.is_some() || self.seen.len() >= self.window {
            self.done = true;
            self.seen = Vec::new();
        }
        found
    }
}

fn first_id(text: &[u8]) -> Option<String> {
    let key = b"\"id\"";
    let at = text.windows(key.len()).position(|w| w == key)?;
    let rest = &text[at + key.len()..];
    let rest = trim_start(rest).strip_prefix(b":")?;
    let rest = trim_start(rest).strip_prefix(b"\"")?;
    let end = rest.iter().position(|b| *b == b'"' || *b == b'\\')?;
    if rest.get(end) != Some(&b'"') {
        return None;
    }
    String::from_utf8(rest[..end].to_vec()).ok()
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_id_of_a_json_answer_and_of_a_stream_split_anywhere() {
        let json = br#"{"id": "resp_abc","object":"response","output":[{"id":"msg_1"}]}"#;
        let mut s = IdSniffer::new(65_536);
        assert_eq!(s.feed(json).as_deref(), Some("resp_abc"));
        let stream = b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_xyz\",\"object\":\"response\"}}\n\n";
        for split in 1..stream.len() {
            let mut s = IdSniffer::new(65_536);
            let first = s.feed(&stream[..split]);
            let id = first.or_else(|| s.feed(&stream[split..]));
            assert_eq!(id.as_deref(), Some("resp_xyz"), "split at {split}");
        }
    }

    #[test]
    fn looks_no_further_than_its_window() {
        let mut s = IdSniffer::new(16);
        assert_eq!(s.feed(&[b' '; 16]), None);
        assert_eq!(s.feed(br#"{"id":"resp_late"}"#), None);
    }

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let owners = ResponseOwners::new(2);
        owners.record("a", BackendId(1));
        owners.record("b", BackendId(2));
        owners.record("c", BackendId(3));
        assert_eq!(owners.owner("a"), None);
        assert_eq!(owners.owner("c"), Some(BackendId(3)));
    }
}
