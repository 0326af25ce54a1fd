//! The scheduler's behaviour through its public API, one scenario per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use drover_core::{BackendId, ClientKey, ModelName, Priority, RequestId};
use drover_scheduler::{
    Admission, Affinity, BreakerState, Decision, ModelSpec, Outcome, Policy, Reject, Request,
    Scheduler, SchedulerConfig,
};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn spec(name: &str, loaded: bool, slots: u32) -> ModelSpec {
    ModelSpec {
        name: ModelName::new(name),
        loaded,
        slots,
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
