//! The named scenarios. Each returns its variants; `scale` stretches the
//! duration of steady traffic (bursts keep their size), so tests can run a
//! short version of the same thing.

use std::time::Duration;

use drover_core::{BackendId, ModelName};

use super::fleet_spec::{BackendSpec, FleetSpec, LaneSpec};
use super::scenario::{PrefixCache, Scenario};
use super::trace::{Arrivals, Mix, TraceSpec};

/// Each name says the fleet's shape and what happens to it, so a table
/// reads without the seed documents it was drawn from.
pub(crate) const NAMES: &[&str] = &[RISING, UNEVEN, MIXED, OUTAGE, CHATS, BURSTS, SWAP];
const RISING: &str = "two-servers-six-models-rising-load";
const UNEVEN: &str = "four-slot-and-one-slot-servers";
const MIXED: &str = "lmstudio-ollama-llamacpp-mixed-fleet";
const OUTAGE: &str = "two-servers-one-goes-down";
const CHATS: &str = "two-servers-multi-turn-chats";
const BURSTS: &str = "one-server-six-models-bursts";
const SWAP: &str = "two-servers-hold-two-of-five-models";

/// Seed 002's measured response time.
const SERVICE: Duration = Duration::from_secs(3);
/// Length of one steady-traffic variant at scale 1.
const RUN: Duration = Duration::from_secs(300);
const DEADLINE: Duration = Duration::from_secs(60);
/// A request's length varies by this much around the mean.
const JITTER: (f64, f64) = (0.8, 1.2);
const NO_CACHE: PrefixCache = PrefixCache {
    saving: 0.0,
    sessions: 0,
};

pub(crate) fn build(name: &str, scale: f64) -> Option<Vec<Scenario>> {
    let run = RUN.mul_f64(scale);
    Some(match name {
        RISING => rising_load(run),
        UNEVEN => uneven(run),
        MIXED => mixed(run),
        OUTAGE => vec![outage(run)],
        CHATS => vec![conversations(run)],
        BURSTS => bursts(),
        SWAP => swap(run),
        _ => return None,
    })
}

/// Two servers (Mac Studios, as in seed 002), each with six models loaded,
/// one slot each: 12 slots, 240 responses a minute.
fn two_servers() -> FleetSpec {
    FleetSpec::uniform(2, 6, 1, SERVICE)
}

fn poisson(per_min: f64, run: Duration) -> TraceSpec {
    TraceSpec {
        arrivals: Arrivals::Poisson {
            per_min,
            duration: run,
        },
        mix: Mix::Uniform,
        work: JITTER,
    }
}

/// Rising load on two servers: where each policy's waits take off, and
/// whether it keeps every slot busy under saturation.
fn rising_load(run: Duration) -> Vec<Scenario> {
    at_loads(RISING, &two_servers(), &[50, 80, 95, 100, 120, 150], run)
}

/// One variant per load, each Poisson traffic at that share of the fleet's
/// capacity.
fn at_loads(
    name: &'static str,
    fleet: &FleetSpec,
    percents: &[u32],
    run: Duration,
) -> Vec<Scenario> {
    let capacity = fleet.capacity_per_min();
    percents
        .iter()
        .map(|&pct| Scenario {
            name,
            variant: format!("load {pct}%"),
            trace: poisson(capacity * f64::from(pct) / 100.0, run),
            fleet: fleet.clone(),
            deadline: Some(DEADLINE),
            cache: NO_CACHE,
        })
        .collect()
}

/// A 4-slot and a 1-slot server for one model: round robin gives the small
/// one half the work.
fn uneven(run: Duration) -> Vec<Scenario> {
    let fleet = FleetSpec::sized(&[4, 1], SERVICE);
    let capacity = fleet.capacity_per_min();
    vec![
        Scenario {
            name: UNEVEN,
            variant: "load 120%".to_string(),
            trace: poisson(capacity * 1.2, run),
            fleet: fleet.clone(),
            deadline: Some(DEADLINE),
            cache: NO_CACHE,
        },
        Scenario {
            name: UNEVEN,
            variant: "burst of 60".to_string(),
            trace: TraceSpec {
                arrivals: Arrivals::Burst { count: 60 },
                mix: Mix::Uniform,
                work: JITTER,
            },
            fleet,
            deadline: Some(DEADLINE),
            cache: NO_CACHE,
        },
    ]
}

/// A fleet of the three kinds people mix, serving the same two models:
/// LM Studio on a Mac (4 parallel slots per model, seed 002's 3 s), Ollama
/// on a gaming PC (`OLLAMA_NUM_PARALLEL=1`, a fast GPU: 1.5 s) and
/// llama.cpp on a small box (2 slots, 6 s). Unlike slots and unlike speeds:
/// round robin sends each a third of the work.
fn mixed(run: Duration) -> Vec<Scenario> {
    let lane =
        |model, slots, secs: f64| LaneSpec::resident(model, slots, Duration::from_secs_f64(secs));
    let backend = |id, slots, secs: f64| BackendSpec {
        id: BackendId(id),
        lanes: vec![lane(0, slots, secs), lane(1, slots, secs)],
        down: Vec::new(),
        max_loaded: None,
    };
    let fleet = FleetSpec {
        models: vec![ModelName::new("m0"), ModelName::new("m1")],
        backends: vec![backend(1, 4, 3.0), backend(2, 1, 1.5), backend(3, 2, 6.0)],
    };
    at_loads(MIXED, &fleet, &[70, 90, 110], run)
}

/// Two servers at 80% load; backend 2 is down from 25% to 60% of the run,
/// then back.
fn outage(run: Duration) -> Scenario {
    let mut fleet = two_servers();
    let capacity = fleet.capacity_per_min();
    if let Some(b) = fleet.backends.get_mut(1) {
        b.down.push((run.mul_f64(0.25), run.mul_f64(0.60)));
    }
    Scenario {
        name: OUTAGE,
        variant: "load 80%, backend#2 down 25%-60%".to_string(),
        trace: poisson(capacity * 0.8, run),
        fleet,
        deadline: Some(DEADLINE),
        cache: NO_CACHE,
    }
}

/// Multi-turn conversations on two servers at 80% of their cold capacity:
/// does a turn go back to the backend that holds its prefix?
fn conversations(run: Duration) -> Scenario {
    let fleet = two_servers();
    let capacity = fleet.capacity_per_min();
    Scenario {
        name: CHATS,
        variant: "aiming at 80% load".to_string(),
        trace: TraceSpec {
            arrivals: Arrivals::Conversations {
                per_min: capacity * 0.8,
                duration: run,
                turns: (2, 8),
                reply: SERVICE,
                think: (5.0, 20.0),
            },
            mix: Mix::Uniform,
            work: JITTER,
        },
        fleet,
        deadline: Some(DEADLINE),
        cache: PrefixCache {
            saving: 0.4,
            sessions: 8,
        },
    }
}

/// Seed 002's own numbers on one Mac Studio (6 models, one slot each, 3 s
/// a response): six messages for six models take 3 s, six for one model
/// take 18 s, and a full load runs at 120 a minute.
fn bursts() -> Vec<Scenario> {
    let fleet = FleetSpec::uniform(1, 6, 1, SERVICE);
    let case = |variant: &str, count: usize, mix: Mix| Scenario {
        name: BURSTS,
        variant: variant.to_string(),
        trace: TraceSpec {
            arrivals: Arrivals::Burst { count },
            mix,
            work: (1.0, 1.0),
        },
        fleet: fleet.clone(),
        deadline: Some(DEADLINE),
        cache: NO_CACHE,
    };
    vec![
        case("6 messages, 6 models", 6, Mix::Cycle),
        case("6 messages, 1 model", 6, Mix::Only(0)),
        case("120 messages, 6 models", 120, Mix::Cycle),
    ]
}

/// Two servers that each list five models but hold only two at once (seed
/// 002's budget: more models than memory), 2 slots a model, 3 s a
/// response, 20 s to load one; each starts with the two most popular
/// loaded. Traffic asks for the models in Zipf proportions (44%, 22%, 15%,
/// 11%, 9%), so the tail has to be loaded and unloaded: does the hub load
/// each model once where it is needed, or thrash?
fn swap(run: Duration) -> Vec<Scenario> {
    let backend = |id| BackendSpec {
        id: BackendId(id),
        lanes: (0..5)
            .map(|model| LaneSpec {
                model,
                slots: 2,
                base: SERVICE,
                resident: model < 2,
                load: Duration::from_secs(20),
            })
            .collect(),
        down: Vec::new(),
        max_loaded: Some(2),
    };
    let fleet = FleetSpec {
        models: (0..5).map(|m| ModelName::new(&format!("m{m}"))).collect(),
        backends: vec![backend(1), backend(2)],
    };
    let capacity = fleet.capacity_per_min();
    [30u32, 60, 80]
        .iter()
        .map(|&pct| Scenario {
            name: SWAP,
            variant: format!("load {pct}%"),
            trace: TraceSpec {
                mix: Mix::Zipf(1.0),
                ..poisson(capacity * f64::from(pct) / 100.0, run)
            },
            fleet: fleet.clone(),
            deadline: Some(DEADLINE),
            cache: NO_CACHE,
        })
        .collect()
}
