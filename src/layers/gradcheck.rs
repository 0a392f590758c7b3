//! Finite-difference gradient checks shared by the layer, loss and network
//! tests. The ops are float32, so checks use central differences with a step
//! large enough to rise above f32 rounding and tolerances to match.

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const STEP: f64 = 5e-3;
/// Elements checked per variable; sampled so big tensors stay fast.
const SAMPLES: usize = 48;

/// A test input whose values are pairwise at least 0.05 apart, so a
/// finite-difference step never changes which element a max-pool picks.
pub fn input(shape: &[usize], seed: u64) -> Var {
    let n: usize = shape.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let data: Vec<f32> = order.iter().map(|&i| (i as f32 - n as f32 / 2.0) * 0.05 + 0.013).collect();
    Var::from_tensor(&Tensor::from_vec(data, shape, &Device::Cpu).unwrap()).unwrap()
}

/// Checks d(sum(f(vars) * R))/d(vars) against central differences for a
/// fixed random R.
pub fn check(vars: &[Var], f: impl Fn(&[Var]) -> Result<Tensor>, what: &str) {
    let out = f(vars).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let r: Vec<f64> = (0..out.elem_count()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let r = Tensor::from_vec(r, out.shape(), &Device::Cpu).unwrap();
    let objective = |vars: &[Var]| -> Result<Tensor> { f(vars)?.to_dtype(DType::F64)?.mul(&r)?.sum_all() };
    let grads = objective(vars).unwrap().backward().unwrap();
    for (k, var) in vars.iter().enumerate() {
        let analytic: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{what}: no gradient for input {k}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let mut idx: Vec<usize> = (0..base.len()).collect();
        idx.shuffle(&mut rng);
        idx.truncate(SAMPLES);
        let mut kinks = 0;
        for &i in &idx {
            let eval = |delta: f64| -> f64 {
                let mut data = base.clone();
                data[i] = (data[i] as f64 + delta) as f32;
                var.set(&Tensor::from_vec(data, var.shape(), &Device::Cpu).unwrap()).unwrap();
                objective(vars).unwrap().to_scalar::<f64>().unwrap()
            };
            let (up, mid, down) = (eval(STEP), eval(0.0), eval(-STEP));
            let numeric = (up - down) / (2.0 * STEP);
            let a = analytic[i] as f64;
            let tol = 2e-3 + 2e-2 * a.abs().max(numeric.abs());
            // A ReLU or max-pool kink inside the step makes the one-sided
            // slopes disagree; the analytic gradient must then match one side.
            let (fwd, bwd) = ((up - mid) / STEP, (mid - down) / STEP);
            if (a - numeric).abs() > tol && (fwd - bwd).abs() > tol && ((a - fwd).abs() <= tol || (a - bwd).abs() <= tol) {
                kinks += 1;
                continue;
            }
            assert!(
                (a - numeric).abs() <= tol,
                "{what}: input {k} element {i}: analytic {a} vs numeric {numeric}"
            );
        }
        assert!(kinks * 2 <= idx.len(), "{what}: input {k}: {kinks} of {} samples hit a kink", idx.len());
        var.set(&Tensor::from_vec(base, var.shape(), &Device::Cpu).unwrap()).unwrap();
    }
}
