use std::collections::BTreeMap;
use std::time::Duration;

use crate::Dialect;

/// How a simulated server behaves. Plain data; [`SimConfig::default`] gives a
/// fast, fault-free OpenAI-compatible server with one model.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The server API to imitate.
    pub dialect: Dialect,
    /// Models the server can serve ("downloaded" in LM Studio terms).
    pub models: Vec<String>,
    /// Models loaded at start. A name missing from `models` is added to it.
    /// Ignored by dialects without a load state, where every model is loaded.
    pub loaded: Vec<String>,
    /// Requests one loaded model runs at once; the rest queue in FIFO order.
    /// Must be at least 1.
    pub slots: usize,
    /// Time to first token, spent holding a slot.
    pub ttft: Duration,
    /// Prompt tokens prefilled per second, added to the time to first
    /// token for the part of a prompt its slot has not cached; 0 (or
    /// anything not positive and finite) makes prefill free.
    pub prefill_tokens_per_sec: f64,
    /// Generation speed after the first token; 0 (or anything not positive
    /// and finite) means tokens follow each other without delay.
    pub tokens_per_sec: f64,
    /// Tokens per answer, unless the request's `max_tokens` or
    /// `max_completion_tokens` asks for fewer.
    pub output_tokens: usize,
    /// How long a JIT load of an available but unloaded model takes.
    pub load_time: Duration,
    /// Per-model load times, over `load_time`.
    pub model_load_times: BTreeMap<String, Duration>,
    /// Per-model sizes in bytes (otherwise a 7B model at 4 bits, or a
    /// small embedder), which `/api/ps`, `size_bytes` and the memory
    /// budget use.
    pub model_sizes: BTreeMap<String, u64>,
    /// Bytes of memory for loaded models: loading one that does not fit
    /// first evicts the least recently used idle ones (Ollama, llama.cpp's
    /// router) or fails (LM Studio), and a model larger than all of it
    /// never loads. `None`: unlimited.
    pub memory: Option<u64>,
    /// Models loaded at once, beyond which loading one evicts the least
    /// recently used idle one (Ollama's `OLLAMA_MAX_LOADED_MODELS`,
    /// llama.cpp router's `--models-max`); `None`: no limit.
    pub max_loaded: Option<usize>,
    /// Cells of context every slot shares, as llama.cpp's server with
    /// `--kv-unified` (router mode's default): a request takes its prompt's
    /// and its answer's tokens of them while it runs, and one that no longer
    /// fits beside the others fails as llama-server fails it, `500
    /// "Context size has been exceeded."` (a stream's first event), though
    /// alone it would fit. `None`: each slot has its own. Counted in
    /// `SimStats::context_full`.
    pub shared_context: Option<usize>,
    /// Length of every embedding vector.
    pub embedding_dims: usize,
    /// Seeds generated text, embeddings and fault choice.
    pub seed: u64,
    /// Fault injection rates; can be changed while running.
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            dialect: Dialect::default(),
            models: vec!["sim-model".to_owned()],
            loaded: Vec::new(),
            slots: 1,
            ttft: Duration::ZERO,
            prefill_tokens_per_sec: 0.0,
            tokens_per_sec: 0.0,
            output_tokens: 16,
            load_time: Duration::ZERO,
            max_loaded: None,
            model_load_times: BTreeMap::new(),
            model_sizes: BTreeMap::new(),
            memory: None,
            shared_context: None,
            embedding_dims: 8,
            seed: 0,
            faults: Faults::default(),
        }
    }
}

/// Faults to inject: four probabilities, each in `0.0..=1.0`, that an
/// inference request meets a fault, switches for real servers' habits, and
/// a wrong count. Out-of-range rates are clamped and NaN counts as 0. The
/// four rates are exclusive: one roll per request picks at most one of
/// them, so their sum should stay at or below 1.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Answer `500` in the OpenAI error shape before any token.
    pub error_rate: f64,
    /// Accept the request and never answer, until the client goes away.
    pub hang_rate: f64,
    /// Send the headers and part of the answer, then kill the connection.
    pub close_mid_stream_rate: f64,
    /// Read the whole request, then close the connection without a byte
    /// of answer (a server that crashed, or a proxy's reset, after taking
    /// the request in). Counted in `SimStats::dropped_after_read`.
    pub drop_after_read_rate: f64,
    /// Behave as llama-server does (backend-apis.md §8): every answer
    /// advertises `Keep-Alive: timeout=5, max=100`, yet a connection that
    /// carried a streamed (SSE) answer takes no further request: the next
    /// one to arrive on it is met with the connection closing and no
    /// answer, which is what a client racing the real server's close sees.
    /// Counted in `SimStats::stale_closes`, and not in `requests_total`.
    pub close_after_stream: bool,
    /// The server lists its models but cannot run them (a crashed runner,
    /// GPU memory gone): every generation answers 500 in the path's error
    /// shape, while listings answer as ever. Counted in `injected_errors`.
    pub cannot_generate: bool,
    /// Start Anthropic Messages streams without their `message_start` event
    /// (straight at `content_block_start`), as llama-server does for about
    /// one stream in five: the Anthropic SDK's stream helper then fails.
    pub messages_without_start: bool,
    /// Read past `response_format`, as a server without structured output
    /// does: the answer is words, whatever schema was asked for.
    pub ignores_response_format: bool,
    /// Report this many output tokens in every answer's usage (OpenAI's
    /// `completion_tokens`, llama.cpp's `predicted_n`) whatever was
    /// generated: a server that counts wrongly, or lies.
    pub reported_output_tokens: Option<u64>,
}

impl Faults {
    /// No faults at all.
    pub const NONE: Faults = Faults {
        error_rate: 0.0,
        hang_rate: 0.0,
        close_mid_stream_rate: 0.0,
        drop_after_read_rate: 0.0,
        close_after_stream: false,
        cannot_generate: false,
        messages_without_start: false,
        ignores_response_format: false,
        reported_output_tokens: None,
    };

    pub(crate) fn clamped(self) -> Faults {
        fn probability(rate: f64) -> f64 {
            if rate.is_nan() {
                0.0
            } else {
                rate.clamp(0.0, 1.0)
            }
        }
        Faults {
            error_rate: probability(self.error_rate),
            hang_rate: probability(self.hang_rate),
            close_mid_stream_rate: probability(self.close_mid_stream_rate),
            drop_after_read_rate: probability(self.drop_after_read_rate),
            close_after_stream: self.close_after_stream,
            cannot_generate: self.cannot_generate,
            messages_without_start: self.messages_without_start,
            ignores_response_format: self.ignores_response_format,
            reported_output_tokens: self.reported_output_tokens,
        }
    }
}
