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
    /// The model; by default the first one GET /v1/models lists.
    #[arg(long)]
    pub model: Option<String>,
    /// chat, completions or embeddings.
    #[arg(long, default_value = "chat")]
    pub endpoint: String,
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
