//! The three numbers of an evaluation, from CLIP embeddings:
//! fidelity (CLIP-I: samples vs references), text alignment (CLIP-T: samples
//! vs their prompt in plain words) and diversity (1 − mean pairwise CLIP-I
//! among the samples of one prompt). Embeddings are L2-normalised here, so
//! every score is a plain cosine similarity.

use candle_core::{DType, Tensor};

/// Rows of a `[n, d]` tensor as f64 vectors, each scaled to unit length (a zero
/// row stays zero).
pub fn normalized_rows(t: &Tensor) -> candle_core::Result<Vec<Vec<f64>>> {
    let rows = t.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let v: Vec<f64> = r.into_iter().map(f64::from).collect();
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n > 0.0 {
                v.into_iter().map(|x| x / n).collect()
            } else {
                v
            }
        })
        .collect())
}

/// Dot product of two unit vectors: their cosine similarity.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `out[i][j] = cos(a[i], b[j])`.
pub fn cosine_matrix(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    a.iter()
        .map(|x| b.iter().map(|y| cosine(x, y)).collect())
        .collect()
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// CLIP-I: mean cosine of every sample to every reference.
pub fn fidelity(samples: &[Vec<f64>], references: &[Vec<f64>]) -> Option<f64> {
    mean(
        samples
            .iter()
            .flat_map(|s| references.iter().map(move |r| cosine(s, r))),
    )
}

/// CLIP-T: mean cosine of every sample to the prompt's text embedding.
pub fn text_alignment(samples: &[Vec<f64>], text: &[f64]) -> Option<f64> {
    mean(samples.iter().map(|s| cosine(s, text)))
}

/// 1 − mean cosine over all unordered pairs of samples; `None` with fewer
/// than two samples.
pub fn diversity(samples: &[Vec<f64>]) -> Option<f64> {
    let pairs = samples
        .iter()
        .enumerate()
        .flat_map(|(i, a)| samples[i + 1..].iter().map(move |b| cosine(a, b)));
    mean(pairs).map(|m| 1.0 - m)
}

/// Mean of the values that are present (`None` if none is).
pub fn mean_of(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    mean(values.into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f64]) -> Vec<f64> {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn identical_samples_have_zero_diversity_and_full_fidelity() {
        let a = unit(&[1.0, 2.0, 3.0]);
        let s = vec![a.clone(), a.clone(), a.clone()];
        assert!((fidelity(&s, std::slice::from_ref(&a)).unwrap() - 1.0).abs() < 1e-12);
        assert!(diversity(&s).unwrap().abs() < 1e-12);
        assert_eq!(diversity(&s[..1]), None);
    }

    #[test]
    fn orthogonal_and_opposite_vectors() {
        let x = vec![1.0, 0.0];
        let y = vec![0.0, 1.0];
        let nx = vec![-1.0, 0.0];
        // Pairs: (x,y)=0, (x,-x)=-1, (y,-x)=0 → mean −1/3 → diversity 4/3.
        let d = diversity(&[x.clone(), y.clone(), nx.clone()]).unwrap();
        assert!((d - 4.0 / 3.0).abs() < 1e-12);
        // Fidelity against two references averages all four cosines.
        let f = fidelity(&[x.clone(), y.clone()], &[x.clone(), nx]).unwrap();
        assert!((f - (1.0 + -1.0 + 0.0 + 0.0) / 4.0).abs() < 1e-12);
        assert!((text_alignment(&[x, y.clone()], &y).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(mean_of([Some(1.0), None, Some(3.0)]), Some(2.0));
        assert_eq!(mean_of([None]), None);
    }

    #[test]
    fn rows_are_normalised() {
        let t = Tensor::new(&[[3f32, 4.0], [0.0, 0.0]], &candle_core::Device::Cpu).unwrap();
        let r = normalized_rows(&t).unwrap();
        assert!((r[0][0] - 0.6).abs() < 1e-7 && (r[0][1] - 0.8).abs() < 1e-7);
        assert_eq!(r[1], vec![0.0, 0.0]);
    }
}
