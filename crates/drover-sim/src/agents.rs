//! The coding agents' APIs (backend-apis.md §7): OpenAI's Responses API
//! (`POST /v1/responses`, stateful through `previous_response_id`) and
//! Anthropic's Messages API (`POST /v1/messages`, `/count_tokens`). Their
//! requests are read only for what the answer depends on; the answer's
//! text comes from the same generator as chat.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use serde::Deserialize;

use crate::error::ApiError;
use crate::request::{Prompt, required_model};
use crate::text::Fnv;

/// The fields of a Responses or Messages request the simulator reads.
#[derive(Debug, Deserialize)]
pub(crate) struct AgentRequest<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    /// Messages.
    max_tokens: Option<u64>,
    /// Responses.
    max_output_tokens: Option<u64>,
    previous_response_id: Option<String>,
}

impl AgentRequest<'_> {
    pub(crate) fn model(&self) -> Result<&str, ApiError> {
        required_model(self.model.as_deref(), "model: Field required")
    }

    pub(crate) fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub(crate) fn max_tokens(&self) -> Option<u64> {
        self.max_tokens.or(self.max_output_tokens)
    }

    pub(crate) fn previous_response_id(&self) -> Option<&str> {
        self.previous_response_id.as_deref()
    }
}

/// The prompt of an agent request: the whole body is the conversation (a
/// system prompt and every turn so far), about four bytes a token.
pub(crate) fn prompt(seed: u64, model: &str, body: &[u8]) -> Prompt {
    Prompt {
        key: Fnv::new()
            .u64(seed)
            .str("agent")
            .str(model)
            .bytes(body)
            .finish(),
        tokens: (body.len() / 4).max(1),
    }
}

/// How many response ids a server remembers for `previous_response_id`.
const STORED_RESPONSES: usize = 10_000;

/// The ids of the responses this server produced, newest last: only these
/// can be continued here, as only the server that produced a response
/// holds its state.
#[derive(Debug, Default)]
pub(crate) struct ResponseStore {
    inner: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl ResponseStore {
    pub(crate) fn remember(&self, id: &str) {
        let mut inner = drover_core::sync::lock(&self.inner);
        let (set, order) = &mut *inner;
        if set.insert(id.to_string()) {
            order.push_back(id.to_string());
        }
        while order.len() > STORED_RESPONSES {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }

    pub(crate) fn holds(&self, id: &str) -> bool {
        drover_core::sync::lock(&self.inner).0.contains(id)
    }
}
