//! The scheduler's behaviour through its public API, one scenario per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_core::{BackendId, ClientKey, ModelName, Priority, RequestId};
use drover_scheduler::{
    Admission, Affinity, Api, BackendStatus, BreakerState, Decision, ModelSpec, Outcome, Policy,
    Reject, Request, Scheduler, SchedulerConfig,
};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn spec(name: &str, loaded: bool, slots: u32) -> ModelSpec {
    if loaded {
        ModelSpec::loaded(name, slots)
    } else {
        ModelSpec::unloaded(name, slots)
    }
}

fn req(id: u64, model: &str) -> Request {
    Request {
        id: RequestId(id),
        model: ModelName::new(model),
        priority: Priority::DEFAULT,
        client: ClientKey(0),
        arrival: Duration::ZERO,
        deadline: None,
        affinity: Affinity::default(),
        exclude: Vec::new(),
        user: 0,
        size: 0,
        api: Default::default(),
        pin: None,
        prompt_tokens: 0,
        max_tokens: None,
    }
}

fn dispatched(a: Result<Admission, Reject>) -> BackendId {
    match a {
        Ok(Admission::Dispatched(d)) => d.backend,
        other => panic!("expected a dispatch, got {other:?}"),
    }
}

fn dispatches(decisions: &[Decision]) -> Vec<(u64, u32)> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Dispatch(d) => Some((d.request.0, d.backend.0)),
            _ => None,
        })
        .collect()
}

fn seed002_fleet(s: &mut Scheduler) {
    let models: Vec<ModelSpec> = (0..6).map(|i| spec(&format!("m{i}"), true, 1)).collect();
    s.upsert_backend(BackendId(1), models.clone());
    s.upsert_backend(BackendId(2), models);
}

#[test]
fn dispatches_to_a_free_slot_then_queues_then_hands_over_on_finish() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    assert_eq!(dispatched(s.submit(req(1, "a"), ms(0))), BackendId(1));
    assert_eq!(s.submit(req(2, "a"), ms(1)), Ok(Admission::Queued));
    assert!(dispatches(&s.poll(ms(2))).is_empty(), "no slot yet");
    s.finish(
        BackendId(1),
        &ModelName::new("a"),
        Outcome::Success { service: ms(5) },
        ms(5),
    );
    assert_eq!(dispatches(&s.poll(ms(5))), vec![(2, 1)]);
}

#[test]
fn unknown_model_is_refused_and_only_listing_backends_are_used() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 4)]);
    s.upsert_backend(BackendId(2), vec![spec("b", true, 4)]);
    assert_eq!(s.submit(req(1, "nope"), ms(0)), Err(Reject::ModelNotFound));
    for i in 0..4 {
        assert_eq!(dispatched(s.submit(req(10 + i, "b"), ms(0))), BackendId(2));
    }
}

#[test]
fn loaded_backends_are_preferred_over_ones_that_merely_list_the_model() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", false, 1)]);
    s.upsert_backend(BackendId(2), vec![spec("a", true, 1)]);
    assert_eq!(dispatched(s.submit(req(1, "a"), ms(0))), BackendId(2));
    // The loaded one is busy: wait for it rather than trigger a load elsewhere.
    assert_eq!(s.submit(req(2, "a"), ms(0)), Ok(Admission::Queued));
    // With nothing loaded anywhere, a backend that lists it is used.
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", false, 1)]);
    assert_eq!(dispatched(s.submit(req(1, "a"), ms(0))), BackendId(1));
}

#[test]
fn queue_full_is_refused_with_a_retry_hint() {
    let cfg = SchedulerConfig {
        max_queue: 2,
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(cfg);
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    dispatched(s.submit(req(1, "a"), ms(0)));
    assert_eq!(s.submit(req(2, "a"), ms(0)), Ok(Admission::Queued));
    assert_eq!(s.submit(req(3, "a"), ms(0)), Ok(Admission::Queued));
    match s.submit(req(4, "a"), ms(0)) {
        Err(Reject::QueueFull { retry_after }) => assert!(retry_after >= Duration::from_secs(1)),
        other => panic!("{other:?}"),
    }
    // A retry of an accepted request is never refused for a full queue.
    s.upsert_backend(BackendId(2), vec![spec("a", true, 1)]);
    assert_eq!(dispatches(&s.poll(ms(1))), vec![(2, 2)]);
    assert_eq!(s.submit(req(5, "a"), ms(1)), Ok(Admission::Queued));
    assert!(matches!(
        s.submit(req(6, "a"), ms(1)),
        Err(Reject::QueueFull { .. })
    ));
    let mut retry = req(1, "a");
    retry.exclude = vec![BackendId(1)];
    assert_eq!(s.resubmit(retry, ms(1)), Ok(Admission::Queued));
}

#[test]
fn requests_past_their_deadline_expire() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    dispatched(s.submit(req(1, "a"), ms(0)));
    let mut r = req(2, "a");
    r.deadline = Some(ms(100));
    s.submit(r, ms(0)).unwrap();
    assert_eq!(s.next_wakeup(), Some(ms(100)));
    assert!(s.poll(ms(99)).is_empty());
    assert_eq!(s.poll(ms(100)), vec![Decision::Expired(RequestId(2))]);
    assert!(s.queue().is_empty());
}

#[test]
fn cancel_removes_a_waiting_request() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    dispatched(s.submit(req(1, "a"), ms(0)));
    s.submit(req(2, "a"), ms(0)).unwrap();
    s.submit(req(3, "a"), ms(0)).unwrap();
    assert!(s.cancel(RequestId(2)));
    assert!(!s.cancel(RequestId(2)));
    s.finish(BackendId(1), &ModelName::new("a"), Outcome::Neutral, ms(1));
    assert_eq!(dispatches(&s.poll(ms(1))), vec![(3, 1)]);
}

#[test]
fn breaker_opens_after_failures_and_a_trial_closes_it() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 4)]);
    s.upsert_backend(BackendId(2), vec![spec("a", true, 4)]);
    let a = ModelName::new("a");
    for _ in 0..3 {
        s.probe(BackendId(1), false, ms(0));
    }
    let b1 = s.fleet().view(BackendId(1)).unwrap();
    assert_eq!(b1.breaker, BreakerState::Open);
    for i in 0..4 {
        assert_eq!(dispatched(s.submit(req(i, "a"), ms(10))), BackendId(2));
    }
    // After the cooldown (2 s by default) one trial goes to backend 1.
    let wake = s.next_wakeup().unwrap();
    assert_eq!(wake, Duration::from_secs(2));
    assert_eq!(dispatched(s.submit(req(10, "a"), wake)), BackendId(1));
    assert_eq!(
        s.submit(req(11, "a"), wake),
        Ok(Admission::Queued),
        "one trial at a time"
    );
    s.finish(
        BackendId(1),
        &a,
        Outcome::Success { service: ms(10) },
        wake + ms(10),
    );
    assert_eq!(
        s.fleet().view(BackendId(1)).unwrap().breaker,
        BreakerState::Closed
    );
    assert_eq!(dispatches(&s.poll(wake + ms(10))), vec![(11, 1)]);
}

#[test]
fn when_every_backend_is_open_new_requests_fail_fast() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    for _ in 0..3 {
        s.probe(BackendId(1), false, ms(0));
    }
    assert_eq!(s.submit(req(1, "a"), ms(1)), Err(Reject::NoHealthyBackend));
}

#[test]
fn a_retry_never_goes_back_to_a_backend_it_failed_on() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 2)]);
    s.upsert_backend(BackendId(2), vec![spec("a", true, 2)]);
    // A first attempt has another backend to fall back on.
    match s.submit(req(9, "a"), ms(0)) {
        Ok(Admission::Dispatched(d)) => assert!(!d.last_resort, "{d:?}"),
        other => panic!("{other:?}"),
    }
    let mut r = req(1, "a");
    r.exclude = vec![BackendId(1)];
    match s.resubmit(r.clone(), ms(0)) {
        Ok(Admission::Dispatched(d)) => {
            assert_eq!(d.backend, BackendId(2));
            assert!(d.last_resort, "both backends tried: {d:?}");
        }
        other => panic!("{other:?}"),
    }
    // Tried everywhere: refused, not sent round again.
    r.id = RequestId(2);
    r.exclude = vec![BackendId(1), BackendId(2)];
    assert_eq!(s.resubmit(r, ms(0)), Err(Reject::Exhausted));
    // A lone backend gets one try per request, so one request's failures
    // cannot open its breaker by themselves.
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    let mut r = req(3, "a");
    r.exclude = vec![BackendId(1)];
    assert_eq!(s.resubmit(r, ms(0)), Err(Reject::Exhausted));
}

#[test]
fn a_waiting_retry_leaves_when_its_last_untried_backend_goes() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    s.upsert_backend(BackendId(2), vec![spec("a", true, 1)]);
    dispatched(s.submit(req(1, "a"), ms(0)));
    dispatched(s.submit(req(2, "a"), ms(0)));
    let mut retry = req(3, "a");
    retry.exclude = vec![BackendId(1)];
    assert_eq!(s.resubmit(retry, ms(1)), Ok(Admission::Queued));
    // A plain request waits behind it for either backend.
    assert_eq!(s.submit(req(4, "a"), ms(1)), Ok(Admission::Queued));
    assert!(s.remove_backend(BackendId(2)));
    let decisions = s.poll(ms(2));
    assert_eq!(decisions, vec![Decision::Unroutable(RequestId(3))]);
    // Backend 1 frees a slot: the plain request gets it, not the retry.
    s.finish(
        BackendId(1),
        &ModelName::new("a"),
        Outcome::Success { service: ms(5) },
        ms(3),
    );
    let decisions = s.poll(ms(3));
    assert!(
        matches!(decisions.as_slice(), [Decision::Dispatch(d)] if d.request == RequestId(4) && d.backend == BackendId(1)),
        "{decisions:?}"
    );
}

#[test]
fn draining_stops_new_work_and_undrain_resumes() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 4)]);
    s.upsert_backend(BackendId(2), vec![spec("a", true, 4)]);
    assert!(s.set_draining(BackendId(1), true));
    for i in 0..4 {
        assert_eq!(dispatched(s.submit(req(i, "a"), ms(0))), BackendId(2));
    }
    assert_eq!(s.submit(req(9, "a"), ms(0)), Ok(Admission::Queued));
    s.set_draining(BackendId(1), false);
    assert_eq!(dispatches(&s.poll(ms(1))), vec![(9, 1)]);
}

#[test]
fn waiting_requests_for_a_model_nobody_lists_any_more_are_unroutable() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    dispatched(s.submit(req(1, "a"), ms(0)));
    s.submit(req(2, "a"), ms(0)).unwrap();
    assert!(s.remove_backend(BackendId(1)));
    assert_eq!(s.poll(ms(1)), vec![Decision::Unroutable(RequestId(2))]);
    // The in-flight request's finish on the removed backend is harmless.
    s.finish(BackendId(1), &ModelName::new("a"), Outcome::Failure, ms(2));
}

#[test]
fn affinity_returns_a_conversation_to_its_backend_while_it_has_room() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    seed002_fleet(&mut s);
    let turn1 = Affinity {
        lookup: vec![],
        record: vec![11],
    };
    let turn2 = Affinity {
        lookup: vec![11],
        record: vec![11, 12],
    };
    let mut r1 = req(1, "m0");
    r1.affinity = turn1;
    let first = dispatched(s.submit(r1, ms(0)));
    s.finish(
        first,
        &ModelName::new("m0"),
        Outcome::Success { service: ms(3) },
        ms(3),
    );
    // Make the other backend look at least as attractive by load.
    for i in 0..3 {
        let b = dispatched(s.submit(req(100 + i, &format!("m{}", i + 1)), ms(3)));
        let _ = b;
    }
    let mut r2 = req(2, "m0");
    r2.affinity = turn2.clone();
    match s.submit(r2, ms(4)) {
        Ok(Admission::Dispatched(d)) => {
            assert_eq!(d.backend, first);
            assert!(d.affinity_hit);
        }
        other => panic!("{other:?}"),
    }
    // Its slot there is now busy: the next turn goes elsewhere at once
    // rather than waiting.
    let mut r3 = req(3, "m0");
    r3.affinity = turn2;
    assert_ne!(dispatched(s.submit(r3, ms(5))), first);
}

#[test]
fn least_loaded_fills_the_bigger_backend_of_an_uneven_fleet() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 4)]);
    s.upsert_backend(BackendId(2), vec![spec("a", true, 1)]);
    let mut on = [0, 0];
    for i in 0..5 {
        let b = dispatched(s.submit(req(i, "a"), ms(0)));
        on[(b.0 - 1) as usize] += 1;
    }
    assert_eq!(on, [4, 1]);
    assert_eq!(s.submit(req(9, "a"), ms(0)), Ok(Admission::Queued));
}

#[test]
fn higher_priority_waits_less_and_clients_share_fairly() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    let a = ModelName::new("a");
    dispatched(s.submit(req(1, "a"), ms(0)));
    // Client 7 floods at priority 50; client 8 sends one at 50 and one at 90.
    for i in 0..5 {
        let mut r = req(10 + i, "a");
        r.client = ClientKey(7);
        s.submit(r, ms(1)).unwrap();
    }
    let mut r = req(20, "a");
    r.client = ClientKey(8);
    s.submit(r, ms(2)).unwrap();
    let mut r = req(30, "a");
    r.client = ClientKey(8);
    r.priority = Priority::new(90).unwrap();
    s.submit(r, ms(3)).unwrap();
    let mut order = Vec::new();
    for t in 0..7 {
        s.finish(
            BackendId(1),
            &a,
            Outcome::Success { service: ms(1) },
            ms(10 + t),
        );
        for (id, _) in dispatches(&s.poll(ms(10 + t))) {
            order.push(id);
        }
    }
    assert_eq!(order, vec![30, 10, 20, 11, 12, 13, 14]);
}

#[test]
fn baselines_bind_at_arrival_and_ignore_slots() {
    let cfg = SchedulerConfig {
        policy: Policy::RoundRobin,
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(cfg);
    s.upsert_backend(BackendId(1), vec![spec("a", true, 4)]);
    s.upsert_backend(BackendId(2), vec![spec("a", true, 1)]);
    let mut on = [0, 0];
    for i in 0..10 {
        let b = dispatched(s.submit(req(i, "a"), ms(0)));
        on[(b.0 - 1) as usize] += 1;
    }
    assert_eq!(on, [5, 5], "round robin overloads the small backend");
}

#[test]
fn a_breaker_half_opening_inside_finish_still_wakes_waiting_requests() {
    // Found by the policy lab: the half-open transition happened inside
    // `finish`, so `poll` saw no change and the request stayed queued.
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1), spec("b", true, 1)]);
    s.upsert_backend(BackendId(2), vec![spec("b", true, 1)]);
    assert_eq!(dispatched(s.submit(req(1, "a"), ms(0))), BackendId(1));
    assert_eq!(dispatched(s.submit(req(2, "b"), ms(0))), BackendId(2));
    for _ in 0..3 {
        s.probe(BackendId(1), false, ms(0));
    }
    assert_eq!(s.submit(req(3, "b"), ms(1000)), Ok(Admission::Queued));
    assert!(s.poll(ms(1000)).is_empty());
    assert_eq!(s.next_wakeup(), Some(ms(2000)));
    s.finish(
        BackendId(1),
        &ModelName::new("a"),
        Outcome::Neutral,
        ms(2000),
    );
    assert_eq!(dispatches(&s.poll(ms(2000))), vec![(3, 1)]);
}

#[test]
fn a_retry_goes_to_a_backend_that_would_load_the_model() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 2)]);
    s.upsert_backend(BackendId(2), vec![spec("a", false, 2)]);
    // The first attempt goes to the loaded backend; the cold one could
    // still take a retry.
    match s.submit(req(1, "a"), ms(0)) {
        Ok(Admission::Dispatched(d)) => {
            assert_eq!(d.backend, BackendId(1));
            assert!(!d.last_resort, "{d:?}");
        }
        other => panic!("{other:?}"),
    }
    let mut retry = req(1, "a");
    retry.exclude = vec![BackendId(1)];
    match s.resubmit(retry, ms(1)) {
        Ok(Admission::Dispatched(d)) => {
            assert_eq!(d.backend, BackendId(2));
            assert!(d.last_resort, "{d:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_last_resort_counts_only_backends_that_take_work() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 2)]);
    s.upsert_backend(BackendId(2), vec![spec("a", true, 2)]);
    s.set_draining(BackendId(2), true);
    match s.submit(req(1, "a"), ms(0)) {
        Ok(Admission::Dispatched(d)) => assert!(d.last_resort, "{d:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn waiting_bytes_have_a_budget() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_queue_bytes: 1000,
        ..SchedulerConfig::default()
    });
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    dispatched(s.submit(req(1, "a"), ms(0)));
    let sized = |id, size| Request {
        size,
        ..req(id, "a")
    };
    assert_eq!(s.submit(sized(2, 600), ms(0)), Ok(Admission::Queued));
    assert!(matches!(
        s.submit(sized(3, 600), ms(0)),
        Err(Reject::QueueFull { .. })
    ));
    assert_eq!(s.submit(sized(4, 400), ms(0)), Ok(Admission::Queued));
    assert_eq!(s.queue().stats().bytes, 1000);
    // A retry was accepted once already: never refused.
    let mut retry = sized(5, 600);
    retry.exclude = vec![BackendId(9)];
    assert_eq!(s.resubmit(retry, ms(0)), Ok(Admission::Queued));
    s.cancel(RequestId(2));
    assert_eq!(s.queue().stats().bytes, 1000);
}

#[test]
fn a_probe_does_not_close_a_breaker_that_requests_opened() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 3)]);
    for id in 0..3 {
        dispatched(s.submit(req(id, "a"), ms(0)));
        s.finish(BackendId(1), &ModelName::new("a"), Outcome::Failure, ms(0));
    }
    let state = |s: &Scheduler| s.fleet().view(BackendId(1)).unwrap().breaker;
    assert_eq!(state(&s), BreakerState::Open);
    s.probe(BackendId(1), true, ms(10));
    assert_eq!(state(&s), BreakerState::Open);
}

#[test]
fn a_waiting_retry_takes_a_free_backend_that_would_load_the_model() {
    // The retry queues behind a plain request waiting for the loaded
    // backend; the cold backend is free and the retry has not failed there.
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    s.upsert_backend(BackendId(2), vec![spec("a", false, 1)]);
    assert_eq!(dispatched(s.submit(req(1, "a"), ms(0))), BackendId(1));
    assert_eq!(s.submit(req(2, "a"), ms(1)), Ok(Admission::Queued));
    let mut retry = req(3, "a");
    retry.exclude = vec![BackendId(1)];
    assert_eq!(s.resubmit(retry, ms(2)), Ok(Admission::Queued));
    assert_eq!(dispatches(&s.poll(ms(2))), vec![(3, 2)]);
    // The plain request still waits for the loaded backend.
    assert_eq!(s.queue().len(), 1);
}

fn finish_ok(s: &mut Scheduler, backend: u32, model: &str, service_ms: u64, now: Duration) {
    s.finish(
        BackendId(backend),
        &ModelName::new(model),
        Outcome::Success {
            service: ms(service_ms),
        },
        now,
    );
}

fn status(max_concurrent: Option<u32>) -> BackendStatus {
    BackendStatus {
        max_concurrent,
        responses: true,
        messages: true,
        ..BackendStatus::default()
    }
}

#[test]
fn max_concurrent_caps_the_sum_over_a_backends_models() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    // Three loaded models with four slots each share one GPU that takes 5.
    let models = ["a", "b", "c"].map(|m| spec(m, true, 4)).to_vec();
    s.upsert_backend(BackendId(1), models);
    s.set_backend_status(BackendId(1), status(Some(5)));
    let mut running = 0;
    for i in 0..12 {
        let model = ["a", "b", "c"][i % 3];
        if let Ok(Admission::Dispatched(_)) = s.submit(req(i as u64, model), ms(0)) {
            running += 1;
        }
    }
    assert_eq!(running, 5, "the backend's cap, not 12 model slots");
    finish_ok(&mut s, 1, "a", 10, ms(10));
    assert_eq!(
        dispatches(&s.poll(ms(10))).len(),
        1,
        "one ended, one starts"
    );
}

#[test]
fn only_backends_serving_an_api_take_its_requests() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 2)]);
    s.upsert_backend(BackendId(2), vec![spec("a", true, 2)]);
    s.set_backend_status(
        BackendId(2),
        BackendStatus {
            messages: true,
            ..BackendStatus::default()
        },
    );
    for i in 0..2 {
        let r = Request {
            api: Api::Messages,
            ..req(i, "a")
        };
        assert_eq!(dispatched(s.submit(r, ms(0))), BackendId(2));
    }
    // Backend 1 has free slots but does not serve the API: it waits.
    let r = Request {
        api: Api::Messages,
        ..req(3, "a")
    };
    assert_eq!(s.submit(r, ms(0)), Ok(Admission::Queued));
    let r = Request {
        api: Api::Responses,
        ..req(4, "a")
    };
    assert_eq!(s.submit(r, ms(0)), Err(Reject::ApiNotServed));
    finish_ok(&mut s, 2, "a", 10, ms(10));
    assert_eq!(dispatches(&s.poll(ms(10))), vec![(3, 2)]);
}

#[test]
fn a_pinned_request_goes_only_to_its_backend_while_that_lists_the_model() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    s.upsert_backend(BackendId(2), vec![spec("a", true, 1)]);
    for b in [1, 2] {
        s.set_backend_status(BackendId(b), status(None));
    }
    let pinned = |id| Request {
        api: Api::Responses,
        pin: Some(BackendId(2)),
        ..req(id, "a")
    };
    assert_eq!(dispatched(s.submit(pinned(1), ms(0))), BackendId(2));
    // Backend 1 is free, but the pin waits for 2.
    assert_eq!(s.submit(pinned(2), ms(0)), Ok(Admission::Queued));
    assert!(dispatches(&s.poll(ms(1))).is_empty());
    finish_ok(&mut s, 2, "a", 10, ms(10));
    assert_eq!(dispatches(&s.poll(ms(10))), vec![(2, 2)]);
    // Once backend 2 is gone, the pin no longer binds.
    s.remove_backend(BackendId(2));
    assert_eq!(dispatched(s.submit(pinned(3), ms(11))), BackendId(1));
}

#[test]
fn busy_slots_the_server_reports_beyond_the_hubs_count_are_not_offered() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 2)]);
    assert_eq!(dispatched(s.submit(req(1, "a"), ms(0))), BackendId(1));
    // The server says both slots are busy: someone else uses one.
    s.set_backend_status(
        BackendId(1),
        BackendStatus {
            reported_busy: vec![(ModelName::new("a"), 2)],
            ..BackendStatus::default()
        },
    );
    assert_eq!(s.submit(req(2, "a"), ms(1)), Ok(Admission::Queued));
    let view = s.fleet().view(BackendId(1)).unwrap();
    assert_eq!(view.models[0].external, 1);
    // The outside work ended.
    s.set_backend_status(BackendId(1), BackendStatus::default());
    assert_eq!(dispatches(&s.poll(ms(2))), vec![(2, 1)]);
}

#[test]
fn a_server_reporting_its_own_queue_gets_no_more_work_until_it_drains() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 64)]);
    s.upsert_backend(BackendId(2), vec![spec("a", true, 1)]);
    s.set_backend_status(
        BackendId(1),
        BackendStatus {
            saturated: true,
            ..BackendStatus::default()
        },
    );
    assert_eq!(dispatched(s.submit(req(1, "a"), ms(0))), BackendId(2));
    assert_eq!(s.submit(req(2, "a"), ms(0)), Ok(Admission::Queued));
    s.set_backend_status(BackendId(1), BackendStatus::default());
    assert_eq!(dispatches(&s.poll(ms(1))), vec![(2, 1)]);
}

/// Backend 1 holds a long conversation's prefix and its only slot is busy;
/// backend 2 is free. Which one the next turn takes depends on seconds:
/// how soon backend 1's slot should free against how long backend 2 would
/// take to prefill the whole prompt.
fn prefix_fleet(service_ms: u64, prefill_rate: f64) -> Scheduler {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    s.upsert_backend(BackendId(2), vec![spec("a", true, 1)]);
    let model = ModelName::new("a");
    for b in [1, 2] {
        // One second per `prefill_rate` tokens on each.
        s.observe_prefill(BackendId(b), &model, prefill_rate as u32, ms(1000));
    }
    // Teach backend 1 its service time and the conversation's prefix.
    let turn = |id| Request {
        affinity: Affinity {
            lookup: vec![7],
            record: vec![7, 8],
        },
        prompt_tokens: 20_000,
        max_tokens: None,
        ..req(id, "a")
    };
    assert_eq!(dispatched(s.submit(turn(1), ms(0))), BackendId(1));
    finish_ok(&mut s, 1, "a", service_ms, ms(service_ms));
    // A request sharing only the first turn's prefix now occupies it.
    let other = Request {
        affinity: Affinity {
            lookup: vec![7],
            record: Vec::new(),
        },
        ..req(2, "a")
    };
    assert_eq!(dispatched(s.submit(other, ms(service_ms))), BackendId(1));
    s
}

fn next_turn(id: u64) -> Request {
    Request {
        affinity: Affinity {
            lookup: vec![8, 7],
            record: vec![7, 8, 9],
        },
        prompt_tokens: 20_000,
        max_tokens: None,
        ..req(id, "a")
    }
}

#[test]
fn a_turn_waits_for_its_prefix_when_the_wait_is_shorter_than_a_prefill_elsewhere() {
    // A slot frees in about 0.5 s; 20,000 tokens at 5,000/s take 4 s.
    let mut s = prefix_fleet(500, 5_000.0);
    assert_eq!(s.submit(next_turn(3), ms(500)), Ok(Admission::Queued));
    assert!(
        dispatches(&s.poll(ms(600))).is_empty(),
        "it holds for backend 1"
    );
    assert!(s.next_wakeup().is_some(), "the hold has an end");
    // A plain request still takes the free backend meanwhile (through the
    // queue, as a newcomer never overtakes a waiting request).
    assert_eq!(s.submit(req(4, "a"), ms(700)), Ok(Admission::Queued));
    assert_eq!(dispatches(&s.poll(ms(700))), vec![(4, 2)]);
    finish_ok(&mut s, 1, "a", 500, ms(1000));
    assert_eq!(dispatches(&s.poll(ms(1000))), vec![(3, 1)]);
}

#[test]
fn a_turn_takes_a_free_backend_when_its_prefix_backend_would_take_longer() {
    // A slot frees in about 20 s; 20,000 tokens at 50,000/s take 0.4 s.
    let mut s = prefix_fleet(20_000, 50_000.0);
    assert_eq!(dispatched(s.submit(next_turn(3), ms(20_000))), BackendId(2));
}

#[test]
fn a_held_turn_goes_elsewhere_once_it_has_waited_as_long_as_a_prefill() {
    // Held for at most 4 s (20,000 tokens at 5,000/s).
    let mut s = prefix_fleet(500, 5_000.0);
    assert_eq!(s.submit(next_turn(3), ms(500)), Ok(Admission::Queued));
    assert_eq!(s.next_wakeup(), Some(ms(4_500)));
    assert!(dispatches(&s.poll(ms(4_499))).is_empty());
    assert_eq!(dispatches(&s.poll(ms(4_500))), vec![(3, 2)]);
}

#[test]
fn a_turn_held_for_a_backend_that_goes_or_drains_goes_elsewhere_at_once() {
    for drain in [false, true] {
        let mut s = prefix_fleet(500, 5_000.0);
        assert_eq!(s.submit(next_turn(3), ms(500)), Ok(Admission::Queued));
        assert_eq!(s.held_for(RequestId(3)), Some(BackendId(1)));
        if drain {
            s.set_draining(BackendId(1), true);
        } else {
            s.remove_backend(BackendId(1));
        }
        assert_eq!(s.held_for(RequestId(3)), None);
        assert_eq!(dispatches(&s.poll(ms(501))), vec![(3, 2)]);
    }
}

#[test]
fn a_request_for_a_model_nobody_lists_waits_for_a_backends_first_answer() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    assert_eq!(s.submit(req(1, "b"), ms(0)), Err(Reject::ModelNotFound));
    // Backend 2 was added; its first answer is due.
    s.await_backend(BackendId(2));
    assert!(s.awaiting());
    assert_eq!(s.submit(req(2, "b"), ms(1)), Ok(Admission::Queued));
    assert_eq!(s.submit(req(3, "c"), ms(1)), Ok(Admission::Queued));
    assert!(
        s.poll(ms(2)).is_empty(),
        "nothing is refused while it is awaited"
    );
    s.observe_backend(BackendId(2), vec![spec("b", true, 2)], None, ms(3));
    let decisions = s.poll(ms(3));
    assert_eq!(dispatches(&decisions), [(2, 2)]);
    // Nobody lists "c" and nobody is awaited: refused.
    assert!(
        decisions.contains(&Decision::Unroutable(RequestId(3))),
        "{decisions:?}"
    );
    assert!(!s.awaiting());
    assert_eq!(s.submit(req(4, "c"), ms(4)), Err(Reject::ModelNotFound));
}

#[test]
fn a_first_probe_that_fails_ends_the_wait_for_it() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.await_backend(BackendId(1));
    s.await_backend(BackendId(2));
    let mut waiting = req(1, "m");
    waiting.deadline = Some(ms(500));
    assert_eq!(s.submit(waiting, ms(0)), Ok(Admission::Queued));
    s.unanswered(BackendId(1));
    assert!(s.poll(ms(1)).is_empty(), "backend 2 may still have it");
    s.remove_backend(BackendId(2));
    assert_eq!(s.poll(ms(2)), [Decision::Unroutable(RequestId(1))]);
}

#[test]
fn a_request_waiting_for_a_first_answer_keeps_its_deadline() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.await_backend(BackendId(1));
    let mut waiting = req(1, "m");
    waiting.deadline = Some(ms(100));
    assert_eq!(s.submit(waiting, ms(0)), Ok(Admission::Queued));
    assert_eq!(s.poll(ms(100)), [Decision::Expired(RequestId(1))]);
}

#[test]
fn a_server_that_runs_out_of_room_takes_fewer_at_once_then_more_again_slowly() {
    use drover_scheduler::Notice;
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("m", true, 4)]);
    for id in 1..=4 {
        dispatched(s.submit(req(id, "m"), ms(0)));
    }
    // The fourth ran out of room with four running: three at once now.
    s.finish(
        BackendId(1),
        &ModelName::new("m"),
        Outcome::Overloaded,
        ms(1),
    );
    assert_eq!(
        s.take_notices(),
        [Notice::Limit {
            backend: BackendId(1),
            model: ModelName::new("m"),
            limit: Some(3),
            slots: 4
        }]
    );
    assert_eq!(s.fleet().views()[0].models[0].limit, Some(3));
    assert_eq!(s.submit(req(5, "m"), ms(2)), Ok(Admission::Queued));
    // Overload says nothing about the backend's health.
    assert_eq!(s.fleet().views()[0].breaker, BreakerState::Closed);
    // Twelve successes (four rounds of three) raise it back to all four.
    for i in 0..12 {
        let now = ms(10 + i);
        let next = 6 + i;
        s.finish(
            BackendId(1),
            &ModelName::new("m"),
            Outcome::Success { service: ms(5) },
            now,
        );
        for d in s.poll(now) {
            assert!(matches!(d, Decision::Dispatch(_)), "{d:?}");
        }
        let _ = s.submit(req(next, "m"), now);
    }
    let notices = s.take_notices();
    assert!(
        notices.contains(&Notice::Limit {
            backend: BackendId(1),
            model: ModelName::new("m"),
            limit: None,
            slots: 4
        }),
        "{notices:?}"
    );
    assert_eq!(s.fleet().views()[0].models[0].limit, None);
}

#[test]
fn every_breaker_change_is_noticed_with_its_reason() {
    use drover_scheduler::Notice;
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("m", true, 1)]);
    for i in 0..3 {
        dispatched(s.submit(req(i, "m"), ms(i)));
        s.finish(BackendId(1), &ModelName::new("m"), Outcome::Failure, ms(i));
    }
    let opened = s.take_notices();
    assert_eq!(opened.len(), 1, "{opened:?}");
    let Notice::Breaker { state, reason, .. } = &opened[0] else {
        panic!("{opened:?}");
    };
    assert_eq!(*state, BreakerState::Open);
    assert!(reason.contains("3 failures in a row"), "{reason}");
    assert!(s.reopens_in("m", ms(3)).is_some());
    let _ = s.poll(Duration::from_secs(60));
    let half = s.take_notices();
    assert!(
        matches!(
            &half[..],
            [Notice::Breaker {
                state: BreakerState::HalfOpen,
                ..
            }]
        ),
        "{half:?}"
    );
}

fn reserving() -> SchedulerConfig {
    SchedulerConfig {
        reserve: Some(drover_scheduler::ReserveConfig {
            background_below: Priority::new(25).unwrap(),
            window: Duration::from_secs(10),
        }),
        ..SchedulerConfig::default()
    }
}

fn background(id: u64, at: Duration) -> Request {
    Request {
        priority: Priority::new(10).unwrap(),
        arrival: at,
        ..req(id, "m")
    }
}

fn done(s: &mut Scheduler, at: Duration) -> Vec<(u64, u32)> {
    s.finish(
        BackendId(1),
        &ModelName::new("m"),
        Outcome::Success { service: ms(20) },
        at,
    );
    dispatches(&s.poll(at))
}

/// A backend with 8 slots of `m` and a batch of 40 background requests
/// (no interactive traffic yet): the batch takes every slot.
fn batch_on_eight_slots(config: SchedulerConfig) -> Scheduler {
    let mut s = Scheduler::new(config);
    s.upsert_backend(BackendId(1), vec![spec("m", true, 8)]);
    for id in 0..8 {
        dispatched(s.submit(background(id, ms(0)), ms(0)));
    }
    for id in 8..40 {
        assert_eq!(
            s.submit(background(id, ms(0)), ms(0)),
            Ok(Admission::Queued)
        );
    }
    s
}

#[test]
fn background_work_leaves_slots_free_while_interactive_traffic_runs_beside_it() {
    let mut s = batch_on_eight_slots(reserving());
    // An interactive request waits for the next slot, and gets it first.
    assert_eq!(s.submit(req(100, "m"), ms(1)), Ok(Admission::Queued));
    assert_eq!(done(&mut s, ms(20)), vec![(100, 1)]);
    // From now on, a slot freed is kept for interactive traffic rather
    // than given to the batch, and the next interactive request starts at
    // once.
    assert_eq!(done(&mut s, ms(21)), vec![]);
    assert_eq!(s.submit(req(101, "m"), ms(22)), Ok(Admission::Queued));
    assert_eq!(dispatches(&s.poll(ms(22))), vec![(101, 1)]);
    // The batch still runs on the rest: at most half the slots are kept.
    assert_eq!(done(&mut s, ms(23)), vec![], "the slot freed is kept again");
    // A window after the last interactive arrival, the batch has them all.
    let wake = s.next_wakeup().expect("a poll when the reserve ends");
    assert!(wake <= ms(11_000), "{wake:?}");
    let taken = dispatches(&s.poll(wake));
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert!(taken[0].0 < 100, "a batch request: {taken:?}");
}

#[test]
fn without_a_reserve_the_batch_takes_every_slot_an_interactive_request_frees() {
    let mut s = batch_on_eight_slots(SchedulerConfig::default());
    assert_eq!(s.submit(req(100, "m"), ms(1)), Ok(Admission::Queued));
    assert_eq!(done(&mut s, ms(20)), vec![(100, 1)]);
    assert_eq!(done(&mut s, ms(21)), vec![(8, 1)]);
}

/// A worker: a backend whose "models" are the capabilities it offers.
fn worker(s: &mut Scheduler, id: u32, capability: &str, max_concurrency: u32) {
    s.upsert_backend(BackendId(id), vec![spec(capability, true, max_concurrency)]);
    s.set_backend_status(
        BackendId(id),
        BackendStatus {
            tasks: true,
            ..BackendStatus::default()
        },
    );
}

fn task(id: u64, capability: &str) -> Request {
    Request {
        api: Api::Task,
        ..req(id, capability)
    }
}

#[test]
fn tasks_go_to_workers_only_and_inference_never_does() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    // An LLM server and a worker that share a name for what they list.
    s.upsert_backend(BackendId(1), vec![spec("shell", true, 4)]);
    worker(&mut s, 2, "shell", 1);
    assert_eq!(dispatched(s.submit(task(1, "shell"), ms(0))), BackendId(2));
    assert_eq!(dispatched(s.submit(req(2, "shell"), ms(0))), BackendId(1));
    // The worker is busy: the next task waits for it, not for the server.
    assert_eq!(s.submit(task(3, "shell"), ms(1)), Ok(Admission::Queued));
    s.finish(
        BackendId(2),
        &ModelName::new("shell"),
        Outcome::Success { service: ms(5) },
        ms(5),
    );
    assert_eq!(dispatches(&s.poll(ms(5))), vec![(3, 2)]);
    // A capability only a server lists is not served to a task, and a
    // worker's capability is no model for inference.
    s.upsert_backend(BackendId(3), vec![spec("m", true, 1)]);
    assert_eq!(s.submit(task(4, "m"), ms(6)), Err(Reject::ApiNotServed));
    worker(&mut s, 4, "browser", 1);
    assert_eq!(
        s.submit(req(5, "browser"), ms(6)),
        Err(Reject::ApiNotServed)
    );
}

#[test]
fn a_task_goes_to_the_least_loaded_worker_and_a_retry_to_another() {
    let mut s = Scheduler::new(SchedulerConfig::default());
    worker(&mut s, 1, "shell", 4);
    worker(&mut s, 2, "shell", 4);
    let first = dispatched(s.submit(task(1, "shell"), ms(0)));
    let second = dispatched(s.submit(task(2, "shell"), ms(0)));
    assert_ne!(first, second, "the idle worker takes the second task");
    let retry = Request {
        exclude: vec![first],
        ..task(3, "shell")
    };
    assert_eq!(dispatched(s.resubmit(retry, ms(1))), second);
}

#[test]
fn a_slot_adopted_from_an_earlier_leader_is_busy_until_it_finishes() {
    use drover_scheduler::{Event, Reply};
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.upsert_backend(BackendId(1), vec![spec("a", true, 1)]);
    let adopt = |model: &str| Event::Adopted {
        backend: BackendId(1),
        model: ModelName::new(model),
        tokens: 0,
    };
    assert_eq!(s.apply(adopt("a"), ms(0)).reply, Reply::Changed(true));
    // A model the backend does not list is not counted.
    assert_eq!(s.apply(adopt("b"), ms(0)).reply, Reply::Changed(false));
    assert_eq!(s.fleet().busy(BackendId(1), "a"), 1);
    assert_eq!(
        s.submit(req(1, "a"), ms(1)),
        Ok(Admission::Queued),
        "its one slot is taken"
    );
    let finished = Event::Finished {
        backend: BackendId(1),
        model: ModelName::new("a"),
        tokens: 0,
        outcome: Outcome::Neutral,
    };
    assert_eq!(
        dispatches(&s.apply(finished, ms(2)).decisions),
        vec![(1, 1)]
    );
}
