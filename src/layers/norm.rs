use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor, Var};
use rayon::prelude::*;

use super::{filled, value, Param};
use std::mem::MaybeUninit;

use crate::ops::gemm::{contiguous_slice, par_filled, par_filled2, Elem};
use crate::ops::pool;

/// Batch normalisation over (N, H, W) per channel, Keras flavour: the running
/// statistics move as `running = momentum * running + (1 - momentum) * batch`
/// and the running variance takes the biased batch variance.
pub struct BatchNorm2d {
    gamma: Var,
    beta: Var,
    running_mean: Var,
    running_var: Var,
    momentum: f64,
    eps: f64,
}

pub fn batch_norm2d(channels: usize, momentum: f64, eps: f64) -> crate::Result<BatchNorm2d> {
    Ok(BatchNorm2d {
        gamma: filled(1.0, channels)?,
        beta: filled(0.0, channels)?,
        running_mean: filled(0.0, channels)?,
        running_var: filled(1.0, channels)?,
        momentum,
        eps,
    })
}

impl BatchNorm2d {
    /// Training mode normalises with the batch statistics and updates the
    /// running ones as a side effect; inference uses the running ones.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(xs, train, false)
    }

    /// Inference as a per-channel affine map `y = scale * x + shift` (C each).
    pub fn inference_affine(&self) -> Result<(Tensor, Tensor)> {
        let gamma = value(&self.gamma, false);
        let scale = gamma.broadcast_div(&(value(&self.running_var, false) + self.eps)?.sqrt()?)?;
        let shift = (value(&self.beta, false) - value(&self.running_mean, false).broadcast_mul(&scale)?)?;
        Ok((scale, shift))
    }

    /// `forward_t` followed by a ReLU when `relu`, fused into the same pass
    /// in training (a separate ReLU costs a pass forward and several
    /// backward, more than the normalisation itself).
    pub fn forward_act(&self, xs: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        if !train {
            let (scale, shift) = self.inference_affine()?;
            let ys = xs.broadcast_mul(&scale.reshape((1, (), 1, 1))?)?.broadcast_add(&shift.reshape((1, (), 1, 1))?)?;
            return if relu { ys.relu() } else { Ok(ys) };
        }
        let op = self.train_op(relu);
        let ys = xs.contiguous()?.apply_op3(&value(&self.gamma, true), &value(&self.beta, true), op.clone())?;
        self.update_from(&op, xs)?;
        Ok(ys)
    }

    /// The training forward with no autograd graph, and its op (for
    /// [`super::Saved`]'s backward).
    pub(super) fn forward_saved(&self, xs: &Tensor, relu: bool) -> Result<(Tensor, BatchNormTrain)> {
        let op = self.train_op(relu);
        let ys = xs.contiguous()?.apply_op3_no_bwd(self.gamma.as_tensor(), self.beta.as_tensor(), &op)?;
        self.update_from(&op, xs)?;
        Ok((ys, op))
    }

    /// `(dx, dγ, dβ)` of [`Self::forward_saved`].
    pub(super) fn backward_saved(&self, op: &BatchNormTrain, x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        op.bwd(&x.contiguous()?, self.gamma.as_tensor(), self.beta.as_tensor(), y, &grad.contiguous()?)
    }

    /// [`Self::forward_saved`] and the 2x2 / stride-2 max pool after it in
    /// one pass: `(y, pooled, op)`; `None` where the map is too small to pool
    /// (the pool op then says so).
    pub(super) fn forward_saved_pool2(&self, xs: &Tensor, relu: bool) -> Result<Option<(Tensor, Tensor, BatchNormTrain)>> {
        if !matches!(*xs.dims(), [_, _, h, w] if h >= 2 && w >= 2) {
            return Ok(None);
        }
        let op = self.train_op(relu);
        let (ys, pooled) = op.forward_pool2(xs, self.gamma.as_tensor(), self.beta.as_tensor())?;
        self.update_from(&op, xs)?;
        Ok(Some((ys, pooled, op)))
    }

    /// `(dx, dγ, dβ)` of [`Self::forward_saved_pool2`] given the pool's output gradient.
    pub(super) fn backward_saved_pool2(&self, op: &BatchNormTrain, x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        op.backward_pool2(&x.contiguous()?, self.gamma.as_tensor(), y, &grad.contiguous()?)
    }

    pub(super) fn gamma_beta(&self) -> (&Var, &Var) {
        (&self.gamma, &self.beta)
    }

    fn train_op(&self, relu: bool) -> BatchNormTrain {
        BatchNormTrain { eps: self.eps, relu, stats: Arc::new(Mutex::new(None)) }
    }

    /// Folds the batch statistics `op`'s forward left into the running ones.
    fn update_from(&self, op: &BatchNormTrain, xs: &Tensor) -> Result<()> {
        let stats = op.stats.lock().map_err(|_| candle_core::Error::Msg("batch-norm statistics lock poisoned".into()))?;
        let stats = stats
            .as_ref().ok_or_else(|| candle_core::Error::Msg("batch-norm forward produced no statistics".into()))?;
        let c = stats.mean.len();
        let mean = Tensor::from_vec(stats.mean.iter().map(|v| *v as f32).collect::<Vec<_>>(), c, xs.device())?;
        let var = Tensor::from_vec(stats.var.iter().map(|v| *v as f32).collect::<Vec<_>>(), c, xs.device())?;
        self.update_running(&mean, &var)
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor) -> Result<()> {
        let m = self.momentum;
        for (running, batch) in [(&self.running_mean, mean), (&self.running_var, var)] {
            let batch = batch.detach();
            let next = (running.as_tensor().detach().affine(m, 0.0)? + batch.affine(1.0 - m, 0.0)?)?;
            running.set(&next)?;
        }
        Ok(())
    }

    pub fn params(&self) -> Vec<Param<'_>> {
        vec![
            Param { name: "weight", var: &self.gamma, trainable: true },
            Param { name: "bias", var: &self.beta, trainable: true },
            Param { name: "running_mean", var: &self.running_mean, trainable: false },
            Param { name: "running_var", var: &self.running_var, trainable: false },
        ]
    }
}

/// Per-channel batch statistics of one training forward pass, kept for the
/// backward pass and the running-average update.
struct Stats {
    mean: Vec<f64>,
    /// Biased variance.
    var: Vec<f64>,
    inv_std: Vec<f64>,
}

/// Training-mode batch norm fused into one pass per direction; composing it
/// from broadcast tensor ops cost more than the convolutions around it.
#[derive(Clone)]
pub(super) struct BatchNormTrain {
    eps: f64,
    /// Apply a ReLU to the output (and mask the gradient by it).
    relu: bool,
    stats: Arc<Mutex<Option<Stats>>>,
}

/// Runs `f` on the contiguous f32 data of `t`.
fn with_slice<T>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<T>) -> Result<T> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(contiguous_slice(s, layout)?),
        _ => bail!("batch norm runs on the CPU only"),
    }
}

/// (N, C, plane) of an NCHW shape.
fn nc_plane(shape: &[usize]) -> Result<(usize, usize, usize)> {
    match *shape {
        [n, c, h, w] => Ok((n, c, h * w)),
        _ => bail!("batch norm expects (N, C, H, W), got {shape:?}"),
    }
}

/// `f` on plane `k` (of `plane` elements) of the gradient `g` reaching a
/// BatchNorm's output `y`: `g`'s own, or with `pooled = Some((h, w))`, where
/// `g` is that of the 2x2 / stride-2 max pool of `y`, the pool's input
/// gradient for the plane, made in scratch.
fn grad_plane<R>(g: &[f32], y: &[f32], k: usize, plane: usize, pooled: Option<(usize, usize)>, f: impl FnOnce(&[f32]) -> R) -> R {
    let Some((h, w)) = pooled else { return f(&g[k * plane..(k + 1) * plane]) };
    let pp = (h / 2) * (w / 2);
    f32::with_scratch(plane, |s| {
        pool::unpool2(h, w, &y[k * plane..(k + 1) * plane], &g[k * pp..(k + 1) * pp], false, s);
        f(s)
    })
}

/// Sums each of the `K` values of `f(a_i, b_i, c_i)` over one channel's
/// planes of three (N, C, plane) buffers, in a fixed order (so results do
/// not depend on the thread count): [`plane_sums`] of each image, added up
/// in f64. The `K` sums share one pass over the buffers; each is added up
/// exactly as it would be alone.
#[allow(clippy::too_many_arguments)]
fn channel_sums<const K: usize>(
    n: usize,
    c: usize,
    plane: usize,
    ch: usize,
    a: &[f32],
    b: &[f32],
    cc: &[f32],
    f: impl Fn(f32, f32, f32) -> [f32; K],
) -> [f64; K] {
    channel_sums_with(n, |img, sums| {
        let range = (img * c + ch) * plane..(img * c + ch + 1) * plane;
        sums(&a[range.clone()], &b[range.clone()], &cc[range])
    }, f)
}

/// [`channel_sums`] over planes that `planes(img, sums)` hands to `sums`
/// (made on the fly, for the pooled backward), in the same order.
fn channel_sums_with<const K: usize, F: Fn(f32, f32, f32) -> [f32; K]>(
    n: usize,
    planes: impl Fn(usize, &dyn Fn(&[f32], &[f32], &[f32]) -> [f64; K]) -> [f64; K],
    f: F,
) -> [f64; K] {
    let mut total = [0f64; K];
    for img in 0..n {
        let part = planes(img, &|a, b, cc| plane_sums(a, b, cc, &f));
        for k in 0..K {
            total[k] += part[k];
        }
    }
    total
}

/// Each of the `K` sums of `f` over one plane: 16 f32 lanes, vectorisable,
/// then f64 across lanes.
#[inline(always)]
fn plane_sums<const K: usize>(a: &[f32], b: &[f32], cc: &[f32], f: impl Fn(f32, f32, f32) -> [f32; K]) -> [f64; K] {
    const LANES: usize = 16;
    let plane = a.len();
    let body = plane / LANES * LANES;
    let mut acc = [[0f32; LANES]; K];
    for ((a, b), cc) in a[..body].chunks_exact(LANES).zip(b[..body].chunks_exact(LANES)).zip(cc[..body].chunks_exact(LANES)) {
        for j in 0..LANES {
            let v = f(a[j], b[j], cc[j]);
            for k in 0..K {
                acc[k][j] += v[k];
            }
        }
    }
    std::array::from_fn(|k| {
        let tail: f32 = (body..plane).map(|i| f(a[i], b[i], cc[i])[k]).sum();
        acc[k].iter().map(|&v| v as f64).sum::<f64>() + tail as f64
    })
}

impl BatchNormTrain {
    /// `y` (N, C, H, W) of `x` and, with `pool`, its 2x2 / stride-2 max
    /// pool, each plane pooled as soon as it is written.
    fn forward_slices(&self, x: &[f32], dims: &[usize], gamma: &[f32], beta: &[f32], pool: bool) -> Result<(Vec<f32>, Vec<f32>)> {
        let (n, c, plane) = nc_plane(dims)?;
        if gamma.len() != c || beta.len() != c {
            bail!("batch norm: {c} channels but {} gammas and {} betas", gamma.len(), beta.len());
        }
        let m = (n * plane) as f64;
        let (mean, var): (Vec<f64>, Vec<f64>) = (0..c)
            .into_par_iter()
            .map(|ch| {
                let [sum] = channel_sums(n, c, plane, ch, x, x, x, |x, _, _| [x]);
                let mean = sum / m;
                let mf = mean as f32;
                let [sq] = channel_sums(n, c, plane, ch, x, x, x, |x, _, _| [(x - mf) * (x - mf)]);
                let var = sq / m;
                (mean, var)
            })
            .unzip();
        let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        let y_plane = |k: usize, yk: &mut [MaybeUninit<f32>]| {
            let ch = k % c;
            let xk = &x[k * plane..(k + 1) * plane];
            let scale = (gamma[ch] as f64 * inv_std[ch]) as f32;
            let shift = (beta[ch] as f64 - mean[ch] * gamma[ch] as f64 * inv_std[ch]) as f32;
            if self.relu {
                yk.iter_mut().zip(xk).for_each(|(y, x)| _ = y.write((x * scale + shift).max(0.0)));
            } else {
                yk.iter_mut().zip(xk).for_each(|(y, x)| _ = y.write(x * scale + shift));
            }
        };
        let (y, pooled) = if pool {
            let (h, w) = (dims[2], dims[3]);
            let pp = (h / 2) * (w / 2);
            // SAFETY: every element of every plane of both is written:
            // `y_plane` writes its plane, which `pool2` then reads, and
            // `pool2` writes all of its own.
            unsafe {
                par_filled2((x.len(), n * c * pp), (plane, pp), |k, yk, pk| {
                    y_plane(k, yk);
                    pool::pool2(h, w, &*(yk as *const [MaybeUninit<f32>] as *const [f32]), pk);
                })
            }
        } else {
            // SAFETY: every element of every plane is written.
            (unsafe { par_filled(x.len(), plane, y_plane) }, Vec::new())
        };
        if let Ok(mut stats) = self.stats.lock() {
            *stats = Some(Stats { mean, var, inv_std });
        }
        Ok((y, pooled))
    }

    /// The training forward and the 2x2 / stride-2 max pool after it in one
    /// pass: `(y, pooled)`.
    pub(super) fn forward_pool2(&self, x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<(Tensor, Tensor)> {
        let dims = x.dims().to_vec();
        let &[n, c, h, w] = &dims[..] else { bail!("batch norm expects (N, C, H, W), got {dims:?}") };
        let (gamma, beta): (Vec<f32>, Vec<f32>) = (gamma.to_vec1()?, beta.to_vec1()?);
        let (y, pooled) = with_slice(x, |x| self.forward_slices(x, &dims, &gamma, &beta, true))?;
        let dev = x.device();
        Ok((Tensor::from_vec(y, (n, c, h, w), dev)?, Tensor::from_vec(pooled, (n, c, h / 2, w / 2), dev)?))
    }

    /// With x̂ the normalised input and M = N*H*W per channel:
    /// dβ = Σg, dγ = Σg·x̂, dx = γ/σ · (g − dβ/M − x̂·dγ/M). With `pooled`,
    /// `grad` is that of the 2x2 / stride-2 max pool of `res` (see
    /// [`Self::forward_pool2`]), whose backward is made a plane at a time.
    fn backward(&self, x: &Tensor, gamma: &Tensor, res: &Tensor, grad: &Tensor, pooled: bool) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let guard = self.stats.lock().map_err(|_| candle_core::Error::Msg("batch-norm statistics lock poisoned".into()))?;
        let Some(stats) = guard.as_ref() else { bail!("batch norm: backward before forward") };
        let (n, c, plane) = nc_plane(x.dims())?;
        let (h, w) = (x.dims()[2], x.dims()[3]);
        let pp = if pooled { (h / 2) * (w / 2) } else { plane };
        if grad.elem_count() != n * c * pp {
            bail!("batch norm: gradient of shape {:?} for an input of shape {:?}", grad.dims(), x.dims());
        }
        let gamma: Vec<f32> = gamma.to_vec1()?;
        let m = (n * plane) as f64;
        let relu = self.relu;
        let (dx, dgamma, dbeta) = with_slice(x, |x| {
            with_slice(grad, |g| with_slice(res, |y| {
                // The gradient reaching the normalisation: zero where the fused ReLU clipped.
                let masked = move |g: f32, y: f32| if relu && !(y > 0.0) { 0.0 } else { g };
                let hw = pooled.then_some((h, w));
                let (dbeta, dgamma): (Vec<f64>, Vec<f64>) = (0..c)
                    .into_par_iter()
                    .map(|ch| {
                        let mean = stats.mean[ch] as f32;
                        let sums = |g: f32, y: f32, x: f32| {
                            let g = masked(g, y);
                            [g, g * (x - mean)]
                        };
                        let [sg, sgx] = channel_sums_with(n, |img, plane_sums| {
                            let k = img * c + ch;
                            let range = k * plane..(k + 1) * plane;
                            grad_plane(g, y, k, plane, hw, |gk| plane_sums(gk, &y[range.clone()], &x[range.clone()]))
                        }, sums);
                        (sg, sgx * stats.inv_std[ch])
                    })
                    .unzip();
                // dx = scale * (g - dβ/M - x̂ dγ/M), expanded to k_g g - k_x x + k_0 per channel.
                let dx_plane = |k: usize, dk: &mut [MaybeUninit<f32>]| {
                    let ch = k % c;
                    let scale = gamma[ch] as f64 * stats.inv_std[ch];
                    let (mb, mg) = (dbeta[ch] / m, dgamma[ch] / m);
                    let k_x = scale * stats.inv_std[ch] * mg;
                    let (k_g, k_xf, k_0) = (scale as f32, k_x as f32, (k_x * stats.mean[ch] - scale * mb) as f32);
                    let range = k * plane..(k + 1) * plane;
                    grad_plane(g, y, k, plane, hw, |gk| {
                        for ((d, (&g, &y)), &x) in dk.iter_mut().zip(gk.iter().zip(&y[range.clone()])).zip(&x[range]) {
                            d.write(k_g * masked(g, y) - k_xf * x + k_0);
                        }
                    });
                };
                // SAFETY: `dx_plane` writes every element of its plane.
                let dx = unsafe { par_filled(x.len(), plane, dx_plane) };
                Ok((dx, dgamma, dbeta))
            }))
        })?;
        let to_f32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<_>>();
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(to_f32(dgamma), c, dev)?),
            Some(Tensor::from_vec(to_f32(dbeta), c, dev)?),
        ))
    }

    /// `(dx, dγ, dβ)` given the gradient of the 2x2 / stride-2 max pool of
    /// [`Self::forward_pool2`]'s `y`.
    pub(super) fn backward_pool2(&self, x: &Tensor, gamma: &Tensor, y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.backward(x, gamma, y, grad, true)
    }
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "fer-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (contiguous_slice::<f32>(s1, l1)?, contiguous_slice::<f32>(s2, l2)?, contiguous_slice::<f32>(s3, l3)?);
        let (y, _) = self.forward_slices(x, l1.dims(), gamma, beta, false)?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.backward(x, gamma, res, grad, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, input};
    use candle_core::Device;

    #[test]
    fn gradient_train_mode() {
        let bn = batch_norm2d(3, 0.99, 1e-3).unwrap();
        bn.gamma.set(&Tensor::new(&[1.5f32, -0.5, 2.0], &Device::Cpu).unwrap()).unwrap();
        bn.beta.set(&Tensor::new(&[0.1f32, 0.2, -0.3], &Device::Cpu).unwrap()).unwrap();
        for (shape, seed) in [([3, 3, 2, 2], 5), ([4, 3, 3, 5], 6), ([1, 3, 1, 4], 7)] {
            let x = input(&shape, seed);
            let vars = [x, bn.gamma.clone(), bn.beta.clone()];
            check(&vars, |v| bn.forward_t(v[0].as_tensor(), true), "batch_norm2d");
            check(&vars, |v| bn.forward_act(v[0].as_tensor(), true, true), "batch_norm2d + relu");
        }
    }

    #[test]
    fn gradient_eval_mode() {
        let bn = batch_norm2d(2, 0.9, 1e-3).unwrap();
        bn.running_var.set(&Tensor::new(&[0.5f32, 2.0], &Device::Cpu).unwrap()).unwrap();
        let x = input(&[2, 2, 3, 3], 6);
        // Eval mode detaches gamma/beta (no graph at inference), so only x is checked.
        check(&[x], |v| bn.forward_t(v[0].as_tensor(), false), "batch_norm2d eval");
    }

    #[test]
    fn running_stats_follow_keras_momentum() {
        let bn = batch_norm2d(1, 0.9, 1e-3).unwrap();
        let x = Tensor::new(&[[[[1f32, 2.], [3., 6.]]]], &Device::Cpu).unwrap();
        let y: Vec<f32> = bn.forward_t(&x, true).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let (mean, var) = (3.0f32, 3.5f32);
        for (yi, xi) in y.iter().zip([1f32, 2., 3., 6.]) {
            assert!((yi - (xi - mean) / (var + 1e-3).sqrt()).abs() < 1e-5);
        }
        let rm: Vec<f32> = bn.running_mean.as_tensor().to_vec1().unwrap();
        let rv: Vec<f32> = bn.running_var.as_tensor().to_vec1().unwrap();
        assert!((rm[0] - 0.1 * mean).abs() < 1e-6, "{rm:?}");
        assert!((rv[0] - (0.9 + 0.1 * var)).abs() < 1e-6, "{rv:?}");
        // Eval mode leaves the statistics alone.
        bn.forward_t(&x, false).unwrap();
        assert_eq!(bn.running_mean.as_tensor().to_vec1::<f32>().unwrap(), rm);
    }
}
