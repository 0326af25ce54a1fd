//! A progress line on stderr while a phase runs: a run of thousands of
//! requests takes minutes, and the table comes only at the end.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

/// Between two progress lines.
const EVERY: Duration = Duration::from_secs(1);

/// The finished requests of the phase under way, counted by its workers.
#[derive(Debug, Default)]
pub struct Tally {
    done: AtomicUsize,
    errors: AtomicUsize,
}

impl Tally {
    pub fn record(&self, ok: bool) {
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// How progress reaches the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A terminal: one line, rewritten in place.
    InPlace,
    /// A file or a pipe: a line each time.
    Lines,
}

impl Style {
    pub fn of_stderr() -> Style {
        if std::io::stderr().is_terminal() {
            Style::InPlace
        } else {
            Style::Lines
        }
    }
}

/// Runs `work`, one phase of `total` requests that records each in `tally`,
/// and writes a progress line to `out` about once a second while it runs
/// and once more when it ends. The ticker is a future raced against the
/// work in this task, so nothing outlives the phase.
pub async fn watch<F: Future>(
    label: &str,
    total: usize,
    tally: &Tally,
    style: Style,
    out: &mut impl Write,
    work: F,
) -> F::Output {
    let started = Instant::now();
    let line = |out: &mut dyn Write| {
        let text = line(label, total, tally, started.elapsed());
        // Progress is a courtesy: a closed stderr must not stop the run.
        let _ = match style {
            Style::InPlace => write!(out, "\r{text}\x1b[K"),
            Style::Lines => writeln!(out, "{text}"),
        };
        let _ = out.flush();
    };
    let output = {
        let ticker = async {
            let mut ticks = tokio::time::interval_at(started + EVERY, EVERY);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                line(&mut *out);
            }
        };
        tokio::select! {
            output = work => output,
            never = ticker => match never {},
        }
    };
    line(&mut *out);
    if style == Style::InPlace {
        let _ = writeln!(out);
    }
    output
}

fn line(label: &str, total: usize, tally: &Tally, elapsed: Duration) -> String {
    let done = tally.done.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let rate = done as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    format!("{label}: {done}/{total} requests done, {errors} failed, {rate:.1} req/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eight requests 300 ms apart, every fourth one failing.
    async fn phase(tally: &Tally) {
        for i in 1..=8 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            tally.record(i % 4 != 0);
        }
    }

    async fn watched(style: Style) -> String {
        let tally = Tally::default();
        let mut out = Vec::new();
        watch("hub", 8, &tally, style, &mut out, phase(&tally)).await;
        String::from_utf8(out).unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn a_line_a_second_and_one_at_the_end() {
        assert_eq!(
            watched(Style::Lines).await,
            "hub: 3/8 requests done, 0 failed, 3.0 req/s\n\
             hub: 6/8 requests done, 1 failed, 3.0 req/s\n\
             hub: 8/8 requests done, 2 failed, 3.3 req/s\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_terminal_line_is_rewritten_in_place() {
        assert_eq!(
            watched(Style::InPlace).await,
            "\rhub: 3/8 requests done, 0 failed, 3.0 req/s\x1b[K\
             \rhub: 6/8 requests done, 1 failed, 3.0 req/s\x1b[K\
             \rhub: 8/8 requests done, 2 failed, 3.3 req/s\x1b[K\n"
        );
    }
}
