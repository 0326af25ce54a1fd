//! The life of one inference request: parse, pick a fault, load the model if
//! needed, queue for a slot, wait out the time to first token, answer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Response, StatusCode};

use crate::body::{SimBody, json_response, sse_response};
use crate::connection::{KillSwitch, Sever};
use crate::error::ApiError;
use crate::fault::Fault;
use crate::guard::{Active, InFlight, Running};
use crate::request::{InferenceRequest, Prompt};
use crate::shared::{Shared, unix_now};
use crate::stream::{ChunkShape, StreamPlan, TokenStream};
use crate::text::{Fnv, Words, count_words, unit_vector};
use crate::wire::{
    ChatChoice, ChatCompletion, ChatMessage, Embedding, EmbeddingList, EmbeddingUsage, TextChoice,
    TextCompletion, Usage,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completion,
    Embeddings,
}

pub(crate) async fn serve(
    shared: &Arc<Shared>,
    kill: &KillSwitch,
    endpoint: Endpoint,
    body: &[u8],
) -> Response<SimBody> {
    let sequence = shared
        .counters
        .requests_total
        .fetch_add(1, Ordering::Relaxed);
    shared.watch.changed();
    match answer(shared, kill, endpoint, body, sequence).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// What was asked, checked and reduced to what the answer depends on.
enum Job<'a> {
    Text {
        shape: ChunkShape,
        prompt: Prompt,
        stream: bool,
        include_usage: bool,
        max_tokens: Option<u64>,
    },
    Embeddings {
        inputs: &'a [String],
    },
}

async fn answer(
    shared: &Arc<Shared>,
    kill: &KillSwitch,
    endpoint: Endpoint,
    body: &[u8],
    sequence: u64,
) -> Result<Response<SimBody>, ApiError> {
    let request = InferenceRequest::parse(body)?;
    let name = request.model()?;
    let model = shared
        .model(name)
        .ok_or_else(|| ApiError::model_not_found(name))?;
    let seed = shared.settings.seed;
    let job = match endpoint {
        Endpoint::Chat => Job::Text {
            shape: ChunkShape::Chat,
            prompt: request.chat_prompt(seed, name)?,
            stream: request.stream(),
            include_usage: request.include_usage(),
            max_tokens: request.max_tokens(),
        },
        Endpoint::Completion => Job::Text {
            shape: ChunkShape::Text,
            prompt: request.completion_prompt(seed, name)?,
            stream: request.stream(),
            include_usage: request.include_usage(),
            max_tokens: request.max_tokens(),
        },
        Endpoint::Embeddings => Job::Embeddings {
            inputs: request.embedding_inputs()?,
        },
    };

    let in_flight = InFlight::enter(Arc::clone(model));
    let fault = Fault::choose(shared.faults.get(), seed, sequence);
    match fault {
        Fault::Error => {
            tracing::debug!(model = name, sequence, "injecting an error");
            shared
                .counters
                .injected_errors
                .fetch_add(1, Ordering::Relaxed);
            in_flight.end_by_server();
            shared.watch.changed();
            return Err(ApiError::injected());
        }
        Fault::Hang => {
            tracing::debug!(model = name, sequence, "hanging");
            shared.counters.hangs.fetch_add(1, Ordering::Relaxed);
            shared.watch.changed();
            // Until the client leaves (hyper drops this future and the guard
            // counts a cancel) or the simulator shuts down, which must not
            // wait for an answer that never comes.
            shared.shutdown.cancelled().await;
            in_flight.end_by_server();
            kill.kill();
            return Ok(std::future::pending().await);
        }
        Fault::None | Fault::CloseMidStream => {}
    }

    model
        .ensure_loaded(shared.settings.load_time, &shared.counters)
        .await;
    let active = Active::acquire(model)
        .await
        .ok_or(ApiError::internal("model slots are closed"))?;
    let running = Running { active, in_flight };
    sleep(shared.settings.ttft).await;
    let sever =
        (fault == Fault::CloseMidStream).then(|| Sever::new(kill.clone(), Arc::clone(shared)));

    match job {
        Job::Embeddings { inputs } => {
            let dims = shared.settings.embedding_dims;
            let data = inputs
                .iter()
                .enumerate()
                .map(|(index, input)| Embedding {
                    object: "embedding",
                    index,
                    embedding: unit_vector(
                        Fnv::new().u64(seed).str(name).str(input).finish(),
                        dims,
                    ),
                })
                .collect();
            let tokens = inputs.iter().map(|i| count_words(i)).sum();
            let list = EmbeddingList {
                object: "list",
                data,
                model: name,
                usage: EmbeddingUsage {
                    prompt_tokens: tokens,
                    total_tokens: tokens,
                },
            };
            Ok(finish(running, sever, json_response(StatusCode::OK, &list)))
        }
        Job::Text {
            shape,
            prompt,
            stream,
            include_usage,
            max_tokens,
        } => {
            let configured = shared.settings.output_tokens;
            let tokens = max_tokens.map_or(configured, |cap| {
                configured.min(usize::try_from(cap).unwrap_or(usize::MAX))
            });
            let finish_reason = if tokens < configured {
                "length"
            } else {
                "stop"
            };
            let words = Words::new(prompt.key);
            let id = match shape {
                ChunkShape::Chat => format!("chatcmpl-{}", shared.next_id()),
                ChunkShape::Text => format!("cmpl-{}", shared.next_id()),
            };
            if stream {
                let plan = StreamPlan {
                    shape,
                    id,
                    created: unix_now(),
                    model: Arc::clone(model),
                    words,
                    tokens,
                    prompt_tokens: prompt.tokens,
                    finish_reason,
                    include_usage,
                    token_interval: shared.settings.token_interval,
                    sever,
                };
                return Ok(sse_response(SimBody::tokens(TokenStream::new(
                    plan, running,
                ))));
            }
            // The first token is due at once after the TTFT; each later one
            // an interval after the one before, as in a stream.
            if let Some(interval) = shared.settings.token_interval {
                let gaps = u32::try_from(tokens.saturating_sub(1)).unwrap_or(u32::MAX);
                sleep(interval.saturating_mul(gaps)).await;
            }
            let text = words.text(tokens);
            let usage = Usage::new(prompt.tokens, tokens);
            let created = unix_now();
            let response = match shape {
                ChunkShape::Chat => json_response(
                    StatusCode::OK,
                    &ChatCompletion {
                        id: &id,
                        object: "chat.completion",
                        created,
                        model: name,
                        choices: [ChatChoice {
                            index: 0,
                            message: ChatMessage {
                                role: "assistant",
                                content: &text,
                            },
                            logprobs: None,
                            finish_reason,
                        }],
                        usage,
                    },
                ),
                ChunkShape::Text => json_response(
                    StatusCode::OK,
                    &TextCompletion {
                        id: &id,
                        object: "text_completion",
                        created,
                        model: name,
                        choices: &[TextChoice {
                            index: 0,
                            text: &text,
                            logprobs: None,
                            finish_reason: Some(finish_reason),
                        }],
                        usage: Some(Some(usage)),
                    },
                ),
            };
            Ok(finish(running, sever, response))
        }
    }
}

/// A non-streamed answer: in full, or, for a close-mid-stream fault, only
/// its headers before the connection dies.
fn finish(
    running: Running,
    sever: Option<Sever>,
    response: Response<SimBody>,
) -> Response<SimBody> {
    match sever {
        None => {
            running.complete();
            response
        }
        Some(sever) => {
            let (parts, _) = response.into_parts();
            Response::from_parts(parts, SimBody::severed(sever, running))
        }
    }
}

async fn sleep(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}
