//! Learning-rate schedules: constant, warm-up + cosine, and A1111's stepped
//! string form `"0.005:100, 1e-3:1000, 1e-5"` (rate until step, last one forever).

#[derive(Debug, Clone, PartialEq)]
pub enum LrSchedule {
    Constant(f64),
    /// `(rate, until_step)` pairs; the final entry has `until_step = None`.
    Stepped(Vec<(f64, Option<u64>)>),
    Cosine {
        peak: f64,
        warmup: u64,
        total: u64,
    },
}

impl LrSchedule {
    /// Builds the schedule from the config's `lr`, `lr_schedule`, `warmup_steps`.
    pub fn parse(lr: &str, kind: &str, warmup: u64, total: u64) -> Result<Self, String> {
        let lr = lr.trim();
        let bad = || {
            format!("invalid learning rate `{lr}`: use a number (0.005) or A1111 steps (`0.005:100, 1e-3:1000, 1e-5`)")
        };
        let mut entries = Vec::new();
        for (i, part) in lr.split(',').map(str::trim).enumerate() {
            if part.is_empty() {
                return Err(bad());
            }
            let (rate, until) = match part.split_once(':') {
                Some((r, s)) => (r.trim(), Some(s.trim().parse::<u64>().map_err(|_| bad())?)),
                None => (part, None),
            };
            let rate: f64 = rate.parse().map_err(|_| bad())?;
            if !rate.is_finite() || rate < 0.0 {
                return Err(bad());
            }
            if until.is_none() && i + 1 != lr.split(',').count() {
                return Err(bad());
            }
            entries.push((rate, until));
        }
        match kind {
            "constant" | "" => {
                if entries.len() == 1 && entries[0].1.is_none() {
                    Ok(LrSchedule::Constant(entries[0].0))
                } else {
                    Ok(LrSchedule::Stepped(entries))
                }
            }
            "cosine" => {
                if entries.len() != 1 {
                    return Err(format!(
                        "lr_schedule `cosine` takes a single peak rate, not `{lr}`"
                    ));
                }
                Ok(LrSchedule::Cosine {
                    peak: entries[0].0,
                    warmup,
                    total,
                })
            }
            other => Err(format!(
                "unknown lr_schedule `{other}` (use constant or cosine)"
            )),
        }
    }

    /// The rate for optimiser step `step` (1-based: the first update is step 1).
    pub fn at(&self, step: u64) -> f64 {
        match self {
            LrSchedule::Constant(r) => *r,
            LrSchedule::Stepped(entries) => {
                for (rate, until) in entries {
                    match until {
                        Some(u) if step <= *u => return *rate,
                        Some(_) => continue,
                        None => return *rate,
                    }
                }
                entries.last().map(|e| e.0).unwrap_or(0.0)
            }
            LrSchedule::Cosine {
                peak,
                warmup,
                total,
            } => {
                if step <= *warmup && *warmup > 0 {
                    return peak * step as f64 / *warmup as f64;
                }
                let span = total.saturating_sub(*warmup).max(1) as f64;
                let progress = ((step - warmup.min(&step)) as f64 / span).clamp(0.0, 1.0);
                peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_steps() {
        let s = LrSchedule::parse("0.005:100, 1e-3:1000, 1e-5", "constant", 0, 0).unwrap();
        assert_eq!(s.at(1), 0.005);
        assert_eq!(s.at(100), 0.005);
        assert_eq!(s.at(101), 1e-3);
        assert_eq!(s.at(1000), 1e-3);
        assert_eq!(s.at(5000), 1e-5);
        // A final rate with a step limit keeps going after it.
        let s = LrSchedule::parse("0.01:10", "constant", 0, 0).unwrap();
        assert_eq!(s.at(50), 0.01);
    }

    #[test]
    fn constant_and_cosine() {
        assert_eq!(
            LrSchedule::parse("0.003", "constant", 0, 10).unwrap().at(7),
            0.003
        );
        let c = LrSchedule::parse("0.01", "cosine", 10, 110).unwrap();
        assert!((c.at(5) - 0.005).abs() < 1e-12);
        assert!((c.at(10) - 0.01).abs() < 1e-12);
        assert!((c.at(60) - 0.005).abs() < 1e-12);
        assert!(c.at(110).abs() < 1e-12);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "0.1:x", "0.1, 0.2:5", "-1", "0.1,,0.2"] {
            assert!(LrSchedule::parse(bad, "constant", 0, 0).is_err(), "{bad}");
        }
        assert!(LrSchedule::parse("0.1:5, 0.2", "cosine", 0, 0).is_err());
        assert!(LrSchedule::parse("0.1", "linear", 0, 0).is_err());
    }
}
