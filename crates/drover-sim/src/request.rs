//! The request bodies the simulator accepts, read leniently as real servers
//! do: unknown fields are ignored, and only what an endpoint needs is
//! required.

use std::borrow::Cow;

use serde::Deserialize;

use crate::error::ApiError;
use crate::text::{Fnv, count_words};

/// The union of the fields the three inference endpoints read.
#[derive(Debug, Deserialize)]
pub(crate) struct InferenceRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    messages: Option<Vec<Message>>,
    prompt: Option<TextInput>,
    input: Option<TextInput>,
    /// Structured output asked for (`json_schema`, `json_object`).
    response_format: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: Option<String>,
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    /// Multi-part content; only the text parts matter here.
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    text: Option<String>,
}

/// `prompt` and `input`: a string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TextInput {
    One(String),
    Many(Vec<String>),
}

impl TextInput {
    fn texts(&self) -> &[String] {
        match self {
            TextInput::One(text) => std::slice::from_ref(text),
            TextInput::Many(texts) => texts,
        }
    }
}

/// What the answer depends on: a key for the generator and the prompt size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prompt {
    pub(crate) key: u64,
    pub(crate) tokens: usize,
}

/// A JSON request body, or the 400 to answer instead.
pub(crate) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_request(format!("Invalid request body: {e}"), None))
}

/// The `model` every inference request must name. `missing` is the 400's
/// message without one, worded as the real servers of that API word it.
pub(crate) fn required_model<'m>(
    model: Option<&'m str>,
    missing: &'static str,
) -> Result<&'m str, ApiError> {
    match model {
        Some(model) if !model.is_empty() => Ok(model),
        _ => Err(ApiError::invalid_request(missing, Some("model"))),
    }
}

impl InferenceRequest<'_> {
    pub(crate) fn model(&self) -> Result<&str, ApiError> {
        required_model(self.model.as_deref(), "You must provide a model parameter.")
    }

    pub(crate) fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The smaller of `max_tokens` and `max_completion_tokens`, if either
    /// was given.
    /// The schema the answer must meet, if the request asks for one.
    pub(crate) fn answer_schema(&self) -> Option<serde_json::Value> {
        self.response_format.as_ref().and_then(crate::schema::asked)
    }

    pub(crate) fn max_tokens(&self) -> Option<u64> {
        match (self.max_tokens, self.max_completion_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The key hashes the conversation's text rather than the raw body, so a
    /// proxy that re-serializes the body or flips `stream` still gets the
    /// same words back.
    pub(crate) fn chat_prompt(&self, seed: u64, model: &str) -> Result<Prompt, ApiError> {
        let messages = match &self.messages {
            Some(messages) if !messages.is_empty() => messages,
            Some(_) => {
                return Err(ApiError::invalid_request(
                    "'messages' must contain at least one message.",
                    Some("messages"),
                ));
            }
            None => {
                return Err(ApiError::invalid_request(
                    "'messages' is a required property.",
                    Some("messages"),
                ));
            }
        };
        let mut hash = Fnv::new().u64(seed).str("chat").str(model);
        let mut tokens = 0;
        for message in messages {
            hash = hash.str(message.role.as_deref().unwrap_or(""));
            let mut add = |text: &str| {
                hash = hash.str(text);
                tokens += count_words(text);
            };
            match &message.content {
                Some(Content::Text(text)) => add(text),
                Some(Content::Parts(parts)) => {
                    parts.iter().filter_map(|p| p.text.as_deref()).for_each(add);
                }
                None => {}
            }
        }
        Ok(Prompt {
            key: hash.finish(),
            tokens,
        })
    }

    pub(crate) fn completion_prompt(&self, seed: u64, model: &str) -> Result<Prompt, ApiError> {
        let prompt = self.prompt.as_ref().ok_or_else(|| {
            ApiError::invalid_request("'prompt' is a required property.", Some("prompt"))
        })?;
        let mut hash = Fnv::new().u64(seed).str("completion").str(model);
        let mut tokens = 0;
        for text in prompt.texts() {
            hash = hash.str(text);
            tokens += count_words(text);
        }
        Ok(Prompt {
            key: hash.finish(),
            tokens,
        })
    }

    pub(crate) fn embedding_inputs(&self) -> Result<&[String], ApiError> {
        match &self.input {
            Some(input) if !input.texts().is_empty() => Ok(input.texts()),
            Some(_) => Err(ApiError::invalid_request(
                "'input' must not be empty.",
                Some("input"),
            )),
            None => Err(ApiError::invalid_request(
                "'input' is a required property.",
                Some("input"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_key(body: &str) -> u64 {
        let request = parse_json::<InferenceRequest>(body.as_bytes()).map_err(|e| format!("{e:?}"));
        match request.and_then(|r| r.chat_prompt(0, "m").map_err(|e| format!("{e:?}"))) {
            Ok(prompt) => prompt.key,
            Err(e) => panic!("{body}: {e}"),
        }
    }

    #[test]
    fn key_ignores_formatting_and_stream_flag() {
        let a = chat_key(r#"{"model":"m","messages":[{"role":"user","content":"hi there"}]}"#);
        let b = chat_key(
            r#"{ "stream": true, "model": "m",
                 "messages": [ { "content": "hi there", "role": "user" } ] }"#,
        );
        let parts = chat_key(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi there"}]}]}"#,
        );
        assert_eq!(a, b);
        assert_eq!(a, parts);
        let other = chat_key(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        assert_ne!(a, other);
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        for body in [
            "",
            "not json",
            "[]",
            "{\"model\": 3}",
            "{\"stream\": \"yes\"}",
            "{\"max_tokens\": -1}",
            "{\"messages\": [{\"content\": 5}]}",
            "{\"input\": [1, 2]}",
        ] {
            assert!(
                parse_json::<InferenceRequest>(body.as_bytes()).is_err(),
                "{body}"
            );
        }
    }

    #[test]
    fn the_smaller_token_cap_wins() {
        let parse =
            |body: &str| parse_json::<InferenceRequest>(body.as_bytes()).map(|r| r.max_tokens());
        assert!(matches!(parse(r#"{"max_tokens":5}"#), Ok(Some(5))));
        assert!(matches!(
            parse(r#"{"max_completion_tokens":4,"max_tokens":9}"#),
            Ok(Some(4))
        ));
        assert!(matches!(parse("{}"), Ok(None)));
    }
}
