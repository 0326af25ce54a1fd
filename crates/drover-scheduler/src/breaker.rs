//! A circuit breaker per backend. Closed counts consecutive failures; at the
//! threshold it opens and the backend gets no work for a cooldown; then it
//! half-opens and admits exactly one trial request (or a probe); success
//! closes it, failure reopens it with a doubled cooldown (capped). This is
//! what lets a backend that died come back with no restart (seed 000).

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
}

impl Breaker {
    pub fn new(config: &BreakerConfig) -> Self {
        Breaker {
            state: BreakerState::Closed,
            failures: 0,
            open_until: Duration::ZERO,
            cooldown: config.cooldown,
            trial_in_flight: false,
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

    /// Returns true when the state changed.
    pub fn on_success(&mut self, config: &BreakerConfig) -> bool {
        self.failures = 0;
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

    /// Returns true when the state changed.
    pub fn on_failure(&mut self, now: Duration, config: &BreakerConfig) -> bool {
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
