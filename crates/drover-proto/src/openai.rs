//! OpenAI-compatible shapes.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `{"error": {...}}`, the body of every error drover answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// The fields of an inference request the hub needs to route it. Everything
/// else stays in the raw body, which goes upstream byte for byte.
#[derive(Debug, Deserialize)]
pub struct RequestPeek<'a> {
    #[serde(default, borrow)]
    pub model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub user: Option<std::borrow::Cow<'a, str>>,
    /// Chat messages, kept raw: the hub hashes them for prefix affinity.
    #[serde(default, borrow)]
    pub messages: Option<Vec<&'a RawValue>>,
    /// A completion prompt: a string, or an array (kept raw).
    #[serde(default, borrow)]
    pub prompt: Option<&'a RawValue>,
    /// Anthropic Messages: the system prompt, a string or blocks (raw).
    #[serde(default, borrow)]
    pub system: Option<&'a RawValue>,
    /// Responses API: the system prompt.
    #[serde(default, borrow)]
    pub instructions: Option<&'a RawValue>,
    /// Responses API: the input, a string or a list of items (raw).
    #[serde(default, borrow)]
    pub input: Option<&'a RawValue>,
    /// Responses API: the stored response this request continues.
    #[serde(default, borrow)]
    pub previous_response_id: Option<std::borrow::Cow<'a, str>>,
    /// The answer's length limit under each API's name for it: OpenAI's
    /// `max_tokens` and `max_completion_tokens`, the Responses API's
    /// `max_output_tokens` (Anthropic's is `max_tokens` too). Read leniently:
    /// anything but a whole number is as if absent.
    #[serde(default, deserialize_with = "lenient_u32")]
    pub max_tokens: Option<u32>,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub max_output_tokens: Option<u32>,
}

impl RequestPeek<'_> {
    /// The smallest of the answer's length limits the request gives.
    pub fn max_tokens(&self) -> Option<u32> {
        [
            self.max_tokens,
            self.max_completion_tokens,
            self.max_output_tokens,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A whole number that fits a `u32`, else nothing: the hub only peeks, and
/// the server is the judge of what the field may hold.
fn lenient_u32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let value: Option<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    Ok(value
        .and_then(|v| v.as_u64())
        .and_then(|n| u32::try_from(n).ok()))
}

/// Just a message's role, to tell system prompts from conversation.
#[derive(Debug, Deserialize)]
pub struct MessageRole<'a> {
    #[serde(default, borrow)]
    pub role: Option<std::borrow::Cow<'a, str>>,
}

/// `GET /v1/models` as drover answers it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelEntry>,
    /// Backends that have never answered a probe: what they serve is
    /// unknown, so the list may be missing models.
    #[serde(default)]
    pub unreachable_backends: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ModelEntry {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    /// Where the model is: each backend that lists it.
    #[serde(default)]
    pub backends: Vec<ModelPlacement>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ModelPlacement {
    pub backend: String,
    /// `loaded` or `available` (listed, loads on first use).
    pub state: String,
    pub slots: u32,
    pub busy: u32,
}

/// A generic server's `GET /v1/models`, read leniently.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct UpstreamModelList {
    #[serde(default)]
    pub data: Vec<UpstreamModel>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UpstreamModel {
    pub id: String,
}
