//! The life of one inference request: parse, pick a fault, load the model if
//! needed, queue for a slot, wait out the time to first token, answer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Response, StatusCode};

use crate::agents::{self, AgentRequest};
use crate::agents_wire;
use crate::body::{SimBody, json_response, sse_response};
use crate::connection::{ConnectionHandle, NotReading, Sever};
use crate::error::{ApiError, ErrorShape};
use crate::fault::Fault;
use crate::guard::{Active, Cells, InFlight, Running};
use crate::model::ModelState;
use crate::request::{InferenceRequest, Prompt, parse_json};
use crate::shared::{Shared, unix_now};
use crate::stream::{ChunkShape, StreamPlan, TokenStream};
use crate::text::{Fnv, Words, count_words, unit_vector};
use crate::wire::{
    ChatChoice, ChatCompletion, ChatMessage, Embedding, EmbeddingList, EmbeddingUsage, TextChoice,
    TextCompletion, Timings, Usage,
};
use crate::{Dialect, vllm};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completion,
    Embeddings,
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/messages`.
    Messages,
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
}

impl Endpoint {
    fn error_shape(self) -> ErrorShape {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => ErrorShape::Anthropic,
            _ => ErrorShape::OpenAi,
        }
    }
}

pub(crate) async fn serve(
    shared: &Arc<Shared>,
    connection: &ConnectionHandle,
    endpoint: Endpoint,
    body: &[u8],
) -> Response<SimBody> {
    let sequence = shared
        .counters
        .requests_total
        .fetch_add(1, Ordering::Relaxed);
    shared.watch.changed();
    match answer(shared, connection, endpoint, body, sequence).await {
        Ok(response) => response,
        Err(error) => match error.unknown_model() {
            Some(model) if shared.settings.dialect == Dialect::Vllm => vllm::model_not_found(model),
            _ => error.into_response_as(endpoint.error_shape()),
        },
    }
}

/// What was asked, checked and reduced to what the answer depends on.
enum Job<'a> {
    Text(TextJob),
    Embeddings { inputs: &'a [String] },
}

/// A chat or text completion request, reduced.
struct TextJob {
    shape: ChunkShape,
    prompt: Prompt,
    stream: bool,
    include_usage: bool,
    max_tokens: Option<u64>,
    /// The JSON schema the answer meets, where the request asks for one.
    schema: Option<serde_json::Value>,
}

impl<'a> Job<'a> {
    /// Checks the fields `endpoint` needs; any error is the client's 400.
    fn of(
        request: &'a InferenceRequest<'_>,
        endpoint: Endpoint,
        seed: u64,
        model: &str,
    ) -> Result<Self, ApiError> {
        let text = |shape, prompt| {
            Job::Text(TextJob {
                shape,
                prompt,
                stream: request.stream(),
                include_usage: request.include_usage(),
                max_tokens: request.max_tokens(),
                schema: request.answer_schema(),
            })
        };
        Ok(match endpoint {
            Endpoint::Chat => text(ChunkShape::Chat, request.chat_prompt(seed, model)?),
            Endpoint::Completion => text(ChunkShape::Text, request.completion_prompt(seed, model)?),
            Endpoint::Embeddings => Job::Embeddings {
                inputs: request.embedding_inputs()?,
            },
            Endpoint::Responses | Endpoint::Messages | Endpoint::CountTokens => {
                return Err(ApiError::internal(
                    "an agent request reached the chat parser",
                ));
            }
        })
    }
}

async fn answer(
    shared: &Arc<Shared>,
    connection: &ConnectionHandle,
    endpoint: Endpoint,
    body: &[u8],
    sequence: u64,
) -> Result<Response<SimBody>, ApiError> {
    let request;
    let agent;
    let (name, job) = if matches!(
        endpoint,
        Endpoint::Responses | Endpoint::Messages | Endpoint::CountTokens
    ) {
        agent = parse_json::<AgentRequest>(body)?;
        let name = agent.model()?;
        serving(shared, name)?;
        let prompt = agents::prompt(shared.settings.seed, name, body);
        if endpoint == Endpoint::CountTokens {
            return Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "input_tokens": prompt.tokens }),
            ));
        }
        if let Some(previous) = agent.previous_response_id() {
            if !shared.responses.holds(previous) {
                return Err(ApiError::previous_response_not_found(previous));
            }
            shared
                .counters
                .continuations
                .fetch_add(1, Ordering::Relaxed);
        }
        let shape = if endpoint == Endpoint::Responses {
            ChunkShape::Responses
        } else {
            ChunkShape::Messages
        };
        let job = Job::Text(TextJob {
            shape,
            prompt,
            stream: agent.stream(),
            include_usage: false,
            max_tokens: agent.max_tokens(),
            // The agent APIs' own structured output is not simulated.
            schema: None,
        });
        (name, job)
    } else {
        request = parse_json::<InferenceRequest>(body)?;
        let name = request.model()?;
        serving(shared, name)?;
        (
            name,
            Job::of(&request, endpoint, shared.settings.seed, name)?,
        )
    };
    let model = serving(shared, name)?;

    let faults = shared.faults.get();
    if faults.cannot_generate {
        shared
            .counters
            .injected_errors
            .fetch_add(1, Ordering::Relaxed);
        shared.watch.changed();
        return Err(ApiError::cannot_generate(shared.settings.dialect));
    }
    let in_flight = InFlight::enter(Arc::clone(model));
    let fault = Fault::choose(faults, shared.settings.seed, sequence);
    let in_flight = apply_fault(shared, connection, fault, in_flight, sequence).await?;
    let mut running = start_running(shared, model, in_flight, body).await?;
    if let (Some(total), Job::Text(text)) = (shared.settings.shared_context, &job) {
        // A prompt larger than the whole context is refused at once, as
        // llama-server refuses it; an answer that would outgrow it alone
        // stops at its end.
        if text.prompt.tokens > total {
            running.end_by_server();
            return Err(ApiError::exceeds_context(text.prompt.tokens, total));
        }
        // Its prompt and its whole answer, beside what the others hold.
        let answer = text.max_tokens.map_or(shared.settings.output_tokens, |m| {
            (m as usize).min(shared.settings.output_tokens)
        });
        let need = (text.prompt.tokens + answer).min(total);
        match Cells::take(&shared.context_used, total, need) {
            Some(cells) => running.cells = Some(cells),
            None => {
                shared.counters.context_full.fetch_add(1, Ordering::Relaxed);
                running.end_by_server();
                shared.watch.changed();
                return Ok(context_full(text.stream));
            }
        }
    }
    let sever = (fault == Fault::CloseMidStream)
        .then(|| Sever::new(connection.clone(), Arc::clone(shared)));

    Ok(match job {
        Job::Embeddings { inputs } => finish(running, sever, embeddings(shared, name, inputs)),
        Job::Text(job) if job.stream => {
            if faults.close_after_stream {
                connection.mark_stale();
            }
            let not_reading = connection.stop_reading();
            streamed_text(shared, model, job, running, sever, not_reading)
        }
        Job::Text(job) => finish(running, sever, plain_text(shared, name, job).await),
    })
}

/// llama-server's answer when its shared context has no room left: a 500,
/// or as a stream's first (and only) event.
fn context_full(stream: bool) -> Response<SimBody> {
    const ERROR: &str = r#"{"error":{"code":500,"message":"Context size has been exceeded.","type":"server_error"}}"#;
    if stream {
        sse_response(SimBody::full(format!("data: {ERROR}\n\n")))
    } else {
        let mut response = Response::new(SimBody::full(ERROR));
        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// The model that serves a request naming `name`. llama.cpp with one model
/// serves it whatever the request names, and answers 503 until it has
/// loaded it; every other server looks the name up.
fn serving<'a>(shared: &'a Shared, name: &str) -> Result<&'a Arc<ModelState>, ApiError> {
    if shared.settings.dialect == Dialect::LlamaCpp {
        let model = shared
            .models()
            .first()
            .ok_or_else(|| ApiError::model_not_found(name))?;
        return if model.is_loaded() {
            Ok(model)
        } else {
            Err(ApiError::loading_model())
        };
    }
    shared
        .model(name)
        .ok_or_else(|| ApiError::model_not_found(name))
}

/// Carries out an error or a hang; hands the request back for any other
/// fault, which happens later or not at all.
async fn apply_fault(
    shared: &Shared,
    connection: &ConnectionHandle,
    fault: Fault,
    in_flight: InFlight,
    sequence: u64,
) -> Result<InFlight, ApiError> {
    let model = &in_flight.model().name;
    match fault {
        Fault::Error => {
            tracing::debug!(%model, sequence, "injecting an error");
            shared
                .counters
                .injected_errors
                .fetch_add(1, Ordering::Relaxed);
            in_flight.end_by_server();
            shared.watch.changed();
            Err(ApiError::injected())
        }
        Fault::Hang => {
            tracing::debug!(%model, sequence, "hanging");
            shared.counters.hangs.fetch_add(1, Ordering::Relaxed);
            shared.watch.changed();
            // Until the client leaves (hyper drops this future and the guard
            // counts a cancel) or the simulator shuts down, which must not
            // wait for an answer that never comes.
            shared.shutdown.cancelled().await;
            in_flight.end_by_server();
            connection.kill();
            std::future::pending().await
        }
        Fault::DropAfterRead => {
            tracing::debug!(%model, sequence, "dropping the connection of a request read whole");
            shared
                .counters
                .dropped_after_read
                .fetch_add(1, Ordering::Relaxed);
            in_flight.end_by_server();
            shared.watch.changed();
            connection.kill();
            std::future::pending().await
        }
        Fault::None | Fault::CloseMidStream => Ok(in_flight),
    }
}

/// Loads the model if needed, waits for a slot, then spends the time to
/// first token holding it.
async fn start_running(
    shared: &Shared,
    model: &Arc<ModelState>,
    in_flight: InFlight,
    body: &[u8],
) -> Result<Running, ApiError> {
    shared.load(model).await?;
    let active = Active::acquire(model)
        .await
        .ok_or(ApiError::internal("model slots are closed"))?;
    let running = Running {
        active,
        in_flight,
        cells: None,
    };
    sleep(shared.settings.ttft + prefill(shared, model, body)).await;
    Ok(running)
}

/// The time to prefill what of the prompt (as rendered, about four bytes a
/// token) its slot's KV cache lacks, and the count of both.
fn prefill(shared: &Shared, model: &ModelState, body: &[u8]) -> Duration {
    let Some(rate) = shared.settings.prefill_rate else {
        return Duration::ZERO;
    };
    let prompt = crate::prefix_cache::rendered(body);
    let tokens = prompt.len() / 4;
    let cached = model
        .prefix_cache
        .take(&crate::prefix_cache::Blocks::of(&prompt))
        .min(tokens);
    let uncached = tokens - cached;
    let counters = &shared.counters;
    counters
        .prompt_tokens_cached
        .fetch_add(cached as u64, Ordering::Relaxed);
    counters
        .prompt_tokens_prefilled
        .fetch_add(uncached as u64, Ordering::Relaxed);
    Duration::from_secs_f64((uncached as f64 / rate).min(3600.0))
}

fn embeddings(shared: &Shared, model: &str, inputs: &[String]) -> Response<SimBody> {
    let (seed, dims) = (shared.settings.seed, shared.settings.embedding_dims);
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| Embedding {
            object: "embedding",
            index,
            embedding: unit_vector(Fnv::new().u64(seed).str(model).str(input).finish(), dims),
        })
        .collect();
    let tokens = inputs.iter().map(|i| count_words(i)).sum();
    let list = EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    json_response(StatusCode::OK, &list)
}

/// What a text answer says, fixed before its first token.
struct Text {
    id: String,
    words: Words,
    tokens: usize,
    finish_reason: &'static str,
}

impl Text {
    /// The configured length, unless the request caps it lower, in which
    /// case the answer stops for `length`.
    fn plan(shared: &Shared, job: &TextJob) -> Self {
        // Structured output is as long as its value, cut (and so not
        // valid JSON) where the request's max_tokens runs out, as a real
        // server's is.
        let structured = job
            .schema
            .as_ref()
            .filter(|_| !shared.faults.get().ignores_response_format)
            .map(|schema| Words::fixed(crate::schema::value(schema, job.prompt.key).to_string()));
        let (words, configured) = match structured {
            Some((words, tokens)) => (words, tokens),
            None => (Words::new(job.prompt.key), shared.settings.output_tokens),
        };
        let tokens = job.max_tokens.map_or(configured, |cap| {
            configured.min(usize::try_from(cap).unwrap_or(usize::MAX))
        });
        let id = match job.shape {
            ChunkShape::Chat => format!("chatcmpl-{}", shared.next_id()),
            ChunkShape::Text => format!("cmpl-{}", shared.next_id()),
            ChunkShape::Responses => {
                let id = format!("resp_{:016x}", shared.next_id() ^ shared.settings.seed);
                shared.responses.remember(&id);
                id
            }
            ChunkShape::Messages => format!("msg_{:016x}", shared.next_id()),
        };
        Text {
            id,
            words,
            tokens,
            finish_reason: if tokens < configured {
                "length"
            } else {
                "stop"
            },
        }
    }
}

/// The SSE answer: the body produces the tokens at the configured pace and
/// settles the request's counters when it ends.
fn streamed_text(
    shared: &Shared,
    model: &Arc<ModelState>,
    job: TextJob,
    running: Running,
    sever: Option<Sever>,
    not_reading: NotReading,
) -> Response<SimBody> {
    let text = Text::plan(shared, &job);
    let plan = StreamPlan {
        shape: job.shape,
        id: text.id,
        created: unix_now(),
        model: Arc::clone(model),
        words: text.words,
        tokens: text.tokens,
        prompt_tokens: job.prompt.tokens,
        finish_reason: text.finish_reason,
        include_usage: job.include_usage,
        timings: shared.settings.dialect.reports_timings(),
        reported_tokens: shared.faults.get().reported_output_tokens,
        without_message_start: shared.faults.get().messages_without_start,
        token_interval: shared.settings.token_interval,
        sever,
    };
    sse_response(SimBody::tokens(TokenStream::new(
        plan,
        running,
        not_reading,
    )))
}

/// The whole answer at once, after the time a stream of it would take.
async fn plain_text(shared: &Shared, model: &str, job: TextJob) -> Response<SimBody> {
    let Text {
        id,
        words,
        tokens,
        finish_reason,
    } = Text::plan(shared, &job);
    // The first token is due at once after the TTFT; each later one an
    // interval after the one before, as in a stream.
    if let Some(interval) = shared.settings.token_interval {
        let gaps = u32::try_from(tokens.saturating_sub(1)).unwrap_or(u32::MAX);
        sleep(interval.saturating_mul(gaps)).await;
    }
    let text = words.text(tokens);
    let reported = shared
        .faults
        .get()
        .reported_output_tokens
        .unwrap_or(tokens as u64);
    let usage = Usage::new(job.prompt.tokens, reported);
    let timings = shared
        .settings
        .dialect
        .reports_timings()
        .then_some(Timings {
            prompt_n: job.prompt.tokens,
            predicted_n: reported,
        });
    let created = unix_now();
    match job.shape {
        ChunkShape::Chat => json_response(
            StatusCode::OK,
            &ChatCompletion {
                id: &id,
                object: "chat.completion",
                created,
                model,
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
                timings,
            },
        ),
        ChunkShape::Text => json_response(
            StatusCode::OK,
            &TextCompletion {
                id: &id,
                object: "text_completion",
                created,
                model,
                choices: &[TextChoice {
                    index: 0,
                    text: &text,
                    logprobs: None,
                    finish_reason: Some(finish_reason),
                }],
                usage: Some(Some(usage)),
                timings,
            },
        ),
        ChunkShape::Responses => json_response(
            StatusCode::OK,
            &agents_wire::response(&id, created, model, &text, job.prompt.tokens, tokens),
        ),
        ChunkShape::Messages => json_response(
            StatusCode::OK,
            &agents_wire::message(&id, model, &text, finish_reason, job.prompt.tokens, tokens),
        ),
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
