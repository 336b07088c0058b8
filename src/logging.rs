//! The log of `fpgen serve` and `fpgen ratelimit`: `tracing` events written
//! to standard error by a thread of their own, so that a slow reader of
//! stderr never stalls a tokio worker. Lines are dropped when the writer
//! falls 4,096 lines behind, and events that can repeat per request go
//! through a [`Throttle`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds since the first call, on the monotonic clock (a wall clock
/// stepped back would silence a throttle for as long as the step).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Keeps the writer thread; the log ends (flushed) when it is dropped.
pub struct Guard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

/// Installs the log. `FPGEN_LOG` sets the least level written (`error`,
/// `warn`, `info`, `debug`, `trace`; default `info`).
pub fn init() -> Guard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(4_096)
        .lossy(true)
        .finish(std::io::stderr());
    let level = std::env::var("FPGEN_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(level)
        .try_init();
    Guard(guard)
}

/// At most one line per period for an event that can repeat per request
/// (a failed call, a failed accept); the lines it held back are counted
/// in the next.
#[derive(Debug)]
pub struct Throttle {
    period_ms: u64,
    next_ms: AtomicU64,
    held: AtomicU64,
}

impl Throttle {
    pub const fn new(period: Duration) -> Throttle {
        Throttle {
            // (a const fn cannot convert with try_from; no period is 584 My)
            #[allow(clippy::cast_possible_truncation)]
            period_ms: period.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were
    /// held back since the last; `None` when this one is to be held back.
    pub fn admit(&self) -> Option<u64> {
        let now = now_ms();
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.period_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.held.swap(0, Ordering::Relaxed))
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// " (n more since the last line)" when lines were held back.
pub fn held_back(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more like it since the last line)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_line_through_per_period_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.admit(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.admit(), None);
        }
        throttle.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(throttle.admit(), Some(5));
        assert_eq!(held_back(5), " (5 more like it since the last line)");
        assert_eq!(held_back(0), "");
    }
}
