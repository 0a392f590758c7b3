//! Mini-batch training. The Python side drives the loop one batch at a time
//! (progress bars, callbacks, Ctrl-C), so [`Trainer::train_batch`] is the
//! unit of work and all randomness comes from seeded ChaCha8 streams.

use candle_core::D;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::loss::{sample_losses, CrossEntropy};
use crate::network::Network;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::{Error, Result, NUM_CLASSES};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub label_smoothing: f32,
    /// One weight per emotion; the batch loss becomes `sum(w*l) / sum(w)`.
    pub class_weights: Option<Vec<f32>>,
    /// Drives shuffling, dropout masks and augmentation.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 64,
            optimizer: OptimizerConfig::default(),
            label_smoothing: 0.0,
            class_weights: None,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BatchStats {
    /// The batch loss times `count`, so that `sum(loss_sum) / sum(count)`
    /// over an epoch is the running mean Keras shows.
    pub loss_sum: f64,
    pub correct: usize,
    pub count: usize,
}

/// Transforms a batch in place before the forward pass: `(images, labels, rng)`
/// with images row-major `batch * C*H*W`.
pub type Augment = Box<dyn FnMut(&mut [f32], &[u8], &mut ChaCha8Rng) -> Result<()> + Send + Sync>;

// Independent streams of the one seed, so e.g. turning augmentation on does
// not change the shuffling order.
const SHUFFLE_STREAM: u64 = 1;
const DROPOUT_STREAM: u64 = 2;
const AUGMENT_STREAM: u64 = 3;

fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

pub struct Trainer {
    pub network: Network,
    config: TrainConfig,
    loss: CrossEntropy,
    optimizer: Optimizer,
    x: Vec<f32>,
    y: Vec<u8>,
    order: Vec<usize>,
    cursor: usize,
    epoch: usize,
    shuffle_rng: ChaCha8Rng,
    dropout_rng: ChaCha8Rng,
    augment_rng: ChaCha8Rng,
    augment: Option<Augment>,
}

impl Trainer {
    /// `x`: `N * C*H*W` floats in [0, 1] (the network's input shape), `y`: N labels 0..7.
    pub fn new(network: Network, config: TrainConfig, x: Vec<f32>, y: Vec<u8>) -> Result<Trainer> {
        if config.batch_size == 0 {
            return Err(Error::invalid("batch_size must be positive"));
        }
        if y.is_empty() {
            return Err(Error::invalid("the training set is empty"));
        }
        check_labels(&y)?;
        network.images_tensor(&x, y.len())?;
        let loss = CrossEntropy::new(config.label_smoothing, config.class_weights.clone())?;
        let optimizer = Optimizer::new(config.optimizer.clone(), network.trainable_vars())?;
        Ok(Trainer {
            shuffle_rng: stream(config.seed, SHUFFLE_STREAM),
            dropout_rng: stream(config.seed, DROPOUT_STREAM),
            augment_rng: stream(config.seed, AUGMENT_STREAM),
            network,
            config,
            loss,
            optimizer,
            order: Vec::new(),
            cursor: 0,
            epoch: 0,
            x,
            y,
            augment: None,
        })
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Installs (or with `None` removes) the per-batch augmentation.
    pub fn set_augmentation(&mut self, augment: Option<Augment>) {
        self.augment = augment;
    }

    pub fn num_samples(&self) -> usize {
        self.y.len()
    }

    /// Epochs started so far.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Batches per epoch, the last partial one included.
    pub fn batches_per_epoch(&self) -> usize {
        self.y.len().div_ceil(self.config.batch_size)
    }

    pub fn batches_left(&self) -> usize {
        (self.order.len() - self.cursor).div_ceil(self.config.batch_size)
    }

    /// Reshuffles and returns the number of batches in the new epoch.
    pub fn start_epoch(&mut self) -> usize {
        self.order = (0..self.y.len()).collect();
        self.order.shuffle(&mut self.shuffle_rng);
        self.cursor = 0;
        self.epoch += 1;
        self.batches_per_epoch()
    }

    /// Forward, loss, backward and one optimizer step on the next batch.
    pub fn train_batch(&mut self) -> Result<BatchStats> {
        if self.cursor >= self.order.len() {
            return Err(Error::invalid("no batches left in this epoch; call start_epoch() first"));
        }
        let end = (self.cursor + self.config.batch_size).min(self.order.len());
        let (mut xb, yb) = self.gather(self.cursor, end);
        self.cursor = end;
        if let Some(augment) = &mut self.augment {
            augment(&mut xb, &yb, &mut self.augment_rng)?;
        }
        let n = yb.len();
        let images = self.network.images_tensor(&xb, n)?;
        let loss_fn = &self.loss;
        let (logits, loss, grads) = self.network.forward_backward(&images, &mut self.dropout_rng, |logits| loss_fn.loss(logits, &yb))?;
        self.optimizer.step(&grads)?;
        let predicted = logits.detach().argmax(D::Minus1)?.to_vec1::<u32>()?;
        Ok(BatchStats {
            loss_sum: loss.to_scalar::<f32>()? as f64 * n as f64,
            correct: predicted.iter().zip(&yb).filter(|(p, y)| **p == **y as u32).count(),
            count: n,
        })
    }

    fn gather(&self, start: usize, end: usize) -> (Vec<f32>, Vec<u8>) {
        let per = self.network.spec().input_len();
        let idx = &self.order[start..end];
        let mut xb = Vec::with_capacity(idx.len() * per);
        for &i in idx {
            xb.extend_from_slice(&self.x[i * per..(i + 1) * per]);
        }
        (xb, idx.iter().map(|&i| self.y[i]).collect())
    }

    pub fn learning_rate(&self) -> f64 {
        self.optimizer.learning_rate()
    }

    pub fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        self.optimizer.set_learning_rate(lr)
    }

    /// Optimizer steps taken so far.
    pub fn iterations(&self) -> u64 {
        self.optimizer.iterations()
    }

    /// Mean loss (with the training label smoothing, without class weights,
    /// as Keras' `evaluate`) and accuracy in inference mode.
    pub fn evaluate(&self, x: &[f32], y: &[u8], batch_size: usize) -> Result<(f64, f64)> {
        evaluate(&self.network, x, y, batch_size, self.config.label_smoothing)
    }
}

/// [`Trainer::evaluate`] for a bare network.
pub fn evaluate(network: &Network, x: &[f32], y: &[u8], batch_size: usize, label_smoothing: f32) -> Result<(f64, f64)> {
    if y.is_empty() {
        return Err(Error::invalid("cannot evaluate on an empty set"));
    }
    check_labels(y)?;
    let logits = network.predict_logits(x, y.len(), batch_size)?;
    let losses = sample_losses(&logits, NUM_CLASSES, y, label_smoothing)?;
    let correct = logits
        .chunks(NUM_CLASSES)
        .zip(y)
        .filter(|(row, &label)| argmax(row) == label as usize)
        .count();
    let n = y.len() as f64;
    Ok((losses.iter().sum::<f64>() / n, correct as f64 / n))
}

/// First index of the maximum, matching candle's `argmax`.
fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best })
}

fn check_labels(y: &[u8]) -> Result<()> {
    match y.iter().position(|&l| l as usize >= NUM_CLASSES) {
        Some(i) => Err(Error::invalid(format!("label {} at index {i} is out of range 0..{NUM_CLASSES}", y[i]))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::tests::tiny_spec;
    use crate::spec::{Activation, LayerSpec, ModelSpec, Padding};
    use rand::Rng;

    fn data(n: usize, per: usize, seed: u64) -> (Vec<f32>, Vec<u8>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = (0..n * per).map(|_| rng.random::<f32>()).collect();
        let y = (0..n).map(|_| rng.random_range(0..NUM_CLASSES as u8)).collect();
        (x, y)
    }

    fn weights(t: &Trainer) -> Vec<u32> {
        t.network
            .named_tensors()
            .unwrap()
            .iter()
            .flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .map(f32::to_bits)
            .collect()
    }

    fn trainer(net_seed: u64, seed: u64) -> Trainer {
        let (x, y) = data(20, 144, 5);
        let config = TrainConfig { batch_size: 8, seed, ..Default::default() };
        Trainer::new(Network::new(tiny_spec(), net_seed).unwrap(), config, x, y).unwrap()
    }

    fn run_epochs(t: &mut Trainer, epochs: usize) {
        for _ in 0..epochs {
            for _ in 0..t.start_epoch() {
                t.train_batch().unwrap();
            }
        }
    }

    #[test]
    fn epochs_have_partial_last_batches() {
        let mut t = trainer(0, 0);
        assert!(t.train_batch().is_err(), "no epoch started");
        assert_eq!(t.start_epoch(), 3);
        let counts: Vec<usize> = (0..3).map(|_| t.train_batch().unwrap().count).collect();
        assert_eq!(counts, [8, 8, 4]);
        assert_eq!(t.batches_left(), 0);
        assert!(matches!(t.train_batch(), Err(Error::InvalidInput(_))));
        assert_eq!((t.epoch(), t.iterations()), (1, 3));
    }

    #[test]
    fn same_seed_is_bit_identical_and_different_seeds_differ() {
        let mut a = trainer(1, 7);
        let mut b = trainer(1, 7);
        let mut c = trainer(1, 8);
        let mut d = trainer(2, 7);
        for t in [&mut a, &mut b, &mut c, &mut d] {
            run_epochs(t, 2);
        }
        assert_eq!(weights(&a), weights(&b));
        assert_ne!(weights(&a), weights(&c));
        assert_ne!(weights(&a), weights(&d));
    }

    #[test]
    fn tiny_model_overfits_random_labels() {
        let spec = ModelSpec {
            name: "overfit".into(),
            input_shape: [1, 48, 48],
            layers: vec![
                LayerSpec::Conv2d {
                    filters: 8,
                    kernel: 3,
                    stride: 2,
                    padding: Padding::Same,
                    activation: Activation::Relu,
                    use_bias: true,
                },
                LayerSpec::MaxPool2d { kernel: 2, stride: 2, padding: Padding::Valid },
                LayerSpec::Flatten,
                LayerSpec::Dense { units: 7, activation: Activation::Softmax },
            ],
        };
        let (x, y) = data(64, 48 * 48, 3);
        let config = TrainConfig { batch_size: 16, optimizer: OptimizerConfig::adam(3e-3), ..Default::default() };
        let mut t = Trainer::new(Network::new(spec, 0).unwrap(), config, x.clone(), y.clone()).unwrap();
        let (first_loss, _) = t.evaluate(&x, &y, 32).unwrap();
        let mut epochs = 0;
        while t.evaluate(&x, &y, 64).unwrap().1 < 1.0 {
            epochs += 1;
            assert!(epochs <= 60, "not at 100% train accuracy after 60 epochs: {:?}", t.evaluate(&x, &y, 64));
            run_epochs(&mut t, 1);
        }
        assert!(t.evaluate(&x, &y, 64).unwrap().0 < first_loss);
    }

    #[test]
    fn batch_stats_agree_with_evaluate_without_dropout() {
        let mut spec = tiny_spec();
        spec.layers.retain(|l| !matches!(l, LayerSpec::Dropout { .. } | LayerSpec::BatchNorm2d { .. }));
        let (x, y) = data(10, 144, 8);
        let config = TrainConfig { batch_size: 10, optimizer: OptimizerConfig::adam(1e-9), ..Default::default() };
        let mut t = Trainer::new(Network::new(spec, 0).unwrap(), config, x.clone(), y.clone()).unwrap();
        let (loss, acc) = t.evaluate(&x, &y, 3).unwrap();
        t.start_epoch();
        let s = t.train_batch().unwrap();
        assert!((s.loss_sum / 10.0 - loss).abs() < 1e-5, "{s:?} vs {loss}");
        assert_eq!(s.correct as f64 / 10.0, acc);
    }

    #[test]
    fn augmentation_hook_sees_each_batch() {
        let mut t = trainer(0, 0);
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        t.set_augmentation(Some(Box::new(move |x: &mut [f32], y: &[u8], _rng: &mut ChaCha8Rng| {
            assert_eq!(x.len(), y.len() * 144);
            x.iter_mut().for_each(|v| *v = 1.0 - *v);
            counter.fetch_add(y.len(), std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })));
        run_epochs(&mut t, 1);
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 20);
    }

    #[test]
    fn bad_inputs_are_rejected() {
        let net = || Network::new(tiny_spec(), 0).unwrap();
        let (x, y) = data(4, 144, 1);
        let cfg = TrainConfig::default();
        let bad = [
            Trainer::new(net(), TrainConfig { batch_size: 0, ..cfg.clone() }, x.clone(), y.clone()),
            Trainer::new(net(), cfg.clone(), x[1..].to_vec(), y.clone()),
            Trainer::new(net(), cfg.clone(), vec![], vec![]),
            Trainer::new(net(), cfg.clone(), x.clone(), vec![0, 1, 7, 2]),
            Trainer::new(net(), TrainConfig { optimizer: OptimizerConfig::adam(0.0), ..cfg.clone() }, x.clone(), y.clone()),
            Trainer::new(net(), TrainConfig { label_smoothing: 1.5, ..cfg.clone() }, x.clone(), y.clone()),
            Trainer::new(net(), TrainConfig { class_weights: Some(vec![1.0; 3]), ..cfg.clone() }, x.clone(), y.clone()),
        ];
        for r in bad {
            assert!(matches!(r, Err(Error::InvalidInput(_))));
        }
        let mut t = Trainer::new(net(), cfg, x.clone(), y.clone()).unwrap();
        assert!(t.set_learning_rate(0.0).is_err());
        t.set_learning_rate(0.05).unwrap();
        assert_eq!(t.learning_rate(), 0.05);
        assert!(t.evaluate(&x, &[], 4).is_err());
        assert!(t.evaluate(&x, &[9, 0, 0, 0], 4).is_err());
    }

    #[test]
    fn trainer_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Trainer>();
        send_sync::<Network>();
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::spec::preset;
    use rand::Rng;

    /// `cargo test --release -- --ignored --nocapture step_timing`
    #[test]
    #[ignore]
    fn step_timing() {
        for (name, opts) in [
            ("seed3x3", serde_json::json!({})),
            ("fer_vgg", serde_json::json!({})),
            ("seed3x3", serde_json::json!({"pooling": "same"})),
        ] {
            let spec = preset(name, opts.as_object().unwrap()).unwrap();
            let n = 128;
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let x: Vec<f32> = (0..n * 2304).map(|_| rng.random()).collect();
            let y: Vec<u8> = (0..n).map(|_| rng.random_range(0..7)).collect();
            let mut t = Trainer::new(Network::new(spec, 0).unwrap(), TrainConfig::default(), x.clone(), y.clone()).unwrap();
            t.start_epoch();
            t.train_batch().unwrap();
            let start = std::time::Instant::now();
            t.train_batch().unwrap();
            let step = start.elapsed();
            let start = std::time::Instant::now();
            t.network.predict_logits(&x, n, 64).unwrap();
            println!("{name} {opts}: train step (64) {step:?}, predict 128 {:?}", start.elapsed());
        }
    }
}

#[cfg(test)]
mod profile {
    use super::*;
    use candle_core::Tensor;
    use crate::spec::preset;
    use rand::Rng;
    use std::time::Instant;

    /// Runs `body` set up as `fer._core` is at import: without this,
    /// candle's own threads compete with the pool and big buffers
    /// page-fault every step, and the times come out up to 2x slower than
    /// in Python.
    fn as_in_python(body: fn()) {
        crate::ops::alloc::tune_allocator();
        crate::threads::configure_candle();
        crate::threads::install(body).unwrap();
    }

    /// `FER_PROFILE_PRESET` (default fer_vgg) with `FER_PROFILE_OPTIONS` (a
    /// JSON object), `n` random images, and the generator (seed 0) that drew
    /// them, for what else the profile draws.
    fn network_and_images(n: usize) -> (String, Network, Tensor, ChaCha8Rng) {
        let name = std::env::var("FER_PROFILE_PRESET").unwrap_or_else(|_| "fer_vgg".into());
        // e.g. FER_PROFILE_OPTIONS='{"pooling": "same"}' for the study's pooling
        let options = match std::env::var("FER_PROFILE_OPTIONS") {
            Ok(json) => serde_json::from_str(&json).expect("FER_PROFILE_OPTIONS must be a JSON object"),
            Err(_) => Default::default(),
        };
        let net = Network::new(preset(&name, &options).unwrap(), 0).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let x: Vec<f32> = (0..n * 2304).map(|_| rng.random()).collect();
        let xt = net.images_tensor(&x, n).unwrap();
        (name, net, xt, rng)
    }

    /// Each layer's inference forward time.
    fn time_layers(net: &Network, xt: &Tensor, rng: &mut ChaCha8Rng) {
        let mut xs = xt.clone();
        for (i, layer) in net.layers().iter().enumerate() {
            let t0 = Instant::now();
            xs = layer.forward_t(&xs, false, rng).unwrap();
            println!("  layer {i} {:?} -> {:?}", t0.elapsed(), xs.dims());
        }
    }

    /// `cargo test --release -- --ignored --nocapture phase_profile`
    #[test]
    #[ignore]
    fn phase_profile() {
        as_in_python(|| {
            let n = 64;
            let (name, net, xt, mut rng) = network_and_images(n);
            let y: Vec<u8> = (0..n).map(|_| rng.random_range(0..7)).collect();
            let mut opt = Optimizer::new(OptimizerConfig::default(), net.trainable_vars()).unwrap();
            let steps: usize = std::env::var("FER_PROFILE_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
            for _ in 0..steps {
                let t0 = Instant::now();
                let (_, _, grads) = net.forward_backward(&xt, &mut rng, |l| CrossEntropy::default().loss(l, &y)).unwrap();
                let t1 = Instant::now();
                opt.step(&grads).unwrap();
                let t2 = Instant::now();
                println!("{name}: forward+backward {:?} step {:?}", t1 - t0, t2 - t1);
            }
            time_saved_layers(&net, &xt, &y, &mut rng);
        });
    }

    /// A training step's forward and backward as `forward_backward` runs
    /// them, timed layer by layer (the head, on autograd, as one item).
    fn time_saved_layers(net: &Network, xt: &Tensor, y: &[u8], rng: &mut ChaCha8Rng) {
        use crate::layers::Saved;
        let layers = net.layers();
        let (mut saved, mut xs, mut i) = (Vec::new(), xt.clone(), 0);
        loop {
            let t0 = Instant::now();
            let Some((ys, s, used)) = Saved::forward(&layers[i..], &xs, !saved.is_empty(), rng).unwrap() else { break };
            println!("  forward  layer {i} {:?} -> {:?}", t0.elapsed(), ys.dims());
            saved.push((i, s));
            xs = ys;
            i += used;
        }
        let t0 = Instant::now();
        let boundary = candle_core::Var::from_tensor(&xs).unwrap();
        let mut head = boundary.as_tensor().clone();
        for layer in &layers[i..] {
            head = layer.forward_t(&head, true, rng).unwrap();
        }
        let mut grads = CrossEntropy::default().loss(&head, y).unwrap().backward().unwrap();
        let mut grad = grads.remove(boundary.as_tensor());
        println!("  head (layers {i}..) forward+backward {:?}", t0.elapsed());
        for (i, s) in saved.iter().rev() {
            let Some(g) = grad else { break };
            let t0 = Instant::now();
            grad = s.backward(&g, &mut grads).unwrap();
            println!("  backward layer {i} {:?}", t0.elapsed());
        }
    }

    /// Inference, batch 256 (as `bench_speed.py` predicts), then layer by
    /// layer (unfolded: BatchNorm shows as its own layer):
    /// `FER_PROFILE_PRESET=seed3x3 cargo test --release -- --ignored --nocapture inference_profile`
    #[test]
    #[ignore]
    fn inference_profile() {
        as_in_python(|| {
            let n = 256;
            let (name, net, xt, mut rng) = network_and_images(n);
            for _ in 0..3 {
                let t0 = Instant::now();
                net.forward(&xt).unwrap();
                println!("{name}: forward {:?} ({:.0} images/s)", t0.elapsed(), n as f64 / t0.elapsed().as_secs_f64());
            }
            time_layers(&net, &xt, &mut rng);
        });
    }
}
