//! A sequential CNN built from a [`ModelSpec`]. It returns logits; softmax
//! lives in the loss and in [`Network::predict_proba`].

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::augment::Tta;
use crate::layers::{Layer, Saved};
use crate::spec::ModelSpec;
use crate::{Error, Result, NUM_CLASSES};

pub struct Network {
    spec: ModelSpec,
    layers: Vec<Layer>,
}

/// A parameter or running statistic with its stable name (`layers.{i}.{param}`).
#[derive(Clone)]
pub struct NamedVar {
    pub name: String,
    pub var: Var,
    pub trainable: bool,
}

impl Network {
    /// Validates `spec` and draws Keras initial weights from a ChaCha8 stream
    /// seeded with `seed`, so the same seed always gives the same network.
    pub fn new(spec: ModelSpec, seed: u64) -> Result<Network> {
        let plans = spec.plan()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let layers = spec
            .layers
            .iter()
            .zip(&plans)
            .map(|(layer, plan)| Layer::new(layer, plan, &mut rng))
            .collect::<Result<Vec<_>>>()?;
        Ok(Network { spec, layers })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// `x`: (N, C, H, W) float32 as in the spec's `input_shape`. Returns
    /// logits (N, 7). In training mode dropout draws its masks from `rng`
    /// and BatchNorm updates its running statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool, rng: &mut ChaCha8Rng) -> candle_core::Result<Tensor> {
        self.forward_from(0, x, train, rng)
    }

    /// One training step's forward and backward: the logits, the loss
    /// `loss_fn` makes of them, and the gradient of every trainable
    /// variable (what `loss.backward()` on [`Self::forward_t`] gives, without
    /// an autograd graph for the convolutional layers: see [`Saved`]).
    pub fn forward_backward(
        &self,
        x: &Tensor,
        rng: &mut ChaCha8Rng,
        loss_fn: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, GradStore)> {
        let mut saved = Vec::new();
        let (mut xs, mut i) = (x.clone(), 0);
        while let Some((ys, s, used)) = Saved::forward(&self.layers[i..], &xs, !saved.is_empty(), rng)? {
            saved.push(s);
            xs = ys;
            i += used;
        }
        // The head (flatten or global pooling, dense: small tensors) runs
        // on autograd from a copy of the last saved layer's output.
        let boundary = if saved.is_empty() { None } else { Some(Var::from_tensor(&xs)?) };
        let head_in = boundary.as_ref().map_or(xs, |v| v.as_tensor().clone());
        let logits = self.forward_from(i, &head_in, true, rng)?;
        let loss = loss_fn(&logits)?;
        let mut grads = loss.backward()?;
        let mut grad = boundary.and_then(|b| grads.remove(b.as_tensor()));
        for s in saved.iter().rev() {
            let Some(g) = grad else { break };
            grad = s.backward(&g, &mut grads)?;
        }
        Ok((logits, loss, grads))
    }

    /// [`Self::forward_t`] from layer `start` on.
    fn forward_from(&self, start: usize, x: &Tensor, train: bool, rng: &mut ChaCha8Rng) -> candle_core::Result<Tensor> {
        let mut xs = x.clone();
        let mut i = start;
        while i < self.layers.len() {
            if !train {
                // A conv, its folded BatchNorm (and ReLU), and the max pool
                // after them, each as far as the run can be fused.
                let unpool2 = |j: usize| matches!(self.layers.get(j), Some(Layer::MaxPool2d(p)) if p.is_unpool2());
                if let (Layer::Conv2d(conv), Some(Layer::BatchNorm2d(bn))) = (&self.layers[i], self.layers.get(i + 1)) {
                    let relu = matches!(self.layers.get(i + 2), Some(Layer::Relu));
                    let next = i + if relu { 3 } else { 2 };
                    let (scale, shift) = bn.inference_affine()?;
                    if unpool2(next) {
                        if let Some(ys) = conv.forward_folded_pool2(&xs, &scale, &shift, relu)? {
                            (xs, i) = (ys, next + 1);
                            continue;
                        }
                    }
                    if let Some(ys) = conv.forward_folded(&xs, &scale, &shift, relu)? {
                        (xs, i) = (ys, next);
                        continue;
                    }
                }
                if let Layer::Conv2d(conv) = &self.layers[i] {
                    if unpool2(i + 1) {
                        if let Some(ys) = conv.forward_pool2(&xs)? {
                            (xs, i) = (ys, i + 2);
                            continue;
                        }
                    }
                }
            }
            match (&self.layers[i], self.layers.get(i + 1)) {
                (Layer::BatchNorm2d(bn), Some(Layer::Relu)) => {
                    xs = bn.forward_act(&xs, train, true)?;
                    i += 2;
                }
                (layer, _) => {
                    xs = layer.forward_t(&xs, train, rng)?;
                    i += 1;
                }
            }
        }
        Ok(xs)
    }

    /// Inference forward pass: no dropout, running BatchNorm statistics
    /// (folded into the preceding conv), no autograd graph.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // Inference never draws from the generator; any seed will do.
        self.forward_t(x, false, &mut ChaCha8Rng::seed_from_u64(0))
    }

    /// Every parameter and running statistic in layer order.
    pub fn named_vars(&self) -> Vec<NamedVar> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, layer)| {
                layer.params().into_iter().map(move |p| NamedVar {
                    name: format!("layers.{i}.{}", p.name),
                    var: p.var.clone(),
                    trainable: p.trainable,
                })
            })
            .collect()
    }

    /// What the optimizer updates (everything except BatchNorm running stats).
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.named_vars().into_iter().filter(|v| v.trainable).map(|v| v.var).collect()
    }

    /// Snapshot of every tensor a checkpoint needs, running stats included.
    /// (A copy: later training steps update the variables in place.)
    pub fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.named_vars().into_iter().map(|v| Ok((v.name, v.var.as_tensor().detach().copy()?))).collect()
    }

    /// Checks a flat image buffer against `n` and the spec's input shape and
    /// wraps it as an (n, C, H, W) tensor.
    pub fn images_tensor(&self, x: &[f32], n: usize) -> Result<Tensor> {
        let per = self.spec.input_len();
        if x.len() != n * per {
            return Err(Error::invalid(format!(
                "expected {n} images of {per} floats ({} values) but got {} values",
                n * per,
                x.len()
            )));
        }
        let [c, h, w] = self.spec.input_shape;
        Ok(Tensor::from_slice(x, (n, c, h, w), &Device::Cpu)?)
    }

    /// Logits for `n` images (row-major, `n * C*H*W` floats in [0, 1]), `n * 7` values.
    pub fn predict_logits(&self, x: &[f32], n: usize, batch_size: usize) -> Result<Vec<f32>> {
        self.predict_with(x, n, batch_size, |logits| Ok(logits.clone()))
    }

    /// Class probabilities (softmax of the logits), `n * 7` values.
    pub fn predict_proba(&self, x: &[f32], n: usize, batch_size: usize) -> Result<Vec<f32>> {
        self.predict_with(x, n, batch_size, candle_nn::ops::softmax_last_dim)
    }

    /// `predict_proba` averaged over the views of test-time augmentation
    /// (`None`: the images as they are).
    pub fn predict_proba_tta(&self, x: &[f32], n: usize, batch_size: usize, tta: Option<Tta>) -> Result<Vec<f32>> {
        let Some(tta) = tta else { return self.predict_proba(x, n, batch_size) };
        let views = tta.views();
        let all = self.predict_proba(&tta.expand(x), n * views, batch_size)?;
        let mut mean = vec![0f32; n * NUM_CLASSES];
        for view in all.chunks(n * NUM_CLASSES) {
            mean.iter_mut().zip(view).for_each(|(acc, v)| *acc += v / views as f32);
        }
        Ok(mean)
    }

    fn predict_with(
        &self,
        x: &[f32],
        n: usize,
        batch_size: usize,
        head: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<Vec<f32>> {
        if batch_size == 0 {
            return Err(Error::invalid("batch_size must be positive"));
        }
        self.images_tensor(x, n)?;
        let per = self.spec.input_len();
        let mut out = Vec::with_capacity(n * NUM_CLASSES);
        for start in (0..n).step_by(batch_size) {
            let m = batch_size.min(n - start);
            let batch = self.images_tensor(&x[start * per..(start + m) * per], m)?;
            let ys = head(&self.forward(&batch)?)?;
            out.extend(ys.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::spec::{preset, Activation, LayerSpec, Padding};

    /// The step without an autograd graph for the conv layers gives what
    /// candle's autograd gives: the same logits, loss, gradients (compared
    /// as f32 values), BatchNorm running statistics and dropout draws.
    #[test]
    fn forward_backward_matches_autograd() {
        use crate::loss::CrossEntropy;
        use rand::Rng;
        let cases = [
            ("seed3x3", serde_json::json!({})),
            ("seed4x4", serde_json::json!({})),
            ("seed4x4", serde_json::json!({"pooling": "same"})),
            ("fer_vgg", serde_json::json!({})),
        ];
        // Odd maps: the fused BatchNorm + ReLU + pool leaves a row and a column out.
        let mut odd = tiny_spec();
        odd.input_shape = [1, 11, 13];
        let specs = cases.iter().map(|(name, opts)| preset(name, opts.as_object().unwrap()).unwrap()).chain([odd]);
        for spec in specs {
            let name = spec.name.clone();
            let pixels = spec.input_shape.iter().product::<usize>();
            let (a, b) = (Network::new(spec.clone(), 3).unwrap(), Network::new(spec, 3).unwrap());
            let n = 3;
            let mut data = ChaCha8Rng::seed_from_u64(9);
            let x: Vec<f32> = (0..n * pixels).map(|_| data.random()).collect();
            let y: Vec<u8> = (0..n).map(|_| data.random_range(0..7)).collect();
            let xt = a.images_tensor(&x, n).unwrap();
            let (mut ra, mut rb) = (ChaCha8Rng::seed_from_u64(5), ChaCha8Rng::seed_from_u64(5));
            let logits_a = a.forward_t(&xt, true, &mut ra).unwrap();
            let loss_a = CrossEntropy::default().loss(&logits_a, &y).unwrap();
            let grads_a = loss_a.backward().unwrap();
            let (logits_b, loss_b, grads_b) = b.forward_backward(&xt, &mut rb, |l| CrossEntropy::default().loss(l, &y)).unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(&logits_a), flat(&logits_b), "{name} logits");
            assert_eq!(loss_a.to_scalar::<f32>().unwrap(), loss_b.to_scalar::<f32>().unwrap(), "{name} loss");
            assert_eq!(ra, rb, "{name}: both drew the same dropout masks");
            for (va, vb) in a.named_vars().iter().zip(b.named_vars()) {
                if va.trainable {
                    let ga = grads_a.get(va.var.as_tensor()).unwrap_or_else(|| panic!("{name} {}: no autograd gradient", va.name));
                    let gb = grads_b.get(vb.var.as_tensor()).unwrap_or_else(|| panic!("{name} {}: no gradient", vb.name));
                    assert_eq!(flat(ga), flat(gb), "{name} {} gradient", va.name);
                } else {
                    assert_eq!(flat(va.var.as_tensor()), flat(vb.var.as_tensor()), "{name} {}", va.name);
                }
            }
        }
    }

    pub(crate) fn tiny_spec() -> ModelSpec {
        ModelSpec {
            name: "tiny".into(),
            input_shape: [1, 12, 12],
            layers: vec![
                LayerSpec::Conv2d {
                    filters: 4,
                    kernel: 3,
                    stride: 1,
                    padding: Padding::Same,
                    activation: Activation::None,
                    use_bias: false,
                },
                LayerSpec::BatchNorm2d { momentum: 0.9, eps: 1e-3 },
                LayerSpec::Relu,
                LayerSpec::MaxPool2d { kernel: 2, stride: 2, padding: Padding::Valid },
                LayerSpec::Dropout { rate: 0.2 },
                LayerSpec::Flatten,
                LayerSpec::Dense { units: 7, activation: Activation::Softmax },
            ],
        }
    }

    fn images(n: usize, per: usize, seed: u64) -> Vec<f32> {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n * per).map(|_| rng.random::<f32>()).collect()
    }

    /// Inference folds BatchNorm into the conv before it; the result must
    /// match running the layers one by one (unfolded BatchNorm).
    #[test]
    fn folded_batch_norm_matches_layer_by_layer() {
        let net = Network::new(tiny_spec(), 3).unwrap();
        // Non-trivial BatchNorm parameters and running statistics.
        for (k, v) in net.named_vars().iter().enumerate() {
            if v.name.starts_with("layers.1.") {
                let t = Tensor::from_vec((0..4).map(|c| 0.3 + 0.2 * (c + k) as f32).collect::<Vec<_>>(), 4, &Device::Cpu).unwrap();
                let t = if v.name.ends_with("bias") || v.name.ends_with("mean") { (t - 0.6).unwrap() } else { t };
                v.var.set(&t).unwrap();
            }
        }
        let x = net.images_tensor(&images(5, 144, 9), 5).unwrap();
        let folded: Vec<f32> = net.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let plain = layer_by_layer(&net, &x);
        let worst = folded.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let scale = plain.iter().map(|v| v.abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-5 * scale.max(1.0), "{worst} vs {scale}");
    }

    /// Inference with each layer run on its own (nothing fused or folded).
    fn layer_by_layer(net: &Network, x: &Tensor) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut xs = x.clone();
        for layer in net.layers() {
            xs = layer.forward_t(&xs, false, &mut rng).unwrap();
        }
        xs.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// Inference runs a Winograd conv (folded BatchNorm, ReLU) and the max
    /// pool after it as one op: the same bits as the layers one by one
    /// where nothing is folded, and within rounding where BatchNorm is.
    #[test]
    fn fused_conv_pool_inference_matches_layer_by_layer() {
        for (name, exact) in [("seed3x3", true), ("seed4x4", true), ("fer_vgg", false)] {
            let net = Network::new(preset(name, &serde_json::Map::new()).unwrap(), 3).unwrap();
            let x = net.images_tensor(&images(3, 2304, 4), 3).unwrap();
            let fused: Vec<f32> = net.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let plain = layer_by_layer(&net, &x);
            if exact {
                assert_eq!(fused, plain, "{name}");
            } else {
                let worst = fused.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst <= 1e-5, "{name}: {worst}");
            }
        }
    }

    #[test]
    fn names_are_stable_and_complete() {
        let net = Network::new(tiny_spec(), 0).unwrap();
        let names: Vec<_> = net.named_vars().into_iter().map(|v| (v.name, v.trainable)).collect();
        let expect = [
            ("layers.0.weight", true),
            ("layers.1.weight", true),
            ("layers.1.bias", true),
            ("layers.1.running_mean", false),
            ("layers.1.running_var", false),
            ("layers.6.weight", true),
            ("layers.6.bias", true),
        ];
        assert_eq!(names, expect.map(|(n, t)| (n.to_string(), t)));
        assert_eq!(net.trainable_vars().len(), 5);
        let total: usize = net.named_vars().iter().map(|v| v.var.elem_count()).sum();
        assert_eq!(total, net.spec().param_count().unwrap());
    }

    #[test]
    fn seed_controls_initialisation() {
        let w = |seed| Network::new(tiny_spec(), seed).unwrap().named_tensors().unwrap()[0].1.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(w(1), w(1));
        assert_ne!(w(1), w(2));
    }

    #[test]
    fn predictions_have_the_right_shape_and_sum_to_one() {
        let net = Network::new(tiny_spec(), 3).unwrap();
        let x = images(5, 144, 1);
        let logits = net.predict_logits(&x, 5, 2).unwrap();
        assert_eq!(logits.len(), 35);
        // Batching must not change the answer.
        assert_eq!(logits, net.predict_logits(&x, 5, 5).unwrap());
        let p = net.predict_proba(&x, 5, 3).unwrap();
        for row in p.chunks(7) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert!(matches!(net.predict_logits(&x, 4, 2), Err(Error::InvalidInput(_))));
        assert!(matches!(net.predict_logits(&x, 5, 0), Err(Error::InvalidInput(_))));
        assert!(net.predict_logits(&[], 0, 8).unwrap().is_empty());
    }

    #[test]
    fn seed3x3_runs_on_fer_sized_images() {
        let net = Network::new(preset("seed3x3", &Default::default()).unwrap(), 0).unwrap();
        let x = images(2, 48 * 48, 2);
        let t = net.images_tensor(&x, 2).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(net.forward_t(&t, true, &mut rng).unwrap().dims(), [2, 7]);
        assert_eq!(net.predict_logits(&x, 2, 2).unwrap().len(), 14);
    }

    #[test]
    fn fer_vgg_runs() {
        let net = Network::new(preset("fer_vgg", &Default::default()).unwrap(), 0).unwrap();
        let x = images(2, 48 * 48, 2);
        let t = net.images_tensor(&x, 2).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let y = net.forward_t(&t, true, &mut rng).unwrap();
        assert_eq!(y.dims(), [2, 7]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(net.trainable_vars().iter().all(|v| grads.get(v.as_tensor()).is_some()));
    }
}
