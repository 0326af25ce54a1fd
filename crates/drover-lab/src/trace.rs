//! The arrival trace: every request of a run, drawn once from the seed and
//! replayed unchanged under every policy, so that differences between rows
//! of a report come from the policy and nothing else.

use std::time::Duration;

use drover_core::RequestId;

use super::rng::Rng;

/// One request of the trace.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    /// Equal to the job's index in the trace.
    pub id: RequestId,
    pub arrival: Duration,
    /// Index into the fleet's model list.
    pub model: usize,
    /// The request's length relative to a typical one: its service time on
    /// a lane is the lane's base time times this. Drawn with the trace, so
    /// a request is as long under every policy.
    pub work: f64,
    /// Set when the request is one turn of a conversation.
    pub turn: Option<Turn>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Turn {
    pub session: u64,
    /// 0 for the first message; later turns carry the earlier ones as a
    /// prefix that a backend may still hold in its KV cache.
    pub index: u32,
}

#[derive(Clone, Debug)]
pub(crate) enum Arrivals {
    /// Independent requests at a constant mean rate.
    Poisson { per_min: f64, duration: Duration },
    /// `count` requests at once, at time zero.
    Burst { count: usize },
    /// Conversations starting at a Poisson rate; each has `turns` turns
    /// (inclusive range), each turn sent `reply` plus a think time drawn
    /// from `think` (seconds) after the previous one. Open loop, so the
    /// trace stays the same under every policy; the think time is long
    /// enough that the previous answer is normally back. Turns after
    /// `duration` are cut, so the rate ramps up over the first
    /// conversations' length and then holds at `per_min`.
    Conversations {
        /// Requests (not conversations) per minute.
        per_min: f64,
        duration: Duration,
        turns: (u32, u32),
        reply: Duration,
        think: (f64, f64),
    },
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Mix {
    /// Each request picks a model uniformly at random.
    Uniform,
    /// Request i asks for model i mod n: exact shares, for bursts.
    Cycle,
    /// Every request asks for this model.
    Only(usize),
    /// Model k is asked for in proportion to 1/(k+1)^s: a few popular
    /// models and a long tail, as a team's traffic usually is.
    Zipf(f64),
}

#[derive(Clone, Debug)]
pub(crate) struct TraceSpec {
    pub arrivals: Arrivals,
    pub mix: Mix,
    /// Work is uniform in this range; (1.0, 1.0) makes every request equal.
    pub work: (f64, f64),
}

impl TraceSpec {
    /// Draws the trace. Arrival times, models and lengths come from
    /// separate streams of `rng`.
    pub fn generate(&self, models: usize, rng: &Rng) -> Vec<Job> {
        let mut times = rng.fork(0);
        let mut picks = rng.fork(1);
        let mut sizes = rng.fork(2);
        let models = models.max(1) as u64;
        let zipf: Vec<f64> = match self.mix {
            Mix::Zipf(s) => (1..=models).map(|k| (k as f64).powf(-s)).collect(),
            _ => Vec::new(),
        };
        let total: f64 = zipf.iter().sum();
        let mut pick = |i: usize| -> usize {
            match self.mix {
                Mix::Uniform => picks.below(models) as usize,
                Mix::Cycle => i % models as usize,
                Mix::Only(m) => m,
                Mix::Zipf(_) => {
                    let mut x = picks.uniform(0.0, total);
                    zipf.iter()
                        .position(|w| {
                            x -= w;
                            x < 0.0
                        })
                        .unwrap_or(zipf.len() - 1)
                }
            }
        };
        let mut jobs: Vec<Job> = Vec::new();
        let mut push = |arrival: Duration, model: usize, turn: Option<Turn>| {
            jobs.push(Job {
                id: RequestId(0),
                arrival,
                model,
                work: sizes.uniform(self.work.0, self.work.1),
                turn,
            });
        };
        match &self.arrivals {
            Arrivals::Poisson { per_min, duration } => {
                let mean_gap = 60.0 / per_min.max(1e-9);
                let mut t = 0.0;
                let mut i = 0;
                loop {
                    t += times.exponential(mean_gap);
                    if t >= duration.as_secs_f64() {
                        break;
                    }
                    push(Duration::from_secs_f64(t), pick(i), None);
                    i += 1;
                }
            }
            Arrivals::Burst { count } => {
                for i in 0..*count {
                    push(Duration::ZERO, pick(i), None);
                }
            }
            Arrivals::Conversations {
                per_min,
                duration,
                turns,
                reply,
                think,
            } => {
                let mean_turns = f64::from(turns.0 + turns.1) / 2.0;
                let mean_gap = 60.0 * mean_turns / per_min.max(1e-9);
                let mut start = 0.0;
                let mut session = 0u64;
                loop {
                    start += times.exponential(mean_gap);
                    if start >= duration.as_secs_f64() {
                        break;
                    }
                    let model = pick(session as usize);
                    let n = turns.0 + times.below(u64::from(turns.1 - turns.0 + 1)) as u32;
                    let mut t = start;
                    for index in 0..n {
                        if index > 0 {
                            t += reply.as_secs_f64() + times.uniform(think.0, think.1);
                        }
                        // The window ends here; the conversation goes on
                        // unobserved, so the rate stays steady to the end.
                        if t >= duration.as_secs_f64() {
                            break;
                        }
                        push(
                            Duration::from_secs_f64(t),
                            model,
                            Some(Turn { session, index }),
                        );
                    }
                    session += 1;
                }
            }
        }
        // Stable: equal arrival times keep the order they were drawn in.
        jobs.sort_by_key(|j| j.arrival);
        for (i, j) in jobs.iter_mut().enumerate() {
            j.id = RequestId(i as u64);
        }
        jobs
    }

    /// One line for a report header.
    pub fn describe(&self) -> String {
        let mix = match self.mix {
            Mix::Uniform => "uniform model mix".to_string(),
            Mix::Cycle => "models in turn".to_string(),
            Mix::Only(m) => format!("all for m{m}"),
            Mix::Zipf(s) => format!("models by Zipf (s = {s})"),
        };
        let work = if self.work.0 == self.work.1 {
            format!("work x{}", self.work.0)
        } else {
            format!("work x U({}, {})", self.work.0, self.work.1)
        };
        match &self.arrivals {
            Arrivals::Poisson { per_min, duration } => format!(
                "Poisson {per_min:.1}/min for {:.0} s, {mix}, {work}",
                duration.as_secs_f64()
            ),
            Arrivals::Burst { count } => format!("burst of {count} at t=0, {mix}, {work}"),
            Arrivals::Conversations {
                per_min,
                duration,
                turns,
                think,
                ..
            } => format!(
                "conversations of {}-{} turns, think {}-{} s, aiming at {per_min:.1} \
                 requests/min for {:.0} s, {mix}, {work}",
                turns.0,
                turns.1,
                think.0,
                think.1,
                duration.as_secs_f64()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poisson(per_min: f64, secs: u64) -> TraceSpec {
        TraceSpec {
            arrivals: Arrivals::Poisson {
                per_min,
                duration: Duration::from_secs(secs),
            },
            mix: Mix::Uniform,
            work: (0.8, 1.2),
        }
    }

    #[test]
    fn poisson_trace_has_the_asked_rate_and_sorted_ids() {
        let jobs = poisson(120.0, 600).generate(6, &Rng::new(1));
        // 1200 expected; Poisson spread is about 35.
        assert!((1100..1300).contains(&jobs.len()), "{}", jobs.len());
        for (i, w) in jobs.windows(2).enumerate() {
            assert!(w[0].arrival <= w[1].arrival);
            assert_eq!(w[0].id, RequestId(i as u64));
        }
        assert!(jobs.iter().all(|j| j.model < 6));
    }

    #[test]
    fn same_seed_same_trace() {
        let a = poisson(60.0, 60).generate(3, &Rng::new(9));
        let b = poisson(60.0, 60).generate(3, &Rng::new(9));
        let key = |j: &Job| (j.arrival, j.model, j.work.to_bits());
        assert_eq!(
            a.iter().map(key).collect::<Vec<_>>(),
            b.iter().map(key).collect::<Vec<_>>()
        );
    }

    #[test]
    fn conversation_turns_follow_each_other_on_one_model() {
        let spec = TraceSpec {
            arrivals: Arrivals::Conversations {
                per_min: 60.0,
                duration: Duration::from_secs(120),
                turns: (2, 4),
                reply: Duration::from_secs(3),
                think: (5.0, 10.0),
            },
            mix: Mix::Uniform,
            work: (1.0, 1.0),
        };
        let jobs = spec.generate(6, &Rng::new(3));
        let first = jobs.iter().find(|j| j.turn.is_some_and(|t| t.index == 1));
        let Some(second) = first else {
            panic!("no conversation has a second turn");
        };
        let session = second.turn.map(|t| t.session);
        let opener = jobs
            .iter()
            .find(|j| j.turn.map(|t| t.session) == session && j.turn.is_some_and(|t| t.index == 0));
        let Some(opener) = opener else {
            panic!("second turn without a first");
        };
        assert_eq!(opener.model, second.model);
        assert!(second.arrival >= opener.arrival + Duration::from_secs(8));
    }
}
