//! The command line of `drover bench`.

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// The server to load, e.g. a hub: http://127.0.0.1:8700
    #[arg(long)]
    pub url: String,
    /// A backend to load directly in the same run, for the ratio.
    #[arg(long)]
    pub direct: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Requests to send (after the warm-up).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Requests sent first and not counted, to open connections.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Ask for streamed answers.
    #[arg(long)]
    pub stream: bool,
    /// The model; by default the first one GET /v1/models lists that fits
    /// the endpoint (an id with "embed" in it for embeddings, any other
    /// for chat and completions).
    #[arg(long)]
    pub model: Option<String>,
    /// The endpoint to load.
    #[arg(long, value_enum, default_value_t = Endpoint::Chat)]
    pub endpoint: Endpoint,
    /// max_tokens sent with each request.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
    /// Give up on one request after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// Print the results as JSON too.
    #[arg(long)]
    pub json: bool,
}

/// The OpenAI-compatible endpoints `drover bench` can load.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn endpoints_keep_their_names() {
        for (name, endpoint) in [
            ("chat", Endpoint::Chat),
            ("completions", Endpoint::Completions),
            ("embeddings", Endpoint::Embeddings),
        ] {
            let cli = Cli::try_parse_from(["bench", "--url", "http://h", "--endpoint", name]);
            assert_eq!(cli.map(|c| c.bench.endpoint).ok(), Some(endpoint), "{name}");
        }
        assert!(Cli::try_parse_from(["bench", "--url", "http://h", "--endpoint", "x"]).is_err());
    }
}
