//! `drover bench`: drive load at an OpenAI-compatible URL and report
//! requests per second, latency and time-to-first-byte percentiles and
//! errors; with `--direct`, run the same load against a backend directly in
//! the same run and print the ratio. When the target is a drover hub, its own
//! `process_cpu_seconds_total` is read before and after, giving the hub's
//! CPU time per request.
//!
//! - [`args`]: [`BenchArgs`], the command line.
//! - [`load`]: the closed-loop load generator.
//! - [`models`]: the model to load when none is named.
//! - [`progress`]: the progress line on stderr while a phase runs.
//! - [`report`]: percentiles and the printed table.

pub mod args;
pub mod load;
pub mod models;
pub mod progress;
pub mod report;

pub use args::BenchArgs;
pub use load::run;
