//! `drover plan`: the question every node's owner asks. How many models and
//! slots fit in its memory, what is left, and what throughput that buys;
//! asked for more than fits, it says so and names what would fit. With
//! `--from-fleet`, the same budget for every backend of a running hub, from
//! what each holds now.

use std::time::Duration;

use anyhow::{Context, bail};
use drover_proto::admin::BackendList;
use drover_scheduler::plan::{Budget, Holding, PlanInput, Terms};
use http::Method;

use super::http::{Hub, check};

#[derive(clap::Args)]
pub struct PlanArgs {
    /// The node's memory: 128G, 64GiB, 96000M (bare K, M, G, T are binary;
    /// KB, MB, GB, TB decimal).
    #[arg(long, value_parser = size, required_unless_present = "from_fleet")]
    pub memory: Option<u64>,
    /// Model sizes, each optionally followed by xN for N models of that
    /// size: --model-size 15G x6, or --model-size 15G 7G 7G.
    #[arg(long = "model-size", num_args = 1.., required_unless_present = "from_fleet")]
    pub model_sizes: Vec<String>,
    /// Plan every backend of a running hub from what it holds now: its
    /// memory (from the server, or `memory` in its config), its loaded
    /// models' sizes and slots, and its config's slot_buffer, system and
    /// margin.
    #[arg(long, conflicts_with_all = ["memory", "model_sizes"])]
    pub from_fleet: bool,
    #[command(flatten)]
    pub target: Hub,
    /// Slots (requests at once) per model.
    #[arg(long, default_value_t = 1)]
    pub slots_per_model: u32,
    /// Memory each slot needs beyond its model (KV cache, buffers).
    #[arg(long, value_parser = size, default_value = "0")]
    pub slot_buffer: u64,
    /// Memory the system and the server take.
    #[arg(long, value_parser = size, default_value = "0")]
    pub system: u64,
    /// Memory kept free on purpose.
    #[arg(long, value_parser = size, default_value = "0")]
    pub margin: u64,
    /// How long one response takes (3s, 1500ms), for the throughput.
    #[arg(long, value_parser = duration)]
    pub response_time: Option<Duration>,
}

pub async fn run(args: PlanArgs) -> anyhow::Result<()> {
    if args.from_fleet {
        return from_fleet(&args).await;
    }
    let memory = args
        .memory
        .context("--memory is needed without --from-fleet")?;
    let input = PlanInput {
        memory,
        models: models(&args.model_sizes)?,
        slots_per_model: args.slots_per_model,
        slot_buffer: args.slot_buffer,
        system: args.system,
        margin: args.margin,
        response_time: args.response_time.unwrap_or_default(),
    };
    if input.slots_per_model == 0 {
        bail!("--slots-per-model must be at least 1");
    }
    let plan = input.plan();
    print(&plan.asked, &input, args.response_time.is_some());
    if plan.asked.fits {
        return Ok(());
    }
    let short = plan
        .asked
        .used
        .saturating_add(plan.asked.margin)
        .saturating_sub(memory);
    println!(
        "\nDoes not fit: it needs {} with the margin, {} more than the {} there is.",
        gb(plan.asked.used.saturating_add(plan.asked.margin)),
        gb(short),
        gb(memory)
    );
    let mut any = false;
    if let Some(b) = &plan.fewer_slots {
        any = true;
        println!(
            "What fits: all {} with {} slot(s) each ({}, {} used, {} left{}).",
            count(b.models, "model"),
            b.slots / b.models.max(1) as u32,
            count(b.slots as usize, "slot"),
            gb(b.used),
            gb(b.headroom),
            throughput(b, args.response_time.is_some())
        );
    }
    if let Some(b) = &plan.fewer_models {
        any = true;
        println!(
            "What fits: the first {} of {} with {} slot(s) each ({}, {} used, {} left{}).",
            b.models,
            count(input.models.len(), "model"),
            input.slots_per_model,
            count(b.slots as usize, "slot"),
            gb(b.used),
            gb(b.headroom),
            throughput(b, args.response_time.is_some())
        );
    }
    if !any {
        println!("Nothing asked for fits: not even one model with one slot.");
    }
    bail!("the models asked for do not fit in {}", gb(memory))
}

/// Every backend's budget from what it holds now.
async fn from_fleet(args: &PlanArgs) -> anyhow::Result<()> {
    let api = args.target.api();
    let (status, body) = api.call(Method::GET, "/admin/backends", None).await?;
    check(status, &body)?;
    let list: BackendList = serde_json::from_value(body).context("unexpected answer")?;
    if list.backends.is_empty() {
        println!("no backends");
        return Ok(());
    }
    let mut over = Vec::new();
    for b in &list.backends {
        let loaded: Vec<_> = b.models.iter().filter(|m| m.loaded).collect();
        let unknown: Vec<&str> = loaded
            .iter()
            .filter(|m| m.size_bytes.is_none())
            .map(|m| m.id.as_str())
            .collect();
        let holding = Holding {
            models: loaded.len(),
            model_bytes: loaded.iter().filter_map(|m| m.size_bytes).sum(),
            slots: loaded.iter().map(|m| m.slots).sum(),
        };
        println!("{} ({}):", b.name, b.kind);
        let Some(memory) = b.memory_total else {
            println!(
                "  {} loaded ({} known), {} slots; memory unknown: set `memory` in its config",
                count(holding.models, "model"),
                gb(holding.model_bytes),
                holding.slots
            );
            continue;
        };
        let budget = Budget::of(
            holding,
            Terms {
                memory,
                slot_buffer: b.slot_buffer,
                system: b.system,
                margin: b.margin,
                response_time: args.response_time.unwrap_or_default(),
            },
        );
        println!(
            "  {} loaded = {}; {} slots x {} = {}; system {}",
            count(budget.models, "model"),
            gb(budget.model_bytes),
            budget.slots,
            gb(b.slot_buffer),
            gb(budget.buffer_bytes),
            gb(budget.system)
        );
        println!(
            "  used {} of {}, margin {}: {}{}",
            gb(budget.used),
            gb(memory),
            gb(budget.margin),
            if budget.fits {
                format!("fits, {} free for more models", gb(budget.room()))
            } else {
                format!(
                    "over by {}",
                    gb(budget
                        .used
                        .saturating_add(budget.margin)
                        .saturating_sub(memory))
                )
            },
            throughput(&budget, args.response_time.is_some())
        );
        if !unknown.is_empty() {
            println!("  sizes unknown (not counted): {}", unknown.join(", "));
        }
        if !budget.fits {
            over.push(b.name.clone());
        }
    }
    if !over.is_empty() {
        bail!("over budget: {}", over.join(", "));
    }
    Ok(())
}

fn print(b: &Budget, input: &PlanInput, with_time: bool) {
    let sizes: Vec<u64> = input.models.clone();
    let same = sizes.windows(2).all(|w| w[0] == w[1]);
    let models = if same && !sizes.is_empty() {
        format!("{} x {} = {}", sizes.len(), gb(sizes[0]), gb(b.model_bytes))
    } else {
        gb(b.model_bytes)
    };
    println!("Models loaded:    {models}");
    println!(
        "Slot buffers:     {} x {} = {}",
        b.slots,
        gb(input.slot_buffer),
        gb(b.buffer_bytes)
    );
    println!("System overhead:  {}", gb(b.system));
    println!("Used:             {} of {}", gb(b.used), gb(input.memory));
    if b.fits {
        println!(
            "Left:             {} (safety margin {})",
            gb(b.headroom),
            gb(b.margin)
        );
    } else {
        println!(
            "Short:            {} (with the safety margin {})",
            gb(b.used.saturating_add(b.margin).saturating_sub(input.memory)),
            gb(b.margin)
        );
    }
    println!(
        "Slots:            {} ({} per model){}",
        b.slots,
        input.slots_per_model,
        throughput(b, with_time)
    );
}

fn throughput(b: &Budget, with_time: bool) -> String {
    if with_time {
        format!(", {:.0} requests per minute", b.per_minute)
    } else {
        String::new()
    }
}

/// "1 model", "3 models".
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn gb(bytes: u64) -> String {
    drover_core::size::gigabytes(bytes)
}

/// `15G x6 7G` as a list of sizes.
fn models(words: &[String]) -> anyhow::Result<Vec<u64>> {
    let mut sizes: Vec<u64> = Vec::new();
    for word in words.iter().flat_map(|w| w.split_whitespace()) {
        if let Some(n) = word.strip_prefix(['x', 'X', '*']) {
            let n: usize = n
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("{word:?}: expected xN, a count of models above 0"))?;
            let Some(last) = sizes.last().copied() else {
                bail!("{word:?} must follow a model size, as in 15G x6");
            };
            sizes.extend(std::iter::repeat_n(last, n - 1));
        } else {
            sizes.push(size(word).map_err(anyhow::Error::msg)?);
        }
    }
    Ok(sizes)
}

/// A size, read as everywhere in drover (`drover_core::size`).
fn size(s: &str) -> Result<u64, String> {
    drover_core::size::parse(s)
}

/// `3s`, `1500ms`, `2m`, or seconds.
fn duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let secs: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 3s or 1500ms)"))?;
    let secs = secs * scale;
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(format!("{s:?} must be above 0 and at most a day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts() {
        let words = ["15G x6".to_string(), "7G".to_string()];
        let sizes = models(&words).unwrap();
        assert_eq!(sizes.len(), 7);
        assert!(models(&["x3".to_string()]).is_err());
        assert!(models(&["15G".to_string(), "x0".to_string()]).is_err());
        assert_eq!(duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(duration("0s").is_err());
    }
}
