//! Training history for the chart: a recent window at full resolution and a
//! downsampled full history (bounded memory over 15k-step runs), an
//! exponentially smoothed series, and the run's ETA (the estimator the CLI
//! progress bar uses too, [`crate::train::eta`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::train::eta::Eta;
use crate::train::run::StepMetrics;

const RECENT: usize = 300;
const FULL_MAX: usize = 1000;
const SMOOTHING: f64 = 0.9;

#[derive(Debug, Clone, Default)]
pub struct History {
    pub recent: VecDeque<(f64, f64)>,
    pub recent_smooth: VecDeque<(f64, f64)>,
    /// Buckets of `bucket` steps averaged.
    pub full: Vec<(f64, f64)>,
    bucket: u64,
    acc: (f64, f64, u64),
    smooth: Option<f64>,
    pub last: Option<StepMetrics>,
    pub total_steps: u64,
    pub start_step: u64,
    eta: Eta,
}

impl History {
    pub fn new(start_step: u64, total_steps: u64) -> Self {
        Self {
            bucket: 1,
            total_steps,
            start_step,
            eta: Eta::new(start_step),
            ..Default::default()
        }
    }

    /// Records a step seen at `now`.
    pub fn push(&mut self, m: StepMetrics, now: Instant) {
        let x = m.step as f64;
        let smooth = match self.smooth {
            None => m.loss,
            Some(s) => SMOOTHING * s + (1.0 - SMOOTHING) * m.loss,
        };
        self.smooth = Some(smooth);
        self.recent.push_back((x, m.loss));
        self.recent_smooth.push_back((x, smooth));
        while self.recent.len() > RECENT {
            self.recent.pop_front();
            self.recent_smooth.pop_front();
        }
        self.acc.0 += x;
        self.acc.1 += m.loss;
        self.acc.2 += 1;
        if self.acc.2 >= self.bucket {
            let n = self.acc.2 as f64;
            self.full.push((self.acc.0 / n, self.acc.1 / n));
            self.acc = (0.0, 0.0, 0);
            if self.full.len() > FULL_MAX {
                // Halve the resolution: average neighbouring buckets.
                self.full = self
                    .full
                    .chunks(2)
                    .map(|c| {
                        let n = c.len() as f64;
                        (
                            c.iter().map(|p| p.0).sum::<f64>() / n,
                            c.iter().map(|p| p.1).sum::<f64>() / n,
                        )
                    })
                    .collect();
                self.bucket *= 2;
            }
        }
        self.eta.observe(m.step, now);
        self.last = Some(m);
    }

    pub fn smoothed(&self) -> Option<f64> {
        self.smooth
    }

    pub fn step(&self) -> u64 {
        self.last.as_ref().map_or(self.start_step, |m| m.step)
    }

    /// Remaining time from the steady rate after warm-up.
    pub fn eta(&self) -> Option<Duration> {
        self.eta.remaining(self.total_steps)
    }

    /// Y range of a series with a little headroom.
    pub fn bounds(points: &[(f64, f64)]) -> ([f64; 2], [f64; 2]) {
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in points {
            x0 = x0.min(*x);
            x1 = x1.max(*x);
            y0 = y0.min(*y);
            y1 = y1.max(*y);
        }
        if points.is_empty() {
            return ([0.0, 1.0], [0.0, 1.0]);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.05).max(1e-6);
        ([x0, x1], [y0 - pad, y1 + pad])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(step: u64, loss: f64) -> StepMetrics {
        StepMetrics {
            step,
            loss,
            mse: loss,
            rec: None,
            lr: 0.005,
            lr_neg: 0.005,
            grad_norm_pos: 0.1,
            grad_norm_neg: 0.1,
            it_s: 1.0,
        }
    }

    #[test]
    fn eta_ignores_warm_up_and_history_stays_bounded() {
        let t0 = Instant::now();
        let mut h = History::new(0, 100);
        // A slow first step, then one step per second.
        h.push(m(1, 1.0), t0 + Duration::from_secs(30));
        for s in 2..=10 {
            h.push(m(s, 1.0), t0 + Duration::from_secs(30 + s - 1));
        }
        let eta = h.eta().unwrap().as_secs_f64();
        assert!((eta - 90.0).abs() < 1.0, "eta {eta}");
        let mut h = History::new(0, 20000);
        for s in 1..=20000 {
            h.push(m(s, (s % 7) as f64), t0);
        }
        assert!(h.full.len() <= FULL_MAX && h.full.len() > FULL_MAX / 2);
        assert_eq!(h.recent.len(), RECENT);
    }
}
