/// Which real server the simulator imitates.
///
/// Every dialect serves the OpenAI-compatible `/v1/*` inference endpoints; a
/// dialect adds its native endpoints and decides how model loading behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Dialect {
    /// LM Studio: `/api/v0` and `/api/v1` model endpoints, JIT loading.
    #[value(name = "lmstudio")]
    LmStudio,
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
            Dialect::OpenAi => "openai",
        }
    }

    /// Whether models have a load state at all. Servers that cannot unload
    /// (a plain OpenAI-compatible server serves what it was started with)
    /// treat every model as loaded, whatever the configuration says.
    pub(crate) fn has_load_state(self) -> bool {
        match self {
            Dialect::LmStudio => true,
            Dialect::OpenAi => false,
        }
    }

    /// Whether it serves the coding agents' paths, `/v1/responses` and
    /// `/v1/messages` (LM Studio from 0.4.1; a generic server need not).
    pub(crate) fn serves_agent_apis(self) -> bool {
        match self {
            Dialect::LmStudio => true,
            Dialect::OpenAi => false,
        }
    }

    /// The `owned_by` field of `/v1/models` entries, as each server fills it.
    pub(crate) fn owned_by(self) -> &'static str {
        match self {
            Dialect::LmStudio => "organization_owner",
            Dialect::OpenAi => "drover-sim",
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
