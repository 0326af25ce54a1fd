use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore};

use crate::prefix_cache::PrefixCache;
use crate::stats::{Counters, ModelCounters, ModelStats, StatsWatch};

/// What a model does, as LM Studio reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModelKind {
    Llm,
    Embedding,
}

impl ModelKind {
    /// LM Studio has no flag for this, so the name decides, as it does for
    /// people browsing a model list.
    fn of(name: &str) -> ModelKind {
        if name.to_ascii_lowercase().contains("embed") {
            ModelKind::Embedding
        } else {
            ModelKind::Llm
        }
    }
}

/// One served model: its load state, its slots and its counters.
#[derive(Debug)]
pub(crate) struct ModelState {
    pub(crate) name: Box<str>,
    pub(crate) kind: ModelKind,
    /// Always true for dialects without a load state.
    loaded: AtomicBool,
    /// Held while loading, so concurrent requests for an unloaded model
    /// wait for one load instead of each starting their own.
    load_lock: Mutex<()>,
    /// Fair, so queued requests get slots in arrival order.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) slot_count: usize,
    pub(crate) counters: ModelCounters,
    pub(crate) watch: Arc<StatsWatch>,
    /// Its slots' KV caches; lost when it unloads.
    pub(crate) prefix_cache: PrefixCache,
    /// Bytes it takes in memory when loaded.
    size: u64,
    /// Its own load time, where configured.
    pub(crate) load_time: Option<Duration>,
    /// When it was last asked for, on the simulator's logical clock: the
    /// least recently used is evicted first.
    pub(crate) last_used: AtomicU64,
    /// A load is under way.
    loading: AtomicBool,
    /// LM Studio: the numbers of its loaded instances (`key` is 1, then
    /// `key:2`...), which loading a loaded model adds to; empty means the
    /// one first instance.
    instances: std::sync::Mutex<std::collections::BTreeSet<u64>>,
    /// llama.cpp's router: after an unload its status still says "loaded"
    /// until this instant, as the real one's does for a moment (its answer
    /// comes before the instance has stopped).
    pub(crate) stopping_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl ModelState {
    pub(crate) fn new(name: &str, loaded: bool, slots: usize, watch: Arc<StatsWatch>) -> Self {
        let kind = ModelKind::of(name);
        ModelState {
            name: name.into(),
            kind,
            size: match kind {
                ModelKind::Llm => 4_683_087_332,
                ModelKind::Embedding => 274_302_450,
            },
            load_time: None,
            loaded: AtomicBool::new(loaded),
            load_lock: Mutex::new(()),
            slots: Arc::new(Semaphore::new(slots)),
            slot_count: slots,
            counters: ModelCounters::default(),
            watch,
            prefix_cache: PrefixCache::new(slots),
            last_used: AtomicU64::new(0),
            loading: AtomicBool::new(false),
            instances: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            stopping_until: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn instances(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<u64>> {
        let mut set = drover_core::sync::lock(&self.instances);
        if set.is_empty() {
            set.insert(1);
        }
        set
    }

    /// The numbers of the loaded instances (none while unloaded).
    pub(crate) fn instance_numbers(&self) -> Vec<u64> {
        if !self.is_loaded() {
            return Vec::new();
        }
        self.instances().iter().copied().collect()
    }

    /// Another instance of a loaded model; its number.
    pub(crate) fn add_instance(&self) -> u64 {
        let mut set = self.instances();
        let n = set.iter().next_back().copied().unwrap_or(1) + 1;
        set.insert(n);
        n
    }

    /// Unloads instance `n`; the last one to go unloads the model. False
    /// when there is no such instance.
    pub(crate) fn remove_instance(&self, n: u64) -> bool {
        if !self.is_loaded() {
            return false;
        }
        let mut set = self.instances();
        if !set.remove(&n) {
            return false;
        }
        let last = set.is_empty();
        drop(set);
        if last {
            self.set_loaded(false);
        }
        true
    }

    pub(crate) fn is_loading(&self) -> bool {
        self.loading.load(Ordering::Acquire)
    }

    /// Flips the load state at once, without the load time: a test's setup
    /// knob, not a simulated load, so `loads` doesn't count it (`unloads`
    /// counts every unload, whoever asked).
    pub(crate) fn set_loaded(&self, loaded: bool) {
        if !loaded {
            self.prefix_cache.clear();
            self.instances().clear();
        }
        let was = self.loaded.swap(loaded, Ordering::AcqRel);
        if was && !loaded {
            self.counters.unloads.fetch_add(1, Ordering::Relaxed);
        }
        self.watch.changed();
    }

    /// Loads the model if it isn't loaded, taking `load_time`. Returns
    /// whether this call did the load. A caller dropped mid-load leaves the
    /// model unloaded; the next one in line starts over, as a real server
    /// abandons a load nobody waits for.
    pub(crate) async fn ensure_loaded(&self, load_time: Duration, counters: &Counters) -> bool {
        if self.is_loaded() {
            return false;
        }
        let _loading = self.load_lock.lock().await;
        if self.is_loaded() {
            return false;
        }
        tracing::info!(model = %self.name, ?load_time, "loading model");
        self.loading.store(true, Ordering::Release);
        // Cleared however the load ends, a caller dropped mid-load included.
        let _done = ClearOnDrop(&self.loading);
        if !load_time.is_zero() {
            tokio::time::sleep(load_time).await;
        }
        self.loaded.store(true, Ordering::Release);
        counters.loads.fetch_add(1, Ordering::Relaxed);
        self.counters.loads.fetch_add(1, Ordering::Relaxed);
        self.watch.changed();
        true
    }

    /// Bytes the model takes in memory, as servers report it: configured,
    /// or the size of a 7B model at 4 bits (or of a small embedder).
    pub(crate) fn size_bytes(&self) -> u64 {
        self.size
    }

    /// Sets what config says of this model.
    pub(crate) fn with(mut self, size: Option<u64>, load_time: Option<Duration>) -> Self {
        if let Some(size) = size {
            self.size = size;
        }
        self.load_time = load_time;
        self
    }

    pub(crate) fn snapshot(&self) -> ModelStats {
        self.counters.snapshot(self.is_loaded())
    }
}

struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
