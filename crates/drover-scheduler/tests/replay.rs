//! The scheduler's event interface: the same events at the same times come
//! to the same decisions, so that a journal of what a hub applied can be
//! replayed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_core::{BackendId, ClientKey, ModelName, Priority, RequestId};
use drover_scheduler::{
    Affinity, Api, Applied, BackendStatus, Event, ModelSpec, Outcome, Request, Scheduler,
    SchedulerConfig,
};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn req(id: u64, model: &str, at: Duration) -> Request {
    Request {
        id: RequestId(id),
        model: ModelName::new(model),
        priority: Priority::new(50).unwrap(),
        client: ClientKey(id % 3),
        user: 0,
        arrival: at,
        deadline: Some(at + secs(30)),
        affinity: Affinity::default(),
        exclude: Vec::new(),
        size: 10,
        api: Api::OpenAi,
        pin: None,
        prompt_tokens: 0,
        max_tokens: None,
    }
}

/// Two backends holding many models that may be unloaded once idle for a
/// minute; requests for each, then time passes.
fn events() -> Vec<(Duration, Event)> {
    let models: Vec<String> = (0..12).map(|i| format!("model-{i:02}")).collect();
    let status = BackendStatus {
        can_load: true,
        can_unload: true,
        ..BackendStatus::default()
    };
    let mut events = Vec::new();
    for b in 1..=2 {
        events.push((
            Duration::ZERO,
            Event::Observed {
                backend: BackendId(b),
                models: models.iter().map(|m| ModelSpec::loaded(m, 2)).collect(),
                status: Some(status.clone()),
                probed: None,
            },
        ));
    }
    for (i, m) in models.iter().enumerate() {
        let at = secs(1);
        events.push((
            at,
            Event::Arrived {
                request: req(i as u64, m, at),
                retry: false,
            },
        ));
    }
    for (i, m) in models.iter().enumerate() {
        events.push((
            secs(2),
            Event::Finished {
                backend: BackendId(1 + (i as u32 % 2)),
                model: ModelName::new(m),
                tokens: 0,
                outcome: Outcome::Success { service: secs(1) },
            },
        ));
    }
    events.push((secs(100), Event::Tick));
    events
}

fn run(events: &[(Duration, Event)]) -> Vec<Applied> {
    let mut s = Scheduler::new(SchedulerConfig {
        ttl: Some(secs(60)),
        ..SchedulerConfig::default()
    });
    events
        .iter()
        .map(|(at, e)| s.apply(e.clone(), *at))
        .collect()
}

#[test]
fn the_same_events_come_to_the_same_decisions_unloads_included() {
    let events = events();
    let first = run(&events);
    let unloads = first
        .last()
        .unwrap()
        .decisions
        .iter()
        .filter(|d| matches!(d, drover_scheduler::Decision::Unload { .. }))
        .count();
    assert_eq!(unloads, 24, "{:?}", first.last());
    for attempt in 0..8 {
        assert_eq!(run(&events), first, "replay {attempt} decided otherwise");
    }
}
