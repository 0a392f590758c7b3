//! A training step's forward without candle's autograd graph, for the
//! layers whose forward is one fast op (convolution, max pooling, dropout,
//! BatchNorm with its ReLU, flatten, a dense layer without activation):
//! each keeps what its backward needs, and
//! [`crate::network::Network::forward_backward`] runs the backwards in
//! reverse. Candle's own backward gives every tensor of the graph a
//! zero-filled gradient and adds each contribution to it (`zeros_like` +
//! `add`, three passes over the largest activations for nothing in a
//! chain of layers): about 7% of a seed3x3 training step.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use super::dropout::MaskOp;
use super::norm::BatchNormTrain;
use super::{BatchNorm2d, Conv2d, Dense, Layer, MaxPool2d};
use crate::ops::conv_bias_act::{ConvBiasAct, Grads3};

/// What one layer's backward needs from its forward.
pub struct Saved<'a>(Kind<'a>);

enum Kind<'a> {
    Conv { layer: &'a Conv2d, op: ConvBiasAct, x: Tensor, y: Tensor },
    /// A Winograd convolution and the 2x2 / stride-2 max pool after it, run
    /// as one: the pool reads the conv's output while it is in cache, and
    /// keeps where each window's maximum lay (`codes`, a byte a window) in
    /// place of the output, which is never written out; the backward starts
    /// from the pool's output gradient (the pool's input gradient, three
    /// quarters zeros and as large as the conv's output, is never written
    /// out and read back either).
    ConvPool { layer: &'a Conv2d, op: ConvBiasAct, x: Tensor, pooled: Tensor, codes: Vec<u8> },
    Pool { layer: &'a MaxPool2d, x: Tensor, y: Tensor },
    Dropout { op: Option<MaskOp> },
    Norm { layer: &'a BatchNorm2d, op: BatchNormTrain, x: Tensor, y: Tensor },
    /// BatchNorm (with its ReLU) and the 2x2 / stride-2 max pool after it,
    /// the same way as `ConvPool`.
    NormPool { layer: &'a BatchNorm2d, op: BatchNormTrain, x: Tensor, y: Tensor },
    Flatten { dims: Vec<usize> },
    /// A dense layer without activation (the classifier). On autograd, the
    /// input gradient of the study's 285,696-feature flatten would be
    /// zero-filled and added to, as for the layers above.
    Dense { layer: &'a Dense, x: Tensor, want_dx: bool },
}

impl<'a> Saved<'a> {
    /// The training forward of `layers[0]` (with `layers[1]` when it is the
    /// ReLU a BatchNorm fuses, as [`crate::network::Network::forward_t`]
    /// does) on `xs`: its output, what its backward needs and the number of
    /// layers it ran; `None` for a layer autograd has to run. The backward
    /// computes the input gradient only when `want_dx`.
    pub fn forward(layers: &'a [Layer], xs: &Tensor, want_dx: bool, rng: &mut ChaCha8Rng) -> Result<Option<(Tensor, Saved<'a>, usize)>> {
        if let [Layer::Conv2d(layer), Layer::MaxPool2d(pool), ..] = layers {
            if pool.is_unpool2() {
                if let Some((pooled, codes, op)) = layer.forward_saved_pool2(xs, want_dx)? {
                    return Ok(Some((pooled.clone(), Saved(Kind::ConvPool { layer, op, x: xs.clone(), pooled, codes }), 2)));
                }
            }
        }
        if let [Layer::BatchNorm2d(layer), rest @ ..] = layers {
            let relu = matches!(rest.first(), Some(Layer::Relu));
            if let Some(Layer::MaxPool2d(pool)) = rest.get(usize::from(relu)) {
                if pool.is_unpool2() {
                    if let Some((y, pooled, op)) = layer.forward_saved_pool2(xs, relu)? {
                        return Ok(Some((pooled, Saved(Kind::NormPool { layer, op, x: xs.clone(), y }), 2 + usize::from(relu))));
                    }
                }
            }
        }
        Ok(Some(match layers {
            [Layer::Conv2d(layer), ..] => {
                let (y, op) = layer.forward_saved(xs, want_dx)?;
                (y.clone(), Saved(Kind::Conv { layer, op, x: xs.clone(), y }), 1)
            }
            [Layer::MaxPool2d(layer), ..] => {
                let y = layer.forward_saved(xs)?;
                (y.clone(), Saved(Kind::Pool { layer, x: xs.clone(), y }), 1)
            }
            [Layer::Dropout(layer), ..] => {
                let (y, op) = layer.forward_saved(xs, rng)?;
                (y, Saved(Kind::Dropout { op }), 1)
            }
            [Layer::BatchNorm2d(layer), rest @ ..] => {
                let relu = matches!(rest.first(), Some(Layer::Relu));
                let (y, op) = layer.forward_saved(xs, relu)?;
                (y.clone(), Saved(Kind::Norm { layer, op, x: xs.clone(), y }), 1 + usize::from(relu))
            }
            [Layer::Flatten, ..] => (xs.flatten_from(1)?, Saved(Kind::Flatten { dims: xs.dims().to_vec() }), 1),
            [Layer::Dense(layer), ..] if layer.is_linear() => {
                (layer.forward_saved(xs)?, Saved(Kind::Dense { layer, x: xs.clone(), want_dx }), 1)
            }
            _ => return Ok(None),
        }))
    }

    /// Puts the layer's parameter gradients into `grads` and returns the
    /// gradient of its input (`None` where not wanted).
    pub fn backward(&self, grad: &Tensor, grads: &mut GradStore) -> Result<Option<Tensor>> {
        match &self.0 {
            Kind::Conv { layer, op, x, y } => Ok(conv_grads(layer, layer.backward_saved(op, x, y, grad)?, grads)),
            Kind::ConvPool { layer, op, x, pooled, codes } => match layer.backward_saved_pool2(op, x, pooled, codes, grad)? {
                Some(g) => Ok(conv_grads(layer, g, grads)),
                // The forward ran on Winograd, and so does the backward.
                None => candle_core::bail!("internal error: a fused conv + pool has no fused backward"),
            },
            Kind::Pool { layer, x, y } => layer.backward_saved(x, y, grad),
            Kind::Dropout { op: Some(op) } => op.backward(grad).map(Some),
            Kind::Dropout { op: None } => Ok(Some(grad.clone())),
            Kind::Norm { layer, op, x, y } => Ok(norm_grads(layer, layer.backward_saved(op, x, y, grad)?, grads)),
            Kind::NormPool { layer, op, x, y } => Ok(norm_grads(layer, layer.backward_saved_pool2(op, x, y, grad)?, grads)),
            Kind::Flatten { dims } => grad.reshape(dims.as_slice()).map(Some),
            Kind::Dense { layer, x, want_dx } => {
                let (dx, dw, db) = layer.backward_saved(x, grad, *want_dx)?;
                let (w, b) = layer.weight_bias();
                insert(grads, w, Some(dw));
                insert(grads, b, Some(db));
                Ok(dx)
            }
        }
    }
}

/// Puts a convolution's weight and bias gradients into `grads`; returns its input gradient.
fn conv_grads(layer: &Conv2d, (dx, dw, db): Grads3, grads: &mut GradStore) -> Option<Tensor> {
    let (w, b) = layer.weight_bias();
    insert(grads, w, dw);
    if let Some(b) = b {
        insert(grads, b, db);
    }
    dx
}

/// Puts a BatchNorm's γ and β gradients into `grads`; returns its input gradient.
fn norm_grads(layer: &BatchNorm2d, (dx, dgamma, dbeta): Grads3, grads: &mut GradStore) -> Option<Tensor> {
    let (gamma, beta) = layer.gamma_beta();
    insert(grads, gamma, dgamma);
    insert(grads, beta, dbeta);
    dx
}

fn insert(grads: &mut GradStore, var: &Var, grad: Option<Tensor>) {
    if let Some(g) = grad {
        grads.insert(var.as_tensor(), g);
    }
}
