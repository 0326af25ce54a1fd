//! A circuit breaker per backend. Closed counts consecutive failures; at the
//! threshold it opens and the backend gets no work for a cooldown; then it
//! half-opens and admits exactly one trial request (or a probe); success
//! closes it, failure reopens it with a doubled cooldown (capped). This is
//! what lets a backend that died come back with no restart (seed 000).
//!
//! Probes and requests judge different things. A probe asks for the model
//! list; a request asks for a generation. A server can list its models and
//! fail every generation (a crashed runner), so a successful probe closes
//! an open breaker only if probes saw the server down too (it was
//! unreachable and is back), and it never wipes failures that requests
//! counted. A breaker that requests opened while probes kept succeeding
//! closes only when a request succeeds.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// First cooldown after opening.
    pub cooldown: Duration,
    /// Cooldowns double on each failed trial up to this.
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            cooldown: Duration::from_secs(2),
            max_cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Breaker {
    state: BreakerState,
    /// Consecutive failures while closed.
    failures: u32,
    /// When an open breaker may half-open.
    open_until: Duration,
    /// The cooldown that the next opening will use.
    cooldown: Duration,
    /// A half-open breaker admits one trial at a time.
    trial_in_flight: bool,
    /// Whether a request (not only probes) failed among the failures
    /// counted while closed.
    requests_failed: bool,
    /// Whether a probe failed since the backend last served a request or
    /// the breaker last closed: the server was seen down, not only failing.
    probe_failed: bool,
}

impl Breaker {
    pub fn new(config: &BreakerConfig) -> Self {
        Breaker {
            state: BreakerState::Closed,
            failures: 0,
            open_until: Duration::ZERO,
            cooldown: config.cooldown,
            trial_in_flight: false,
            requests_failed: false,
            probe_failed: false,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// When an open breaker will half-open, for the caller's timer.
    pub fn reopens_at(&self) -> Option<Duration> {
        (self.state == BreakerState::Open).then_some(self.open_until)
    }

    /// Whether a new request may be sent now.
    pub fn admits(&self) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => !self.trial_in_flight,
        }
    }

    /// A request was sent; in half-open state it is the trial.
    pub fn on_dispatch(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.trial_in_flight = true;
        }
    }

    /// A request that was sent ended without judging the backend (the client
    /// left): a half-open breaker may run another trial.
    pub fn on_neutral(&mut self) {
        self.trial_in_flight = false;
    }

    /// Moves an open breaker to half-open once its cooldown has passed.
    /// Returns true when the state changed.
    pub fn tick(&mut self, now: Duration) -> bool {
        if self.state == BreakerState::Open && now >= self.open_until {
            self.state = BreakerState::HalfOpen;
            self.trial_in_flight = false;
            return true;
        }
        false
    }

    /// A request succeeded. Returns true when the state changed.
    pub fn on_success(&mut self, config: &BreakerConfig) -> bool {
        self.failures = 0;
        self.requests_failed = false;
        self.probe_failed = false;
        self.trial_in_flight = false;
        match self.state {
            BreakerState::Closed => false,
            // A success from an open backend can only be a request sent
            // before it opened; it is evidence enough to try it again.
            BreakerState::HalfOpen | BreakerState::Open => {
                self.state = BreakerState::Closed;
                self.cooldown = config.cooldown;
                true
            }
        }
    }

    /// A probe succeeded: the server answers. That closes an open breaker
    /// only if probes saw the server down, and clears only failures that
    /// probes alone counted. Returns true when the state changed.
    pub fn on_probe_success(&mut self, config: &BreakerConfig) -> bool {
        match self.state {
            BreakerState::Closed => {
                if !self.requests_failed {
                    self.failures = 0;
                    self.probe_failed = false;
                }
                false
            }
            BreakerState::HalfOpen | BreakerState::Open if self.probe_failed => {
                self.state = BreakerState::Closed;
                self.failures = 0;
                self.requests_failed = false;
                self.probe_failed = false;
                self.trial_in_flight = false;
                self.cooldown = config.cooldown;
                true
            }
            BreakerState::HalfOpen | BreakerState::Open => false,
        }
    }

    /// A probe failed. Returns true when the state changed.
    pub fn on_probe_failure(&mut self, now: Duration, config: &BreakerConfig) -> bool {
        let changed = self.judge_failure(now, config, false);
        self.probe_failed = true;
        changed
    }

    /// A request failed. Returns true when the state changed.
    pub fn on_failure(&mut self, now: Duration, config: &BreakerConfig) -> bool {
        self.judge_failure(now, config, true)
    }

    fn judge_failure(&mut self, now: Duration, config: &BreakerConfig, request: bool) -> bool {
        if request && self.state == BreakerState::Closed {
            self.requests_failed = true;
        }
        self.trial_in_flight = false;
        match self.state {
            BreakerState::Closed => {
                self.failures += 1;
                if self.failures >= config.failure_threshold {
                    self.open(now, config);
                    return true;
                }
                false
            }
            BreakerState::HalfOpen => {
                self.open(now, config);
                true
            }
            // Failures of requests sent before it opened change nothing.
            BreakerState::Open => false,
        }
    }

    fn open(&mut self, now: Duration, config: &BreakerConfig) {
        self.state = BreakerState::Open;
        self.failures = 0;
        self.open_until = now + self.cooldown;
        self.cooldown = (self.cooldown * 2).min(config.max_cooldown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn opens_after_threshold_half_opens_after_cooldown_and_closes_on_success() {
        let cfg = BreakerConfig::default();
        let mut b = Breaker::new(&cfg);
        assert!(!b.on_failure(secs(0), &cfg));
        assert!(!b.on_failure(secs(0), &cfg));
        assert!(b.on_failure(secs(1), &cfg));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.admits());
        assert_eq!(b.reopens_at(), Some(secs(3)));
        assert!(!b.tick(secs(2)));
        assert!(b.tick(secs(3)));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admits());
        b.on_dispatch();
        assert!(!b.admits(), "one trial at a time");
        assert!(b.on_success(&cfg));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn failed_trial_reopens_with_doubled_capped_cooldown() {
        let cfg = BreakerConfig {
            failure_threshold: 1,
            cooldown: secs(10),
            max_cooldown: secs(25),
        };
        let mut b = Breaker::new(&cfg);
        b.on_failure(secs(0), &cfg);
        assert_eq!(b.reopens_at(), Some(secs(10)));
        b.tick(secs(10));
        b.on_dispatch();
        b.on_failure(secs(10), &cfg);
        assert_eq!(b.reopens_at(), Some(secs(30)));
        b.tick(secs(30));
        b.on_failure(secs(30), &cfg);
        assert_eq!(b.reopens_at(), Some(secs(55)), "capped at 25 s");
    }

    #[test]
    fn success_resets_the_failure_count() {
        let cfg = BreakerConfig::default();
        let mut b = Breaker::new(&cfg);
        b.on_failure(secs(0), &cfg);
        b.on_failure(secs(0), &cfg);
        b.on_success(&cfg);
        b.on_failure(secs(0), &cfg);
        b.on_failure(secs(0), &cfg);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_probe_cannot_close_what_requests_opened() {
        let cfg = BreakerConfig {
            failure_threshold: 2,
            cooldown: secs(10),
            max_cooldown: secs(100),
        };
        let mut b = Breaker::new(&cfg);
        b.on_failure(secs(0), &cfg);
        assert!(!b.on_probe_success(&cfg), "nothing to close yet");
        // The probe did not wipe the request's failure: one more opens it.
        assert!(b.on_failure(secs(0), &cfg));
        assert!(!b.on_probe_success(&cfg));
        assert_eq!(b.state(), BreakerState::Open);
        b.tick(secs(10));
        assert!(!b.on_probe_success(&cfg));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // A failed trial reopens with the cooldown doubled, probes or not.
        b.on_dispatch();
        b.on_failure(secs(10), &cfg);
        assert_eq!(b.reopens_at(), Some(secs(30)));
        b.tick(secs(30));
        b.on_dispatch();
        assert!(b.on_success(&cfg), "a request's success closes it");
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_probe_closes_it_once_the_server_was_seen_down_and_back() {
        let cfg = BreakerConfig {
            failure_threshold: 1,
            ..BreakerConfig::default()
        };
        let mut b = Breaker::new(&cfg);
        b.on_failure(secs(0), &cfg);
        assert!(!b.on_probe_success(&cfg), "probes never saw it down");
        b.on_probe_failure(secs(1), &cfg);
        assert!(b.on_probe_success(&cfg), "down, then back");
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_probe_closes_what_probes_opened() {
        let cfg = BreakerConfig {
            failure_threshold: 2,
            ..BreakerConfig::default()
        };
        let mut b = Breaker::new(&cfg);
        b.on_probe_failure(secs(0), &cfg);
        b.on_probe_failure(secs(0), &cfg);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.on_probe_success(&cfg));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_client_leaving_frees_the_trial() {
        let cfg = BreakerConfig {
            failure_threshold: 1,
            ..BreakerConfig::default()
        };
        let mut b = Breaker::new(&cfg);
        b.on_failure(secs(0), &cfg);
        b.tick(secs(100));
        b.on_dispatch();
        assert!(!b.admits());
        b.on_neutral();
        assert!(b.admits());
    }
}
