/// Which real server the simulator imitates.
///
/// Every dialect serves the OpenAI-compatible `/v1/*` inference endpoints; a
/// dialect adds its native endpoints and decides how model loading behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Dialect {
    /// LM Studio: `/api/v0` and `/api/v1` model endpoints, JIT loading.
    #[value(name = "lmstudio")]
    LmStudio,
    /// Ollama: `/api/version`, `/api/tags`, `/api/ps`, `/api/show`, load and
    /// unload through `/api/generate`, JIT loading.
    #[value(name = "ollama")]
    Ollama,
    /// llama.cpp's `llama-server` with one model (the first configured):
    /// `/health` (503 while it loads, for the load time after start),
    /// `/props`, `/slots`, `/metrics`.
    #[value(name = "llamacpp")]
    LlamaCpp,
    /// llama.cpp's `llama-server` in router mode: every configured model,
    /// loaded on demand (`/models/load`, or a request naming it), evicted
    /// least recently used beyond `max_loaded`.
    #[value(name = "llamacpp-router")]
    LlamaCppRouter,
    /// vLLM: `/health`, `/version`, `/metrics` (its own queue); every model
    /// loaded; slots are its batch, beyond which requests wait inside it.
    #[value(name = "vllm")]
    Vllm,
    /// A plain OpenAI-compatible server: every served model is loaded.
    #[default]
    #[value(name = "openai")]
    OpenAi,
}

impl Dialect {
    /// The name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::LmStudio => "lmstudio",
            Dialect::Ollama => "ollama",
            Dialect::LlamaCpp => "llamacpp",
            Dialect::LlamaCppRouter => "llamacpp-router",
            Dialect::Vllm => "vllm",
            Dialect::OpenAi => "openai",
        }
    }

    /// Whether models have a load state at all. Servers that cannot unload
    /// (a plain OpenAI-compatible server serves what it was started with)
    /// treat every model as loaded, whatever the configuration says.
    pub(crate) fn has_load_state(self) -> bool {
        match self {
            Dialect::LmStudio | Dialect::Ollama | Dialect::LlamaCpp | Dialect::LlamaCppRouter => {
                true
            }
            Dialect::Vllm | Dialect::OpenAi => false,
        }
    }

    /// Whether its completions carry `timings` (llama.cpp's own counts: a
    /// plain answer's, and a stream's last chunk's, asked for or not).
    pub(crate) fn reports_timings(self) -> bool {
        matches!(self, Dialect::LlamaCpp | Dialect::LlamaCppRouter)
    }

    /// Whether it serves the coding agents' paths, `/v1/responses` and
    /// `/v1/messages` (LM Studio from 0.4.1; a generic server need not).
    pub(crate) fn serves_agent_apis(self) -> bool {
        !matches!(self, Dialect::OpenAi)
    }

    /// The `owned_by` field of `/v1/models` entries, as each server fills it.
    pub(crate) fn owned_by(self) -> &'static str {
        match self {
            Dialect::LmStudio => "organization_owner",
            Dialect::Ollama => "library",
            Dialect::LlamaCpp | Dialect::LlamaCppRouter => "llamacpp",
            Dialect::Vllm => "vllm",
            Dialect::OpenAi => "drover-sim",
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
