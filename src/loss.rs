//! Softmax cross-entropy on logits, with Keras-style label smoothing and
//! per-class weights.

use candle_core::{Device, Tensor, D};

use crate::{Error, Result, NUM_CLASSES};

/// `loss = sum_i(w_i * l_i) / sum_i(w_i)` where `l_i` is the cross-entropy of
/// sample i against its smoothed one-hot target and `w_i` the weight of its
/// class (1 without class weights, which makes this the plain mean).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CrossEntropy {
    /// Targets become `(1 - s) * onehot + s / K`, as in Keras.
    pub label_smoothing: f32,
    pub class_weights: Option<Vec<f32>>,
}

impl CrossEntropy {
    pub fn new(label_smoothing: f32, class_weights: Option<Vec<f32>>) -> Result<Self> {
        if !(0.0..1.0).contains(&label_smoothing) {
            return Err(Error::invalid(format!("label_smoothing {label_smoothing} must be in [0, 1)")));
        }
        if let Some(w) = &class_weights {
            if w.len() != NUM_CLASSES {
                return Err(Error::invalid(format!("class_weights has {} entries, expected {NUM_CLASSES}", w.len())));
            }
            if w.iter().any(|v| !v.is_finite() || *v < 0.0) || w.iter().all(|v| *v == 0.0) {
                return Err(Error::invalid(format!(
                    "class_weights {w:?} must be finite, non-negative and not all zero"
                )));
            }
        }
        Ok(CrossEntropy { label_smoothing, class_weights })
    }

    /// Scalar loss for `logits` (N, K) and `labels` (N values below K); differentiable.
    pub fn loss<L: Copy + Into<u32>>(&self, logits: &Tensor, labels: &[L]) -> Result<Tensor> {
        let (n, k) = logits.dims2()?;
        let targets = self.targets(labels, n, k)?;
        let per_sample = (targets * log_softmax(logits)?)?.sum(D::Minus1)?.neg()?;
        let Some(cw) = &self.class_weights else {
            return Ok(per_sample.mean_all()?);
        };
        let w: Vec<f32> = labels.iter().map(|&l| cw[l.into() as usize]).collect();
        let total: f32 = w.iter().sum();
        let w = Tensor::from_vec(w, n, &Device::Cpu)?;
        // A batch made only of zero-weight classes contributes nothing.
        let scale = if total > 0.0 { 1.0 / total as f64 } else { 0.0 };
        Ok((per_sample * w)?.sum_all()?.affine(scale, 0.0)?)
    }

    fn targets<L: Copy + Into<u32>>(&self, labels: &[L], n: usize, k: usize) -> Result<Tensor> {
        if labels.len() != n {
            return Err(Error::invalid(format!("{} labels for {n} rows of logits", labels.len())));
        }
        if let Some(cw) = &self.class_weights {
            if cw.len() != k {
                return Err(Error::invalid(format!("{} class weights for {k} classes", cw.len())));
            }
        }
        let s = self.label_smoothing;
        let mut t = vec![s / k as f32; n * k];
        for (i, &l) in labels.iter().enumerate() {
            let l = l.into() as usize;
            if l >= k {
                return Err(Error::invalid(format!("label {l} at index {i} is out of range 0..{k}")));
            }
            t[i * k + l] += 1.0 - s;
        }
        Ok(Tensor::from_vec(t, (n, k), &Device::Cpu)?)
    }
}

/// Stable log-softmax over the last dimension: the row max is subtracted
/// first (and treated as a constant, which leaves the gradient exact).
pub fn log_softmax(logits: &Tensor) -> candle_core::Result<Tensor> {
    let shifted = logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?.detach())?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// Per-sample cross-entropy of host-side logits (rows of `k`), in f64, for
/// evaluation where no autograd graph is wanted. No class weights.
pub fn sample_losses<L: Copy + Into<u32>>(logits: &[f32], k: usize, labels: &[L], label_smoothing: f32) -> Result<Vec<f64>> {
    if k == 0 || logits.len() != labels.len() * k {
        return Err(Error::invalid(format!("{} logits do not make {} rows of {k}", logits.len(), labels.len())));
    }
    let s = label_smoothing as f64;
    logits
        .chunks(k)
        .zip(labels)
        .map(|(row, &l)| {
            let l = l.into() as usize;
            if l >= k {
                return Err(Error::invalid(format!("label {l} is out of range 0..{k}")));
            }
            let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
            let lse = row.iter().map(|v| (*v as f64 - max).exp()).sum::<f64>().ln() + max;
            let mean_logp = row.iter().map(|v| *v as f64 - lse).sum::<f64>() / k as f64;
            Ok(-((1.0 - s) * (row[l] as f64 - lse) + s * mean_logp))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, input};

    fn logits() -> Tensor {
        Tensor::new(&[[1f32, 2., 3., 0., -1., 0.5, 0.], [1000., 0., 0., 0., 0., 0., -1000.]], &Device::Cpu).unwrap()
    }

    #[test]
    fn matches_a_direct_computation_and_is_stable() {
        let ce = CrossEntropy::default();
        let l = ce.loss(&logits(), &[2u8, 0]).unwrap().to_scalar::<f32>().unwrap();
        let row: [f64; 7] = [1., 2., 3., 0., -1., 0.5, 0.];
        let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
        // The second row's correct class dominates: its loss is ~0, not NaN.
        assert!((l as f64 - (lse - 3.0) / 2.0).abs() < 1e-5, "{l}");
        let host = sample_losses(&logits().flatten_all().unwrap().to_vec1::<f32>().unwrap(), 7, &[2u32, 0], 0.0).unwrap();
        assert!((host[0] - (lse - 3.0)).abs() < 1e-6 && host[1].abs() < 1e-9, "{host:?}");
        // Wrong with certainty: huge but finite.
        let bad = ce.loss(&logits(), &[2u8, 6]).unwrap().to_scalar::<f32>().unwrap();
        assert!(bad.is_finite() && bad > 900.0);
    }

    #[test]
    fn smoothing_and_weights_follow_keras() {
        let x = logits();
        let labels = [2u32, 0];
        let flat: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let per = sample_losses(&flat, 7, &labels, 0.1).unwrap();
        let smoothed = CrossEntropy::new(0.1, None).unwrap().loss(&x, &labels).unwrap().to_scalar::<f32>().unwrap();
        assert!((smoothed as f64 - (per[0] + per[1]) / 2.0).abs() < 1e-3, "{smoothed} {per:?}");
        let w = vec![3.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0];
        let weighted = CrossEntropy::new(0.1, Some(w)).unwrap().loss(&x, &labels).unwrap().to_scalar::<f32>().unwrap();
        let expect = (0.5 * per[0] + 3.0 * per[1]) / 3.5;
        assert!((weighted as f64 - expect).abs() < 1e-3, "{weighted} vs {expect}");
    }

    #[test]
    fn gradient_with_smoothing_and_class_weights() {
        let ce = CrossEntropy::new(0.2, Some(vec![1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 0.7])).unwrap();
        let x = input(&[4, 7], 12);
        check(&[x], |v| ce.loss(v[0].as_tensor(), &[0u8, 4, 2, 4]).map_err(|e| candle_core::Error::Msg(e.to_string())), "cross_entropy");
        let plain = CrossEntropy::default();
        let x = input(&[3, 7], 13);
        check(&[x], |v| plain.loss(v[0].as_tensor(), &[6u32, 1, 3]).map_err(|e| candle_core::Error::Msg(e.to_string())), "cross_entropy plain");
    }

    #[test]
    fn bad_arguments_are_invalid_input() {
        for r in [
            CrossEntropy::new(1.0, None),
            CrossEntropy::new(-0.1, None),
            CrossEntropy::new(0.0, Some(vec![1.0; 6])),
            CrossEntropy::new(0.0, Some(vec![0.0; 7])),
            CrossEntropy::new(0.0, Some(vec![f32::NAN; 7])),
        ] {
            assert!(matches!(r, Err(Error::InvalidInput(_))));
        }
        let ce = CrossEntropy::default();
        assert!(matches!(ce.loss(&logits(), &[7u8, 0]), Err(Error::InvalidInput(_))));
        assert!(matches!(ce.loss(&logits(), &[1u8]), Err(Error::InvalidInput(_))));
    }
}
