//! Slots kept free for interactive traffic beside background work.
//!
//! Priority orders the queue, but a slot is not taken back once given: with
//! every slot of a model busy with a batch's lines, an interactive request
//! waits for the next one to end even though it goes first. So while a
//! model has foreground traffic (requests at or above
//! [`ReserveConfig::background_below`]), background requests leave free as
//! many of its slots as that traffic keeps busy: its arrival rate over the
//! last [`ReserveConfig::window`] times the model's service time (Little's
//! law), rounded up, at most half the model's slots. Without foreground
//! traffic for a window, nothing is reserved and the batch has every slot
//! again: the reservation costs throughput only while someone is served
//! from it. This is the one exception to "a request waits only when no
//! slot it may use is free".

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use drover_core::{ModelName, Priority};

/// How slots are reserved for the foreground.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReserveConfig {
    /// Requests below this priority are background (the jobs' default is
    /// 10, interactive requests' 50).
    pub background_below: Priority,
    /// How far back the foreground's arrivals are counted.
    pub window: Duration,
}

/// The width of one bucket of arrivals: the reserve changes (and a poll is
/// due) at most once a bucket.
const BUCKET: Duration = Duration::from_secs(1);

/// Foreground arrivals per model, in buckets of [`BUCKET`].
#[derive(Debug, Default)]
pub(crate) struct Foreground {
    models: BTreeMap<ModelName, VecDeque<(u64, u32)>>,
}

fn bucket_of(at: Duration) -> u64 {
    (at.as_nanos() / BUCKET.as_nanos()) as u64
}

impl Foreground {
    /// A foreground request for `model` arrived at `now`.
    pub(crate) fn arrived(&mut self, model: &ModelName, now: Duration) {
        let bucket = bucket_of(now);
        let buckets = self.models.entry(model.clone()).or_default();
        match buckets.back_mut() {
            Some((b, count)) if *b == bucket => *count = count.saturating_add(1),
            _ => buckets.push_back((bucket, 1)),
        }
    }

    /// Forgets arrivals older than `window` at `now`.
    pub(crate) fn expire(&mut self, window: Duration, now: Duration) {
        let first_kept = bucket_of(now.saturating_sub(window));
        self.models.retain(|_, buckets| {
            while buckets.front().is_some_and(|(b, _)| *b < first_kept) {
                buckets.pop_front();
            }
            !buckets.is_empty()
        });
    }

    /// The slots of `model` to keep free for its foreground at `now`: its
    /// arrival rate times `service`, rounded up, from 1 (any foreground at
    /// all) to half of `slots`.
    pub(crate) fn reserve(
        &self,
        model: &str,
        slots: u32,
        service: Option<Duration>,
        window: Duration,
        now: Duration,
    ) -> u32 {
        let Some(buckets) = self.models.get(model) else {
            return 0;
        };
        let first_kept = bucket_of(now.saturating_sub(window));
        let arrivals: u64 = buckets
            .iter()
            .filter(|(b, _)| *b >= first_kept)
            .map(|(_, c)| u64::from(*c))
            .sum();
        let Some(&(oldest, _)) = buckets.iter().find(|(b, _)| *b >= first_kept) else {
            return 0;
        };
        // Over the time since the oldest counted arrival's bucket began:
        // traffic that just started is not diluted by the empty window
        // before it.
        let span = now
            .saturating_sub(BUCKET * u32::try_from(oldest).unwrap_or(u32::MAX))
            .max(BUCKET);
        let busy = match service {
            Some(service) => {
                let nanos = u128::from(arrivals) * service.as_nanos();
                nanos.div_ceil(span.as_nanos().max(1))
            }
            None => 1,
        };
        let cap = slots / 2;
        u32::try_from(busy)
            .unwrap_or(u32::MAX)
            .clamp(1, cap.max(1))
            .min(cap)
    }

    /// When a model's reserve next shrinks by itself (its oldest bucket
    /// leaves the window): a poll is due then, so that background work
    /// takes the slots freed.
    pub(crate) fn next_change(&self, window: Duration) -> Option<Duration> {
        self.models
            .values()
            .filter_map(|b| b.front())
            .map(|(b, _)| BUCKET * u32::try_from(b + 1).unwrap_or(u32::MAX) + window)
            .min()
    }

    /// The models with foreground traffic in the window.
    pub(crate) fn models(&self) -> impl Iterator<Item = &ModelName> {
        self.models.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_reserve_is_what_the_foreground_keeps_busy_up_to_half_the_slots() {
        let model = ModelName::from("m");
        let mut fg = Foreground::default();
        assert_eq!(fg.reserve("m", 8, Some(ms(20)), WINDOW, ms(0)), 0);
        // 200 a second for 2 s at 20 ms each: 4 busy.
        for i in 0..400 {
            fg.arrived(&model, ms(5 * i));
        }
        assert_eq!(fg.reserve("m", 8, Some(ms(20)), WINDOW, ms(2000)), 4);
        // Never more than half the slots.
        assert_eq!(fg.reserve("m", 6, Some(ms(20)), WINDOW, ms(2000)), 3);
        // A trickle still keeps one; one slot keeps none.
        let mut trickle = Foreground::default();
        trickle.arrived(&model, ms(0));
        assert_eq!(trickle.reserve("m", 8, Some(ms(20)), WINDOW, ms(5000)), 1);
        assert_eq!(trickle.reserve("m", 1, Some(ms(20)), WINDOW, ms(5000)), 0);
        assert_eq!(trickle.reserve("m", 8, None, WINDOW, ms(5000)), 1);
    }

    #[test]
    fn the_reserve_ends_a_window_after_the_last_foreground_arrival() {
        let model = ModelName::from("m");
        let mut fg = Foreground::default();
        fg.arrived(&model, ms(1500));
        assert_eq!(fg.next_change(WINDOW), Some(ms(12_000)));
        assert_eq!(fg.reserve("m", 8, Some(ms(20)), WINDOW, ms(11_999)), 1);
        assert_eq!(fg.reserve("m", 8, Some(ms(20)), WINDOW, ms(12_000)), 0);
        fg.expire(WINDOW, ms(12_000));
        assert_eq!(fg.next_change(WINDOW), None);
        assert_eq!(fg.models().count(), 0);
    }
}
