//! A request to forward, built the same way for every caller from what it
//! is: its body's bytes, the API it speaks and who sends it. The HTTP edge
//! reads those off a connection; the durable-job runner will read them off
//! a stored job.

use std::time::Duration;

use bytes::Bytes;
use drover_core::{ModelName, Priority, RequestId};
use drover_proto::openai::RequestPeek;
use drover_scheduler::Api;
use http::HeaderValue;
use tokio::time::Instant;

use super::{ForwardError, Forwarder, KeyRef};
use crate::caller;
use crate::error::{ErrorFormat, echo};
use crate::keys::Holder;
use crate::limits::{Limiter, Permit};

/// Who sends a request, and how they asked for it to be treated.
#[derive(Debug, Default, Clone)]
pub struct Sender {
    /// The client key it came with, already checked.
    pub holder: Option<Holder>,
    /// The bearer token when it is not a stored key's: a `[[clients]]`
    /// key names its client; an unknown one only tells anonymous users
    /// apart.
    pub token: Option<String>,
    /// The priority asked for; capped at the sender's ceiling.
    pub priority: Option<Priority>,
    /// How long it may wait for a slot; the hub's `queue.timeout` if none.
    pub queue_timeout: Option<Duration>,
    /// The caller's own request id, to keep; a fresh one if none.
    pub request_id: Option<HeaderValue>,
    /// What it accepts, passed on upstream.
    pub accept: Option<HeaderValue>,
    /// When it arrived (an HTTP request's head, before its body was read),
    /// which its times to first byte and to the end count from; now, if
    /// none.
    pub arrived: Option<Instant>,
}

/// One request to forward, with everything every attempt needs.
pub struct ForwardRequest {
    /// What the scheduler knows of it; a retry adds the failed backend to
    /// its exclusions.
    pub(super) request: drover_scheduler::Request,
    /// The model's public name.
    pub model: String,
    /// The model as the client named it (an alias's id, a GGUF path): the
    /// body is rewritten where the chosen backend knows it otherwise.
    pub(super) asked: String,
    pub(super) path_and_query: String,
    /// Sent upstream byte for byte, on every attempt.
    pub(super) body: Bytes,
    pub(super) accept: Option<HeaderValue>,
    pub request_id: HeaderValue,
    /// The caller's name, for the request log.
    pub caller: String,
    pub(super) arrived: Instant,
    /// The shape of errors on the request's path, before and after the
    /// first byte.
    pub errors: ErrorFormat,
    /// The client key it came with: its answer's output tokens are counted
    /// for it.
    pub(super) key: Option<KeyRef>,
    /// The key's concurrency permit: each attempt's slot holds it, so the
    /// request counts against its key until the server has let go of it.
    pub(super) permit: Option<Permit>,
    /// The key, where it has limits counted by whichever hub decides: a
    /// request that came in while this hub followed has no permit, and its
    /// leader checks the key with the grant.
    pub(super) holder: Option<Holder>,
    /// Its admission is still to be counted in the key's usage: the
    /// leader checked the key, and told so with the first grant.
    pub(super) admission_untold: bool,
}

impl ForwardRequest {
    /// Keeps it off these backends (a stored job's earlier attempts failed
    /// there), as a retry is kept off the ones it failed on.
    pub fn avoid(&mut self, backends: impl IntoIterator<Item = drover_core::BackendId>) {
        self.request.exclude.extend(backends);
    }
}

impl Forwarder {
    /// Reads `body` (the API's JSON, for `path_and_query`) into a request
    /// to forward: its model's public name, its prefix hashes, the stored
    /// response it continues, the sender's identity, priority and deadline;
    /// a client key's limits are checked (and its usage counted) here.
    pub async fn prepare(
        &self,
        body: Bytes,
        api: Api,
        errors: ErrorFormat,
        path_and_query: String,
        mut sender: Sender,
    ) -> Result<ForwardRequest, ForwardError> {
        let arrived = sender.arrived.unwrap_or_else(Instant::now);
        let id = self.0.ids.next();
        let request_id = sender.request_id.take().unwrap_or_else(new_request_id);
        // A refusal is told to the observer with what was known by then.
        let refused = |error: ForwardError, model: Option<&str>, caller: Option<&str>| {
            self.refused(
                &error,
                &request_id,
                model,
                caller.unwrap_or_default(),
                errors,
            );
            error
        };
        let facts = Facts::read_off_thread(&body)
            .await
            .map_err(|e| refused(e, None, None))?;
        let model = self.0.aliases.public_name(&facts.model).to_string();
        self.refuse_what_cannot_fit(&model, &body)
            .map_err(|e| refused(e, Some(&model), None))?;
        // A continuation goes where the response it continues is stored.
        let pin = facts
            .previous_response_id
            .as_deref()
            .and_then(|r| self.0.owners.owner(r));
        let who = caller::identify(
            &self.0.clients,
            sender.holder.as_ref(),
            sender.token.as_deref(),
            facts.user.as_deref(),
        );
        // Where this hub decides, the key's limits are checked here; where
        // it follows, only its model list is, and the leader checks the
        // rest with the grant, so a limit holds across every hub.
        let decides = self.0.cluster.leads();
        let permit = match &sender.holder {
            Some(h) if decides => self
                .admit(h, &model, body.len())
                .map_err(|e| refused(e, Some(&model), Some(&who.name)))?,
            Some(h) => {
                self.check_models(h, &model)
                    .map_err(|e| refused(e, Some(&model), Some(&who.name)))?;
                None
            }
            None => None,
        };
        let holder = sender
            .holder
            .as_ref()
            .filter(|h| Limiter::counts(&h.limits))
            .cloned();
        let admission_untold = !decides && sender.holder.is_some();
        let priority = sender.priority.unwrap_or(who.priority).min(who.ceiling);
        let queue_timeout = sender.queue_timeout.unwrap_or(self.0.queue_timeout);
        let now = self.0.dispatcher.now();
        let request = drover_scheduler::Request {
            id,
            model: ModelName::new(&model),
            priority,
            client: who.client,
            user: who.user,
            arrival: now,
            deadline: Some(now + queue_timeout),
            affinity: facts.affinity,
            exclude: Vec::new(),
            size: body.len(),
            api,
            pin,
            prompt_tokens: prompt_tokens(body.len()),
            max_tokens: facts.max_tokens,
        };
        Ok(ForwardRequest {
            request,
            model,
            asked: facts.model,
            path_and_query,
            accept: sender.accept,
            request_id,
            caller: who.name,
            arrived,
            body,
            errors,
            key: sender.holder.map(|h| KeyRef {
                id: h.id,
                name: h.name,
                tokens_per_minute: h.limits.tokens_per_minute,
            }),
            permit,
            holder,
            admission_untold,
        })
    }

    /// Refuses, before it is sent anywhere, a request whose prompt can fit
    /// no backend's context: even counted as generously as no tokenizer
    /// counts (its body's bytes over [`MOST_BYTES_PER_TOKEN`]), it is longer
    /// than the largest context of every backend listing the model. Only
    /// where each says its context, and not for a body that carries images
    /// or audio (their bytes are not tokens).
    fn refuse_what_cannot_fit(&self, model: &str, body: &[u8]) -> Result<(), ForwardError> {
        let at_least = body.len() / MOST_BYTES_PER_TOKEN;
        if at_least < 1024 {
            return Ok(());
        }
        let Some(largest) = self.0.dispatcher.largest_context(model) else {
            return Ok(());
        };
        let media = [
            &b"image_url"[..],
            b"input_image",
            b"\"image\"",
            b"input_audio",
        ]
        .iter()
        .any(|m| memchr::memmem::find(body, m).is_some());
        if media || at_least <= largest as usize {
            return Ok(());
        }
        Err(ForwardError::ContextLengthExceeded {
            message: format!(
                "the prompt is at least {at_least} tokens, and the largest context of any backend with '{}' is {largest} tokens",
                echo(model)
            ),
        })
    }

    /// A client key's model list, where the leader checks the rest.
    fn check_models(&self, holder: &Holder, model: &str) -> Result<(), ForwardError> {
        Limiter::check_models(holder, model).map_err(|(limit, e)| {
            self.0.observer.key_limited(&holder.name, limit.as_str());
            e
        })
    }

    /// A client key's limits, and its usage counted.
    fn admit(
        &self,
        holder: &Holder,
        model: &str,
        body_bytes: usize,
    ) -> Result<Option<Permit>, ForwardError> {
        let tokens = prompt_tokens(body_bytes);
        match self.0.limiter.admit(holder, model, tokens, Instant::now()) {
            Ok(permit) => {
                self.0.observer.key_admitted(&holder.name, tokens);
                Ok(permit)
            }
            Err((limit, e)) => {
                self.0.observer.key_limited(&holder.name, limit.as_str());
                Err(e)
            }
        }
    }
}

/// JSON bytes per token no tokenizer goes beyond for text: a prompt is at
/// least its body's bytes over this many tokens.
const MOST_BYTES_PER_TOKEN: usize = 24;

/// Prompt tokens, roughly, from the body's size: about four bytes a token
/// in English text and code, and a body is mostly its prompt. Only ever
/// compared with measured prefill rates, which were estimated the same
/// way, so the bias cancels.
fn prompt_tokens(body_bytes: usize) -> u32 {
    u32::try_from(body_bytes / 4).unwrap_or(u32::MAX)
}

/// What routing reads from a body: its model, its user, its prefix hashes,
/// the stored response it continues.
struct Facts {
    model: String,
    user: Option<String>,
    affinity: drover_scheduler::Affinity,
    previous_response_id: Option<String>,
    /// The most tokens the answer may have, as the request says.
    max_tokens: Option<u32>,
}

/// Bodies larger than this are read on the blocking pool: parsing a few
/// megabytes of JSON takes milliseconds that every other request on the
/// hub's I/O thread would otherwise wait through.
const LARGE_BODY: usize = 256 * 1024;

impl Facts {
    fn read(body: &[u8]) -> Result<Facts, ForwardError> {
        let peek = peek(body)?;
        let model = match peek.model.as_deref() {
            Some(m) if !m.trim().is_empty() => m.to_string(),
            _ => {
                return Err(ForwardError::invalid(
                    "you must provide a model parameter",
                    Some("model"),
                    "missing_required_parameter",
                ));
            }
        };
        Ok(Facts {
            max_tokens: peek.max_tokens(),
            affinity: crate::affinity::for_request(&model, &peek),
            user: peek.user.map(|u| u.into_owned()),
            previous_response_id: peek.previous_response_id.map(|r| r.into_owned()),
            model,
        })
    }

    async fn read_off_thread(body: &Bytes) -> Result<Facts, ForwardError> {
        if body.len() <= LARGE_BODY {
            return Facts::read(body);
        }
        let body = body.clone();
        tokio::task::spawn_blocking(move || Facts::read(&body))
            .await
            .unwrap_or_else(|e| {
                Err(ForwardError::invalid(
                    format!("could not read the request body: {e}"),
                    None,
                    "invalid_body",
                ))
            })
    }
}

fn peek(body: &[u8]) -> Result<RequestPeek<'_>, ForwardError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ForwardError::invalid(
            "the request body must be a JSON object",
            None,
            "invalid_json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ForwardError::invalid(
            format!("the request body is not valid JSON for this endpoint: {e}"),
            None,
            "invalid_json",
        )
    })
}

/// The scheduler's ids for requests: a counter, for this process only.
#[derive(Default)]
pub struct RequestIds {
    next: std::sync::atomic::AtomicU64,
}

impl RequestIds {
    pub fn next(&self) -> RequestId {
        RequestId(self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
    }
}

/// A fresh `x-request-id`, for a request whose caller sent none: `req_`
/// and a UUIDv7's 32 hex digits, unique across restarts and hubs and
/// ordered by time, as a stored job's will be. Written without `format!`
/// (it cost a request about 2,000 instructions).
pub fn new_request_id() -> HeaderValue {
    let mut text = [0u8; 4 + uuid::fmt::Simple::LENGTH];
    text[..4].copy_from_slice(b"req_");
    uuid::Uuid::now_v7().simple().encode_lower(&mut text[4..]);
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("req_unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_headers_are_uuid7s_unique_and_ordered_by_time() {
        let ids: Vec<String> = (0..64)
            .map(|_| new_request_id().to_str().unwrap().to_string())
            .collect();
        for id in &ids {
            assert_eq!(id.len(), 36, "{id}");
            assert!(id.starts_with("req_"), "{id}");
            let uuid = uuid::Uuid::parse_str(&id[4..]).unwrap();
            assert_eq!(uuid.get_version_num(), 7, "{id}");
        }
        let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "an id came twice");
        // Made one after another, they sort as they were made (to the
        // millisecond, then by the counter UUIDv7 keeps within it).
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
    }
}
