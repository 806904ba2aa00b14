//! Training history for the chart: a recent window at full resolution and a
//! downsampled full history (bounded memory over 15k-step runs), an
//! exponentially smoothed series (bias-corrected, so it does not start out
//! dragged towards the first step's loss), and the run's ETA (the estimator the CLI
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
    /// The running average before bias correction, and how many steps it saw.
    ema: f64,
    seen: i32,
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
        // An average started at zero and divided by the weight it has: early
        // values are as smooth as later ones, and the first step's loss fades
        // as fast as any other's.
        self.ema = SMOOTHING * self.ema + (1.0 - SMOOTHING) * m.loss;
        self.seen = self.seen.saturating_add(1);
        let smooth = self.ema / (1.0 - SMOOTHING.powi(self.seen));
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

    #[test]
    fn the_smoothed_loss_forgets_the_first_step() {
        let mut h = History::new(0, 100);
        h.push(m(1, 0.53), Instant::now());
        assert_eq!(h.smoothed(), Some(0.53));
        for s in 2..=30 {
            h.push(m(s, 0.03), Instant::now());
        }
        // Uncorrected (started at 0.53) it would still be 0.053 here.
        let s = h.smoothed().unwrap();
        assert!(s < 0.036, "{s}");
    }
}
