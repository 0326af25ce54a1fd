use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Dialect, Faults, SimConfig, SimServer};

/// `drover sim`: run one simulated LLM server.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// The server API to imitate.
    #[arg(long, value_enum, default_value_t = Dialect::LmStudio)]
    pub dialect: Dialect,
    /// Address to listen on; port 0 picks a free port (the URL is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Models the server can serve, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "sim-model")]
    pub models: Vec<String>,
    /// Models loaded at start, comma-separated (LM Studio; others load all).
    #[arg(long, value_delimiter = ',')]
    pub loaded: Vec<String>,
    /// Requests one loaded model runs at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub slots: u32,
    /// Time to first token, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,
    /// Prompt tokens prefilled per second, for the part of a prompt its
    /// slot has not cached (0: free).
    #[arg(long, default_value_t = 0.0)]
    pub prefill_tokens_per_sec: f64,
    /// Models loaded at once; loading another evicts the least recently
    /// used idle one (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_loaded: usize,
    /// Generation speed; 0 sends all tokens at once.
    #[arg(long, default_value_t = 0.0)]
    pub tokens_per_sec: f64,
    /// Tokens per answer (a request's max_tokens may ask for fewer).
    #[arg(long, default_value_t = 16)]
    pub output_tokens: usize,
    /// JIT load time of a model that isn't loaded, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub load_ms: u64,
    /// Length of embedding vectors.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub embedding_dims: u32,
    /// Probability that a request gets a 500.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Probability that a request is never answered.
    #[arg(long, default_value_t = 0.0)]
    pub hang_rate: f64,
    /// Probability that an answer's connection is killed part-way.
    #[arg(long, default_value_t = 0.0)]
    pub close_mid_stream_rate: f64,
    /// Probability that a request is read whole and its connection then
    /// closed without an answer.
    #[arg(long, default_value_t = 0.0)]
    pub drop_after_read_rate: f64,
    /// Start Anthropic Messages streams without their message_start event,
    /// as llama-server sometimes does.
    #[arg(long)]
    pub messages_without_start: bool,
    /// Read past response_format (JSON schemas and JSON mode), as a server
    /// without structured output does: the answer is words.
    #[arg(long)]
    pub ignores_response_format: bool,
    /// Report this many output tokens in every answer's usage, whatever
    /// was generated.
    #[arg(long)]
    pub report_output_tokens: Option<u64>,
    /// Close a connection after every streamed answer while advertising
    /// keep-alive, as llama-server does: the next request sent on it gets
    /// no answer.
    #[arg(long)]
    pub close_after_stream: bool,
    /// List models but fail every generation with a 500, as a server whose
    /// model runner crashed does.
    #[arg(long)]
    pub cannot_generate: bool,
    /// Cells of context every slot shares (llama.cpp's --kv-unified): a
    /// request that no longer fits beside the others fails with 500
    /// "Context size has been exceeded.".
    #[arg(long)]
    pub shared_context: Option<usize>,
    /// Memory for loaded models, in MiB: loading one that does not fit
    /// evicts (ollama, llamacpp-router) or fails (lmstudio).
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// A model's size in MiB, as NAME=MIB; repeat for more.
    #[arg(long = "model-size", value_parser = name_value)]
    pub model_sizes: Vec<(String, u64)>,
    /// A model's load time in milliseconds, as NAME=MS; repeat for more.
    #[arg(long = "model-load-ms", value_parser = name_value)]
    pub model_load_ms: Vec<(String, u64)>,
    /// Seeds the generated text and the fault choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `NAME=NUMBER`; the name may hold `=` (the number is after the last one).
fn name_value(s: &str) -> Result<(String, u64), String> {
    let (name, value) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?} should be NAME=NUMBER"))?;
    let value = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} in {s:?} is not a whole number"))?;
    Ok((name.trim().to_string(), value))
}

impl SimArgs {
    pub fn config(&self) -> SimConfig {
        SimConfig {
            dialect: self.dialect,
            models: self.models.clone(),
            loaded: self.loaded.clone(),
            slots: self.slots as usize,
            ttft: Duration::from_millis(self.ttft_ms),
            prefill_tokens_per_sec: self.prefill_tokens_per_sec,
            max_loaded: (self.max_loaded > 0).then_some(self.max_loaded),
            tokens_per_sec: self.tokens_per_sec,
            output_tokens: self.output_tokens,
            load_time: Duration::from_millis(self.load_ms),
            model_load_times: self
                .model_load_ms
                .iter()
                .map(|(m, ms)| (m.clone(), Duration::from_millis(*ms)))
                .collect(),
            model_sizes: self
                .model_sizes
                .iter()
                .map(|(m, mib)| (m.clone(), mib.saturating_mul(1 << 20)))
                .collect(),
            memory: self.memory_mib.map(|mib| mib.saturating_mul(1 << 20)),
            embedding_dims: self.embedding_dims as usize,
            shared_context: self.shared_context,
            seed: self.seed,
            faults: Faults {
                error_rate: self.error_rate,
                hang_rate: self.hang_rate,
                close_mid_stream_rate: self.close_mid_stream_rate,
                drop_after_read_rate: self.drop_after_read_rate,
                close_after_stream: self.close_after_stream,
                cannot_generate: self.cannot_generate,
                messages_without_start: self.messages_without_start,
                ignores_response_format: self.ignores_response_format,
                reported_output_tokens: self.report_output_tokens,
            },
        }
    }
}

/// Runs a simulator until `shutdown` is cancelled, then shuts it down
/// gracefully. Prints the URL it listens on to stdout.
pub async fn run(args: SimArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let sim = SimServer::start(listener, args.config()).context("cannot start the simulator")?;
    println!("drover sim ({}) listening on {}", args.dialect, sim.url());
    shutdown.cancelled().await;
    sim.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn parses_the_documented_flags() {
        let cli = Cli::try_parse_from([
            "sim",
            "--dialect",
            "openai",
            "--listen",
            "127.0.0.1:1234",
            "--models",
            "a,b",
            "--loaded",
            "a",
            "--slots",
            "4",
            "--ttft-ms",
            "50",
            "--tokens-per-sec",
            "20",
            "--output-tokens",
            "8",
            "--load-ms",
            "300",
            "--error-rate",
            "0.1",
            "--hang-rate",
            "0.2",
            "--close-mid-stream-rate",
            "0.3",
            "--seed",
            "7",
        ]);
        let config = match cli {
            Ok(cli) => cli.sim.config(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(config.dialect, Dialect::OpenAi);
        assert_eq!(config.models, ["a", "b"]);
        assert_eq!(config.loaded, ["a"]);
        assert_eq!(config.slots, 4);
        assert_eq!(config.ttft, Duration::from_millis(50));
        assert_eq!(config.tokens_per_sec, 20.0);
        assert_eq!(config.output_tokens, 8);
        assert_eq!(config.load_time, Duration::from_millis(300));
        assert_eq!(config.faults.close_mid_stream_rate, 0.3);
        assert_eq!(config.seed, 7);
    }

    #[test]
    fn close_after_stream_is_a_switch() {
        let config = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(cli) => cli.sim.config(),
            Err(e) => panic!("{e}"),
        };
        assert!(!config(&["sim"]).faults.close_after_stream);
        assert!(
            config(&["sim", "--close-after-stream"])
                .faults
                .close_after_stream
        );
    }

    #[test]
    fn zero_slots_is_rejected() {
        assert!(Cli::try_parse_from(["sim", "--slots", "0"]).is_err());
    }
}
