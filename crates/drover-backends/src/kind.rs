//! The kinds of server drover knows how to read.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// LM Studio: `/api/v1/models` (0.4+) or `/api/v0/models` for models,
    /// load state and slots; loads and unloads by instance.
    LmStudio,
    /// Ollama: `/api/tags` and `/api/ps`; loads with an empty generation,
    /// unloads with `keep_alive: 0`.
    Ollama,
    /// llama.cpp's `llama-server`: one model (`/props`, `/slots`, `/health`)
    /// or router mode (`/models`, load and unload).
    LlamaCpp,
    /// vLLM: `/v1/models`, `/health`, `/metrics` (its own queue).
    Vllm,
    /// Any OpenAI-compatible server: `/v1/models`; everything it lists is
    /// taken as loaded.
    OpenAi,
}

impl BackendKind {
    pub const NAMES: &'static str = "lmstudio, ollama, llamacpp, vllm, openai";

    pub const ALL: [BackendKind; 5] = [
        BackendKind::LmStudio,
        BackendKind::Ollama,
        BackendKind::LlamaCpp,
        BackendKind::Vllm,
        BackendKind::OpenAi,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::LmStudio => "lmstudio",
            BackendKind::Ollama => "ollama",
            BackendKind::LlamaCpp => "llamacpp",
            BackendKind::Vllm => "vllm",
            BackendKind::OpenAi => "openai",
        }
    }
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lmstudio" | "lm-studio" => Ok(BackendKind::LmStudio),
            "ollama" => Ok(BackendKind::Ollama),
            "llamacpp" | "llama.cpp" | "llama-server" | "llama_cpp" => Ok(BackendKind::LlamaCpp),
            "vllm" => Ok(BackendKind::Vllm),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_its_name_and_the_other_spellings() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.as_str().parse::<BackendKind>(), Ok(kind));
        }
        for s in ["llama.cpp", "llama-server", "LLAMA_CPP", " lm-studio "] {
            assert!(s.parse::<BackendKind>().is_ok(), "{s}");
        }
        assert!("vlm".parse::<BackendKind>().unwrap_err().contains("vllm"));
    }
}
