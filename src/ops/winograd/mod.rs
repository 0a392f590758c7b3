//! Winograd F(m x m, r x r) for stride-1 square-kernel convolutions (any
//! zero padding): [`super::conv::choose_algo`] picks F(4x4, 3x3) and
//! F(2x2, 3x3) for 3x3 kernels and F(3x3, 4x4) for 4x4 ones, all with
//! hand-written transforms ([`f23`], and [`alpha`] for those with 6x6
//! tiles, which also has F(4x4, 4x4)'s 7x7 ones); the general transforms
//! below cover any other F(m, r).
//!
//! Forward: `Y_tile = A^T [ (G g G^T) ⊙ (B^T d B) ] A` over `α x α` input
//! tiles (`α = m + r - 1`) at stride `m`, done as `α²` GEMMs
//! `M[ξ] (O, T) = U[ξ] (O, C) * V[ξ] (C, T)`.
//! The backward is the exact adjoint of that computation (not a separate
//! Winograd of the transposed convolution):
//! * `dM[ξ] = A dY A^T` per tile,
//! * input gradient: `dV[ξ] = U[ξ]^T dM[ξ]`, then `dd = B dV B^T` scattered
//!   back (tiles overlap by `r - 1`),
//! * weight gradient: `dU[ξ] = sum_t dM[ξ] V[ξ]^T`, then `dg = G^T dU G`.
//!
//! The matrices come from Toom-Cook interpolation at the points
//! 0, 1, -1, 2, -2, 1/2, ... and infinity; `B^T` is solved for numerically
//! so any (m, r) works. The per-tile transforms run on whole tile rows, with
//! each row split into its `m` phases (`x[m*q + p]`), so every inner loop is
//! a contiguous, vectorisable multiply-add.
//!
//! Images are processed in groups (so GEMMs have enough columns even for
//! small maps), in parallel over groups, a group's tiles ordered by tile
//! row, then image ([`Tiles::row_start`]); with the hand-written kernels a
//! large map is done in bands of tile rows so that a band's `V` and `M`
//! stay in L2. The weight gradient is reduced in a fixed order (independent
//! of the thread count).

use std::mem::MaybeUninit;
use std::sync::OnceLock;

#[macro_use]
mod streams;
mod alpha;
mod f23;
mod f34;
mod f43;
mod f44;

use super::conv::{chunks_each, inner_par, sum_partials, Geom};
use super::conv_bias_act::{plane_sum, relu_grad};
use rayon::prelude::*;

use super::gemm::{gemm, pooled as pooled_buffer, zero_init, zeros, Elem, Mat, Parallelism};
use super::pool;
use super::simd;
use super::small_gemm::gemm_rows;

/// Tiles per GEMM we aim for when grouping images or cutting bands, so a
/// group's `V` and `M` stay near the core's caches (at 48 channels each is
/// about 1 MB, the size of this EPYC's L2, yet half-size bands measured
/// slower, below). Measured on seed3x3 training
/// (interleaved pairs): 576 tiles without bands 217 img/s, 144 without
/// bands 215-233, 144 with bands 226 ("same" pooling: 40.3 -> 42.8).
/// Rechecked for the 6x6 tiles on an AMD EPYC with 1 MB of L2 per core
/// (`FER_WINO_TILES=72|144|288|576 wino_ab`, one thread, 64 images,
/// forward ms): F(3x3, 4x4) at 48x48 58 / 53 / 65 / 78, F(4x4, 3x3) at
/// 46x46 38 / 35 / 36 / 41.
const TARGET_TILES: usize = 144;

/// [`TARGET_TILES`], or `FER_WINO_TILES` (read once, for A/B runs).
fn target_tiles() -> usize {
    static TILES: OnceLock<usize> = OnceLock::new();
    *TILES.get_or_init(|| std::env::var("FER_WINO_TILES").ok().and_then(|v| v.parse().ok()).filter(|&t| t > 0).unwrap_or(TARGET_TILES))
}
/// Output channels per parallel block of the filter transforms.
const FILTER_BLOCK: usize = 8;
/// Max number of weight-gradient partial sums.
const MAX_PARTIALS: usize = 16;
/// Largest tile we build matrices for (`m + r - 1`).
const MAX_ALPHA: usize = 8;

/// What the output transform does on the way out: `y = relu?(v + bias)`,
/// the same arithmetic as `conv_bias_act`'s separate pass (so results do
/// not change), without a second pass over the output.
#[derive(Clone, Copy)]
pub struct Epilogue<'a, T> {
    pub bias: Option<&'a [T]>,
    pub relu: bool,
}

impl<T: Elem> Epilogue<'_, T> {
    pub const NONE: Epilogue<'static, T> = Epilogue { bias: None, relu: false };

    /// `relu?(v + b)`; `!(t > 0)` also zeroes NaN, as a max(t, 0) would
    /// not (NaN inputs are rejected before training, so only overflow gets
    /// here).
    #[inline(always)]
    pub(crate) fn map(&self, b: T, v: T) -> T {
        let t = v + b;
        if self.relu && !(t > T::ZERO) {
            T::ZERO
        } else {
            t
        }
    }

    /// `dst = epilogue(src)` for a row of output channel `o`.
    #[inline(always)]
    fn write(&self, o: usize, src: &[T], dst: &mut [T]) {
        if self.bias.is_none() && !self.relu {
            dst.copy_from_slice(src);
            return;
        }
        let b = self.bias.map_or(T::ZERO, |b| b[o]);
        dst.iter_mut().zip(src).for_each(|(d, &v)| *d = self.map(b, v));
    }

    /// The epilogue in place on a row of output channel `o`.
    #[inline(always)]
    pub fn apply(&self, o: usize, row: &mut [T]) {
        if self.bias.is_none() && !self.relu {
            return;
        }
        let b = self.bias.map_or(T::ZERO, |b| b[o]);
        row.iter_mut().for_each(|d| *d = self.map(b, *d));
    }
}

/// Nonzero entries of one row (or column) of a transform matrix.
type Sparse = Vec<(usize, f64)>;

/// The transform matrices of one F(m, r).
pub struct Transform {
    pub m: usize,
    pub r: usize,
    pub alpha: usize,
    /// `G` (α, r), dense.
    g: Vec<f64>,
    /// Rows of `A^T` (m of them, over α).
    at_rows: Vec<Sparse>,
    /// Columns of `A^T` (α of them, over m).
    at_cols: Vec<Sparse>,
    /// Rows of `B^T` (α, over α).
    bt_rows: Vec<Sparse>,
    /// Columns of `B^T` (α, over α).
    bt_cols: Vec<Sparse>,
}

fn sparse_rows(mat: &[f64], rows: usize, cols: usize) -> Vec<Sparse> {
    (0..rows).map(|i| (0..cols).map(|j| (j, mat[i * cols + j])).filter(|&(_, v)| v.abs() > 1e-12).collect()).collect()
}

fn sparse_cols(mat: &[f64], rows: usize, cols: usize) -> Vec<Sparse> {
    (0..cols).map(|j| (0..rows).map(|i| (i, mat[i * cols + j])).filter(|&(_, v)| v.abs() > 1e-12).collect()).collect()
}

/// Solves the square system `a z = b` (Gaussian elimination, partial pivoting).
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Vec<f64> {
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs())).unwrap();
        for k in 0..n {
            a.swap(col * n + k, piv * n + k);
        }
        b.swap(col, piv);
        for row in col + 1..n {
            let f = a[row * n + col] / a[col * n + col];
            for k in col..n {
                a[row * n + k] -= f * a[col * n + k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut z = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row * n + k] * z[k]).sum();
        z[row] = (b[row] - s) / a[row * n + row];
    }
    z
}

impl Transform {
    fn new(m: usize, r: usize) -> Self {
        let alpha = m + r - 1;
        assert!(m >= 1 && r >= 1 && alpha <= MAX_ALPHA, "F({m}, {r}) not supported");
        let all: [f64; 7] = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5];
        let pts = &all[..alpha - 1];
        // A^T (m, α): Vandermonde columns at the points, then infinity.
        let mut at = vec![0.0; m * alpha];
        for i in 0..m {
            for (k, p) in pts.iter().enumerate() {
                at[i * alpha + k] = p.powi(i as i32);
            }
        }
        at[(m - 1) * alpha + alpha - 1] = 1.0;
        // G (α, r): p^j / prod_{l != k} (p_k - p_l), then infinity.
        let mut g = vec![0.0; alpha * r];
        for (k, p) in pts.iter().enumerate() {
            let f: f64 = pts.iter().enumerate().filter(|&(l, _)| l != k).map(|(_, q)| p - q).product();
            for j in 0..r {
                g[k * r + j] = p.powi(j as i32) / f;
            }
        }
        g[(alpha - 1) * r + r - 1] = 1.0;
        // B^T from the requirement sum_k AT[i][k] G[k][j] BT[k][l] = [l == i + j],
        // column by column, by least squares (the system is consistent).
        let mut bt = vec![0.0; alpha * alpha];
        for l in 0..alpha {
            let e = |i: usize, j: usize, k: usize| at[i * alpha + k] * g[k * r + j];
            let mut ata = vec![0.0; alpha * alpha];
            let mut atb = vec![0.0; alpha];
            for i in 0..m {
                for j in 0..r {
                    let target = if i + j == l { 1.0 } else { 0.0 };
                    for k in 0..alpha {
                        atb[k] += e(i, j, k) * target;
                        for k2 in 0..alpha {
                            ata[k * alpha + k2] += e(i, j, k) * e(i, j, k2);
                        }
                    }
                }
            }
            let z = solve(ata, atb, alpha);
            for k in 0..alpha {
                bt[k * alpha + l] = if z[k].abs() < 1e-10 { 0.0 } else { z[k] };
            }
        }
        Transform {
            m,
            r,
            alpha,
            g,
            at_rows: sparse_rows(&at, m, alpha),
            at_cols: sparse_cols(&at, m, alpha),
            bt_rows: sparse_rows(&bt, alpha, alpha),
            bt_cols: sparse_cols(&bt, alpha, alpha),
        }
    }

    fn planes(&self) -> usize {
        self.alpha * self.alpha
    }

    /// Largest `|sum_k AT[i][k] G[k][j] BT[k][l] - [l == i + j]|` (0 up to rounding).
    pub fn identity_error(&self) -> f64 {
        let (m, r, a) = (self.m, self.r, self.alpha);
        let dense = |rows: &[Sparse], n: usize| {
            let mut d = vec![0.0; rows.len() * n];
            for (i, row) in rows.iter().enumerate() {
                for &(j, v) in row {
                    d[i * n + j] = v;
                }
            }
            d
        };
        let (at, bt) = (dense(&self.at_rows, a), dense(&self.bt_rows, a));
        let mut worst: f64 = 0.0;
        for i in 0..m {
            for j in 0..r {
                for l in 0..a {
                    let s: f64 = (0..a).map(|k| at[i * a + k] * self.g[k * r + j] * bt[k * a + l]).sum();
                    worst = worst.max((s - if l == i + j { 1.0 } else { 0.0 }).abs());
                }
            }
        }
        worst
    }
}

/// The cached transform for F(m, r).
pub fn transform(m: usize, r: usize) -> &'static Transform {
    static CACHE: OnceLock<Vec<OnceLock<Transform>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| (0..MAX_ALPHA * MAX_ALPHA).map(|_| OnceLock::new()).collect());
    assert!(m < MAX_ALPHA && r < MAX_ALPHA);
    cache[m * MAX_ALPHA + r].get_or_init(|| Transform::new(m, r))
}

/// What `FER_WINOGRAD` asks for, for A/B runs: the general transforms
/// only (`general`), or F(2x2, 3x3) for every Winograd 3x3 layer (`f23`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EnvMode {
    Default,
    General,
    F23,
}

/// `FER_WINOGRAD`, read once.
pub fn env_mode() -> EnvMode {
    static MODE: OnceLock<EnvMode> = OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("FER_WINOGRAD").as_deref() {
        Ok("general") => EnvMode::General,
        Ok("f23") => EnvMode::F23,
        _ => EnvMode::Default,
    })
}

/// Which hand-written transforms a F(m, r) has.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fast {
    F23,
    F43,
    F34,
    F44,
}

/// The transforms of one F(m, r): the hand-written ones of [`f23`] and
/// [`alpha`] for F(2x2, 3x3), F(4x4, 3x3), F(3x3, 4x4) and F(4x4, 4x4)
/// (`FER_WINOGRAD=general` turns them off, for A/B checks and so the tests
/// can cover both), the general ones (run under `simd::dispatch`) otherwise.
#[derive(Clone, Copy)]
struct Kernels {
    tf: &'static Transform,
    fast: Option<Fast>,
}

/// Calls the hand-written transform of `$k` if it has one, else the general one.
macro_rules! pick {
    ($k:expr, $name:ident($g:expr, $($arg:expr),*)) => {
        match $k.fast {
            Some(Fast::F23) => f23::$name($g, $($arg),*),
            Some(Fast::F43) => simd::dispatch(#[inline(always)] || alpha::$name::<f43::F43, _>($g, $($arg),*)),
            Some(Fast::F34) => simd::dispatch(#[inline(always)] || alpha::$name::<f34::F34, _>($g, $($arg),*)),
            Some(Fast::F44) => simd::dispatch(#[inline(always)] || alpha::$name::<f44::F44, _>($g, $($arg),*)),
            None => simd::dispatch(#[inline(always)] || $name($g, $k.tf, $($arg),*)),
        }
    };
}

impl Kernels {
    fn new(m: usize, r: usize) -> Self {
        let general = env_mode() == EnvMode::General;
        let fast = match (m, r) {
            _ if general => None,
            (2, 3) => Some(Fast::F23),
            (4, 3) => Some(Fast::F43),
            (3, 4) => Some(Fast::F34),
            (4, 4) => Some(Fast::F44),
            _ => None,
        };
        Kernels { tf: transform(m, r), fast }
    }

    fn tiles(self, g: &Geom) -> Tiles {
        Tiles::new(g, self.tf, self.fast.is_some())
    }

    /// `U[ξ][o][c]`, in parallel over blocks of output channels: every
    /// `(o, c)` pair is transformed on its own, so the blocks give the same
    /// bits as one pass, and the pass (once or twice a layer per step) no
    /// longer idles all threads but one.
    fn filter<T: Elem>(self, g: &Geom, w: &[T]) -> Vec<T> {
        let (o_n, c_n, np) = (g.o, g.c, self.tf.planes());
        if o_n <= FILTER_BLOCK {
            return self.filter_block(g, w);
        }
        let per = c_n * g.kh * g.kw;
        let blocks: Vec<Vec<T>> = (0..o_n.div_ceil(FILTER_BLOCK))
            .into_par_iter()
            .map(|b| {
                let (o0, o1) = (b * FILTER_BLOCK, ((b + 1) * FILTER_BLOCK).min(o_n));
                self.filter_block(&Geom { o: o1 - o0, ..*g }, &w[o0 * per..o1 * per])
            })
            .collect();
        let mut u = zeros::<T>(np * o_n * c_n);
        u.par_chunks_mut(o_n * c_n).enumerate().for_each(|(xi, plane)| {
            for (b, block) in blocks.iter().enumerate() {
                let on = block.len() / (np * c_n);
                let o0 = b * FILTER_BLOCK;
                plane[o0 * c_n..(o0 + on) * c_n].copy_from_slice(&block[xi * on * c_n..(xi + 1) * on * c_n]);
            }
        });
        u
    }

    /// `dw (O, C, r, r)` from `dU[ξ][o][c]`, in parallel over blocks of
    /// output channels (same bits, as in [`Kernels::filter`]).
    fn filter_bwd<T: Elem>(self, g: &Geom, du: &[T]) -> Vec<T> {
        let (o_n, c_n, np) = (g.o, g.c, self.tf.planes());
        if o_n <= FILTER_BLOCK {
            return self.filter_bwd_block(g, du);
        }
        let per = c_n * g.kh * g.kw;
        let mut dw = zeros::<T>(o_n * per);
        dw.par_chunks_mut(FILTER_BLOCK * per).enumerate().for_each(|(b, dwb)| {
            let (o0, on) = (b * FILTER_BLOCK, dwb.len() / per);
            let mut dub = Vec::with_capacity(np * on * c_n);
            for xi in 0..np {
                dub.extend_from_slice(&du[(xi * o_n + o0) * c_n..(xi * o_n + o0 + on) * c_n]);
            }
            dwb.copy_from_slice(&self.filter_bwd_block(&Geom { o: on, ..*g }, &dub));
        });
        dw
    }

    fn filter_block<T: Elem>(self, g: &Geom, w: &[T]) -> Vec<T> {
        match self.fast {
            Some(Fast::F23) => f23::filter_transform(g, w),
            Some(Fast::F43) => alpha::filter_transform::<f43::F43, _>(g, w),
            Some(Fast::F34) => alpha::filter_transform::<f34::F34, _>(g, w),
            Some(Fast::F44) => alpha::filter_transform::<f44::F44, _>(g, w),
            None => filter_transform(g, self.tf, w),
        }
    }

    fn filter_bwd_block<T: Elem>(self, g: &Geom, du: &[T]) -> Vec<T> {
        match self.fast {
            Some(Fast::F23) => f23::filter_transform_bwd(g, du),
            Some(Fast::F43) => alpha::filter_transform_bwd::<f43::F43, _>(g, du),
            Some(Fast::F34) => alpha::filter_transform_bwd::<f34::F34, _>(g, du),
            Some(Fast::F44) => alpha::filter_transform_bwd::<f44::F44, _>(g, du),
            None => filter_transform_bwd(g, self.tf, du),
        }
    }

    fn input<T: Elem>(self, g: &Geom, tl: &Tiles, x: &[T], ng: usize, v: &mut [T]) {
        pick!(self, input_transform(g, tl, x, ng, v))
    }

    fn input_bwd<T: Elem>(self, g: &Geom, tl: &Tiles, dv: &[T], ng: usize, dx: &mut [T]) {
        pick!(self, input_transform_bwd(g, tl, dv, ng, dx))
    }

    fn output<T: Elem>(self, g: &Geom, tl: &Tiles, mm: &[T], ng: usize, y: &mut [T], epi: &Epilogue<T>) {
        pick!(self, output_transform(g, tl, mm, ng, y, epi))
    }

    fn output_bwd<T: Elem>(self, g: &Geom, tl: &Tiles, dy: &[T], ng: usize, dm: &mut [T]) {
        pick!(self, output_transform_bwd(g, tl, dy, ng, dm))
    }
}

/// Whether Winograd handles this convolution at all (square kernel, stride 1).
pub fn applicable(g: &Geom) -> bool {
    g.kh == g.kw && g.kh >= 2 && g.stride == 1
}

/// How the tiles are cut into GEMM-sized work: small maps are grouped, a
/// few images per group; with the hand-written kernels a large map is cut
/// into bands of tile rows, one band at a time, so a band's tiles and
/// products (`V`, `M`) stay in the core's L2 cache.
#[derive(Clone, Copy, Debug)]
struct Tiles {
    m: usize,
    /// tile rows / cols per image (per band, in a band's view: [`Tiles::band`])
    th: usize,
    tw: usize,
    /// tiles per image (per band, in a band's view)
    t: usize,
    /// images per group
    gs: usize,
    groups: usize,
    /// phase length of a padded tile row (`m * q` columns)
    q: usize,
    /// first tile row (of a band's view; 0 otherwise)
    ti0: usize,
    /// tile rows per band, and bands per image
    band_rows: usize,
    bands: usize,
}

impl Tiles {
    fn new(g: &Geom, tf: &Transform, banded: bool) -> Self {
        let m = tf.m;
        let (th, tw) = (g.oh.div_ceil(m), g.ow.div_ceil(m));
        let t = th * tw;
        let target = target_tiles();
        let (band_rows, bands) = if banded && t > target {
            let rows = (target / tw.max(1)).max(1);
            (rows, th.div_ceil(rows))
        } else {
            (th, 1)
        };
        let gs = if bands > 1 { 1 } else { target.div_ceil(t.max(1)).clamp(1, g.n.max(1)) };
        let wp = m * tw + tf.r - 1;
        Tiles { m, th, tw, t, gs, groups: g.n.div_ceil(gs), q: wp.div_ceil(m), ti0: 0, band_rows, bands }
    }
    fn images(&self, g: &Geom, gi: usize) -> (usize, usize) {
        let n0 = gi * self.gs;
        (n0, (n0 + self.gs).min(g.n) - n0)
    }
    /// Where tile row `ti` of image `img` of a group of `ng` starts among
    /// the group's tiles (a row of `V` or `M` within a plane): tile rows
    /// are ordered `(ti, img)`, so tile row `ti` of all the group's images
    /// is one run of `ng * tw` tiles, which the transforms of small maps
    /// sweep at once. With one image a group (large maps, bands) this is
    /// the plain row-major order.
    #[inline(always)]
    fn row_start(&self, ng: usize, img: usize, ti: usize) -> usize {
        (ti * ng + img) * self.tw
    }
    /// The view of band `b`: its tile rows only.
    fn band(&self, b: usize) -> Self {
        let ti0 = b * self.band_rows;
        let th = self.band_rows.min(self.th - ti0);
        Tiles { th, t: th * self.tw, ti0, ..*self }
    }
    /// Elements from one plane `ξ` of `V` or `M` to the next, for `rows`
    /// channels (`[c][t]` within a plane, `tg` apart): room for the most
    /// tiles a band of a group holds, padded to an odd number of cache
    /// lines. Unpadded, `rows * tg` is often a multiple of 4 KB (64
    /// channels of the usual 144 tiles are 36 KB), and then the tile
    /// transforms' 36 streams, one per plane, all fall in the same L1
    /// cache set: 64- and 128-channel transforms measured 1.7x slower
    /// than 63- or 127-channel ones (`transform_timing`).
    fn plane(&self, rows: usize) -> usize {
        let lines = (rows * self.gs * self.band_rows * self.tw).div_ceil(16);
        16 * (lines | 1)
    }
}

/// `out = sum coef * src(k)[off(k)..off(k) + out.len()]` over `terms`.
#[inline(always)]
fn lincomb<'a, T: Elem>(out: &mut [T], terms: &Sparse, src: impl Fn(usize) -> &'a [T]) {
    let n = out.len();
    let mut first = true;
    for &(k, coef) in terms {
        let s = &src(k)[..n];
        let c = T::from_f64(coef);
        if first {
            out.iter_mut().zip(s).for_each(|(o, &v)| *o = c * v);
            first = false;
        } else {
            out.iter_mut().zip(s).for_each(|(o, &v)| *o += c * v);
        }
    }
    if first {
        out.fill(T::ZERO);
    }
}

/// `U[ξ][o][c]` (α², O, C) from `w (O, C, r, r)`.
fn filter_transform<T: Elem>(g: &Geom, tf: &Transform, w: &[T]) -> Vec<T> {
    let (o_n, c_n, r, a) = (g.o, g.c, tf.r, tf.alpha);
    let mut u = zeros::<T>(tf.planes() * o_n * c_n);
    let mut gk = vec![0.0f64; a * r];
    for o in 0..o_n {
        for c in 0..c_n {
            let k = &w[(o * c_n + c) * r * r..(o * c_n + c + 1) * r * r];
            for i in 0..a {
                for j in 0..r {
                    gk[i * r + j] = (0..r).map(|l| tf.g[i * r + l] * k[l * r + j].to_f64()).sum();
                }
            }
            for i in 0..a {
                for b in 0..a {
                    let v: f64 = (0..r).map(|j| gk[i * r + j] * tf.g[b * r + j]).sum();
                    u[((i * a + b) * o_n + o) * c_n + c] = T::from_f64(v);
                }
            }
        }
    }
    u
}

/// `dw (O, C, r, r)` from `dU[ξ][o][c]`: `dg = G^T dU G`.
fn filter_transform_bwd<T: Elem>(g: &Geom, tf: &Transform, du: &[T]) -> Vec<T> {
    let (o_n, c_n, r, a) = (g.o, g.c, tf.r, tf.alpha);
    let mut dw = zeros::<T>(o_n * c_n * r * r);
    let mut t = vec![0.0f64; r * a];
    for o in 0..o_n {
        for c in 0..c_n {
            let at = |i: usize, b: usize| du[((i * a + b) * o_n + o) * c_n + c].to_f64();
            for j in 0..r {
                for b in 0..a {
                    t[j * a + b] = (0..a).map(|i| tf.g[i * r + j] * at(i, b)).sum();
                }
            }
            let k = &mut dw[(o * c_n + c) * r * r..(o * c_n + c + 1) * r * r];
            for j in 0..r {
                for l in 0..r {
                    k[j * r + l] = T::from_f64((0..a).map(|b| t[j * a + b] * tf.g[b * r + l]).sum());
                }
            }
        }
    }
    dw
}

/// Copies output row `oh` of `yo` (OH, OW) into `dst`, zero past the
/// row's end (a zero row if `oh` is past the last row).
#[inline(always)]
fn load_output_row<T: Elem>(yo: &[T], g: &Geom, oh: usize, dst: &mut [T]) {
    if oh < g.oh {
        dst[..g.ow].copy_from_slice(&yo[oh * g.ow..(oh + 1) * g.ow]);
        dst[g.ow..].fill(T::ZERO);
    } else {
        dst.fill(T::ZERO);
    }
}

/// Copies input row `ih` of `xc` (H, W) into `dst` at padded column
/// offset `pl`, zero elsewhere (zero row if `ih` is outside).
#[inline(always)]
fn load_padded_row<T: Elem>(xc: &[T], g: &Geom, ih: isize, pl: usize, dst: &mut [T]) {
    if ih < 0 || ih >= g.h as isize {
        dst.fill(T::ZERO);
        return;
    }
    let xr = &xc[ih as usize * g.w..(ih as usize + 1) * g.w];
    let lo = pl.min(dst.len());
    let hi = (pl + g.w).min(dst.len());
    dst[..lo].fill(T::ZERO);
    dst[hi..].fill(T::ZERO);
    if hi > lo {
        dst[lo..hi].copy_from_slice(&xr[lo - pl..hi - pl]);
    }
}

/// Columns `lo..hi` of padded input row `ih`, where they fall inside the
/// image (`pl <= lo < hi <= pl + W`), read in place from `xc` (H, W), or
/// from `zero` (W zeros) when `ih` is outside: what [`load_padded_row`]
/// would copy there, without the copy.
#[inline(always)]
fn padded_row_inside<'a, T: Elem>(xc: &'a [T], zero: &'a [T], g: &Geom, ih: isize, (lo, hi): (usize, usize), pl: usize) -> &'a [T] {
    let src = if ih < 0 || ih >= g.h as isize { zero } else { &xc[ih as usize * g.w..][..g.w] };
    &src[lo - pl..hi - pl]
}

/// Adds the columns of padded row `src` that fall inside the image into
/// input row `ih` of `xc` (H, W) (nothing if `ih` is outside): the adjoint
/// of [`load_padded_row`].
#[inline(always)]
fn add_padded_row<T: Elem>(xc: &mut [T], g: &Geom, ih: isize, pl: usize, src: &[T]) {
    let lo = pl.min(src.len());
    let hi = (pl + g.w).min(src.len());
    if ih < 0 || ih >= g.h as isize || hi <= lo {
        return;
    }
    let xr = &mut xc[ih as usize * g.w..(ih as usize + 1) * g.w];
    xr[lo - pl..hi - pl].iter_mut().zip(&src[lo..hi]).for_each(|(o, &w)| *o += w);
}

// The transforms below work on all tile rows of a group at once: tile row
// `row = img * th + ti` of a padded plane (at `Tiles::row_start` in `V`
// and `M`) is stored with `wpp = m * q`
// columns, so its `m` phases are `q` long and the phases of all rows form
// one long vector; every multiply-add then runs over `R * q` (or `R * tw`)
// elements instead of one tile row's `tw`.

/// `V[ξ][c][t]` (α², C, tg) for `ng` images `x (ng, C, H, W)`.
#[inline(always)]
fn input_transform<T: Elem>(g: &Geom, tf: &Transform, tl: &Tiles, x: &[T], ng: usize, v: &mut [T]) {
    let (c_n, th, tw, a, m, q) = (g.c, tl.th, tl.tw, tf.alpha, tl.m, tl.q);
    let (rows, wpp, tg) = (ng * th, m * q, ng * tl.t);
    let pv = tl.plane(c_n);
    let hp = m * th + tf.r - 1;
    let pl_len = rows * q + a;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    let mut xp = vec![T::ZERO; hp * wpp];
    let mut tmp = vec![T::ZERO; a * rows * wpp];
    let mut ph = vec![T::ZERO; m * pl_len];
    let mut out = vec![T::ZERO; rows * q];
    for c in 0..c_n {
        for img in 0..ng {
            let xc = &x[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
            for rr in 0..hp {
                load_padded_row(xc, g, rr as isize - pt, pl, &mut xp[rr * wpp..(rr + 1) * wpp]);
            }
            for ti in 0..th {
                let row = img * th + ti;
                for i in 0..a {
                    let dst = &mut tmp[(i * rows + row) * wpp..(i * rows + row + 1) * wpp];
                    lincomb(dst, &tf.bt_rows[i], |k| &xp[(m * ti + k) * wpp..(m * ti + k + 1) * wpp]);
                }
            }
        }
        for i in 0..a {
            // one pass over the rows, m output streams
            let ti_ = &tmp[i * rows * wpp..(i + 1) * rows * wpp];
            for (u, chunk) in ti_.chunks_exact(m).enumerate() {
                for (p, &val) in chunk.iter().enumerate() {
                    ph[p * pl_len + u] = val;
                }
            }
            for b in 0..a {
                lincomb(&mut out, &tf.bt_rows[b], |k| {
                    let s = (k % m) * pl_len + k / m;
                    &ph[s..s + rows * q]
                });
                let base = (i * a + b) * pv + c * tg;
                for row in 0..rows {
                    let t0 = base + tl.row_start(ng, row / th, row % th);
                    v[t0..t0 + tw].copy_from_slice(&out[row * q..row * q + tw]);
                }
            }
        }
    }
}

/// Adds `B dV B^T` of every tile (tiles overlap) into `dx (ng, C, H, W)`.
#[inline(always)]
fn input_transform_bwd<T: Elem>(g: &Geom, tf: &Transform, tl: &Tiles, dv: &[T], ng: usize, dx: &mut [T]) {
    let (c_n, th, tw, a, m, q) = (g.c, tl.th, tl.tw, tf.alpha, tl.m, tl.q);
    let (rows, wpp, tg) = (ng * th, m * q, ng * tl.t);
    let pv = tl.plane(c_n);
    let hp = m * th + tf.r - 1;
    let pl_len = rows * q + a;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    let mut dout = vec![T::ZERO; a * rows * q];
    let mut dph = vec![T::ZERO; m * pl_len];
    let mut wk = vec![T::ZERO; rows * q];
    let mut e = vec![T::ZERO; a * rows * wpp];
    let mut dxp = vec![T::ZERO; hp * wpp];
    let mut acc = vec![T::ZERO; wpp];
    for c in 0..c_n {
        // column adjoint, per row of the tile: e_i = phases of sum_k BT[.][k] dV
        for i in 0..a {
            for b in 0..a {
                let base = (i * a + b) * pv + c * tg;
                let d = &mut dout[b * rows * q..(b + 1) * rows * q];
                for row in 0..rows {
                    let t0 = base + tl.row_start(ng, row / th, row % th);
                    d[row * q..row * q + tw].copy_from_slice(&dv[t0..t0 + tw]);
                    d[row * q + tw..(row + 1) * q].fill(T::ZERO);
                }
            }
            dph.fill(T::ZERO);
            for k in 0..a {
                lincomb(&mut wk, &tf.bt_cols[k], |b| &dout[b * rows * q..(b + 1) * rows * q]);
                let s = (k % m) * pl_len + k / m;
                dph[s..s + rows * q].iter_mut().zip(&wk).for_each(|(p, &w)| *p += w);
            }
            let ei = &mut e[i * rows * wpp..(i + 1) * rows * wpp];
            for (u, chunk) in ei.chunks_exact_mut(m).enumerate() {
                for (p, d) in chunk.iter_mut().enumerate() {
                    *d = dph[p * pl_len + u];
                }
            }
        }
        // row adjoint: padded input row m*ti + k gets sum_i BT[i][k] e_i
        for img in 0..ng {
            dxp.fill(T::ZERO);
            for ti in 0..th {
                let row = img * th + ti;
                for k in 0..a {
                    lincomb(&mut acc, &tf.bt_cols[k], |i| &e[(i * rows + row) * wpp..(i * rows + row + 1) * wpp]);
                    let d = &mut dxp[(m * ti + k) * wpp..(m * ti + k + 1) * wpp];
                    d.iter_mut().zip(&acc).for_each(|(o, &w)| *o += w);
                }
            }
            let xc = &mut dx[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
            for rr in 0..hp {
                add_padded_row(xc, g, rr as isize - pt, pl, &dxp[rr * wpp..(rr + 1) * wpp]);
            }
        }
    }
}

/// `y (ng, O, OH, OW)` from `M[ξ][o][t]`.
#[inline(always)]
fn output_transform<T: Elem>(g: &Geom, tf: &Transform, tl: &Tiles, mm: &[T], ng: usize, y: &mut [T], epi: &Epilogue<T>) {
    let (o_n, p, th, a, m) = (g.o, g.p(), tl.th, tf.alpha, tl.m);
    let tg = ng * tl.t;
    let pm = tl.plane(o_n);
    let mut s = vec![T::ZERO; a * tg];
    let mut z = vec![T::ZERO; m * tg];
    let full = g.ow / m; // tiles whose m columns are all inside the row
    for o in 0..o_n {
        for i in 0..m {
            for b in 0..a {
                lincomb(&mut s[b * tg..(b + 1) * tg], &tf.at_rows[i], |k| {
                    let base = (k * a + b) * pm + o * tg;
                    &mm[base..base + tg]
                });
            }
            for j in 0..m {
                lincomb(&mut z[j * tg..(j + 1) * tg], &tf.at_rows[j], |b| &s[b * tg..(b + 1) * tg]);
            }
            // one pass per output row, reading the m column streams
            for img in 0..ng {
                let yo = &mut y[(img * o_n + o) * p..(img * o_n + o + 1) * p];
                for ti in 0..th {
                    let oh = m * ti + i;
                    if oh >= g.oh {
                        break;
                    }
                    let t0 = tl.row_start(ng, img, ti);
                    let yr = &mut yo[oh * g.ow..(oh + 1) * g.ow];
                    for (tj, chunk) in yr.chunks_exact_mut(m).enumerate() {
                        for (j, d) in chunk.iter_mut().enumerate() {
                            *d = z[j * tg + t0 + tj];
                        }
                    }
                    for (j, d) in yr[full * m..].iter_mut().enumerate() {
                        *d = z[j * tg + t0 + full];
                    }
                    epi.apply(o, yr);
                }
            }
        }
    }
}

/// `dM[ξ][o][t] = A dY A^T` from `dy (ng, O, OH, OW)`.
#[inline(always)]
fn output_transform_bwd<T: Elem>(g: &Geom, tf: &Transform, tl: &Tiles, dy: &[T], ng: usize, dm: &mut [T]) {
    let (o_n, p, th, tw, a, m) = (g.o, g.p(), tl.th, tl.tw, tf.alpha, tl.m);
    let tg = ng * tl.t;
    let pm = tl.plane(o_n);
    let mut dz = vec![T::ZERO; m * tg];
    let mut ds = vec![T::ZERO; m * a * tg];
    let full = g.ow / m;
    for o in 0..o_n {
        for i in 0..m {
            // one pass per dY row, into m column streams (zero past the edge)
            for img in 0..ng {
                let yo = &dy[(img * o_n + o) * p..(img * o_n + o + 1) * p];
                for ti in 0..th {
                    let oh = m * ti + i;
                    let t0 = tl.row_start(ng, img, ti);
                    if oh >= g.oh {
                        for j in 0..m {
                            dz[j * tg + t0..j * tg + t0 + tw].fill(T::ZERO);
                        }
                        continue;
                    }
                    let yr = &yo[oh * g.ow..(oh + 1) * g.ow];
                    for (tj, chunk) in yr.chunks_exact(m).enumerate() {
                        for (j, &val) in chunk.iter().enumerate() {
                            dz[j * tg + t0 + tj] = val;
                        }
                    }
                    for tj in full..tw {
                        for j in 0..m {
                            dz[j * tg + t0 + tj] = yr.get(m * tj + j).copied().unwrap_or(T::ZERO);
                        }
                    }
                }
            }
            for b in 0..a {
                lincomb(&mut ds[(i * a + b) * tg..(i * a + b + 1) * tg], &tf.at_cols[b], |j| &dz[j * tg..(j + 1) * tg]);
            }
        }
        for k in 0..a {
            for b in 0..a {
                let base = (k * a + b) * pm + o * tg;
                lincomb(&mut dm[base..base + tg], &tf.at_cols[k], |i| &ds[(i * a + b) * tg..(i * a + b + 1) * tg]);
            }
        }
    }
}

/// Runs `f(ξ, plane)` on the first `np` planes of `out` (`len` each): in
/// parallel when `par` has threads to spare (fewer image groups than
/// threads, so the groups alone would leave threads idle), in order
/// otherwise. Each plane's GEMM runs on one thread either way: a plane's
/// product is too small to split well across many threads, and it gives
/// the same bits wherever it runs.
fn each_plane<T: Elem>(out: &mut [T], np: usize, len: usize, par: Parallelism, f: impl Fn(usize, &mut [T]) + Sync) {
    chunks_each(&mut out[..np * len], len, !matches!(par, Parallelism::None), f);
}

/// The plane strides of `V` and `M` ([`Tiles::plane`]) and the tiles of
/// the band (`tg`, the row length within a plane).
#[derive(Clone, Copy)]
struct Planes {
    pv: usize,
    pm: usize,
    tg: usize,
}

/// `M[ξ] (O, tg) = U[ξ] (O, C) V[ξ] (C, tg)` for every plane ξ.
#[allow(clippy::too_many_arguments)]
fn planes_fwd<T: Elem>(np: usize, o_n: usize, c_n: usize, pl: Planes, u: &[T], v: &[T], mm: &mut [T], par: Parallelism) {
    let Planes { pv, pm, tg } = pl;
    each_plane(mm, np, pm, par, |xi, m| {
        gemm_rows(o_n, tg, c_n, m, tg, false, Mat::row_major(&u[xi * o_n * c_n..(xi + 1) * o_n * c_n], c_n), &v[xi * pv..][..c_n * tg], tg)
    });
}

/// `dV[ξ] (C, tg) = U[ξ]^T dM[ξ]` for every plane ξ.
#[allow(clippy::too_many_arguments)]
fn planes_bwd_input<T: Elem>(np: usize, o_n: usize, c_n: usize, pl: Planes, u: &[T], dm: &[T], dv: &mut [T], par: Parallelism) {
    let Planes { pv, pm, tg } = pl;
    each_plane(dv, np, pv, par, |xi, d| {
        gemm_rows(c_n, tg, o_n, d, tg, false, Mat::transposed(&u[xi * o_n * c_n..(xi + 1) * o_n * c_n], c_n), &dm[xi * pm..][..o_n * tg], tg)
    });
}

/// `dU[ξ] (O, C) (+)= dM[ξ] V[ξ]^T` for every plane ξ (added with `accumulate`).
#[allow(clippy::too_many_arguments)]
fn planes_bwd_weight<T: Elem>(np: usize, o_n: usize, c_n: usize, pl: Planes, dm: &[T], v: &[T], du: &mut [T], accumulate: bool, par: Parallelism) {
    let Planes { pv, pm, tg } = pl;
    each_plane(du, np, o_n * c_n, par, |xi, d| {
        gemm(
            o_n,
            c_n,
            tg,
            d,
            c_n,
            accumulate,
            Mat::row_major(&dm[xi * pm..][..o_n * tg], tg),
            Mat::transposed(&v[xi * pv..][..c_n * tg], tg),
            Parallelism::None,
        )
    });
}

/// Forward: `x (N, C, H, W)`, `w (O, C, r, r)` -> `y (N, O, OH, OW)` with F(m, r).
pub fn conv2d_fwd<T: Elem>(g: &Geom, m: usize, x: &[T], w: &[T]) -> Vec<T> {
    conv2d_fwd_keep(g, m, x, w, false, &Epilogue::NONE).0
}

/// The forward, also returning (with `keep`) the input tiles `V` of all
/// images, group after group: the weight gradient needs exactly them, so
/// [`conv2d_bwd_fused`] need not transform the input again. The output
/// goes through `epi` (bias, ReLU) as it is written.
pub fn conv2d_fwd_keep<T: Elem>(g: &Geom, m: usize, x: &[T], w: &[T], keep: bool, epi: &Epilogue<T>) -> (Vec<T>, Option<Vec<T>>) {
    let out = forward(g, m, x, w, keep, epi, Pool::No);
    (out.y, out.kept)
}

/// What [`conv2d_fwd_with`] writes besides the transformed filters and kept tiles.
#[derive(Clone, Copy, PartialEq)]
pub enum Pool {
    /// The output only.
    No,
    /// Its 2x2 / stride-2 max pool and the pool's codes
    /// ([`pool::pool2_codes`], all [`OutGrad::Pool2`] needs of the output).
    Codes,
    /// The pool only.
    Only,
}

/// What [`conv2d_fwd_with`] wrote: per [`Pool`], the output or the pool
/// (and its codes), the kept tiles, and the transformed filters `u`, which
/// [`conv2d_bwd_fused`] takes instead of transforming `w` again (the
/// transform runs in f64, once for each pair of channels).
pub struct Forward<T> {
    pub y: Vec<T>,
    pub pooled: Vec<T>,
    pub codes: Vec<u8>,
    pub kept: Option<Vec<T>>,
    pub u: Vec<T>,
}

/// [`conv2d_fwd_keep`], or per `pool` a 2x2 / stride-2 unpadded max pool
/// of its output instead, pooled a group at a time while the group's
/// output is still in cache (the output is then never written out whole),
/// with everything made on the way.
pub fn conv2d_fwd_with<T: Elem>(g: &Geom, m: usize, x: &[T], w: &[T], keep: bool, epi: &Epilogue<T>, pool: Pool) -> Forward<T> {
    forward(g, m, x, w, keep, epi, pool)
}

fn forward<T: Elem>(g: &Geom, m: usize, x: &[T], w: &[T], keep: bool, epi: &Epilogue<T>, pool: Pool) -> Forward<T> {
    let k = Kernels::new(m, g.kh);
    let (tf, tl) = (k.tf, k.tiles(g));
    let (c_n, o_n, chw, op, np) = (g.c, g.o, g.chw(), g.o * g.p(), tf.planes());
    let pop = o_n * (g.oh / 2) * (g.ow / 2);
    // Written a group at a time: the output zeroed just before (in cache),
    // the pool and its codes written whole by `pool2` / `pool2_codes`.
    let y_len = if pool == Pool::No { g.n * op } else { 0 };
    let p_len = if pool == Pool::No { 0 } else { g.n * pop };
    let c_len = if pool == Pool::Codes { p_len } else { 0 };
    let (mut y, mut pooled, mut codes) = (Vec::<T>::with_capacity(y_len), Vec::<T>::with_capacity(p_len), Vec::<u8>::with_capacity(c_len));
    if g.n * op == 0 {
        return Forward { y, pooled, codes, kept: None, u: Vec::new() };
    }
    let u = k.filter(g, w);
    let par = inner_par(tl.groups);
    let (pv, pm) = (tl.plane(c_n), tl.plane(o_n));
    let (bv, bm) = (np * pv, np * pm);
    // `yg`, `pg`, `kept`: the group's slices of the outputs wanted and of
    // the kept tiles; scratch stands in for the others.
    let run = |gi: usize, yg: Option<&mut [MaybeUninit<T>]>, pg: Option<&mut [MaybeUninit<T>]>, cg: Option<&mut [MaybeUninit<u8>]>, mut kept: Option<&mut [T]>| {
        let (n0, ng) = tl.images(g, gi);
        let xg = &x[n0 * chw..(n0 + ng) * chw];
        let scratch = bm + if kept.is_none() { bv } else { 0 } + if yg.is_none() { ng * op } else { 0 };
        T::with_scratch(scratch, |buf| {
            let (mm, rest) = buf.split_at_mut(bm);
            let (vs, ys) = rest.split_at_mut(if kept.is_none() { bv } else { 0 });
            let yg = match yg {
                Some(yg) => zero_init(yg),
                None => &mut ys[..ng * op],
            };
            for b in 0..tl.bands {
                let bl = tl.band(b);
                let pl = Planes { pv, pm, tg: ng * bl.t };
                let v = match kept.as_deref_mut() {
                    Some(kv) => &mut kv[b * bv..][..bv],
                    None => &mut vs[..bv],
                };
                k.input(g, &bl, xg, ng, v);
                planes_fwd(np, o_n, c_n, pl, &u, v, mm, par);
                k.output(g, &bl, mm, ng, yg, epi);
            }
            match (pg, cg) {
                (Some(pg), Some(cg)) => pool::pool2_codes(g.oh, g.ow, yg, pg, cg),
                (Some(pg), None) => pool::pool2(g.oh, g.ow, yg, pg),
                _ => {}
            }
        })
    };
    // One `bv` block per band of each group, whatever the band's size: band
    // `b` of group `gi` is at `(gi * bands + b) * bv`.
    let mut kept = if keep { Some(pooled_buffer::<T>(bv * tl.bands * tl.groups)) } else { None };
    let ys = group_slices(&mut y.spare_capacity_mut()[..y_len], tl.gs * op, tl.groups);
    let ps = group_slices(&mut pooled.spare_capacity_mut()[..p_len], tl.gs * pop, tl.groups);
    let cs = group_slices(&mut codes.spare_capacity_mut()[..c_len], tl.gs * pop, tl.groups);
    let ks = group_slices(kept.as_deref_mut().unwrap_or_default(), bv * tl.bands, tl.groups);
    // The groups always run in parallel; with fewer groups than threads,
    // their planes do too (`par`).
    let jobs: Vec<_> = ys.into_iter().zip(ps).zip(cs).zip(ks).enumerate().collect();
    jobs.into_par_iter().for_each(|(gi, (((yg, pg), cg), kg))| run(gi, yg, pg, cg, kg));
    // SAFETY: the groups cover the buffers; each group's output slice was
    // zeroed, and its pool and code slices written whole by `pool2(_codes)`.
    unsafe {
        y.set_len(y_len);
        pooled.set_len(p_len);
        codes.set_len(c_len);
    }
    Forward { y, pooled, codes, kept, u }
}

/// `groups` consecutive slices of `len` (the last one shorter) of `v`, or
/// as many `None`s when `v` is empty.
fn group_slices<T>(v: &mut [T], len: usize, groups: usize) -> Vec<Option<&mut [T]>> {
    if v.is_empty() {
        return (0..groups).map(|_| None).collect();
    }
    v.chunks_mut(len).map(Some).collect()
}

/// `(dx, dw, db)`, each where it was wanted.
pub type Grads<T> = (Option<Vec<T>>, Option<Vec<T>>, Option<Vec<T>>);

/// Which gradients [`conv2d_bwd_fused`] computes.
#[derive(Clone, Copy, Debug)]
pub struct Wanted {
    pub dx: bool,
    pub dw: bool,
    pub db: bool,
}

/// The gradient [`conv2d_bwd_fused`] starts from.
#[derive(Clone, Copy)]
pub enum OutGrad<'a, T> {
    /// `dY`, the gradient of the convolution's output.
    Plain(&'a [T]),
    /// The gradient of `relu(Y)`, whose value is `y`.
    Relu { y: &'a [T], dy: &'a [T] },
    /// The gradient `dp` of a 2x2 / stride-2 unpadded max pool of the
    /// convolution's output (`relu`: after its ReLU), given the pool's
    /// output `pooled` and its [`pool::pool2_codes`]: the pool's input
    /// gradient, three quarters zeros, is made a group at a time here
    /// instead of written whole and read back.
    Pool2 { pooled: &'a [T], codes: &'a [u8], dp: &'a [T], relu: bool },
}

/// `(dx, dw, db)` of `relu?(conv(x, w) + b)` in one pass over the image
/// groups (`u`: the transformed filters of `w` where the forward made them,
/// [`Forward::u`]; else they are made here from `w`, for the input gradient):
/// `dM = A dY A^T` is computed once for both the input and the
/// weight gradient, `V` comes from the forward when `kept`, the ReLU mask
/// (and a max pool's backward, see [`OutGrad`]) is applied group by group, and the bias
/// gradient is summed from the same masked gradient. Only the `want`ed
/// gradients are computed (`x` is unused without dw, `w` without dx). The
/// weight gradient's partial sums follow a fixed partition of the groups,
/// so results do not depend on the thread count, and kept or recomputed
/// `V`, masking here or beforehand, and summing `db` here or with
/// `conv_bias_act`'s per-channel sum give the same bits (tested).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_bwd_fused<T: Elem>(
    g: &Geom,
    m: usize,
    x: &[T],
    kept: Option<&[T]>,
    w: &[T],
    u: Option<&[T]>,
    grad: OutGrad<'_, T>,
    want: Wanted,
) -> Grads<T> {
    let k = Kernels::new(m, g.kh);
    let (tf, tl) = (k.tf, k.tiles(g));
    let (c_n, o_n, chw, p, np) = (g.c, g.o, g.chw(), g.p(), tf.planes());
    let op = o_n * p;
    let mut db_img = if want.db { zeros::<T>(g.n * o_n) } else { Vec::new() };
    if g.n == 0 || op == 0 {
        let dx = want.dx.then(|| zeros::<T>(g.n * chw));
        let dw = want.dw.then(|| zeros::<T>(o_n * c_n * g.kh * g.kw));
        let db = want.db.then(|| zeros::<T>(o_n));
        return (dx, dw, db);
    }
    // Zeroed a group at a time, just before the group's adjoint transforms
    // add into it (in cache).
    let dx_len = if want.dx { g.n * chw } else { 0 };
    let mut dx = Vec::<T>::with_capacity(dx_len);
    let computed;
    let u = match (want.dx, u) {
        (false, _) => None,
        (true, Some(u)) => Some(u),
        (true, None) => {
            computed = k.filter(g, w);
            Some(&computed[..])
        }
    };
    // The same fixed partition as `conv2d_bwd_weight`.
    let per_part = tl.groups.div_ceil(MAX_PARTIALS);
    let parts = tl.groups.div_ceil(per_part);
    let par = inner_par(parts);
    let part_images = per_part * tl.gs;
    let (pv, pm) = (tl.plane(c_n), tl.plane(o_n));
    let (bv, bm) = (np * pv, np * pm);
    let mut jobs = Vec::with_capacity(parts);
    let (mut dx_rest, mut db_rest) = (&mut dx.spare_capacity_mut()[..dx_len], &mut db_img[..]);
    for part in 0..parts {
        let imgs = part_images.min(g.n - part * part_images);
        let (a, rest) = std::mem::take(&mut dx_rest).split_at_mut(if want.dx { imgs * chw } else { 0 });
        dx_rest = rest;
        let (b, rest) = std::mem::take(&mut db_rest).split_at_mut(if want.db { imgs * o_n } else { 0 });
        db_rest = rest;
        jobs.push((part, a, b));
    }
    let run = |(part, dx_part, db_part): (usize, &mut [MaybeUninit<T>], &mut [T])| -> Option<Vec<T>> {
        let mut du = want.dw.then(|| zeros::<T>(np * o_n * c_n));
        let (g0, g1) = (part * per_part, ((part + 1) * per_part).min(tl.groups));
        let first = part * part_images;
        for gi in g0..g1 {
            let (n0, ng) = tl.images(g, gi);
            let masked = if matches!(grad, OutGrad::Plain(_)) { 0 } else { ng * op };
            T::with_scratch(bv + bm + masked, |buf| {
                let (vs, rest) = buf.split_at_mut(bv);
                let (dm, rest) = rest.split_at_mut(bm);
                let dyg: &[T] = match grad {
                    OutGrad::Plain(dy) => &dy[n0 * op..(n0 + ng) * op],
                    OutGrad::Relu { y, dy } => {
                        let (yg, dyg) = (&y[n0 * op..(n0 + ng) * op], &dy[n0 * op..(n0 + ng) * op]);
                        for ((o, &yv), &gv) in rest.iter_mut().zip(yg).zip(dyg) {
                            *o = relu_grad(yv, gv);
                        }
                        rest
                    }
                    OutGrad::Pool2 { pooled, codes, dp, relu } => {
                        let pp = (g.oh / 2) * (g.ow / 2) * o_n;
                        let at = n0 * pp..(n0 + ng) * pp;
                        pool::unpool2_codes(g.oh, g.ow, &pooled[at.clone()], &codes[at.clone()], &dp[at], relu, rest);
                        rest
                    }
                };
                if want.db {
                    for (plane, d) in dyg.chunks_exact(p).zip(&mut db_part[(n0 - first) * o_n..(n0 - first + ng) * o_n]) {
                        *d = plane_sum(plane);
                    }
                }
                if !(want.dx || want.dw) {
                    return;
                }
                let xg: &[T] = if want.dw { &x[n0 * chw..(n0 + ng) * chw] } else { &[] };
                let dxg = if want.dx { zero_init(&mut dx_part[(n0 - first) * chw..(n0 - first + ng) * chw]) } else { &mut [][..] };
                for b in 0..tl.bands {
                    let bl = tl.band(b);
                    let pl = Planes { pv, pm, tg: ng * bl.t };
                    k.output_bwd(g, &bl, dyg, ng, dm);
                    if let Some(du) = du.as_mut() {
                        let vg: &[T] = match kept {
                            Some(vk) => &vk[(gi * tl.bands + b) * bv..][..bv],
                            None => {
                                k.input(g, &bl, xg, ng, vs);
                                vs
                            }
                        };
                        planes_bwd_weight(np, o_n, c_n, pl, dm, vg, du, gi > g0 || b > 0, par);
                    }
                    if let Some(u) = u {
                        // `vs` is free again: it takes dV.
                        planes_bwd_input(np, o_n, c_n, pl, u, dm, vs, par);
                        k.input_bwd(g, &bl, vs, ng, dxg);
                    }
                }
            });
        }
        du
    };
    // Parts in parallel, and their planes too when there are fewer parts than threads.
    let partials: Vec<Option<Vec<T>>> = jobs.into_par_iter().map(run).collect();
    // SAFETY: with `want.dx`, every group zeroed its images' slice of `dx`
    // (and the groups cover all images) before adding into it.
    unsafe { dx.set_len(dx_len) };
    let dw = if want.dw { Some(k.filter_bwd(g, &sum_partials(partials.into_iter().flatten().collect()))) } else { None };
    let db = want.db.then(|| {
        (0..o_n)
            .map(|o| {
                let mut acc = T::ZERO;
                for n in 0..g.n {
                    acc += db_img[n * o_n + o];
                }
                acc
            })
            .collect()
    });
    (want.dx.then_some(dx), dw, db)
}

/// Input gradient: `dy (N, O, OH, OW)`, `w` -> `dx (N, C, H, W)`.
pub fn conv2d_bwd_input<T: Elem>(g: &Geom, m: usize, dy: &[T], w: &[T]) -> Vec<T> {
    let want = Wanted { dx: true, dw: false, db: false };
    conv2d_bwd_fused(g, m, &[], None, w, None, OutGrad::Plain(dy), want).0.unwrap_or_default()
}

/// Weight gradient: `x`, `dy` -> `dw (O, C, r, r)`.
pub fn conv2d_bwd_weight<T: Elem>(g: &Geom, m: usize, x: &[T], dy: &[T]) -> Vec<T> {
    let want = Wanted { dx: false, dw: true, db: false };
    conv2d_bwd_fused(g, m, x, None, &[], None, OutGrad::Plain(dy), want).1.unwrap_or_default()
}

/// Inputs and loops shared by the tests of the hand-written transforms.
#[cfg(test)]
mod testing {
    use super::{Geom, Tiles};

    /// `len` values in [-1, 1), different for each `seed`.
    pub(super) fn fill(len: usize, seed: usize) -> Vec<f64> {
        (0..len).map(|i| ((i * 7919 + seed * 104_729) % 2003) as f64 / 1001.0 - 1.0).collect()
    }

    /// `f(n0, ng, band, at)` for every band of every image group of `tl`:
    /// the group's first image and image count, the band's view, and where
    /// this is, for assertion messages.
    pub(super) fn each_band(g: &Geom, tl: &Tiles, mut f: impl FnMut(usize, usize, &Tiles, String)) {
        for gi in 0..tl.groups {
            let (n0, ng) = tl.images(g, gi);
            for b in 0..tl.bands {
                let bl = tl.band(b);
                f(n0, ng, &bl, format!("group {gi} ({ng} images) band {b} (tw {})", bl.tw));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_transforms_in_blocks_give_the_bits_of_one_pass() {
        // 19 output channels: two whole blocks and a part; F(3, 3) has no hand-written kernel.
        for (m, r) in [(2, 3), (4, 3), (3, 4), (3, 3)] {
            let g = Geom::new(&[1, 5, 8, 8], &[19, 5, r, r], [1; 4], 1).unwrap();
            let k = Kernels::new(m, r);
            let w: Vec<f32> = (0..19 * 5 * r * r).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let u = k.filter(&g, &w);
            assert_eq!(bits(&u), bits(&k.filter_block(&g, &w)), "F({m}, {r}) filter");
            assert_eq!(bits(&k.filter_bwd(&g, &u)), bits(&k.filter_bwd_block(&g, &u)), "F({m}, {r}) filter_bwd");
        }
    }

    #[test]
    fn large_maps_are_cut_into_bands() {
        let g = Geom::new(&[2, 8, 30, 26], &[3, 8, 3, 3], [1; 4], 1).unwrap();
        let tl = Tiles::new(&g, transform(2, 3), true);
        assert_eq!((tl.th, tl.tw, tl.band_rows, tl.bands, tl.gs, tl.groups), (15, 13, 11, 2, 1, 2));
        let last = tl.band(1);
        assert_eq!((last.ti0, last.th, last.t), (11, 4, 52));
        assert_eq!(Tiles::new(&g, transform(2, 3), false).bands, 1);
        // seed3x3's 48x48 layer: 4 bands of 6 tile rows; its 12x12 layers: 4 images per group
        let g48 = Geom::new(&[64, 48, 48, 48], &[48, 48, 3, 3], [1; 4], 1).unwrap();
        let tl = Tiles::new(&g48, transform(2, 3), true);
        assert_eq!((tl.band_rows, tl.bands, tl.gs), (6, 4, 1));
        let g12 = Geom::new(&[64, 64, 12, 12], &[124, 64, 3, 3], [1; 4], 1).unwrap();
        assert_eq!(Tiles::new(&g12, transform(2, 3), true).gs, 4);
        // F(4x4, 3x3): a 48x48 map is one band of 12 x 12 tiles; 50 x 46 outputs, two bands
        let tl = Tiles::new(&g48, transform(4, 3), true);
        assert_eq!((tl.th, tl.tw, tl.bands, tl.gs), (12, 12, 1, 1));
        let g50 = Geom::new(&[2, 8, 50, 46], &[3, 8, 3, 3], [1; 4], 1).unwrap();
        let tl = Tiles::new(&g50, transform(4, 3), true);
        assert_eq!((tl.th, tl.tw, tl.band_rows, tl.bands), (13, 12, 12, 2));
    }
}
