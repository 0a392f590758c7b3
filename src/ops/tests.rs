//! Fast ops vs the stock-candle reference and naive scalar loops.

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{conv2d, conv2d_reference, max_pool2d, max_pool2d_reference};

fn rand_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn rand_t(shape: &[usize], seed: u64) -> Tensor {
    let len = shape.iter().product();
    Tensor::from_vec(rand_vec(len, seed), shape, &Device::Cpu).unwrap()
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

/// max |a - b| / max |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn assert_close(what: &str, a: &[f32], b: &[f32]) {
    let d = rel_diff(a, b);
    assert!(d <= 1e-4, "{what}: relative difference {d}");
}

/// (y, dL/dx, dL/dw) for L = sum(y * r) through candle autograd.
fn conv_grads(
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    x: &Tensor,
    w: &Tensor,
    r_seed: u64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let xv = Var::from_tensor(x).unwrap();
    let wv = Var::from_tensor(w).unwrap();
    let y = f(xv.as_tensor(), wv.as_tensor()).unwrap();
    let r = rand_t(y.dims(), r_seed);
    let loss = (&y * &r).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    (to_vec(&y), to_vec(grads.get(&xv).unwrap()), to_vec(grads.get(&wv).unwrap()))
}

/// Naive f64 conv: (y, dx, dw) for dL/dy = r.
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &[f32],
    xd: [usize; 4],
    w: &[f32],
    wd: [usize; 4],
    pad: [usize; 4],
    s: usize,
    r: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [n, c, h, wi] = xd;
    let [o, _, kh, kw] = wd;
    let oh = (h + pad[0] + pad[1] - kh) / s + 1;
    let ow = (wi + pad[2] + pad[3] - kw) / s + 1;
    let mut y = vec![0f64; n * o * oh * ow];
    let mut dx = vec![0f64; x.len()];
    let mut dw = vec![0f64; w.len()];
    for b in 0..n {
        for oc in 0..o {
            for i in 0..oh {
                for j in 0..ow {
                    let yi = ((b * o + oc) * oh + i) * ow + j;
                    for ic in 0..c {
                        for p in 0..kh {
                            for q in 0..kw {
                                let ih = (i * s + p) as isize - pad[0] as isize;
                                let iw = (j * s + q) as isize - pad[2] as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= wi as isize {
                                    continue;
                                }
                                let xi = ((b * c + ic) * h + ih as usize) * wi + iw as usize;
                                let wj = ((oc * c + ic) * kh + p) * kw + q;
                                y[yi] += x[xi] as f64 * w[wj] as f64;
                                dx[xi] += r[yi] as f64 * w[wj] as f64;
                                dw[wj] += r[yi] as f64 * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    let f = |v: Vec<f64>| v.into_iter().map(|a| a as f32).collect::<Vec<_>>();
    (f(y), f(dx), f(dw))
}

const CONV_CASES: &[([usize; 4], [usize; 4], [usize; 4], usize)] = &[
    // x dims, w dims, padding (t, b, l, r), stride
    ([2, 3, 7, 9], [5, 3, 3, 3], [1, 1, 1, 1], 1),  // same, odd sizes
    ([1, 2, 6, 5], [4, 2, 3, 3], [0, 0, 0, 0], 1),  // valid, batch 1
    ([3, 4, 8, 8], [6, 4, 4, 4], [1, 2, 1, 2], 1),  // Keras "same" for 4x4
    ([2, 3, 9, 7], [4, 3, 3, 3], [1, 1, 1, 1], 2),  // stride 2, odd
    ([2, 3, 8, 8], [4, 3, 4, 4], [1, 2, 1, 2], 2),  // stride 2, 4x4
    ([2, 5, 6, 7], [3, 5, 1, 1], [0, 0, 0, 0], 1),  // pointwise
    ([2, 5, 6, 7], [3, 5, 1, 1], [1, 0, 0, 1], 2),  // 1x1 padded, stride 2
    ([5, 1, 12, 12], [8, 1, 3, 3], [1, 1, 1, 1], 1), // first layer, batch 5
    ([3, 1, 20, 19], [6, 1, 4, 4], [1, 2, 1, 2], 1), // first layer 4x4: a whole vector and a tail a row
    ([2, 1, 9, 33], [3, 1, 2, 2], [0, 1, 0, 1], 1), // first layer 2x2, two whole vectors and a tail
    ([9, 3, 5, 5], [2, 3, 3, 3], [2, 0, 1, 0], 1),  // batch > chunk, asymmetric
    ([2, 2, 7, 6], [3, 2, 2, 3], [0, 1, 1, 1], 3),  // non-square kernel, stride 3
    ([1, 3, 4, 4], [2, 3, 3, 3], [3, 3, 3, 3], 1),  // padding >= kernel
    ([3, 9, 17, 16], [5, 9, 3, 3], [1, 1, 1, 1], 1), // Winograd path (C >= 8, >= 16x16 out)
    ([17, 8, 16, 17], [4, 8, 3, 3], [0, 2, 2, 0], 1), // Winograd, partial group
    ([3, 8, 16, 16], [5, 8, 4, 4], [1, 2, 1, 2], 1), // Winograd F(3x3, 4x4), Keras "same"
    ([2, 8, 30, 26], [3, 8, 3, 3], [1, 1, 1, 1], 1), // Winograd in two bands of tile rows (11 + 4)
];

#[test]
fn conv_matches_naive_and_reference() {
    for (i, &(xd, wd, pad, s)) in CONV_CASES.iter().enumerate() {
        let seed = 100 * i as u64;
        let x = rand_t(&xd, seed);
        let w = rand_t(&wd, seed + 1);
        let (y, dx, dw) = conv_grads(|x, w| conv2d(x, w, pad, s), &x, &w, seed + 2);
        let r = to_vec(&rand_t(&[y.len()], seed + 2));
        let (ny, ndx, ndw) = naive_conv(&to_vec(&x), xd, &to_vec(&w), wd, pad, s, &r);
        let ctx = format!("case {i} x{xd:?} w{wd:?} pad{pad:?} s{s}");
        assert_close(&format!("{ctx} y vs naive"), &y, &ny);
        assert_close(&format!("{ctx} dx vs naive"), &dx, &ndx);
        assert_close(&format!("{ctx} dw vs naive"), &dw, &ndw);
        let ry = to_vec(&conv2d_reference(&x, &w, pad, s).unwrap());
        assert_close(&format!("{ctx} y vs candle"), &y, &ry);
        // Stock candle's conv backward fails (shape mismatch) for some
        // strided shapes whose padded size is not covered by the windows.
        if s == 1 || (xd[2] + pad[0] + pad[1] - wd[2]) % s == 0 && (xd[3] + pad[2] + pad[3] - wd[3]) % s == 0 {
            let (_, rdx, rdw) = conv_grads(|x, w| conv2d_reference(x, w, pad, s), &x, &w, seed + 2);
            assert_close(&format!("{ctx} dx vs candle"), &dx, &rdx);
            assert_close(&format!("{ctx} dw vs candle"), &dw, &rdw);
        }
    }
}

#[test]
fn conv_f64_and_no_grad_input() {
    let x = rand_t(&[3, 2, 6, 6], 7).to_dtype(DType::F64).unwrap();
    let w = rand_t(&[4, 2, 3, 3], 8).to_dtype(DType::F64).unwrap();
    let y = conv2d(&x, &w, [1, 1, 1, 1], 1).unwrap();
    let ry = conv2d_reference(&x, &w, [1, 1, 1, 1], 1).unwrap();
    assert_close("f64 y", &to_vec(&y), &to_vec(&ry));
    // x is a plain tensor (no grad): only dw is produced.
    let wv = Var::from_tensor(&w).unwrap();
    let loss = conv2d(&x, wv.as_tensor(), [1, 1, 1, 1], 1).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    assert!(g.get(&x).is_none());
    assert_eq!(g.get(&wv).unwrap().dims(), &[4, 2, 3, 3]);
}

#[test]
fn conv_non_contiguous_input() {
    let x = rand_t(&[2, 3, 6, 5], 11).transpose(2, 3).unwrap(); // (2,3,5,6) strided
    let w = rand_t(&[4, 3, 3, 3], 12);
    let y = conv2d(&x, &w, [1, 1, 1, 1], 1).unwrap();
    let ry = conv2d_reference(&x, &w, [1, 1, 1, 1], 1).unwrap();
    assert_close("strided x", &to_vec(&y), &to_vec(&ry));
}

#[test]
fn conv_deterministic() {
    // C = 8: Winograd path; C = 3: im2col path.
    for (xd, wd) in [([64, 8, 16, 16], [16, 8, 3, 3]), ([64, 3, 10, 10], [6, 3, 3, 3])] {
        let x = rand_t(&xd, 21);
        let w = rand_t(&wd, 22);
        let a = conv_grads(|x, w| conv2d(x, w, [1, 1, 1, 1], 1), &x, &w, 23);
        let b = conv_grads(|x, w| conv2d(x, w, [1, 1, 1, 1], 1), &x, &w, 23);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.0), bits(&b.0));
        assert_eq!(bits(&a.1), bits(&b.1));
        assert_eq!(bits(&a.2), bits(&b.2));
        // Single-threaded pool gives the same bits too (fixed reduction order).
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let c = pool.install(|| conv_grads(|x, w| conv2d(x, w, [1, 1, 1, 1], 1), &x, &w, 23));
        assert_eq!(bits(&a.0), bits(&c.0));
        assert_eq!(bits(&a.1), bits(&c.1));
        assert_eq!(bits(&a.2), bits(&c.2));
    }
}

/// Naive max pool with -inf padding; gradient to the first maximum.
fn naive_pool(x: &[f32], xd: [usize; 4], k: usize, s: usize, pad: [usize; 4], r: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let [n, c, h, w] = xd;
    let oh = (h + pad[0] + pad[1] - k) / s + 1;
    let ow = (w + pad[2] + pad[3] - k) / s + 1;
    let mut y = vec![f32::NEG_INFINITY; n * c * oh * ow];
    let mut dx = vec![0f32; x.len()];
    for pl in 0..n * c {
        for i in 0..oh {
            for j in 0..ow {
                let yi = (pl * oh + i) * ow + j;
                let mut best = None;
                for p in 0..k {
                    for q in 0..k {
                        let ih = (i * s + p) as isize - pad[0] as isize;
                        let iw = (j * s + q) as isize - pad[2] as isize;
                        if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                            continue;
                        }
                        let xi = (pl * h + ih as usize) * w + iw as usize;
                        if x[xi] > y[yi] {
                            y[yi] = x[xi];
                            best = Some(xi);
                        }
                    }
                }
                if let Some(xi) = best {
                    dx[xi] += r[yi];
                }
            }
        }
    }
    (y, dx)
}

fn pool_grads(f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor, r_seed: u64) -> (Vec<f32>, Vec<f32>) {
    let xv = Var::from_tensor(x).unwrap();
    let y = f(xv.as_tensor()).unwrap();
    let r = rand_t(y.dims(), r_seed);
    let loss = (&y * &r).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    (to_vec(&y), to_vec(grads.get(&xv).unwrap()))
}

#[test]
fn pool_matches_naive_and_reference() {
    // x dims, kernel, stride, padding, whether stock candle can do the backward
    let cases: &[([usize; 4], usize, usize, [usize; 4], bool)] = &[
        ([2, 3, 8, 8], 2, 2, [0, 0, 0, 0], true),
        ([2, 3, 6, 10], 2, 2, [0, 0, 0, 0], true),
        ([2, 2, 9, 9], 3, 3, [0, 0, 0, 0], true),
        ([2, 3, 8, 8], 2, 1, [0, 1, 0, 1], false), // Keras stride-1 "same"
        ([1, 2, 7, 9], 2, 1, [0, 1, 0, 1], false),
        ([1, 2, 1, 5], 2, 1, [0, 1, 0, 1], false), // one row
        ([2, 1, 4, 1], 2, 1, [0, 1, 0, 1], false), // one column
        ([1, 1, 1, 1], 2, 1, [0, 1, 0, 1], false),
        ([1, 2, 7, 9], 2, 2, [0, 0, 0, 0], false), // odd: floor
        ([2, 2, 7, 7], 3, 2, [1, 1, 1, 1], false),
        ([3, 1, 5, 6], 3, 1, [1, 1, 1, 1], false),
        ([2, 2, 7, 8], 2, 2, [1, 0, 1, 0], false),
        ([1, 2, 5, 5], 2, 1, [1, 1, 1, 1], false),
        ([1, 1, 3, 4], 2, 3, [2, 2, 2, 2], false), // windows entirely in padding
    ];
    for (i, &(xd, k, s, pad, candle_bwd)) in cases.iter().enumerate() {
        let seed = 1000 + 10 * i as u64;
        let x = rand_t(&xd, seed);
        let ctx = format!("pool case {i} x{xd:?} k{k} s{s} pad{pad:?}");
        let (y, dx) = pool_grads(|x| max_pool2d(x, k, s, pad), &x, seed + 1);
        let r = to_vec(&rand_t(&[y.len()], seed + 1));
        let (ny, ndx) = naive_pool(&to_vec(&x), xd, k, s, pad, &r);
        assert_eq!(y, ny, "{ctx} y vs naive");
        assert_eq!(dx, ndx, "{ctx} dx vs naive");
        let ry = to_vec(&max_pool2d_reference(&x, k, s, pad).unwrap());
        assert_eq!(y, ry, "{ctx} y vs candle");
        if candle_bwd {
            // Stock candle 0.11.1 scales the max-pool gradient by
            // (#maxima / k^2) instead of 1 / #maxima (backprop.rs multiplies
            // by the averaged mask), so without ties it is ours / k^2.
            let (_, rdx) = pool_grads(|x| max_pool2d_reference(x, k, s, pad), &x, seed + 1);
            let scaled: Vec<f32> = rdx.iter().map(|v| v * (k * k) as f32).collect();
            assert_close(&format!("{ctx} dx vs candle * k^2"), &dx, &scaled);
        }
    }
}

#[test]
fn pool_ties_go_to_first_max() {
    // After ReLU many windows are all zero: the whole gradient goes to the
    // top-left element of the window.
    let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let (y, dx) = pool_grads(|x| max_pool2d(x, 2, 2, [0; 4]), &x, 5);
    let r = to_vec(&rand_t(&[4], 5));
    assert_eq!(y, vec![0.0; 4]);
    let mut want = vec![0f32; 16];
    for (i, &(a, b)) in [(0, 0), (0, 2), (2, 0), (2, 2)].iter().enumerate() {
        want[a * 4 + b] = r[i];
    }
    assert_eq!(dx, want);
}

#[test]
fn same_pool_ties_match_naive() {
    // The stride-1 "same" fast path gathers where the general path
    // scatters; with three levels (and ReLU-like zeros) most windows tie.
    let xd = [2, 3, 9, 8];
    let x: Vec<f32> = to_vec(&rand_t(&xd, 77)).iter().map(|v| (v * 3.0).round().max(0.0)).collect();
    let xt = Tensor::from_vec(x.clone(), &xd, &Device::Cpu).unwrap();
    let (y, dx) = pool_grads(|x| max_pool2d(x, 2, 1, [0, 1, 0, 1]), &xt, 78);
    let r = to_vec(&rand_t(&[y.len()], 78));
    let (ny, ndx) = naive_pool(&x, xd, 2, 1, [0, 1, 0, 1], &r);
    assert!(x.iter().filter(|&&v| v == 0.0).count() > x.len() / 4, "the input has many ties");
    assert_eq!(y, ny);
    assert_eq!(dx.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), ndx.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
}

#[test]
fn stride2_pool_ties_match_naive() {
    // 26 columns: 13 windows a row, through the 8-, 4- and 1-window forms
    // of the vectorised backward; three levels, so most windows tie.
    let xd = [2, 3, 7, 26];
    let x: Vec<f32> = to_vec(&rand_t(&xd, 91)).iter().map(|v| (v * 3.0).round().max(0.0) - 1.0).collect();
    let xt = Tensor::from_vec(x.clone(), &xd, &Device::Cpu).unwrap();
    let (y, dx) = pool_grads(|x| max_pool2d(x, 2, 2, [0; 4]), &xt, 92);
    let r = to_vec(&rand_t(&[y.len()], 92));
    let (ny, ndx) = naive_pool(&x, xd, 2, 2, [0; 4], &r);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(y, ny);
    assert_eq!(bits(&dx), bits(&ndx));
    // The fused backward's form, through the ReLU whose output `x` is.
    let mut fused = vec![f32::NAN; x.len()];
    super::pool::unpool2(7, 26, &x, &r, true, &mut fused);
    let want: Vec<f32> = ndx.iter().zip(&x).map(|(&d, &v)| if v > 0.0 { d } else { 0.0 }).collect();
    assert!(want.iter().filter(|&&v| v != 0.0).count() > 20, "some gradient gets through");
    assert_eq!(bits(&fused), bits(&want));
    // And from the pool's output and codes instead of its input, with and
    // without the ReLU.
    let mut pooled = vec![std::mem::MaybeUninit::new(f32::NAN); y.len()];
    let mut codes = vec![std::mem::MaybeUninit::new(9u8); y.len()];
    super::pool::pool2_codes(7, 26, &x, &mut pooled, &mut codes);
    // SAFETY: initialised above (and overwritten by `pool2_codes`).
    let (pooled, codes): (Vec<f32>, Vec<u8>) = pooled.iter().zip(&codes).map(|(p, c)| unsafe { (p.assume_init(), c.assume_init()) }).unzip();
    assert_eq!(bits(&pooled), bits(&y));
    assert!(codes.iter().all(|&c| c < 4) && (0..4).all(|k| codes.contains(&k)), "codes {codes:?}");
    let mut from_codes = vec![f32::NAN; x.len()];
    super::pool::unpool2_codes(7, 26, &pooled, &codes, &r, true, &mut from_codes);
    assert_eq!(bits(&from_codes), bits(&want));
    super::pool::unpool2_codes(7, 26, &pooled, &codes, &r, false, &mut from_codes);
    assert_eq!(bits(&from_codes), bits(&ndx));
}

/// Winograd vs im2col kernels directly, for F(2x2, 3x3), F(4x4, 3x3),
/// F(3x3, 4x4) and F(4x4, 4x4) (hand-written transforms), F(3x3, 3x3) and F(2x2, 4x4)
/// (general ones), on many stride-1 shapes (odd sizes, asymmetric padding,
/// partial image groups). The general versions of the hand-written ones are
/// covered by `FER_WINOGRAD=general cargo test winograd`.
#[test]
fn winograd_matches_im2col() {
    for (m, r) in [(2, 3), (3, 3), (4, 3), (3, 4), (4, 4), (2, 4)] {
        winograd_case(m, r);
    }
}

#[test]
fn winograd_matrices_are_exact() {
    for (m, r) in [(2, 3), (4, 3), (3, 4), (4, 4), (2, 4), (3, 3), (2, 2), (6, 3)] {
        let e = super::winograd::transform(m, r).identity_error();
        assert!(e < 1e-9, "F({m}, {r}): {e}");
    }
}

fn winograd_case(m: usize, r: usize) {
    use super::conv::{self, Geom};
    use super::winograd;
    let cases: &[([usize; 4], usize, [usize; 4])] = &[
        ([2, 3, 7, 9], 5, [1, 1, 1, 1]),
        ([1, 2, 6, 5], 4, [0, 0, 0, 0]),
        ([5, 1, 12, 12], 8, [1, 1, 1, 1]),
        ([9, 3, 5, 5], 2, [2, 0, 1, 0]),
        ([1, 3, 4, 4], 2, [3, 3, 3, 3]),
        ([37, 6, 6, 6], 7, [1, 1, 1, 1]), // 37 images: 16-image groups, last partial
        ([20, 4, 13, 11], 3, [1, 1, 1, 1]),
        ([3, 2, 3, 3], 2, [0, 0, 0, 0]), // 1x1 output
        ([3, 2, 30, 26], 3, [1, 1, 1, 1]), // more tiles than a group holds: bands (with F(2x2, 3x3))
        ([2, 2, 50, 46], 3, [1, 1, 1, 1]), // bands with F(4x4, 3x3) (13 x 12 tiles: 12 + 1 rows)
    ];
    for (i, &(xd, o, pad)) in cases.iter().enumerate() {
        let Ok(g) = Geom::new(&xd, &[o, xd[1], r, r], pad, 1) else { continue };
        let x = rand_vec(xd.iter().product(), 500 + i as u64);
        let w = rand_vec(o * xd[1] * r * r, 600 + i as u64);
        let dy = rand_vec(g.n * g.o * g.p(), 700 + i as u64);
        let ctx = format!("winograd F({m}, {r}) case {i} {xd:?} o{o} pad{pad:?}");
        assert_close(&format!("{ctx} y"), &winograd::conv2d_fwd(&g, m, &x, &w), &conv::conv2d_fwd(&g, &x, &w));
        assert_close(
            &format!("{ctx} dx"),
            &winograd::conv2d_bwd_input(&g, m, &dy, &w),
            &conv::conv2d_bwd_input(&g, &dy, &w),
        );
        assert_close(
            &format!("{ctx} dw"),
            &winograd::conv2d_bwd_weight(&g, m, &x, &dy),
            &conv::conv2d_bwd_weight(&g, &x, &dy),
        );
    }
}

/// Fused conv + bias + ReLU against stock candle's conv, broadcast add and relu.
#[test]
fn fused_conv_bias_relu_matches_reference() {
    use super::conv2d_bias_act;
    for (i, &(xd, wd, pad, s)) in CONV_CASES.iter().enumerate() {
        let seed = 500 + 10 * i as u64;
        let (x, w, b) = (rand_t(&xd, seed), rand_t(&wd, seed + 1), rand_t(&[wd[0]], seed + 2));
        let ctx = format!("case {i} x{xd:?} w{wd:?} pad{pad:?} s{s}");
        // Reference grads come from candle's own conv backward where it works (see above).
        let stock_ok = s == 1 || (xd[2] + pad[0] + pad[1] - wd[2]) % s == 0 && (xd[3] + pad[2] + pad[3] - wd[3]) % s == 0;
        for relu in [false, true] {
            for with_bias in [false, true] {
                let grads = |fused: bool| {
                    let (xv, wv, bv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap(), Var::from_tensor(&b).unwrap());
                    let bias = with_bias.then(|| bv.as_tensor().clone());
                    let y = if fused {
                        conv2d_bias_act(xv.as_tensor(), wv.as_tensor(), bias.as_ref(), pad, s, relu).unwrap()
                    } else {
                        let y = conv2d_reference(xv.as_tensor(), wv.as_tensor(), pad, s).unwrap();
                        let y = match &bias {
                            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1)).unwrap()).unwrap(),
                            None => y,
                        };
                        if relu { y.relu().unwrap() } else { y }
                    };
                    let r = rand_t(y.dims(), seed + 3);
                    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                    let db = g.get(&bv).map(to_vec);
                    (to_vec(&y), to_vec(g.get(&xv).unwrap()), to_vec(g.get(&wv).unwrap()), db)
                };
                let (y, dx, dw, db) = grads(true);
                assert_eq!(db.is_some(), with_bias, "{ctx}");
                let ry = {
                    let y = conv2d_reference(&x, &w, pad, s).unwrap();
                    let y = if with_bias { y.broadcast_add(&b.reshape((1, (), 1, 1)).unwrap()).unwrap() } else { y };
                    to_vec(&if relu { y.relu().unwrap() } else { y })
                };
                let ctx = format!("{ctx} relu={relu} bias={with_bias}");
                assert_close(&format!("{ctx} y"), &y, &ry);
                if stock_ok {
                    let (_, rdx, rdw, rdb) = grads(false);
                    assert_close(&format!("{ctx} dx"), &dx, &rdx);
                    assert_close(&format!("{ctx} dw"), &dw, &rdw);
                    if let (Some(db), Some(rdb)) = (db, rdb) {
                        assert_close(&format!("{ctx} db"), &db, &rdb);
                    }
                }
            }
        }
    }
}

/// The fused Winograd training backward (kept tiles, one dM for both
/// gradients, ReLU mask and bias sum inside) gives exactly what the
/// separate ops give on the masked gradient.
#[test]
fn fused_winograd_backward_is_bit_identical() {
    use super::conv::Geom;
    use super::winograd::{self, OutGrad, Wanted};
    let cases: &[(usize, [usize; 4], [usize; 4], [usize; 4])] = &[
        (2, [5, 9, 17, 16], [6, 9, 3, 3], [1, 1, 1, 1]),
        (3, [3, 8, 16, 16], [5, 8, 4, 4], [1, 2, 1, 2]),
        (2, [40, 8, 16, 16], [4, 8, 3, 3], [0, 0, 0, 0]), // several groups per partial sum
        (2, [3, 8, 30, 26], [5, 8, 3, 3], [1, 1, 1, 1]), // bands of tile rows
        (4, [5, 8, 17, 16], [6, 8, 3, 3], [1, 1, 1, 1]), // F(4x4, 3x3): partial tiles, 2 images a group
        (4, [2, 8, 50, 46], [3, 8, 3, 3], [1, 1, 1, 1]), // F(4x4, 3x3) in bands
        (4, [3, 8, 17, 16], [5, 8, 4, 4], [1, 2, 1, 2]), // F(4x4, 4x4): partial tiles
    ];
    for (i, &(m, xd, wd, pad)) in cases.iter().enumerate() {
        let g = Geom::new(&xd, &wd, pad, 1).unwrap();
        let seed = 900 + 10 * i as u64;
        let (x, w) = (rand_vec(xd.iter().product(), seed), rand_vec(wd.iter().product(), seed + 1));
        let (y, dy) = (rand_vec(g.n * g.o * g.p(), seed + 2), rand_vec(g.n * g.o * g.p(), seed + 3));
        let masked: Vec<f32> = y.iter().zip(&dy).map(|(&y, &d)| if y > 0.0 { d } else { 0.0 }).collect();
        let (fwd, kept) = winograd::conv2d_fwd_keep(&g, m, &x, &w, true, &winograd::Epilogue::NONE);
        assert_eq!(fwd, winograd::conv2d_fwd(&g, m, &x, &w), "case {i}: forward");
        // bias + ReLU applied by the output transform == a separate pass
        let bias = rand_vec(g.o, seed + 4);
        let epi = winograd::Epilogue { bias: Some(&bias), relu: true };
        let mut separate = fwd.clone();
        separate.chunks_mut(g.p()).enumerate().for_each(|(k, plane)| epi.apply(k % g.o, plane));
        assert_eq!(winograd::conv2d_fwd_keep(&g, m, &x, &w, false, &epi).0, separate, "case {i}: epilogue");
        let db_ref: Vec<f32> = (0..g.o)
            .map(|o| (0..g.n).fold(0.0, |acc, n| acc + masked[(n * g.o + o) * g.p()..][..g.p()].iter().fold(0.0, |s, &v| s + v)))
            .collect();
        for kept in [kept.as_deref(), None] {
            let all = Wanted { dx: true, dw: true, db: true };
            let (dx, dw, db) = winograd::conv2d_bwd_fused(&g, m, &x, kept, &w, None, OutGrad::Relu { y: &y, dy: &dy }, all);
            let ctx = format!("case {i} kept={}", kept.is_some());
            // the forward's transformed filters stand in for the weights' own
            let u = winograd::conv2d_fwd_with(&g, m, &x, &w, false, &winograd::Epilogue::NONE, winograd::Pool::No).u;
            let with_u = winograd::conv2d_bwd_fused(&g, m, &x, kept, &w[..0], Some(&u), OutGrad::Relu { y: &y, dy: &dy }, all);
            assert_eq!((&with_u.0, &with_u.1, &with_u.2), (&dx, &dw, &db), "{ctx}: with the forward's filters");
            assert_eq!(dx.unwrap(), winograd::conv2d_bwd_input(&g, m, &masked, &w), "{ctx}: dx");
            assert_eq!(dw.unwrap(), winograd::conv2d_bwd_weight(&g, m, &x, &masked), "{ctx}: dw");
            assert_eq!(db.unwrap(), db_ref, "{ctx}: db");
            let only_dw = Wanted { dx: false, dw: true, db: false };
            let (dx, dw, db) = winograd::conv2d_bwd_fused(&g, m, &x, kept, &w, None, OutGrad::Plain(&masked), only_dw);
            assert!(dx.is_none() && db.is_none(), "{ctx}");
            assert_eq!(dw.unwrap(), winograd::conv2d_bwd_weight(&g, m, &x, &masked), "{ctx}: dw alone");
        }
        // From the gradient of a 2x2 / stride-2 max pool of the output, with
        // and without the ReLU: the bits of the pool's backward (a window's
        // gradient at its first maximum) followed by the mask.
        let (ph, pw) = (g.oh / 2, g.ow / 2);
        // Ties, so that "first maximum" is tested.
        let y: Vec<f32> = y.iter().map(|v| (v * 4.0).round() / 4.0).collect();
        let dp = rand_vec(g.n * g.o * ph * pw, seed + 5);
        for relu in [false, true] {
            let mut unpooled = vec![0.0f32; y.len()];
            for (plane, (yp, up)) in y.chunks(g.p()).zip(unpooled.chunks_mut(g.p())).enumerate() {
                for (i, j) in (0..ph).flat_map(|i| (0..pw).map(move |j| (i, j))) {
                    let at = |k: usize| (2 * i + k / 2) * g.ow + 2 * j + k % 2;
                    let first = (1..4).fold(0, |b, k| if yp[at(k)] > yp[at(b)] { k } else { b });
                    let d = 0.0 + dp[(plane * ph + i) * pw + j];
                    up[at(first)] = if relu && yp[at(first)] <= 0.0 { 0.0 } else { d };
                }
            }
            let (_, kept) = winograd::conv2d_fwd_keep(&g, m, &x, &w, true, &winograd::Epilogue::NONE);
            let all = Wanted { dx: true, dw: true, db: true };
            let pp = g.n * g.o * ph * pw;
            let (mut pooled, mut codes) = (vec![std::mem::MaybeUninit::new(f32::NAN); pp], vec![std::mem::MaybeUninit::new(9u8); pp]);
            super::pool::pool2_codes(g.oh, g.ow, &y, &mut pooled, &mut codes);
            // SAFETY: initialised above (and overwritten by `pool2_codes`).
            let (pooled, codes): (Vec<f32>, Vec<u8>) = pooled.iter().zip(&codes).map(|(p, c)| unsafe { (p.assume_init(), c.assume_init()) }).unzip();
            let grad = OutGrad::Pool2 { pooled: &pooled, codes: &codes, dp: &dp, relu };
            let (dx, dw, db) = winograd::conv2d_bwd_fused(&g, m, &x, kept.as_deref(), &w, None, grad, all);
            let plain = winograd::conv2d_bwd_fused(&g, m, &x, None, &w, None, OutGrad::Plain(&unpooled), all);
            let ctx = format!("case {i} pooled, relu={relu}");
            assert_eq!(dx, plain.0, "{ctx}: dx");
            assert_eq!(dw, plain.1, "{ctx}: dw");
            assert_eq!(db, plain.2, "{ctx}: db");
            assert!(unpooled.iter().filter(|&&v| v != 0.0).count() > y.len() / 8, "{ctx}: too few nonzero gradients to test");
        }
    }
}

#[test]
fn winograd_only_where_it_wins() {
    use super::conv::{choose_algo, Algo, Geom};
    let algo = |x: [usize; 4], w: [usize; 4]| choose_algo(&Geom::new(&x, &w, [1, 1, 1, 1], 1).unwrap());
    assert_eq!(algo([3, 9, 17, 16], [5, 9, 3, 3]), Algo::Winograd(2)); // 20x16 tiles for 17x16
    assert_eq!(algo([64, 48, 48, 48], [48, 48, 3, 3]), Algo::Winograd(4)); // whole 4x4 tiles: F(4x4, 3x3)
    assert_eq!(algo([64, 64, 18, 18], [64, 64, 3, 3]), Algo::Winograd(2)); // 23% of 5x5 tiles wasted
    assert_eq!(algo([64, 48, 48, 48], [48, 48, 4, 4]), Algo::Winograd(3));
    assert_eq!(algo([64, 64, 12, 12], [124, 64, 3, 3]), Algo::Winograd(4));
    assert_eq!(algo([64, 64, 6, 6], [124, 64, 3, 3]), Algo::Winograd(2)); // small plane, many channels
    assert_eq!(algo([64, 256, 4, 4], [256, 256, 3, 3]), Algo::Winograd(2));
    assert_eq!(algo([64, 8, 6, 6], [16, 8, 3, 3]), Algo::Im2col); // small plane, few channels
    assert_eq!(algo([64, 64, 7, 7], [64, 64, 3, 3]), Algo::Im2col); // 31% of the 2x2 tiles wasted
    assert_eq!(algo([64, 256, 2, 2], [256, 256, 3, 3]), Algo::Im2col); // one tile
    assert_eq!(algo([64, 64, 12, 12], [124, 64, 4, 4]), Algo::Winograd(3)); // 11x11: 19% of the 3x3 tiles wasted
    assert_eq!(algo([64, 64, 11, 11], [124, 64, 4, 4]), Algo::Im2col); // 10x10: 44% wasted
    assert_eq!(algo([64, 64, 8, 8], [124, 64, 4, 4]), Algo::Im2col); // 7x7: small plane
    assert_eq!(algo([64, 64, 24, 24], [124, 64, 5, 5]), Algo::Im2col); // no 5x5 Winograd
    assert_eq!(algo([64, 1, 48, 48], [48, 1, 3, 3]), Algo::Direct); // one input channel: 9 taps
    assert_eq!(algo([64, 1, 48, 48], [48, 1, 4, 4]), Algo::Direct); // 16 taps
    assert_eq!(algo([64, 2, 48, 48], [48, 2, 3, 3]), Algo::Im2col); // 18 taps
}
