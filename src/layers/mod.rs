//! Layers in candle-nn style: free constructors that draw their own Keras
//! initial weights, and `forward_t(xs, train)`. Everything is NCHW.
//!
//! Parameters are candle `Var`s so autograd sees them. Eval-mode forwards use
//! detached views of the same storage, which keeps inference from recording
//! an autograd graph it would never use.

use candle_core::{Result, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::spec::{Activation, FeatureShape, LayerPlan, LayerSpec};

mod conv;
mod dropout;
mod linear;
mod norm;
mod pool;
mod saved;

pub use conv::{conv2d, Conv2d};
pub use dropout::{dropout, Dropout};
pub use linear::{dense, Dense};
pub use norm::{batch_norm2d, BatchNorm2d};
pub use pool::{global_avg_pool, max_pool2d, MaxPool2d};
pub use saved::Saved;

/// One named parameter of a layer (`weight`, `bias`, `running_mean`, ...).
pub struct Param<'a> {
    pub name: &'static str,
    pub var: &'a Var,
    /// False for BatchNorm running statistics, which the optimizer must not touch.
    pub trainable: bool,
}

pub enum Layer {
    Conv2d(Conv2d),
    MaxPool2d(MaxPool2d),
    Dropout(Dropout),
    BatchNorm2d(BatchNorm2d),
    Relu,
    Flatten,
    GlobalAvgPool,
    Dense(Dense),
}

impl Layer {
    /// Builds the layer `spec` describes, with the shapes `plan` worked out.
    /// The final classifier's softmax is dropped: networks return logits.
    pub fn new(spec: &LayerSpec, plan: &LayerPlan, rng: &mut ChaCha8Rng) -> crate::Result<Layer> {
        let in_channels = match plan.input {
            FeatureShape::Spatial { c, .. } => c,
            FeatureShape::Flat(n) => n,
        };
        Ok(match *spec {
            LayerSpec::Conv2d { filters, kernel, stride, activation, use_bias, .. } => Layer::Conv2d(conv2d(
                in_channels,
                filters,
                kernel,
                stride,
                plan.padding,
                activation,
                use_bias,
                rng,
            )?),
            LayerSpec::MaxPool2d { kernel, stride, .. } => Layer::MaxPool2d(max_pool2d(kernel, stride, plan.padding)),
            LayerSpec::Dropout { rate } => Layer::Dropout(dropout(rate)),
            LayerSpec::BatchNorm2d { momentum, eps } => Layer::BatchNorm2d(batch_norm2d(in_channels, momentum, eps)?),
            LayerSpec::Relu => Layer::Relu,
            LayerSpec::Flatten => Layer::Flatten,
            LayerSpec::GlobalAvgPool => Layer::GlobalAvgPool,
            LayerSpec::Dense { units, activation } => {
                let activation = if activation == Activation::Softmax { Activation::None } else { activation };
                Layer::Dense(dense(in_channels, units, activation, rng)?)
            }
        })
    }

    /// `rng` feeds dropout masks only, so training is reproducible from a seed.
    pub fn forward_t(&self, xs: &Tensor, train: bool, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        match self {
            Layer::Conv2d(l) => l.forward_t(xs, train),
            Layer::MaxPool2d(l) => l.forward(xs),
            Layer::Dropout(l) => l.forward_t(xs, train, rng),
            Layer::BatchNorm2d(l) => l.forward_t(xs, train),
            Layer::Relu => xs.relu(),
            Layer::Flatten => xs.flatten_from(1),
            Layer::GlobalAvgPool => global_avg_pool(xs),
            Layer::Dense(l) => l.forward_t(xs, train),
        }
    }

    pub fn params(&self) -> Vec<Param<'_>> {
        match self {
            Layer::Conv2d(l) => l.params(),
            Layer::BatchNorm2d(l) => l.params(),
            Layer::Dense(l) => l.params(),
            _ => Vec::new(),
        }
    }
}

/// The tensor to compute with: tracked by autograd only when training.
fn value(var: &Var, train: bool) -> Tensor {
    if train {
        var.as_tensor().clone()
    } else {
        var.as_tensor().detach()
    }
}

fn activate(xs: Tensor, activation: Activation) -> Result<Tensor> {
    match activation {
        Activation::Relu => xs.relu(),
        // Softmax never reaches a layer (see `Layer::new`).
        Activation::None | Activation::Softmax => Ok(xs),
    }
}

/// Keras' `glorot_uniform`: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)).
fn glorot_uniform(shape: &[usize], fan_in: usize, fan_out: usize, rng: &mut ChaCha8Rng) -> crate::Result<Var> {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.random_range(-limit..=limit)).collect();
    Ok(Var::from_tensor(&Tensor::from_vec(data, shape, &candle_core::Device::Cpu)?)?)
}

fn filled(value: f32, n: usize) -> crate::Result<Var> {
    Ok(Var::from_tensor(&Tensor::from_vec(vec![value; n], n, &candle_core::Device::Cpu)?)?)
}

#[cfg(test)]
pub(crate) mod gradcheck;
