use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::agents::ResponseStore;
use crate::error::ApiError;
use crate::fault::FaultRates;
use crate::model::ModelState;
use crate::stats::{Counters, StatsWatch};
use crate::{Dialect, SimConfig, SimError, SimStats};

/// A slower rate than one token an hour is treated as one token an hour, so
/// deadline arithmetic stays far from overflow.
const SLOWEST_TOKEN_INTERVAL: Duration = Duration::from_secs(3600);

/// The fixed part of the configuration, in the form the request path uses.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) dialect: Dialect,
    pub(crate) ttft: Duration,
    /// Prompt tokens a second; `None`: prefill is free.
    pub(crate) prefill_rate: Option<f64>,
    pub(crate) token_interval: Option<Duration>,
    pub(crate) output_tokens: usize,
    pub(crate) load_time: Duration,
    pub(crate) embedding_dims: usize,
    pub(crate) seed: u64,
    /// Loaded models beyond which the least recently used idle one goes.
    pub(crate) max_loaded: Option<usize>,
    /// Bytes for loaded models.
    pub(crate) memory: Option<u64>,
    /// Cells of context all slots share; see `SimConfig::shared_context`.
    pub(crate) shared_context: Option<usize>,
}

/// State every connection and request of one simulator shares. Read-mostly:
/// the model table never changes after start, and everything that does is
/// an atomic, so no lock is held across an await on the request path.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    models: Vec<Arc<ModelState>>,
    index: HashMap<Box<str>, usize>,
    pub(crate) faults: FaultRates,
    pub(crate) counters: Counters,
    pub(crate) watch: Arc<StatsWatch>,
    /// The Responses API answers it produced, which it can continue.
    pub(crate) responses: ResponseStore,
    /// Response ids; unlike `requests_total`, never reset, so ids stay unique.
    next_id: AtomicU64,
    /// The logical clock of `ModelState::last_used`.
    clock: AtomicU64,
    /// Unix seconds at start, reported as the models' `created`.
    pub(crate) started: u64,
    /// Cancelled when the simulator shuts down; hung requests wait for it.
    pub(crate) shutdown: CancellationToken,
    /// Cells of the shared context the running requests hold.
    pub(crate) context_used: Arc<AtomicUsize>,
}

impl Shared {
    pub(crate) fn new(config: SimConfig, shutdown: CancellationToken) -> Result<Self, SimError> {
        if config.slots == 0 {
            return Err(SimError::NoSlots);
        }
        if config.embedding_dims == 0 {
            return Err(SimError::NoEmbeddingDims);
        }
        let watch = Arc::new(StatsWatch::default());
        let all_loaded = !config.dialect.has_load_state();
        let mut models = Vec::new();
        let mut index = HashMap::new();
        for name in config.models.iter().chain(&config.loaded) {
            if index.contains_key(name.as_str()) {
                continue;
            }
            let loaded = all_loaded || config.loaded.contains(name);
            index.insert(Box::<str>::from(name.as_str()), models.len());
            models.push(Arc::new(
                ModelState::new(name, loaded, config.slots, Arc::clone(&watch)).with(
                    config.model_sizes.get(name).copied(),
                    config.model_load_times.get(name).copied(),
                ),
            ));
        }
        let token_interval = (config.tokens_per_sec.is_finite() && config.tokens_per_sec > 0.0)
            .then(|| {
                Duration::try_from_secs_f64(1.0 / config.tokens_per_sec)
                    .unwrap_or(SLOWEST_TOKEN_INTERVAL)
                    .min(SLOWEST_TOKEN_INTERVAL)
            });
        Ok(Shared {
            settings: Settings {
                dialect: config.dialect,
                max_loaded: config.max_loaded.filter(|n| *n > 0),
                memory: config.memory,
                ttft: config.ttft,
                prefill_rate: (config.prefill_tokens_per_sec.is_finite()
                    && config.prefill_tokens_per_sec > 0.0)
                    .then_some(config.prefill_tokens_per_sec),
                token_interval,
                output_tokens: config.output_tokens,
                load_time: config.load_time,
                embedding_dims: config.embedding_dims,
                seed: config.seed,
                shared_context: config.shared_context,
            },
            models,
            index,
            faults: FaultRates::new(config.faults),
            counters: Counters::default(),
            responses: ResponseStore::default(),
            watch,
            clock: AtomicU64::new(1),
            next_id: AtomicU64::new(1),
            started: unix_now(),
            shutdown,
            context_used: Arc::default(),
        })
    }

    pub(crate) fn model(&self, name: &str) -> Option<&Arc<ModelState>> {
        self.index.get(name).and_then(|&i| self.models.get(i))
    }

    /// In configuration order.
    pub(crate) fn models(&self) -> &[Arc<ModelState>] {
        &self.models
    }

    /// Makes `model` ready to serve: marks it used and, if it is not
    /// loaded, makes room for it (below `max_loaded` and within `memory`)
    /// and loads it. Room is made by unloading the least recently used idle
    /// models on servers that evict (Ollama, llama.cpp's router); LM Studio
    /// refuses instead, and so does every server for a model larger than
    /// all its memory.
    pub(crate) async fn load(&self, model: &Arc<ModelState>) -> Result<(), ApiError> {
        model.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        if model.is_loaded() {
            return Ok(());
        }
        if let Some(memory) = self.settings.memory
            && model.size_bytes() > memory
        {
            return Err(ApiError::does_not_fit(model, memory));
        }
        let evicts = matches!(
            self.settings.dialect,
            Dialect::Ollama | Dialect::LlamaCppRouter
        );
        loop {
            let others: Vec<&Arc<ModelState>> = self
                .models
                .iter()
                .filter(|m| m.is_loaded() && !Arc::ptr_eq(m, model))
                .collect();
            let used: u64 = others.iter().map(|m| m.size_bytes()).sum();
            let over_count = self
                .settings
                .max_loaded
                .is_some_and(|max| others.len() >= max);
            let over_memory = self
                .settings
                .memory
                .is_some_and(|memory| used + model.size_bytes() > memory);
            if !over_count && !over_memory {
                break;
            }
            let idle = others
                .into_iter()
                .filter(|m| m.snapshot().in_flight == 0)
                .min_by_key(|m| m.last_used.load(Ordering::Relaxed));
            match idle {
                Some(victim) if evicts => {
                    tracing::info!(model = %victim.name, "evicting the least recently used model");
                    victim.set_loaded(false);
                }
                // Nothing to evict (or a server that does not): past the
                // memory it refuses; past the count alone it loads anyway,
                // as the real servers do when memory allows.
                _ if over_memory => {
                    return Err(ApiError::does_not_fit(
                        model,
                        self.settings.memory.unwrap_or(0).saturating_sub(used),
                    ));
                }
                _ => break,
            }
        }
        let load_time = model.load_time.unwrap_or(self.settings.load_time);
        model.ensure_loaded(load_time, &self.counters).await;
        Ok(())
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn stats(&self) -> SimStats {
        let counters = &self.counters;
        SimStats {
            continuations: counters.continuations.load(Ordering::Relaxed),
            prompt_tokens_cached: counters.prompt_tokens_cached.load(Ordering::Relaxed),
            prompt_tokens_prefilled: counters.prompt_tokens_prefilled.load(Ordering::Relaxed),
            requests_total: counters.requests_total.load(Ordering::Relaxed),
            injected_errors: counters.injected_errors.load(Ordering::Relaxed),
            hangs: counters.hangs.load(Ordering::Relaxed),
            mid_stream_closes: counters.mid_stream_closes.load(Ordering::Relaxed),
            dropped_after_read: counters.dropped_after_read.load(Ordering::Relaxed),
            context_full: counters.context_full.load(Ordering::Relaxed),
            stale_closes: counters.stale_closes.load(Ordering::Relaxed),
            loads: counters.loads.load(Ordering::Relaxed),
            models: self
                .models
                .iter()
                .map(|m| (m.name.to_string(), m.snapshot()))
                .collect(),
        }
    }

    /// Zeroes the counters. `requests_total` is also the fault sequence, so
    /// a reset replays the same fault pattern from the start.
    pub(crate) fn reset(&self) {
        self.counters.reset();
        for model in &self.models {
            model.counters.reset();
        }
        self.watch.changed();
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
