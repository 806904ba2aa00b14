//! Time left in a training run, shared by the CLI progress bar and the
//! workbench so both show the same number.
//!
//! The first steps of a run (or of a resumed run) pay for allocation, kernel
//! selection and cold caches and are much slower than the rest; counting them
//! would make every early estimate far too long. The rate is measured from the
//! end of the warm-up to the latest step instead.

use std::time::{Duration, Instant};

/// The first steps of a run (or of a resumed run) whose time the estimate leaves out.
pub const WARMUP_STEPS: u64 = 3;

/// The steady step rate of a run and what it predicts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Eta {
    start_step: u64,
    /// The first step at or after warm-up, and when it was seen.
    origin: Option<(Instant, u64)>,
    /// The latest step and when it was seen.
    last: Option<(Instant, u64)>,
}

impl Eta {
    /// A run that starts (or resumes) after `start_step`.
    pub fn new(start_step: u64) -> Self {
        Self {
            start_step,
            ..Self::default()
        }
    }

    /// Records that `step` finished at `at`.
    pub fn observe(&mut self, step: u64, at: Instant) {
        if self.origin.is_none() && step >= self.start_step + WARMUP_STEPS {
            self.origin = Some((at, step));
        }
        self.last = Some((at, step));
    }

    /// Time left to reach `total_steps` at the rate since warm-up; `None` until
    /// there are two steps after warm-up to measure it from, and for steps
    /// seen all at once (a finished or stopped run's history read from its
    /// file says nothing about a rate: it is not "0:00 left").
    pub fn remaining(&self, total_steps: u64) -> Option<Duration> {
        let (t0, s0) = self.origin?;
        let (t1, s1) = self.last?;
        if s1 <= s0 || t1 <= t0 {
            return None;
        }
        let per_step = t1.duration_since(t0).as_secs_f64() / (s1 - s0) as f64;
        Some(Duration::from_secs_f64(
            per_step * total_steps.saturating_sub(s1) as f64,
        ))
    }
}

/// `m:ss`, or `h:mm:ss` from an hour up.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// [`format_duration`], or `--:--` while there is no estimate yet.
pub fn format_eta(eta: Option<Duration>) -> String {
    eta.map_or_else(|| "--:--".to_string(), format_duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_warm_up_steps() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut eta = Eta::new(0);
        // Three slow warm-up steps (30 s each), then one step per second.
        for step in 1..=3 {
            eta.observe(step, at(30 * step));
            assert_eq!(eta.remaining(100), None, "no estimate during warm-up");
        }
        for step in 4..=10 {
            eta.observe(step, at(90 + step - 3));
        }
        let left = eta.remaining(100).unwrap().as_secs_f64();
        assert!((left - 90.0).abs() < 1e-6, "eta {left}");
        assert_eq!(format_eta(eta.remaining(100)), "1:30");
    }

    #[test]
    fn a_resumed_run_warms_up_again_and_formats() {
        let t0 = Instant::now();
        let mut eta = Eta::new(500);
        eta.observe(501, t0 + Duration::from_secs(60));
        eta.observe(502, t0 + Duration::from_secs(61));
        assert_eq!(eta.remaining(1000), None);
        eta.observe(503, t0 + Duration::from_secs(62));
        eta.observe(505, t0 + Duration::from_secs(66));
        // 2 s a step from step 503 on, 495 steps left.
        assert_eq!(eta.remaining(1000), Some(Duration::from_secs(990)));
        assert_eq!(eta.remaining(400), Some(Duration::ZERO));
        assert_eq!(format_eta(None), "--:--");
        assert_eq!(format_duration(Duration::from_secs(3725)), "1:02:05");
        assert_eq!(format_duration(Duration::from_secs(125)), "2:05");
    }

    /// A history read in one go (a run followed after it ended) has no rate.
    #[test]
    fn steps_seen_at_one_instant_give_no_estimate() {
        let t0 = Instant::now();
        let mut eta = Eta::new(0);
        for step in 1..=226 {
            eta.observe(step, t0);
        }
        assert_eq!(eta.remaining(400), None);
        assert_eq!(format_eta(eta.remaining(400)), "--:--");
    }
}
