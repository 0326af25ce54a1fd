use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::Faults;
use crate::text::{mix64, unit};

/// What happens to one inference request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    Error,
    Hang,
    CloseMidStream,
    DropAfterRead,
}

impl Fault {
    /// One roll per request, keyed by the seed and the request's sequence
    /// number, so a run with the same seed and the same request order meets
    /// the same faults. The rates stack on one `[0, 1)` line, which keeps the
    /// faults exclusive and each at its own rate.
    pub(crate) fn choose(faults: Faults, seed: u64, sequence: u64) -> Fault {
        let roll = unit(mix64(seed ^ mix64(sequence ^ 0x6661_756c_7473)));
        let error = faults.error_rate;
        let hang = error + faults.hang_rate;
        let close = hang + faults.close_mid_stream_rate;
        let drop = close + faults.drop_after_read_rate;
        if roll < error {
            Fault::Error
        } else if roll < hang {
            Fault::Hang
        } else if roll < close {
            Fault::CloseMidStream
        } else if roll < drop {
            Fault::DropAfterRead
        } else {
            Fault::None
        }
    }
}

/// The current faults, changeable while requests run. Each setting is its
/// own atomic: a reader racing `set` may see a mix of old and new settings
/// for one request, which is harmless.
#[derive(Debug)]
pub(crate) struct FaultRates {
    error: AtomicU64,
    hang: AtomicU64,
    close_mid_stream: AtomicU64,
    drop_after_read: AtomicU64,
    close_after_stream: AtomicBool,
    cannot_generate: AtomicBool,
    messages_without_start: AtomicBool,
    ignores_response_format: AtomicBool,
    /// `reported_output_tokens`, when `reports` is set.
    reports: AtomicBool,
    reported: AtomicU64,
}

impl FaultRates {
    pub(crate) fn new(faults: Faults) -> Self {
        let rates = FaultRates {
            error: AtomicU64::new(0),
            hang: AtomicU64::new(0),
            close_mid_stream: AtomicU64::new(0),
            drop_after_read: AtomicU64::new(0),
            close_after_stream: AtomicBool::new(false),
            cannot_generate: AtomicBool::new(false),
            messages_without_start: AtomicBool::new(false),
            ignores_response_format: AtomicBool::new(false),
            reports: AtomicBool::new(false),
            reported: AtomicU64::new(0),
        };
        rates.set(faults);
        rates
    }

    pub(crate) fn set(&self, faults: Faults) {
        let faults = faults.clamped();
        self.error
            .store(faults.error_rate.to_bits(), Ordering::Relaxed);
        self.hang
            .store(faults.hang_rate.to_bits(), Ordering::Relaxed);
        self.close_mid_stream
            .store(faults.close_mid_stream_rate.to_bits(), Ordering::Relaxed);
        self.drop_after_read
            .store(faults.drop_after_read_rate.to_bits(), Ordering::Relaxed);
        self.close_after_stream
            .store(faults.close_after_stream, Ordering::Relaxed);
        self.reported.store(
            faults.reported_output_tokens.unwrap_or(0),
            Ordering::Relaxed,
        );
        self.reports
            .store(faults.reported_output_tokens.is_some(), Ordering::Relaxed);
        self.cannot_generate
            .store(faults.cannot_generate, Ordering::Relaxed);
        self.messages_without_start
            .store(faults.messages_without_start, Ordering::Relaxed);
        self.ignores_response_format
            .store(faults.ignores_response_format, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Faults {
        Faults {
            error_rate: f64::from_bits(self.error.load(Ordering::Relaxed)),
            hang_rate: f64::from_bits(self.hang.load(Ordering::Relaxed)),
            close_mid_stream_rate: f64::from_bits(self.close_mid_stream.load(Ordering::Relaxed)),
            drop_after_read_rate: f64::from_bits(self.drop_after_read.load(Ordering::Relaxed)),
            close_after_stream: self.close_after_stream.load(Ordering::Relaxed),
            cannot_generate: self.cannot_generate.load(Ordering::Relaxed),
            messages_without_start: self.messages_without_start.load(Ordering::Relaxed),
            ignores_response_format: self.ignores_response_format.load(Ordering::Relaxed),
            reported_output_tokens: self
                .reports
                .load(Ordering::Relaxed)
                .then(|| self.reported.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(faults: Faults, n: u64) -> [u64; 5] {
        let mut seen = [0; 5];
        for seq in 0..n {
            let slot = match Fault::choose(faults, 9, seq) {
                Fault::None => 0,
                Fault::Error => 1,
                Fault::Hang => 2,
                Fault::CloseMidStream => 3,
                Fault::DropAfterRead => 4,
            };
            seen[slot] += 1;
        }
        seen
    }

    #[test]
    fn rates_are_met_roughly_and_exactly_at_the_edges() {
        let seen = count(
            Faults {
                error_rate: 0.2,
                hang_rate: 0.1,
                close_mid_stream_rate: 0.3,
                drop_after_read_rate: 0.1,
                ..Faults::NONE
            },
            10_000,
        );
        for (got, want) in seen.iter().zip([3000, 2000, 1000, 3000, 1000]) {
            assert!(got.abs_diff(want) < 300, "{seen:?}");
        }
        assert_eq!(count(Faults::NONE, 1000), [1000, 0, 0, 0, 0]);
        let all_errors = Faults {
            error_rate: 1.0,
            ..Faults::NONE
        };
        assert_eq!(count(all_errors, 1000), [0, 1000, 0, 0, 0]);
    }

    #[test]
    fn choice_is_deterministic() {
        let faults = Faults {
            error_rate: 0.5,
            ..Faults::NONE
        };
        for seq in 0..100 {
            assert_eq!(Fault::choose(faults, 1, seq), Fault::choose(faults, 1, seq));
        }
    }

    #[test]
    fn rates_are_clamped() {
        let rates = FaultRates::new(Faults {
            error_rate: f64::NAN,
            hang_rate: 7.0,
            close_mid_stream_rate: -1.0,
            drop_after_read_rate: 0.5,
            close_after_stream: true,
            cannot_generate: true,
            messages_without_start: true,
            ignores_response_format: true,
            reported_output_tokens: Some(u64::MAX),
        });
        assert_eq!(
            rates.get(),
            Faults {
                error_rate: 0.0,
                hang_rate: 1.0,
                close_mid_stream_rate: 0.0,
                drop_after_read_rate: 0.5,
                close_after_stream: true,
                cannot_generate: true,
                messages_without_start: true,
                ignores_response_format: true,
                reported_output_tokens: Some(u64::MAX),
            }
        );
    }
}
