//! The SSE body of a streamed answer (backend-apis.md §5.1), produced one
//! chunk per poll so each token leaves as its own frame, paced by the
//! configured generation speed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use crate::agents_wire;
use crate::connection::{NotReading, Sever};
use crate::guard::Running;
use crate::model::ModelState;
use crate::text::Words;
use crate::wire::{ChatChunk, ChatChunkChoice, Delta, TextChoice, TextCompletion, Timings, Usage};

/// Which endpoint's chunk shape to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkShape {
    Chat,
    Text,
    /// The Responses API's typed events.
    Responses,
    /// Anthropic's Messages events.
    Messages,
}

impl ChunkShape {
    /// The agents' APIs open with events of their own, close with others,
    /// and have no `[DONE]`.
    fn typed(self) -> bool {
        matches!(self, ChunkShape::Responses | ChunkShape::Messages)
    }
}

/// Everything a streamed answer is made of, fixed before it starts.
#[derive(Debug)]
pub(crate) struct StreamPlan {
    pub(crate) shape: ChunkShape,
    pub(crate) id: String,
    pub(crate) created: u64,
    pub(crate) model: Arc<ModelState>,
    pub(crate) words: Words,
    pub(crate) tokens: usize,
    pub(crate) prompt_tokens: usize,
    pub(crate) finish_reason: &'static str,
    pub(crate) include_usage: bool,
    /// llama.cpp: the chunk with the finish reason carries `timings`.
    pub(crate) timings: bool,
    /// `Faults::reported_output_tokens`: the count usage and timings
    /// report instead of the tokens sent.
    pub(crate) reported_tokens: Option<u64>,
    /// `Faults::messages_without_start`.
    pub(crate) without_message_start: bool,
    pub(crate) token_interval: Option<Duration>,
    /// Set when this answer is to be cut off part-way.
    pub(crate) sever: Option<Sever>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Role,
    Token,
    Usage,
    Done,
    End,
    Severed,
}

#[derive(Debug)]
pub(crate) struct TokenStream {
    plan: StreamPlan,
    /// Taken when the answer ends, which settles the request's counters.
    running: Option<Running>,
    /// Dropped when the answer ends, so hyper reads the next request.
    not_reading: Option<NotReading>,
    step: Step,
    sent: usize,
    /// The chunk count (role chunk included) after which the connection is
    /// killed, when `plan.sever` is set.
    sever_after: usize,
    chunks: usize,
    pace: Option<Pace>,
    /// The agents' APIs: the text so far (their closing events repeat it)
    /// and the Responses events' sequence number.
    text: String,
    sequence: u64,
}

/// Deadlines advance from the previous deadline rather than from the time a
/// chunk went out, so a slow reader doesn't slow the nominal rate.
#[derive(Debug)]
struct Pace {
    interval: Duration,
    next: Option<Instant>,
    sleep: Pin<Box<Sleep>>,
}

impl TokenStream {
    pub(crate) fn new(plan: StreamPlan, running: Running, not_reading: NotReading) -> Self {
        let role_chunks = usize::from(plan.shape == ChunkShape::Chat || plan.shape.typed());
        // The role chunk and the first half of the tokens get through.
        let sever_after = role_chunks + plan.tokens.div_ceil(2);
        let pace = plan.token_interval.map(|interval| Pace {
            interval,
            next: None,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        });
        TokenStream {
            step: if role_chunks == 1 {
                Step::Role
            } else {
                Step::Token
            },
            plan,
            running: Some(running),
            not_reading: Some(not_reading),
            sent: 0,
            sever_after,
            chunks: 0,
            pace,
            text: String::new(),
            sequence: 0,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.step == Step::End
    }

    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.sever_if_due();
        let chunk = match self.step {
            Step::Role => self.role_chunk(),
            Step::Token if self.sent < self.plan.tokens => ready!(self.poll_token_chunk(cx)),
            Step::Token => self.finish_chunk(),
            Step::Usage => {
                self.step = Step::Done;
                self.usage_chunk()
            }
            Step::Done => self.done_chunk(),
            Step::End => return Poll::Ready(None),
            // The connection task drops this body once it sees the kill.
            Step::Severed => return Poll::Pending,
        };
        self.chunks += 1;
        Poll::Ready(Some(chunk))
    }

    /// Carries out a close-mid-stream fault once its share of the answer
    /// has gone.
    fn sever_if_due(&mut self) {
        if self.plan.sever.is_some() && self.chunks == self.sever_after {
            if let (Some(sever), Some(running)) = (self.plan.sever.take(), self.running.take()) {
                sever.sever(running);
            }
            self.step = Step::Severed;
        }
    }

    fn role_chunk(&mut self) -> Bytes {
        self.step = Step::Token;
        match self.plan.shape {
            ChunkShape::Responses => {
                let mut sequence = self.sequence;
                let chunk = self.response_events().start(&mut sequence);
                self.sequence = sequence;
                return chunk;
            }
            ChunkShape::Messages => {
                return agents_wire::message_start(
                    &self.plan.id,
                    &self.plan.model.name,
                    self.plan.prompt_tokens,
                    !self.plan.without_message_start,
                );
            }
            ChunkShape::Chat | ChunkShape::Text => {}
        }
        self.chat_chunk(
            Delta {
                role: Some("assistant"),
                content: Some(""),
            },
            None,
        )
    }

    /// The next token, once it is due.
    fn poll_token_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Bytes> {
        if let Some(pace) = &mut self.pace {
            ready!(pace.poll_ready(cx));
        }
        self.sent += 1;
        let token = self.plan.words.next_token();
        let token = token.as_ref();
        Poll::Ready(match self.plan.shape {
            ChunkShape::Chat => self.chat_chunk(
                Delta {
                    role: None,
                    content: Some(token),
                },
                None,
            ),
            ChunkShape::Text => self.text_chunk(token, None),
            ChunkShape::Responses => {
                self.text.push_str(token);
                let mut sequence = self.sequence;
                let chunk = self.response_events().delta(&mut sequence, token);
                self.sequence = sequence;
                chunk
            }
            ChunkShape::Messages => {
                self.text.push_str(token);
                agents_wire::message_delta(token)
            }
        })
    }

    fn response_events(&self) -> agents_wire::ResponseEvents<'_> {
        agents_wire::ResponseEvents {
            id: &self.plan.id,
            created: self.plan.created,
            model: &self.plan.model.name,
        }
    }

    /// The closing events of the agents' APIs; the request counts as
    /// completed as they leave.
    fn typed_end(&mut self) -> Bytes {
        self.step = Step::End;
        if let Some(running) = self.running.take() {
            running.complete();
        }
        self.not_reading = None;
        match self.plan.shape {
            ChunkShape::Responses => {
                let mut sequence = self.sequence;
                let chunk = self.response_events().end(
                    &mut sequence,
                    &self.text,
                    self.plan.prompt_tokens,
                    self.sent,
                );
                self.sequence = sequence;
                chunk
            }
            _ => agents_wire::message_end(self.plan.finish_reason, self.sent),
        }
    }

    /// The empty chunk that carries the finish reason.
    fn finish_chunk(&mut self) -> Bytes {
        if self.plan.shape.typed() {
            return self.typed_end();
        }
        self.step = if self.plan.include_usage {
            Step::Usage
        } else {
            Step::Done
        };
        let reason = Some(self.plan.finish_reason);
        match self.plan.shape {
            ChunkShape::Chat => self.chat_chunk(Delta::default(), reason),
            _ => self.text_chunk("", reason),
        }
    }

    /// The `[DONE]` sentinel; the request counts as completed as it leaves.
    fn done_chunk(&mut self) -> Bytes {
        self.step = Step::End;
        if let Some(running) = self.running.take() {
            running.complete();
        }
        self.not_reading = None;
        Bytes::from_static(b"data: [DONE]\n\n")
    }

    fn usage(&self) -> Option<Option<Usage>> {
        self.plan.include_usage.then_some(None)
    }

    /// The output tokens the answer reports.
    fn reported(&self) -> u64 {
        self.plan.reported_tokens.unwrap_or(self.sent as u64)
    }

    /// On the chunk that ends the answer, where the server reports them.
    fn timings(&self, finish_reason: Option<&'static str>) -> Option<Timings> {
        (self.plan.timings && finish_reason.is_some()).then_some(Timings {
            prompt_n: self.plan.prompt_tokens,
            predicted_n: self.reported(),
        })
    }

    fn chat_chunk(&self, delta: Delta<'_>, finish_reason: Option<&'static str>) -> Bytes {
        let choices = [ChatChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        }];
        event(&ChatChunk {
            id: &self.plan.id,
            object: "chat.completion.chunk",
            created: self.plan.created,
            model: &self.plan.model.name,
            choices: &choices,
            usage: self.usage(),
            timings: self.timings(finish_reason),
        })
    }

    fn text_chunk(&self, text: &str, finish_reason: Option<&'static str>) -> Bytes {
        let choices = [TextChoice {
            index: 0,
            text,
            logprobs: None,
            finish_reason,
        }];
        event(&TextCompletion {
            id: &self.plan.id,
            object: "text_completion",
            created: self.plan.created,
            model: &self.plan.model.name,
            choices: &choices,
            usage: self.usage(),
            timings: self.timings(finish_reason),
        })
    }

    fn usage_chunk(&self) -> Bytes {
        let usage = Some(Some(Usage::new(self.plan.prompt_tokens, self.reported())));
        match self.plan.shape {
            ChunkShape::Chat => event(&ChatChunk {
                id: &self.plan.id,
                object: "chat.completion.chunk",
                created: self.plan.created,
                model: &self.plan.model.name,
                choices: &[],
                usage,
                timings: None,
            }),
            _ => event(&TextCompletion {
                id: &self.plan.id,
                object: "text_completion",
                created: self.plan.created,
                model: &self.plan.model.name,
                choices: &[],
                usage,
                timings: None,
            }),
        }
    }
}

impl Pace {
    /// Ready when the next token is due. The first token is due at once: the
    /// time to first token was spent before the stream started.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let now = Instant::now();
        let Some(due) = self.next else {
            self.next = now.checked_add(self.interval);
            return Poll::Ready(());
        };
        if now < due {
            self.sleep.as_mut().reset(due);
            ready!(self.sleep.as_mut().poll(cx));
        }
        self.next = due.checked_add(self.interval);
        Poll::Ready(())
    }
}

/// One SSE event: `data: <json>` and a blank line.
fn event(value: &impl Serialize) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut buf, value).is_err() {
        // Unreachable with the simulator's own types; if it ever happens the
        // client sees an in-stream error, which §5.1 tells it to expect.
        buf.truncate(6);
        buf.extend_from_slice(
            br#"{"error":{"message":"chunk serialization failed","type":"server_error","param":null,"code":null}}"#,
        );
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}
