//! The kinds of server drover knows how to read.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// LM Studio: `/api/v0/models` for models and load state.
    LmStudio,
    /// Any OpenAI-compatible server: `/v1/models`; everything it lists is
    /// taken as loaded.
    OpenAi,
}

impl BackendKind {
    pub const NAMES: &'static str = "lmstudio, openai";

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::LmStudio => "lmstudio",
            BackendKind::OpenAi => "openai",
        }
    }
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lmstudio" | "lm-studio" => Ok(BackendKind::LmStudio),
            "openai" => Ok(BackendKind::OpenAi),
            other => Err(format!(
                "unknown backend kind {other:?}; expected one of: {}",
                BackendKind::NAMES
            )),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
