//! Optimizers with Keras 3 update rules and defaults.
//!
//! Weight decay (AdamW's decoupled decay, SGD's L2 term) applies only to
//! kernels (tensors of rank >= 2); biases and BatchNorm gamma/beta are left
//! alone, the usual practice since decaying them only hurts.

use candle_core::backprop::GradStore;
use candle_core::{DType, Layout, Storage, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ops::gemm::contiguous_slice;
use crate::{Error, Result};

fn lr_adam() -> f64 {
    1e-3
}
fn lr_sgd() -> f64 {
    1e-2
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-7
}
fn adamw_decay() -> f64 {
    0.004
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    Adam {
        #[serde(default = "lr_adam")]
        lr: f64,
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default = "eps")]
        eps: f64,
    },
    #[serde(rename = "adamw")]
    AdamW {
        #[serde(default = "lr_adam")]
        lr: f64,
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default = "eps")]
        eps: f64,
        #[serde(default = "adamw_decay")]
        weight_decay: f64,
    },
    Sgd {
        #[serde(default = "lr_sgd")]
        lr: f64,
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f64,
    },
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self::adam(lr_adam())
    }
}

impl OptimizerConfig {
    /// Keras defaults with the given learning rate.
    pub fn adam(lr: f64) -> Self {
        OptimizerConfig::Adam { lr, beta1: beta1(), beta2: beta2(), eps: eps() }
    }

    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        OptimizerConfig::AdamW { lr, beta1: beta1(), beta2: beta2(), eps: eps(), weight_decay }
    }

    pub fn sgd(lr: f64, momentum: f64, nesterov: bool) -> Self {
        OptimizerConfig::Sgd { lr, momentum, nesterov, weight_decay: 0.0 }
    }

    pub fn learning_rate(&self) -> f64 {
        match *self {
            OptimizerConfig::Adam { lr, .. } | OptimizerConfig::AdamW { lr, .. } | OptimizerConfig::Sgd { lr, .. } => lr,
        }
    }

    pub fn validate(&self) -> Result<()> {
        check_lr(self.learning_rate())?;
        let unit = |name: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::invalid(format!("{name} {v} must be in [0, 1)")))
            }
        };
        let non_negative = |name: &str, v: f64| {
            if v >= 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(Error::invalid(format!("{name} {v} must be a finite number >= 0")))
            }
        };
        match *self {
            OptimizerConfig::Adam { beta1, beta2, eps, .. } => {
                unit("beta1", beta1)?;
                unit("beta2", beta2)?;
                non_negative("eps", eps)
            }
            OptimizerConfig::AdamW { beta1, beta2, eps, weight_decay, .. } => {
                unit("beta1", beta1)?;
                unit("beta2", beta2)?;
                non_negative("eps", eps)?;
                non_negative("weight_decay", weight_decay)
            }
            OptimizerConfig::Sgd { momentum, weight_decay, .. } => {
                unit("momentum", momentum)?;
                non_negative("weight_decay", weight_decay)
            }
        }
    }
}

fn check_lr(lr: f64) -> Result<()> {
    if lr > 0.0 && lr.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(format!("learning rate {lr} must be a finite number > 0")))
    }
}

struct Slot {
    var: Var,
    decay: bool,
    /// First moment (Adam) or velocity (SGD); second moment (Adam).
    m: Option<Tensor>,
    v: Option<Tensor>,
}

pub struct Optimizer {
    config: OptimizerConfig,
    lr: f64,
    iterations: u64,
    slots: Vec<Slot>,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, vars: Vec<Var>) -> Result<Self> {
        config.validate()?;
        let slots = vars.into_iter().map(|var| Slot { decay: var.rank() >= 2, var, m: None, v: None }).collect();
        Ok(Optimizer { lr: config.learning_rate(), config, iterations: 0, slots })
    }

    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// For schedules; the moments are kept.
    pub fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        check_lr(lr)?;
        self.lr = lr;
        Ok(())
    }

    /// Steps taken so far.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// One update of every variable that has a gradient in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.iterations += 1;
        let t = self.iterations as i32;
        let lr = self.lr;
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else { continue };
            let g = g.detach();
            let w = slot.var.as_tensor().detach();
            let next = match self.config {
                OptimizerConfig::Adam { beta1, beta2, eps, .. } => adam(slot, &w, &g, lr, beta1, beta2, eps, t)?,
                OptimizerConfig::AdamW { beta1, beta2, eps, weight_decay, .. } => {
                    // Keras applies the decoupled decay before the Adam step.
                    let w = if slot.decay { w.affine(1.0 - lr * weight_decay, 0.0)? } else { w };
                    adam(slot, &w, &g, lr, beta1, beta2, eps, t)?
                }
                OptimizerConfig::Sgd { momentum, nesterov, weight_decay, .. } => {
                    let g = if slot.decay && weight_decay > 0.0 { (g + w.affine(weight_decay, 0.0)?)? } else { g };
                    sgd(slot, &w, &g, lr, momentum, nesterov)?
                }
            };
            slot.var.set(&next)?;
        }
        Ok(())
    }
}

/// Keras 3: `m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
/// `w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`.
#[allow(clippy::too_many_arguments)]
fn adam(slot: &mut Slot, w: &Tensor, g: &Tensor, lr: f64, b1: f64, b2: f64, eps: f64, t: i32) -> Result<Tensor> {
    let alpha = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
    if w.dtype() != DType::F32 || g.dtype() != DType::F32 || !w.device().is_cpu() {
        return adam_ops(slot, w, g, b1, b2, eps, alpha);
    }
    let (w, g) = (w.contiguous()?, g.contiguous()?);
    // Every input is read in place (the moments are f32 and contiguous:
    // made here, or by `adam_ops` from this f32 `g`); the block ends the
    // read locks before the moments are replaced.
    let (next, m, v) = {
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = g.storage_and_layout();
        let m_prev = slot.m.as_ref().map(Tensor::storage_and_layout);
        let v_prev = slot.v.as_ref().map(Tensor::storage_and_layout);
        let mp = match &m_prev {
            Some((s, l)) => Some(f32_values(s, l)?),
            None => None,
        };
        let vp = match &v_prev {
            Some((s, l)) => Some(f32_values(s, l)?),
            None => None,
        };
        adam_f32(f32_values(&ws, wl)?, f32_values(&gs, gl)?, mp, vp, [b1, b2, eps, alpha])
    };
    let shape = w.shape().clone();
    slot.m = Some(Tensor::from_vec(m, &shape, w.device())?);
    slot.v = Some(Tensor::from_vec(v, &shape, w.device())?);
    Ok(Tensor::from_vec(next, shape, w.device())?)
}

/// The values of a contiguous f32 tensor in CPU memory, from its
/// `storage_and_layout`.
fn f32_values<'a>(storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => Ok(contiguous_slice::<f32>(cpu, layout)?),
        _ => Err(Error::invalid("optimizer: expected tensors in CPU memory")),
    }
}

/// Elements per parallel piece of [`adam_f32`].
const ADAM_CHUNK: usize = 1 << 14;

/// `(w', m, v)` of [`adam_ops`] in one parallel pass, with the same f32
/// operations in the same order (`+ 0.0` included: candle's affine adds
/// it, and it turns -0 into +0), so the same bits. The candle form took a
/// pass and an allocation per op on one thread: a serial stretch that
/// grew to a large part of a step on many cores.
fn adam_f32(w: &[f32], g: &[f32], m_prev: Option<&[f32]>, v_prev: Option<&[f32]>, c: [f64; 4]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    // Each constant rounded to f32 from the f64 candle's affine gets.
    let [b1, b2, eps, alpha] = c.map(|c| c as f32);
    let (omb1, omb2) = ((1.0 - c[0]) as f32, (1.0 - c[1]) as f32);
    let n = w.len();
    let (mut next, mut m, mut v) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    next.par_chunks_mut(ADAM_CHUNK).zip(m.par_chunks_mut(ADAM_CHUNK)).zip(v.par_chunks_mut(ADAM_CHUNK)).enumerate().for_each(
        |(k, ((nx, mo), vo))| {
            let at = k * ADAM_CHUNK;
            for i in 0..nx.len() {
                let j = at + i;
                let gj = g[j];
                let mj = (m_prev.map_or(0.0, |p| p[j]) * b1 + 0.0) + (gj * omb1 + 0.0);
                let vj = (v_prev.map_or(0.0, |p| p[j]) * b2 + 0.0) + ((gj * gj) * omb2 + 0.0);
                let q = mj / (vj.sqrt() + eps);
                nx[i] = w[j] - (q * alpha + 0.0);
                mo[i] = mj;
                vo[i] = vj;
            }
        },
    );
    (next, m, v)
}

/// [`adam`] in candle ops (any dtype; the reference [`adam_f32`] is tested against).
#[allow(clippy::too_many_arguments)]
fn adam_ops(slot: &mut Slot, w: &Tensor, g: &Tensor, b1: f64, b2: f64, eps: f64, alpha: f64) -> Result<Tensor> {
    let m_prev = match slot.m.take() {
        Some(m) => m,
        None => g.zeros_like()?,
    };
    let v_prev = match slot.v.take() {
        Some(v) => v,
        None => g.zeros_like()?,
    };
    let m = (m_prev.affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?;
    let v = (v_prev.affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?;
    let next = (w - (&m / (v.sqrt()? + eps)?)?.affine(alpha, 0.0)?)?;
    slot.m = Some(m);
    slot.v = Some(v);
    Ok(next)
}

/// Keras: `m = momentum m - lr g`; `w += m` or, Nesterov, `w += momentum m - lr g`.
fn sgd(slot: &mut Slot, w: &Tensor, g: &Tensor, lr: f64, momentum: f64, nesterov: bool) -> Result<Tensor> {
    if momentum == 0.0 {
        return Ok((w - g.affine(lr, 0.0)?)?);
    }
    let m_prev = match slot.m.take() {
        Some(m) => m,
        None => g.zeros_like()?,
    };
    let m = (m_prev.affine(momentum, 0.0)? - g.affine(lr, 0.0)?)?;
    let next = if nesterov { (w + (m.affine(momentum, 0.0)? - g.affine(lr, 0.0)?)?)? } else { (w + &m)? };
    slot.m = Some(m);
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Steps `opt` on f(w) = sum(c * w) (gradient c), returning w after each step.
    fn run(config: OptimizerConfig, w0: &[f32], shape: &[usize], grads: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let w = Var::from_tensor(&Tensor::from_slice(w0, shape, &Device::Cpu).unwrap()).unwrap();
        let mut opt = Optimizer::new(config, vec![w.clone()]).unwrap();
        grads
            .iter()
            .map(|c| {
                let c = Tensor::from_slice(c, shape, &Device::Cpu).unwrap();
                let g = (w.as_tensor() * &c).unwrap().sum_all().unwrap().backward().unwrap();
                opt.step(&g).unwrap();
                w.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f64]) -> bool {
        a.iter().zip(b).all(|(x, y)| (*x as f64 - y).abs() < 1e-6 * (1.0 + y.abs()))
    }

    #[test]
    fn adam_matches_the_keras_formula() {
        let gs = [vec![0.5f32, -2.0], vec![0.1, 1.0], vec![-0.3, 0.0]];
        let got = run(OptimizerConfig::adam(0.01), &[1.0, -1.0], &[2], &gs);
        let (mut w, mut m, mut v) = ([1.0f64, -1.0], [0.0f64; 2], [0.0f64; 2]);
        for (t, g) in gs.iter().enumerate() {
            let t = t as i32 + 1;
            let alpha = 0.01 * (1.0 - 0.999f64.powi(t)).sqrt() / (1.0 - 0.9f64.powi(t));
            for i in 0..2 {
                let g = g[i] as f64;
                m[i] += (g - m[i]) * 0.1;
                v[i] += (g * g - v[i]) * 0.001;
                w[i] -= alpha * m[i] / (v[i].sqrt() + 1e-7);
            }
            assert!(close(&got[t as usize - 1], &w), "step {t}: {:?} vs {w:?}", got[t as usize - 1]);
        }
    }

    #[test]
    fn fused_adam_gives_the_bits_of_the_candle_ops() {
        let n = 3 * ADAM_CHUNK + 17;
        let mut state = 7u64;
        let mut draw = |scale: f32| {
            (0..n)
                .map(|i| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    // Exact zeros of both signs too: candle's `+ 0.0` turns -0 into +0.
                    match i % 97 {
                        0 => 0.0,
                        1 => -0.0,
                        _ => ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale,
                    }
                })
                .collect::<Vec<f32>>()
        };
        let t = |v: Vec<f32>| Tensor::from_vec(v, n, &Device::Cpu).unwrap();
        let (w, g1, g2) = (t(draw(2.0)), t(draw(1.0)), t(draw(1e-3)));
        let slot = |w: &Tensor| Slot { var: Var::from_tensor(w).unwrap(), decay: false, m: None, v: None };
        let (mut fused, mut reference) = (slot(&w), slot(&w));
        let bits = |t: &Tensor| t.to_vec1::<f32>().unwrap().iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let (mut wf, mut wr) = (w.clone(), w.clone());
        for (step, g) in [&g1, &g2, &g1].into_iter().enumerate() {
            let (lr, b1, b2, eps) = (0.01, 0.9, 0.999, 1e-7);
            let alpha = lr * (1.0 - f64::powi(b2, step as i32 + 1)).sqrt() / (1.0 - f64::powi(b1, step as i32 + 1));
            wf = adam(&mut fused, &wf, g, lr, b1, b2, eps, step as i32 + 1).unwrap();
            wr = adam_ops(&mut reference, &wr, g, b1, b2, eps, alpha).unwrap();
            assert_eq!(bits(&wf), bits(&wr), "weights, step {step}");
            assert_eq!(bits(fused.m.as_ref().unwrap()), bits(reference.m.as_ref().unwrap()), "m, step {step}");
            assert_eq!(bits(fused.v.as_ref().unwrap()), bits(reference.v.as_ref().unwrap()), "v, step {step}");
        }
    }

    #[test]
    fn adamw_decays_kernels_but_not_biases() {
        let zero = vec![vec![0.0f32; 4]];
        let kernel = run(OptimizerConfig::adamw(0.1, 0.5), &[1.0, 2.0, 3.0, 4.0], &[2, 2], &zero);
        assert!(close(&kernel[0], &[0.95, 1.9, 2.85, 3.8]), "{:?}", kernel[0]);
        let bias = run(OptimizerConfig::adamw(0.1, 0.5), &[1.0, 2.0, 3.0, 4.0], &[4], &zero);
        assert_eq!(bias[0], [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn sgd_momentum_nesterov_and_l2() {
        let gs = [vec![1.0f32], vec![1.0]];
        let plain = run(OptimizerConfig::sgd(0.1, 0.0, false), &[0.0], &[1], &gs);
        assert!(close(&plain[1], &[-0.2]));
        let mom = run(OptimizerConfig::sgd(0.1, 0.9, false), &[0.0], &[1], &gs);
        assert!(close(&mom[0], &[-0.1]) && close(&mom[1], &[-0.1 - 0.19]), "{mom:?}");
        let nest = run(OptimizerConfig::sgd(0.1, 0.9, true), &[0.0], &[1], &gs);
        assert!(close(&nest[0], &[-0.19]) && close(&nest[1], &[-0.19 + (0.9 * -0.19 - 0.1)]), "{nest:?}");
        let l2 = OptimizerConfig::Sgd { lr: 0.1, momentum: 0.0, nesterov: false, weight_decay: 0.5 };
        let got = run(l2, &[2.0, 2.0, 2.0, 2.0], &[2, 2], &[vec![0.0; 4]]);
        assert!(close(&got[0], &[1.9; 4]), "{got:?}");
    }

    #[test]
    fn config_json_defaults_and_validation() {
        let c: OptimizerConfig = serde_json::from_str(r#"{"type":"adam"}"#).unwrap();
        assert_eq!(c, OptimizerConfig::default());
        let c: OptimizerConfig = serde_json::from_str(r#"{"type":"adamw","lr":0.01}"#).unwrap();
        assert_eq!(c, OptimizerConfig::adamw(0.01, 0.004));
        let c: OptimizerConfig = serde_json::from_str(r#"{"type":"sgd"}"#).unwrap();
        assert_eq!(c.learning_rate(), 0.01);
        assert!(serde_json::from_str::<OptimizerConfig>(r#"{"type":"adam","momentum":0.9}"#).is_err());
        for bad in [OptimizerConfig::adam(0.0), OptimizerConfig::adam(f64::NAN), OptimizerConfig::sgd(0.1, 1.0, false)] {
            assert!(matches!(bad.validate(), Err(Error::InvalidInput(_))));
        }
        let mut opt = Optimizer::new(OptimizerConfig::default(), vec![]).unwrap();
        opt.set_learning_rate(0.5).unwrap();
        assert_eq!(opt.learning_rate(), 0.5);
        assert!(opt.set_learning_rate(-1.0).is_err());
    }
}
