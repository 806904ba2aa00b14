//! The loss chart's axes: a y range from robust statistics of what is on
//! screen (a first step's loss of 0.53 must not flatten a curve that lives
//! under 0.05), an optional log scale, and tick labels. Pure functions; the
//! training pane draws with them.

use super::state::ChartScale;

/// Share of the raw points allowed above / below the chart (spikes, the first
/// steps' high loss): they are clipped, not scaled to.
const RAW_TOP: f64 = 0.95;
const RAW_BOTTOM: f64 = 0.02;
/// The smoothed curve is shown but for its top 5% (its start, before it settled).
const SMOOTH_TOP: f64 = 0.95;
/// Values at or below zero have no logarithm: they sit at this floor.
const LOG_FLOOR: f64 = 1e-8;

/// A value as the chart plots it (log10 on the log scale).
pub fn to_axis(y: f64, scale: ChartScale) -> f64 {
    match scale {
        ChartScale::Linear => y,
        ChartScale::Log => y.max(LOG_FLOOR).log10(),
    }
}

/// A plotted value back in loss units (for labels).
pub fn from_axis(v: f64, scale: ChartScale) -> f64 {
    match scale {
        ChartScale::Linear => v,
        ChartScale::Log => 10f64.powf(v),
    }
}

/// Points as the chart plots them.
pub fn plotted(points: &[(f64, f64)], scale: ChartScale) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter(|(_, y)| y.is_finite())
        .map(|&(x, y)| (x, to_axis(y, scale)))
        .collect()
}

/// The `q` quantile (0..=1) of `values`, nearest rank; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    Some(v[i.min(v.len() - 1)])
}

/// The x range of the points (at least one step wide).
pub fn x_range(points: &[(f64, f64)]) -> [f64; 2] {
    let x0 = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x1 = points.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    if !x0.is_finite() || !x1.is_finite() {
        return [0.0, 1.0];
    }
    [x0, x1.max(x0 + 1.0)]
}

/// The y range, in plotted units, from already plotted series: the raw points
/// but their top 5% and bottom 2%, and the smoothed curve but its top 5%,
/// with a little headroom.
pub fn y_range(raw: &[(f64, f64)], smooth: &[(f64, f64)]) -> [f64; 2] {
    let ys = |s: &[(f64, f64)]| s.iter().map(|p| p.1).collect::<Vec<_>>();
    let (raw, smooth) = (ys(raw), ys(smooth));
    let lows = [quantile(&raw, RAW_BOTTOM), quantile(&smooth, 0.0)];
    let highs = [quantile(&raw, RAW_TOP), quantile(&smooth, SMOOTH_TOP)];
    let lo = lows.iter().flatten().copied().fold(f64::INFINITY, f64::min);
    let hi = highs
        .iter()
        .flatten()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return [0.0, 1.0];
    }
    let pad = ((hi - lo) * 0.05)
        .max(lo.abs().max(hi.abs()) * 1e-3)
        .max(1e-9);
    [lo - pad, hi + pad]
}

/// A label for a loss value, with two digits of `step` (the distance to the
/// next tick) so that neighbouring labels differ.
fn label(v: f64, step: f64) -> String {
    if step < 1e-3 || v.abs() >= 1e5 {
        return format!("{v:.1e}");
    }
    let decimals = if step > 0.0 && step.is_finite() {
        (1.0 - step.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        3
    };
    format!("{v:.decimals$}")
}

/// Three y labels (bottom, middle, top) for a plotted range, in loss units.
pub fn y_labels(range: [f64; 2], scale: ChartScale) -> Vec<String> {
    let values: Vec<f64> = [range[0], (range[0] + range[1]) / 2.0, range[1]]
        .iter()
        .map(|&v| from_axis(v, scale))
        .collect();
    let step = (values[2] - values[0]) / 2.0;
    values
        .iter()
        .map(|&v| match scale {
            ChartScale::Linear => label(v, step),
            // Ticks an order of magnitude apart: two significant digits each.
            ChartScale::Log => label(v, v.abs()),
        })
        .collect()
}

/// Step labels spread evenly over `range`, as many as `width` columns hold.
pub fn x_labels(range: [f64; 2], width: u16) -> Vec<String> {
    // No more labels than whole steps in the range (no "1 2 2 3 3").
    let steps = (range[1] - range[0]).round().max(1.0) as usize + 1;
    let n = (usize::from(width) / 12).clamp(2, 5).min(steps);
    (0..n)
        .map(|i| {
            let x = range[0] + (range[1] - range[0]) * i as f64 / (n - 1) as f64;
            format!("{}", x.round() as i64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Series = Vec<(f64, f64)>;

    /// The case: the first step's loss 0.53, then a curve under 0.05.
    fn first_step_spike() -> (Series, Series) {
        let mut raw = vec![(1.0, 0.53)];
        for s in 2..=300 {
            raw.push((s as f64, 0.03 + 0.015 * ((s as f64) * 0.9).sin()));
        }
        let mut smooth = Vec::new();
        let (mut ema, beta) = (0.0, 0.9f64);
        for (i, &(x, y)) in raw.iter().enumerate() {
            ema = beta * ema + (1.0 - beta) * y;
            smooth.push((x, ema / (1.0 - beta.powi(i as i32 + 1))));
        }
        (raw, smooth)
    }

    #[test]
    fn a_first_step_spike_does_not_flatten_the_curve() {
        let (raw, smooth) = first_step_spike();
        let [lo, hi] = y_range(&raw, &smooth);
        assert!(hi < 0.06, "top {hi}");
        assert!(lo > 0.0 && lo < 0.02, "bottom {lo}");
        // Most of the curve uses most of the height.
        let inside = raw.iter().filter(|p| p.1 >= lo && p.1 <= hi).count();
        assert!(inside >= 280, "{inside} of 300 points on the chart");
    }

    #[test]
    fn few_points_are_all_shown() {
        let raw = [(1.0, 0.5), (2.0, 0.3), (3.0, 0.1)];
        let [lo, hi] = y_range(&raw, &raw);
        assert!(lo < 0.1 && hi > 0.5, "{lo}..{hi}");
        // One point, or a flat line, still gets a range.
        let [lo, hi] = y_range(&[(1.0, 0.2)], &[]);
        assert!(lo < 0.2 && hi > 0.2);
        assert_eq!(y_range(&[], &[]), [0.0, 1.0]);
    }

    #[test]
    fn log_scale_spreads_orders_of_magnitude() {
        let raw: Vec<(f64, f64)> = (1..=100)
            .map(|s| (s as f64, 0.5 * 0.95f64.powi(s)))
            .collect();
        let plotted_raw = plotted(&raw, ChartScale::Log);
        assert!((plotted_raw[0].1 - (0.475f64).log10()).abs() < 1e-12);
        let range = y_range(&plotted_raw, &[]);
        let labels = y_labels(range, ChartScale::Log);
        assert_eq!(labels.len(), 3);
        // Bottom label is the small end, in loss units.
        let bottom: f64 = labels[0].parse().unwrap();
        let top: f64 = labels[2].parse().unwrap();
        assert!(bottom < 0.01 && top > 0.3, "{labels:?}");
        // Zero has no logarithm: it sits at the floor instead of -inf.
        assert!(to_axis(0.0, ChartScale::Log).is_finite());
    }

    #[test]
    fn labels_have_the_decimals_the_range_needs() {
        assert_eq!(
            y_labels([0.01, 0.05], ChartScale::Linear),
            ["0.010", "0.030", "0.050"]
        );
        assert_eq!(
            y_labels([0.5, 1.5], ChartScale::Linear),
            ["0.50", "1.00", "1.50"]
        );
        assert_eq!(
            x_labels([1.0, 400.0], 80),
            ["1", "101", "201", "300", "400"]
        );
        assert_eq!(x_labels([1.0, 60.0], 20), ["1", "60"]);
        assert_eq!(x_labels([1.0, 3.0], 80), ["1", "2", "3"]);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
