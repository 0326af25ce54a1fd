//! The output tokens an answer reports, read as its bytes pass through:
//! OpenAI's `"completion_tokens"` (a JSON answer's `usage`, a stream's last
//! chunk when the client asked for usage) and the `"output_tokens"` of the
//! Anthropic and Responses APIs (cumulative in a stream, so the last value
//! wins), and llama.cpp's `"predicted_n"` (its `timings`, in a plain answer
//! and a stream's last chunk, which it sends without being asked). Bodies are forwarded untouched; this only looks, keeping a short
//! tail between chunks so a number split across two is still read.
//!
//! A stream that reports no usage (OpenAI's, unless the client asked for
//! it) is estimated at one token per chunk that carries text: servers send
//! about one token a chunk.
//!
//! A count is the server's word, and a server can be wrong or hostile: no
//! count above [`MAX_TOKENS`] is believed, so what is summed from answers
//! (a key's bucket, the counters) stays far from overflowing.

/// The most output tokens one answer is taken to report: more than any
/// model's context holds today.
pub const MAX_TOKENS: u64 = 1 << 24;

const KEYS: [&[u8]; 3] = [
    b"\"completion_tokens\"",
    b"\"output_tokens\"",
    b"\"predicted_n\"",
];

/// Where a chunk's text starts: OpenAI chat (`delta.content`), completions
/// (`text`) and Anthropic (`text_delta`'s `text`).
const TEXT: [&[u8]; 2] = [b"\"content\":\"", b"\"text\":\""];

/// Bytes kept from one chunk to the next: the longest key, a colon, spaces
/// and a number.
const TAIL: usize = 64;

#[derive(Debug, Default)]
pub struct UsageSniffer {
    tail: Vec<u8>,
    last: Option<u64>,
    /// Non-empty texts seen.
    texts: u64,
    /// An `"error"` key was seen in the bytes last fed: a stream's error
    /// event, for the caller to read.
    error: bool,
}

impl UsageSniffer {
    pub fn feed(&mut self, bytes: &[u8]) {
        // The tail and the new bytes, in one buffer kept between calls.
        let mut text = std::mem::take(&mut self.tail);
        // What the last call already saw ends here.
        let seen = text.len();
        text.extend_from_slice(bytes);
        // Every key starts with a quote: one pass from quote to quote,
        // rather than one search per key, keeps this cheap enough to run
        // on every answer.
        let mut from = 0;
        self.error = false;
        while let Some(q) = memchr::memchr(b'"', &text[from..]) {
            let at = from + q;
            from = at + 1;
            let rest = &text[at..];
            // Most quotes open something else: one byte tells.
            if !matches!(rest.get(1), Some(b'c' | b'o' | b'p' | b't' | b'e')) {
                continue;
            }
            if rest.starts_with(b"\"error\"") {
                self.error = true;
            } else if let Some(key) = KEYS.iter().find(|k| rest.starts_with(k)) {
                match number_after(&rest[key.len()..]) {
                    Some(Some(n)) => self.last = Some(n.min(MAX_TOKENS)),
                    // Cut off by the chunk's end: read again with the next.
                    Some(None) => break,
                    None => {}
                }
            } else if let Some(key) = TEXT.iter().find(|k| rest.starts_with(k)) {
                let next = at + key.len();
                // Counted once: when the byte after the key is new, and
                // not the closing quote of an empty text.
                if next < text.len() && next >= seen && text[next] != b'"' {
                    self.texts += 1;
                }
            }
        }
        let keep = text.len().min(TAIL);
        text.drain(..text.len() - keep);
        self.tail = text;
    }

    /// Whether the bytes last fed carried an `"error"` key.
    pub fn saw_error(&self) -> bool {
        self.error
    }

    /// The last output-token count seen.
    pub fn tokens(&self) -> Option<u64> {
        self.last
    }

    /// The tokens reported, else for a stream one a chunk with text.
    pub fn estimate(&self) -> Option<u64> {
        self.last
            .or((self.texts > 0).then_some(self.texts.min(MAX_TOKENS)))
    }
}

/// After a key: `Some(Some(n))` for `: n`, `Some(None)` when the text ends
/// before the number does, `None` when no number follows.
fn number_after(rest: &[u8]) -> Option<Option<u64>> {
    let skip = |b: &[u8]| b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    let mut i = skip(rest);
    if i == rest.len() {
        return Some(None);
    }
    if rest[i] != b':' {
        return None;
    }
    i += 1;
    i += skip(&rest[i..]);
    let digits = rest[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if i + digits == rest.len() {
        return Some(None);
    }
    if digits == 0 {
        return None;
    }
    std::str::from_utf8(&rest[i..i + digits])
        .ok()?
        .parse()
        .ok()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(chunks: &[&[u8]]) -> Option<u64> {
        let mut s = UsageSniffer::default();
        for c in chunks {
            s.feed(c);
        }
        s.tokens()
    }

    #[test]
    fn reads_usage_of_each_api_split_anywhere() {
        let openai = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}"#;
        for cut in 0..openai.len() {
            assert_eq!(
                read(&[&openai[..cut], &openai[cut..]]),
                Some(34),
                "cut at {cut}"
            );
        }
        let anthropic = b"event: message_start\ndata: {\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}\n\nevent: message_delta\ndata: {\"usage\":{\"output_tokens\": 27}}\n\n";
        for cut in 0..anthropic.len() {
            assert_eq!(
                read(&[&anthropic[..cut], &anthropic[cut..]]),
                Some(27),
                "cut at {cut}"
            );
        }
        assert_eq!(read(&[b"{\"choices\":[]}"]), None);
        let mut reported = UsageSniffer::default();
        reported.feed(
            br#"data: {"choices":[{"delta":{"content":"hi"}}],"usage":{"completion_tokens":7}}"#,
        );
        assert_eq!(reported.estimate(), Some(7), "what is reported wins");
        assert_eq!(read(&[b"\"completion_tokens\": \"many\""]), None);
    }

    #[test]
    fn a_count_past_belief_is_clamped() {
        let lie = br#"{"usage":{"completion_tokens":18446744073709551615}}"#;
        assert_eq!(read(&[lie]), Some(MAX_TOKENS));
        // Past u64 altogether: not a number the hub can use.
        assert_eq!(
            read(&[br#"{"usage":{"completion_tokens":99999999999999999999999}}"#]),
            None
        );
    }

    #[test]
    fn a_stream_without_usage_counts_its_chunks_of_text_once_each() {
        let stream: Vec<u8> = [
            r#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            r#"data: {"choices":[{"delta":{"content":"Hel"}}]}"#,
            r#"data: {"choices":[{"delta":{"content":"lo"}}]}"#,
            r#"data: {"choices":[{"text":" there"}]}"#,
            r#"data: {"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
            "data: [DONE]",
        ]
        .iter()
        .flat_map(|e| format!("{e}\n\n").into_bytes())
        .collect();
        for cut in 0..stream.len() {
            for second in [cut, (cut + 7).min(stream.len())] {
                let mut s = UsageSniffer::default();
                s.feed(&stream[..cut]);
                s.feed(&stream[cut..second]);
                s.feed(&stream[second..]);
                assert_eq!(s.estimate(), Some(3), "cut at {cut} and {second}");
                assert_eq!(s.tokens(), None);
            }
        }
    }

    #[test]
    fn llama_cpp_counts_its_stream_in_timings_which_wins_over_chunks() {
        // As the real llama-server streams 6 tokens of which only one
        // decoded to text (the rest held back as partial characters).
        let stream = concat!(
            r#"data: {"choices":[{"delta":{"role":"assistant","content":null}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{"content":"%"}}]}"#,
            "\n\n",
            r#"data: {"choices":[{"finish_reason":"length","delta":{}}],"timings":{"cache_n":0,"prompt_n":36,"predicted_n":6}}"#,
            "\n\n",
            "data: [DONE]\n\n",
        )
        .as_bytes();
        for cut in 0..stream.len() {
            let mut s = UsageSniffer::default();
            s.feed(&stream[..cut]);
            s.feed(&stream[cut..]);
            assert_eq!(
                (s.tokens(), s.estimate()),
                (Some(6), Some(6)),
                "cut at {cut}"
            );
        }
    }
}
