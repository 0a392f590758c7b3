//! conv2d + bias + optional ReLU as one candle op.
//!
//! Composed from stock candle ops, the bias add and the ReLU cost more than
//! the convolution on the big 48x48 layers: each is a single-threaded pass
//! over tens of MB forward, and their backward adds a mask, a multiply, a
//! broadcast-sum for the bias gradient and autograd's gradient accumulation.
//! Here the bias and the ReLU are applied in place on the convolution's
//! output (one parallel pass), and the backward masks the incoming gradient
//! once, sums it per channel for the bias and feeds it to the fast conv
//! gradients. On Winograd convolutions the backward is one fused pass
//! ([`winograd::conv2d_bwd_fused`]), which transforms the input again
//! rather than reading tiles kept by the forward (see [`keep_tiles`]).

use std::any::Any;
use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::conv::{choose_algo, conv2d_fwd, input_and_weight_grads, Algo, Geom};
use super::gemm::{contiguous_slice, recycle, Elem};
use super::{direct, winograd};

/// Where a training forward leaves something for its backward (which
/// takes it); `None` where nothing is left.
type Slot = Option<Mutex<Option<Box<dyn Any + Send>>>>;

/// `y = act(conv(x, w) + b)`; the bias is optional (`CustomOp2` without it).
pub struct ConvBiasAct {
    pub pad: [usize; 4],
    pub stride: usize,
    pub relu: bool,
    /// Training with [`keep_tiles`]: the Winograd input tiles of the
    /// forward, kept for the weight gradient (taken, so freed, by the backward).
    kept: Slot,
    /// Training: the Winograd forward's transformed filters, for the
    /// backward's input gradient (taken by it), which then need not
    /// transform the same weights again.
    filters: Slot,
    /// Whether the backward computes the input gradient; `None`: where
    /// autograd tracks the input. (A step run on [`crate::layers::Saved`]
    /// has no autograd graph to ask.)
    want_dx: Option<bool>,
}

/// Whether a training forward keeps its Winograd input tiles `V` for the
/// weight gradient. It does not: the tiles of a whole batch (113 MB for
/// seed4x4's 48x48 conv) go out to memory and come back, while the
/// backward's own transform of the input, a group at a time, stays in the
/// caches and costs less than that traffic. `phase_profile`, interleaved
/// runs, ms per step of 64 images, kept / not kept: seed4x4 198-203 /
/// 186-193, seed3x3 141-144 / 140-142; its 48x48 conv forward 30-32 / 21-24
/// and backward 52-53 / 53-56 (seed4x4), 22-24 / 17-18 and 35-37 / 35-36
/// (seed3x3). Same bits either way. `FER_KEEP_TILES=1` keeps them (for A/B runs).
fn keep_tiles() -> bool {
    static KEEP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KEEP.get_or_init(|| std::env::var("FER_KEEP_TILES").is_ok_and(|v| v == "1"))
}

impl ConvBiasAct {
    /// The op of a training forward run outside autograd (see [`Self::want_dx`]).
    pub fn for_training(pad: [usize; 4], stride: usize, relu: bool, want_dx: bool) -> Self {
        let slot = || Mutex::new(None);
        ConvBiasAct { pad, stride, relu, kept: keep_tiles().then(slot), filters: want_dx.then(slot), want_dx: Some(want_dx) }
    }

    /// An inference forward's op: keeps nothing for a backward.
    pub fn for_inference(pad: [usize; 4], stride: usize, relu: bool) -> Self {
        ConvBiasAct { pad, stride, relu, kept: None, filters: None, want_dx: None }
    }

    /// `act(conv(x, w) + b)` with no autograd graph.
    pub fn forward_tensors(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        match b {
            Some(b) => x.apply_op3_no_bwd(&w, &b.contiguous()?, self),
            None => x.apply_op2_no_bwd(&w, self),
        }
    }

    /// The 2x2 / stride-2 unpadded max pool of [`Self::forward_tensors`]'s
    /// output, in one pass with it ([`winograd::conv2d_fwd_with`]; the
    /// output itself is never written out): `(pooled, codes)`, the pool's
    /// codes (all a training step's backward needs of the output) only when
    /// `want_codes`; `None` where the convolution does not run on Winograd,
    /// or its output is too small to pool (the pool op then says so).
    pub fn forward_pool2_tensors(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, want_codes: bool) -> Result<Option<(Tensor, Option<Vec<u8>>)>> {
        let g = Geom::new(x.dims(), w.dims(), self.pad, self.stride)?;
        let Algo::Winograd(m) = choose_algo(&g) else { return Ok(None) };
        if g.oh < 2 || g.ow < 2 {
            return Ok(None);
        }
        let (x, w, b) = (x.contiguous()?, w.contiguous()?, b.map(|b| b.contiguous()).transpose()?);
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let bias = b.as_ref().map(|b| b.storage_and_layout());
        let (Storage::Cpu(xs), Storage::Cpu(ws)) = (&*xs, &*ws) else { bail!("fer-conv2d-bias-act: expected CPU tensors") };
        let bias = match &bias {
            Some((bs, bl)) => match &**bs {
                Storage::Cpu(bs) => Some((bs, *bl)),
                _ => bail!("fer-conv2d-bias-act: expected CPU tensors"),
            },
            None => None,
        };
        fn run<T: Elem>(
            op: &ConvBiasAct,
            g: &Geom,
            m: usize,
            want_codes: bool,
            [x, w]: [(&CpuStorage, &Layout); 2],
            b: Option<(&CpuStorage, &Layout)>,
        ) -> Result<(Tensor, Option<Vec<u8>>)> {
            let epi = op.epilogue(g, b.map(|(s, l)| contiguous_slice::<T>(s, l)).transpose()?)?;
            let (x, w) = (contiguous_slice::<T>(x.0, x.1)?, contiguous_slice::<T>(w.0, w.1)?);
            let pool = if want_codes { winograd::Pool::Codes } else { winograd::Pool::Only };
            let winograd::Forward { pooled, codes, kept, u, .. } = winograd::conv2d_fwd_with(g, m, x, w, op.kept.is_some(), &epi, pool);
            op.keep(kept, u);
            let pooled = Tensor::from_vec(pooled, (g.n, g.o, g.oh / 2, g.ow / 2), &candle_core::Device::Cpu)?;
            Ok((pooled, want_codes.then_some(codes)))
        }
        let args = [(xs, xl), (ws, wl)];
        match (xs, ws) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => run::<f32>(self, &g, m, want_codes, args, bias).map(Some),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => run::<f64>(self, &g, m, want_codes, args, bias).map(Some),
            _ => bail!("fer-conv2d-bias-act: x, w and b must all be f32 or all f64"),
        }
    }

    /// `(dx, dw, db)` of [`Self::forward_tensors`]'s `y` given its gradient.
    pub fn backward_tensors(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, y: &Tensor, grad: &Tensor) -> Result<Grads3> {
        match b {
            Some(b) => CustomOp3::bwd(self, x, w, b, y, grad),
            None => CustomOp2::bwd(self, x, w, y, grad).map(|(dx, dw)| (dx, dw, None)),
        }
    }

    /// `(dx, dw, db)` given `grad`, the gradient of the 2x2 / stride-2
    /// unpadded max pool [`Self::forward_pool2_tensors`] made, from its
    /// output `pooled` and `codes` (see [`winograd::OutGrad::Pool2`]);
    /// `None` where the convolution does not run on Winograd.
    pub fn backward_through_pool2(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, pooled: &Tensor, codes: &[u8], grad: &Tensor) -> Result<Option<Grads3>> {
        if grad.dims() != pooled.dims() || codes.len() != pooled.elem_count() {
            bail!("conv2d backward: pooled gradient of shape {:?} for a pool of shape {:?} ({} codes)", grad.dims(), pooled.dims(), codes.len());
        }
        self.winograd_bwd(x, w, b, pooled, grad, Some(codes))
    }

    fn wants_dx(&self, x: &Tensor) -> bool {
        self.want_dx.unwrap_or_else(|| x.track_op())
    }

    /// The bias (checked against the filters) and ReLU the output goes through.
    fn epilogue<'b, T: Elem>(&self, g: &Geom, bias: Option<&'b [T]>) -> Result<winograd::Epilogue<'b, T>> {
        if let Some(b) = bias {
            if b.len() != g.o {
                bail!("conv2d: {} filters but {} biases", g.o, b.len());
            }
        }
        Ok(winograd::Epilogue { bias, relu: self.relu })
    }

    /// Keeps a training forward's Winograd input tiles for the backward.
    /// Keeps what a Winograd forward made that its backward can use: the
    /// input tiles (with [`keep_tiles`]) and the transformed filters.
    fn keep<T: Elem>(&self, v: Option<Vec<T>>, u: Vec<T>) {
        let put = |slot: &Slot, v: Option<Vec<T>>| {
            if let Some(slot) = slot {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = v.map(|v| Box::new(v) as Box<dyn Any + Send>);
            }
        };
        put(&self.kept, v);
        put(&self.filters, Some(u));
    }

    fn forward<T: Elem>(&self, x: &[T], xd: &[usize], w: &[T], wd: &[usize], bias: Option<&[T]>) -> Result<(Vec<T>, Shape)> {
        let g = Geom::new(xd, wd, self.pad, self.stride)?;
        let epi = self.epilogue(&g, bias)?;
        let y = match choose_algo(&g) {
            Algo::Winograd(m) => {
                let out = winograd::conv2d_fwd_with(&g, m, x, w, self.kept.is_some(), &epi, winograd::Pool::No);
                self.keep(out.kept, out.u);
                out.y
            }
            Algo::Direct => direct::conv2d_fwd(&g, x, w, &epi),
            Algo::Im2col => {
                let mut y = conv2d_fwd::<T>(&g, x, w);
                if g.p() > 0 {
                    y.par_chunks_mut(g.p()).enumerate().for_each(|(k, yk)| epi.apply(k % g.o, yk));
                }
                y
            }
        };
        Ok((y, Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn forward_storage(&self, x: (&CpuStorage, &Layout), w: (&CpuStorage, &Layout), b: Option<(&CpuStorage, &Layout)>) -> Result<(CpuStorage, Shape)> {
        let (xd, wd) = (x.1.dims(), w.1.dims());
        match (x.0, w.0) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let bias = b.map(|(s, l)| contiguous_slice::<f32>(s, l)).transpose()?;
                let (y, shape) = self.forward(contiguous_slice(x.0, x.1)?, xd, contiguous_slice(w.0, w.1)?, wd, bias)?;
                Ok((CpuStorage::F32(y), shape))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let bias = b.map(|(s, l)| contiguous_slice::<f64>(s, l)).transpose()?;
                let (y, shape) = self.forward(contiguous_slice(x.0, x.1)?, xd, contiguous_slice(w.0, w.1)?, wd, bias)?;
                Ok((CpuStorage::F64(y), shape))
            }
            _ => bail!("fer-conv2d-bias-act: x, w and b must all be f32 or all f64"),
        }
    }

    /// The gradient with respect to the pre-activation: `grad` where the
    /// output is positive (ReLU), else `grad` itself.
    fn masked_grad(&self, res: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let grad = grad.contiguous()?;
        if !self.relu {
            return Ok(grad);
        }
        res.contiguous()?.apply_op2_no_bwd(&grad, &ReluMask)
    }

    /// The fused Winograd backward ([`winograd::conv2d_bwd_fused`]), or
    /// `None` where the convolution does not run on Winograd. With `codes`,
    /// `res` is the 2x2 / stride-2 max pool of the output and `grad` its
    /// gradient; else `res` is the output.
    fn winograd_bwd(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, res: &Tensor, grad: &Tensor, codes: Option<&[u8]>) -> Result<Option<Grads3>> {
        let g = Geom::new(x.dims(), w.dims(), self.pad, self.stride)?;
        let Algo::Winograd(m) = choose_algo(&g) else { return Ok(None) };
        let want = winograd::Wanted { dx: self.wants_dx(x), dw: w.track_op(), db: b.is_some_and(|b| b.track_op()) };
        let take = |slot: &Slot| slot.as_ref().and_then(|k| k.lock().unwrap_or_else(|e| e.into_inner()).take());
        let (kept, filters) = (take(&self.kept), take(&self.filters));
        let (x, w, res, grad) = (x.contiguous()?, w.contiguous()?, res.contiguous()?, grad.contiguous()?);
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (ys, yl) = res.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (Storage::Cpu(xs), Storage::Cpu(ws), Storage::Cpu(ys), Storage::Cpu(gs)) = (&*xs, &*ws, &*ys, &*gs) else {
            bail!("fer-conv2d-bias-act: expected CPU tensors")
        };
        #[allow(clippy::too_many_arguments)]
        fn run<T: Elem>(
            op: &ConvBiasAct,
            g: &Geom,
            m: usize,
            want: winograd::Wanted,
            kept: Option<Box<dyn Any + Send>>,
            filters: Option<Box<dyn Any + Send>>,
            codes: Option<&[u8]>,
            [x, w, y, dy]: [(&CpuStorage, &Layout); 4],
        ) -> Result<Grads3> {
            let kept: Option<Vec<T>> = kept.and_then(|k| k.downcast::<Vec<T>>().ok()).map(|k| *k);
            let u: Option<Vec<T>> = filters.and_then(|u| u.downcast::<Vec<T>>().ok()).map(|u| *u);
            let (y, dy) = (contiguous_slice::<T>(y.0, y.1)?, contiguous_slice::<T>(dy.0, dy.1)?);
            let grad = match (codes, op.relu) {
                (Some(codes), relu) => winograd::OutGrad::Pool2 { pooled: y, codes, dp: dy, relu },
                (None, true) => winograd::OutGrad::Relu { y, dy },
                (None, false) => winograd::OutGrad::Plain(dy),
            };
            let (dx, dw, db) =
                winograd::conv2d_bwd_fused(g, m, contiguous_slice::<T>(x.0, x.1)?, kept.as_deref(), contiguous_slice::<T>(w.0, w.1)?, u.as_deref(), grad, want);
            if let Some(k) = kept {
                recycle(k);
            }
            let dev = candle_core::Device::Cpu;
            let tensor = |v: Option<Vec<T>>, shape: &[usize]| v.map(|v| Tensor::from_vec(v, shape, &dev)).transpose();
            Ok((tensor(dx, &[g.n, g.c, g.h, g.w])?, tensor(dw, &[g.o, g.c, g.kh, g.kw])?, tensor(db, &[g.o])?))
        }
        let args = [(xs, xl), (ws, wl), (ys, yl), (gs, gl)];
        match xs {
            CpuStorage::F32(_) => run::<f32>(self, &g, m, want, kept, filters, codes, args).map(Some),
            CpuStorage::F64(_) => run::<f64>(self, &g, m, want, kept, filters, codes, args).map(Some),
            _ => bail!("fer-conv2d-bias-act: expected f32 or f64"),
        }
    }

    /// The direct path's backward ([`direct::conv2d_bwd_weight`] masks the
    /// gradient and sums the bias on the fly, with no masked copy of the
    /// gradient), or `None` where the convolution is not direct.
    fn direct_bwd(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, res: &Tensor, grad: &Tensor) -> Result<Option<Grads3>> {
        let g = Geom::new(x.dims(), w.dims(), self.pad, self.stride)?;
        if choose_algo(&g) != Algo::Direct {
            return Ok(None);
        }
        let dx = if self.wants_dx(x) {
            let gm = self.masked_grad(res, grad)?;
            input_and_weight_grads(x, &w.detach(), &gm, self.pad, self.stride, true)?.0
        } else {
            None
        };
        let want_db = b.is_some_and(|b| b.track_op());
        if !w.track_op() && !want_db {
            return Ok(Some((dx, None, None)));
        }
        let (x, res, grad) = (x.contiguous()?, res.contiguous()?, grad.contiguous()?);
        let (xs, xl) = x.storage_and_layout();
        let (ys, yl) = res.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (Storage::Cpu(xs), Storage::Cpu(ys), Storage::Cpu(gs)) = (&*xs, &*ys, &*gs) else {
            bail!("fer-conv2d-bias-act: expected CPU tensors")
        };
        fn run<T: Elem>(op: &ConvBiasAct, g: &Geom, want_db: bool, [x, y, dy]: [(&CpuStorage, &Layout); 3]) -> Result<(Tensor, Option<Tensor>)> {
            let relu_out = if op.relu { Some(contiguous_slice::<T>(y.0, y.1)?) } else { None };
            let (dw, db) = direct::conv2d_bwd_weight(g, contiguous_slice::<T>(x.0, x.1)?, contiguous_slice::<T>(dy.0, dy.1)?, relu_out, want_db);
            let dev = candle_core::Device::Cpu;
            Ok((Tensor::from_vec(dw, (g.o, g.c, g.kh, g.kw), &dev)?, db.map(|db| Tensor::from_vec(db, g.o, &dev)).transpose()?))
        }
        let args = [(xs, xl), (ys, yl), (gs, gl)];
        let (dw, db) = match xs {
            CpuStorage::F32(_) => run::<f32>(self, &g, want_db, args)?,
            CpuStorage::F64(_) => run::<f64>(self, &g, want_db, args)?,
            _ => bail!("fer-conv2d-bias-act: expected f32 or f64"),
        };
        Ok(Some((dx, w.track_op().then_some(dw), db)))
    }
}

/// `(dx, dw, db)`, each where wanted.
pub type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

impl CustomOp2 for ConvBiasAct {
    fn name(&self) -> &'static str {
        "fer-conv2d-act"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward_storage((s1, l1), (s2, l2), None)
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if let Some((dx, dw, _)) = self.winograd_bwd(x, w, None, res, grad, None)? {
            return Ok((dx, dw));
        }
        if let Some((dx, dw, _)) = self.direct_bwd(x, w, None, res, grad)? {
            return Ok((dx, dw));
        }
        let gm = self.masked_grad(res, grad)?;
        input_and_weight_grads(x, w, &gm, self.pad, self.stride, self.wants_dx(x))
    }
}

impl CustomOp3 for ConvBiasAct {
    fn name(&self) -> &'static str {
        "fer-conv2d-bias-act"
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
        self.forward_storage((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if let Some(grads) = self.winograd_bwd(x, w, Some(b), res, grad, None)? {
            return Ok(grads);
        }
        if let Some(grads) = self.direct_bwd(x, w, Some(b), res, grad)? {
            return Ok(grads);
        }
        let gm = self.masked_grad(res, grad)?;
        let db = if b.track_op() { Some(gm.apply_op1_no_bwd(&ChannelSum)?) } else { None };
        let (dx, dw) = input_and_weight_grads(x, w, &gm, self.pad, self.stride, self.wants_dx(x))?;
        Ok((dx, dw, db))
    }
}

/// `(y, g) -> g * (y > 0)`.
struct ReluMask;

/// The gradient through a ReLU whose output is `y`.
#[inline(always)]
pub(super) fn relu_grad<T: Elem>(y: T, g: T) -> T {
    if y > T::ZERO {
        g
    } else {
        T::ZERO
    }
}

fn relu_mask<T: Elem>(y: &[T], g: &[T]) -> Vec<T> {
    let mut out = vec![T::ZERO; g.len()];
    const CHUNK: usize = 1 << 14;
    out.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK).zip(g.par_chunks(CHUNK))).for_each(|(o, (y, g))| {
        for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
            *o = relu_grad(y, g);
        }
    });
    out
}

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "fer-relu-mask"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            bail!("relu mask: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(relu_mask::<f32>(contiguous_slice(s1, l1)?, contiguous_slice(s2, l2)?)),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(relu_mask::<f64>(contiguous_slice(s1, l1)?, contiguous_slice(s2, l2)?)),
            _ => bail!("relu mask: dtype mismatch"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// `(N, C, H, W) -> (C)`: per-channel sums, each in a fixed order (image by
/// image), so the result does not depend on the thread count.
struct ChannelSum;

/// The sum of one plane, in order (the fused Winograd backward sums its
/// bias gradient with this too, so both give the same bits).
#[inline(always)]
pub(super) fn plane_sum<T: Elem>(plane: &[T]) -> T {
    let mut s = T::ZERO;
    for &v in plane {
        s += v;
    }
    s
}

fn channel_sum<T: Elem>(g: &[T], n: usize, c: usize, plane: usize) -> Vec<T> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut acc = T::ZERO;
            for b in 0..n {
                let start = (b * c + ch) * plane;
                acc += plane_sum(&g[start..start + plane]);
            }
            acc
        })
        .collect()
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "fer-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, c, h, w] = l.dims() else { bail!("channel sum: expected (N, C, H, W), got {:?}", l.dims()) };
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(channel_sum::<f32>(contiguous_slice(s, l)?, n, c, h * w)),
            CpuStorage::F64(_) => CpuStorage::F64(channel_sum::<f64>(contiguous_slice(s, l)?, n, c, h * w)),
            _ => bail!("channel sum: expected f32 or f64"),
        };
        Ok((out, Shape::from(c)))
    }
}

/// `act(conv(x, w) + b)` with autograd: `x (N, C, H, W)`, `w (O, C, KH, KW)`,
/// `b (O)`.
pub fn conv2d_bias_act(x: &Tensor, w: &Tensor, b: Option<&Tensor>, padding: [usize; 4], stride: usize, relu: bool) -> Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    // Only a training forward (weights tracked by autograd) may keep tiles.
    let kept = (w.track_op() && keep_tiles()).then(|| Mutex::new(None));
    let filters = w.track_op().then(|| Mutex::new(None));
    let op = ConvBiasAct { pad: padding, stride, relu, kept, filters, want_dx: None };
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}
