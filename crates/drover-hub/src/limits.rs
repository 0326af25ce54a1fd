//! A client key's limits, checked at the door before a request may queue:
//! the models it may use, requests it may start a minute (a bucket that
//! refills evenly, so a burst up to the limit passes and then one request
//! per 60/rpm seconds), and requests it may have waiting or running at
//! once (a [`Permit`] held until the answer's last byte), and tokens a
//! minute (a bucket charged the prompt's estimate at the door and the
//! answer's output tokens after it, so it may run into debt that later
//! requests wait out, at most [`MAX_DEBT`] minutes of them). A request over
//! a limit is answered `429` with `Retry-After` and never queues.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::forward::ForwardError;
use crate::keys::Holder;

/// The most a key's tokens-a-minute bucket goes below empty, in minutes of
/// its refill: a server that reports an absurd count (it is the server's
/// word) holds a key back for an hour at most.
pub const MAX_DEBT: f64 = 60.0;

#[derive(Debug, Default)]
pub struct Limiter {
    keys: Mutex<HashMap<String, Use>>,
}

/// One key's use right now.
#[derive(Debug)]
struct Use {
    /// Requests it may still start now (fractional: refills continuously).
    tokens: f64,
    /// Model tokens it may still use now; below zero after answers longer
    /// than the bucket.
    model_tokens: f64,
    refilled: Instant,
    in_flight: u32,
}

/// Which limit turned a request away, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Models,
    Rate,
    Tokens,
    Concurrency,
}

impl Limit {
    /// The limit [`Limit::as_str`] names; the rate for a name it does not
    /// know (a newer hub's).
    pub fn named(name: &str) -> Limit {
        match name {
            "models" => Limit::Models,
            "tokens_per_minute" => Limit::Tokens,
            "max_concurrent" => Limit::Concurrency,
            _ => Limit::Rate,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Models => "models",
            Limit::Rate => "requests_per_minute",
            Limit::Tokens => "tokens_per_minute",
            Limit::Concurrency => "max_concurrent",
        }
    }
}

/// A request of a key with `max_concurrent` counts as in flight while this
/// or a clone of it lives: the request while it waits, and the slot it
/// takes until the server has let go of it (a slot abandoned by its client
/// lingers for the cancel grace, and so does its key's count).
#[derive(Debug, Clone)]
pub struct Permit {
    _counted: Arc<Counted>,
}

#[derive(Debug)]
struct Counted {
    limiter: Arc<Limiter>,
    key: String,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut keys = drover_core::sync::lock(&self.limiter.keys);
        if let Some(u) = keys.get_mut(&self.key) {
            u.in_flight = u.in_flight.saturating_sub(1);
        }
    }
}

impl Limiter {
    /// Admits a request of `holder` for `model` (its public name) with
    /// about `prompt_tokens` of prompt, or says which limit it is over.
    pub fn admit(
        self: &Arc<Self>,
        holder: &Holder,
        model: &str,
        prompt_tokens: u32,
        now: Instant,
    ) -> Result<Option<Permit>, (Limit, ForwardError)> {
        Self::check_models(holder, model)?;
        self.admit_counted(holder, prompt_tokens, now)
    }

    /// Whether `holder` may use `model` at all: the one limit a follower
    /// checks itself, since it needs no count.
    pub fn check_models(holder: &Holder, model: &str) -> Result<(), (Limit, ForwardError)> {
        if let Some(models) = &holder.limits.models
            && !models.iter().any(|m| m == model)
        {
            return Err((
                Limit::Models,
                ForwardError::KeyForbidden(format!(
                    "the key {:?} may not use the model '{}' (it may use: {})",
                    holder.name,
                    crate::error::echo(model),
                    models.join(", ")
                )),
            ));
        }
        Ok(())
    }

    /// Whether a key has limits that are counted here (rates and
    /// concurrency), not only its model list.
    pub fn counts(limits: &drover_proto::admin::KeyLimits) -> bool {
        limits.requests_per_minute.is_some()
            || limits.tokens_per_minute.is_some()
            || limits.max_concurrent.is_some()
    }

    /// Counts a request already admitted (a retry, or one admitted by the
    /// hub that led when it came in) against its key's `max_concurrent`,
    /// without checking or charging it again.
    pub fn count(self: &Arc<Self>, holder: &Holder, now: Instant) -> Option<Permit> {
        if !Self::counts(&holder.limits) {
            return None;
        }
        let mut keys = drover_core::sync::lock(&self.keys);
        Self::entry(&mut keys, holder, now).in_flight += 1;
        Some(self.permit(holder))
    }

    fn permit(self: &Arc<Self>, holder: &Holder) -> Permit {
        Permit {
            _counted: Arc::new(Counted {
                limiter: self.clone(),
                key: holder.id.clone(),
            }),
        }
    }

    /// A key's use, a full bucket where it is new.
    fn entry<'a>(keys: &'a mut HashMap<String, Use>, holder: &Holder, now: Instant) -> &'a mut Use {
        let limits = &holder.limits;
        keys.entry(holder.id.clone()).or_insert(Use {
            tokens: f64::from(limits.requests_per_minute.unwrap_or(0)),
            model_tokens: f64::from(limits.tokens_per_minute.unwrap_or(0)),
            refilled: now,
            in_flight: 0,
        })
    }

    /// [`Limiter::admit`] past the model list.
    pub fn admit_counted(
        self: &Arc<Self>,
        holder: &Holder,
        prompt_tokens: u32,
        now: Instant,
    ) -> Result<Option<Permit>, (Limit, ForwardError)> {
        let limits = &holder.limits;
        if !Self::counts(limits) {
            return Ok(None);
        }
        let mut keys = drover_core::sync::lock(&self.keys);
        let u = Self::entry(&mut keys, holder, now);
        // Both buckets refill before any check: a refusal must not lose
        // the time since the last look.
        let elapsed = now.saturating_duration_since(u.refilled).as_secs_f64();
        u.refilled = now;
        if let Some(rpm) = limits.requests_per_minute {
            let per_sec = f64::from(rpm) / 60.0;
            u.tokens = (u.tokens + elapsed * per_sec).min(f64::from(rpm));
        }
        if let Some(tpm) = limits.tokens_per_minute {
            let per_sec = f64::from(tpm) / 60.0;
            u.model_tokens = (u.model_tokens + elapsed * per_sec).min(f64::from(tpm));
        }
        if let Some(max) = limits.max_concurrent
            && u.in_flight >= max
        {
            return Err((
                Limit::Concurrency,
                ForwardError::KeyLimited {
                    message: format!(
                        "the key {:?} has {max} requests waiting or running, its limit",
                        holder.name
                    ),
                    retry_after: Duration::from_secs(1),
                },
            ));
        }
        if let Some(tpm) = limits.tokens_per_minute {
            let per_sec = f64::from(tpm) / 60.0;
            // A prompt larger than the whole bucket waits for a full one.
            let need = f64::from(prompt_tokens.min(tpm));
            if u.model_tokens < need {
                let wait = wait_secs((need - u.model_tokens) / per_sec);
                return Err((
                    Limit::Tokens,
                    ForwardError::KeyLimited {
                        message: format!("the key {:?} may use {tpm} tokens a minute", holder.name),
                        retry_after: wait.max(Duration::from_secs(1)),
                    },
                ));
            }
        }
        if let Some(rpm) = limits.requests_per_minute {
            let per_sec = f64::from(rpm) / 60.0;
            if u.tokens < 1.0 {
                let wait = wait_secs((1.0 - u.tokens) / per_sec);
                return Err((
                    Limit::Rate,
                    ForwardError::KeyLimited {
                        message: format!(
                            "the key {:?} may start {rpm} requests a minute",
                            holder.name
                        ),
                        retry_after: wait.max(Duration::from_secs(1)),
                    },
                ));
            }
            u.tokens -= 1.0;
        }
        if let Some(tpm) = limits.tokens_per_minute {
            u.model_tokens = floored(u.model_tokens - f64::from(prompt_tokens), tpm);
        }
        u.in_flight += 1;
        drop(keys);
        Ok(Some(self.permit(holder)))
    }
}

impl Limiter {
    /// An answer of the key `id` used `tokens` output tokens: they come out
    /// of its tokens-a-minute bucket (`tpm`), down to [`MAX_DEBT`].
    pub fn charge(&self, id: &str, tpm: Option<u32>, tokens: u64) {
        let Some(tpm) = tpm else {
            return;
        };
        if let Some(u) = drover_core::sync::lock(&self.keys).get_mut(id) {
            u.model_tokens = floored(u.model_tokens - tokens as f64, tpm);
        }
    }
}

/// A bucket's level, no lower than [`MAX_DEBT`] minutes of refill below
/// empty.
fn floored(level: f64, tpm: u32) -> f64 {
    level.max(-MAX_DEBT * f64::from(tpm))
}

/// A wait in seconds as a `Duration`, whatever the arithmetic gave: a
/// bucket is floored, so this is about an hour at most, but nothing that
/// came from outside may panic here.
fn wait_secs(secs: f64) -> Duration {
    let most = Duration::from_secs_f64((MAX_DEBT + 1.0) * 60.0);
    Duration::try_from_secs_f64(secs).map_or(most, |d| d.min(most))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_proto::admin::{KeyKind, KeyLimits};

    fn holder(limits: KeyLimits) -> Holder {
        Holder {
            id: "key_1".into(),
            name: "batch".into(),
            kind: KeyKind::Client,
            limits,
        }
    }

    #[test]
    fn a_bucket_of_requests_per_minute_refills_evenly() {
        let limiter = Arc::new(Limiter::default());
        let h = holder(KeyLimits {
            requests_per_minute: Some(3),
            ..KeyLimits::default()
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.admit(&h, "m", 0, t0).is_ok());
        }
        let Err((limit, ForwardError::KeyLimited { retry_after, .. })) =
            limiter.admit(&h, "m", 0, t0)
        else {
            panic!("the fourth passes");
        };
        assert_eq!((limit, retry_after), (Limit::Rate, Duration::from_secs(20)));
        // One refills every 20 s.
        assert!(
            limiter
                .admit(&h, "m", 0, t0 + Duration::from_secs(20))
                .is_ok()
        );
        assert!(
            limiter
                .admit(&h, "m", 0, t0 + Duration::from_secs(21))
                .is_err()
        );
    }

    #[test]
    fn a_bucket_owed_more_than_a_server_could_mean_waits_an_hour_at_most() {
        let limiter = Arc::new(Limiter::default());
        let h = holder(KeyLimits {
            tokens_per_minute: Some(300),
            ..KeyLimits::default()
        });
        let t0 = Instant::now();
        assert!(limiter.admit(&h, "m", 10, t0).is_ok());
        limiter.charge("key_1", Some(300), u64::MAX);
        let Err((Limit::Tokens, ForwardError::KeyLimited { retry_after, .. })) =
            limiter.admit(&h, "m", 10, t0)
        else {
            panic!("a key in debt is let in");
        };
        assert!(
            retry_after <= Duration::from_secs(3660) && retry_after >= Duration::from_secs(3500),
            "{retry_after:?}"
        );
        // An hour and a bit later the bucket has refilled.
        assert!(
            limiter
                .admit(&h, "m", 10, t0 + Duration::from_secs(3700))
                .is_ok()
        );
    }

    #[test]
    fn concurrency_counts_until_the_permit_goes() {
        let limiter = Arc::new(Limiter::default());
        let h = holder(KeyLimits {
            max_concurrent: Some(1),
            models: Some(vec!["m".into()]),
            ..KeyLimits::default()
        });
        let now = Instant::now();
        let first = limiter.admit(&h, "m", 0, now).unwrap();
        assert!(matches!(
            limiter.admit(&h, "m", 0, now),
            Err((Limit::Concurrency, _))
        ));
        drop(first);
        assert!(limiter.admit(&h, "m", 0, now).is_ok());
        assert!(matches!(
            limiter.admit(&h, "other", 0, now),
            Err((Limit::Models, _))
        ));
    }

    #[test]
    fn a_request_counted_without_a_check_takes_a_place_but_no_rate() {
        let limiter = Arc::new(Limiter::default());
        let h = holder(KeyLimits {
            requests_per_minute: Some(2),
            max_concurrent: Some(4),
            ..KeyLimits::default()
        });
        let now = Instant::now();
        // Counted first (a slot a new leader adopts): the key's buckets
        // start full all the same.
        let adopted = limiter.count(&h, now).unwrap();
        let a = limiter.admit(&h, "m", 0, now).unwrap();
        let b = limiter.admit(&h, "m", 0, now).unwrap();
        assert!(matches!(
            limiter.admit(&h, "m", 0, now),
            Err((Limit::Rate, _))
        ));
        drop((a, b));
        // Four at once: the counted one and three more hold every place.
        let _c = limiter.count(&h, now);
        let _d = limiter.count(&h, now);
        let _e = limiter.count(&h, now);
        assert!(matches!(
            limiter.admit(&h, "m", 0, now + Duration::from_secs(60)),
            Err((Limit::Concurrency, _))
        ));
        drop(adopted);
        assert!(
            limiter
                .admit(&h, "m", 0, now + Duration::from_secs(60))
                .is_ok()
        );
    }
}
