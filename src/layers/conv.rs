use candle_core::{Result, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use super::{filled, glorot_uniform, value, Param};
use crate::ops;
use crate::ops::conv_bias_act::{ConvBiasAct, Grads3};
use crate::spec::Activation;

/// 2-D convolution, weight (O, C, K, K), optional bias (O).
pub struct Conv2d {
    weight: Var,
    bias: Option<Var>,
    stride: usize,
    /// `[top, bottom, left, right]`, already resolved from the spec's padding
    /// (Keras "same" is asymmetric for even kernels).
    padding: [usize; 4],
    activation: Activation,
}

#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    in_channels: usize,
    filters: usize,
    kernel: usize,
    stride: usize,
    padding: [usize; 4],
    activation: Activation,
    use_bias: bool,
    rng: &mut ChaCha8Rng,
) -> crate::Result<Conv2d> {
    let area = kernel * kernel;
    let weight = glorot_uniform(&[filters, in_channels, kernel, kernel], in_channels * area, filters * area, rng)?;
    let bias = if use_bias { Some(filled(0.0, filters)?) } else { None };
    Ok(Conv2d { weight, bias, stride, padding, activation })
}

impl Conv2d {
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        // Softmax never reaches a conv layer (see `Layer::new`): only ReLU acts here.
        let relu = self.activation == Activation::Relu;
        let bias = self.bias.as_ref().map(|b| value(b, train));
        ops::conv2d_bias_act(xs, &value(&self.weight, train), bias.as_ref(), self.padding, self.stride, relu)
    }

    /// The training forward with no autograd graph, and its op (for
    /// [`super::Saved`]'s backward, which computes the input gradient only
    /// when `want_dx`).
    pub(super) fn forward_saved(&self, xs: &Tensor, want_dx: bool) -> Result<(Tensor, ConvBiasAct)> {
        let op = ConvBiasAct::for_training(self.padding, self.stride, self.activation == Activation::Relu, want_dx);
        let ys = op.forward_tensors(xs, self.weight.as_tensor(), self.bias.as_ref().map(|b| b.as_tensor()))?;
        Ok((ys, op))
    }

    /// [`Self::forward_saved`] and the 2x2 / stride-2 max pool after it in
    /// one pass: `(pooled, codes, op)`, the pool's codes standing in for
    /// the conv's output in the backward; `None` where the op cannot fuse them.
    pub(super) fn forward_saved_pool2(&self, xs: &Tensor, want_dx: bool) -> Result<Option<(Tensor, Vec<u8>, ConvBiasAct)>> {
        let op = ConvBiasAct::for_training(self.padding, self.stride, self.activation == Activation::Relu, want_dx);
        let fused = op.forward_pool2_tensors(xs, self.weight.as_tensor(), self.bias.as_ref().map(|b| b.as_tensor()), true)?;
        Ok(fused.and_then(|(pooled, codes)| Some((pooled, codes?, op))))
    }

    /// Inference of this conv and the 2x2 / stride-2 max pool after it in
    /// one pass, the conv's output never written out whole; `None` where
    /// the op cannot fuse them.
    pub fn forward_pool2(&self, xs: &Tensor) -> Result<Option<Tensor>> {
        let op = ConvBiasAct::for_inference(self.padding, self.stride, self.activation == Activation::Relu);
        let bias = self.bias.as_ref().map(|b| value(b, false));
        Ok(op.forward_pool2_tensors(xs, &value(&self.weight, false), bias.as_ref(), false)?.map(|(pooled, _)| pooled))
    }

    /// `(dx, dw, db)` of [`Self::forward_saved`].
    pub(super) fn backward_saved(&self, op: &ConvBiasAct, x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Grads3> {
        op.backward_tensors(&x.contiguous()?, self.weight.as_tensor(), self.bias.as_ref().map(|b| b.as_tensor()), y, &grad.contiguous()?)
    }

    /// The backward of [`Self::forward_saved_pool2`] from the gradient of
    /// its pool; `None` where the op cannot take it.
    pub(super) fn backward_saved_pool2(&self, op: &ConvBiasAct, x: &Tensor, pooled: &Tensor, codes: &[u8], grad: &Tensor) -> Result<Option<Grads3>> {
        let (w, b) = (self.weight.as_tensor(), self.bias.as_ref().map(|b| b.as_tensor()));
        op.backward_through_pool2(&x.contiguous()?, w, b, pooled, codes, &grad.contiguous()?)
    }

    pub(super) fn weight_bias(&self) -> (&Var, Option<&Var>) {
        (&self.weight, self.bias.as_ref())
    }

    /// Inference of this conv followed by the per-channel affine map of an
    /// inference BatchNorm (and a ReLU when `relu`), folded into the conv's
    /// weights and bias: one fused pass instead of three. `None` when the
    /// conv has its own activation (the map would not commute with it).
    pub fn forward_folded(&self, xs: &Tensor, scale: &Tensor, shift: &Tensor, relu: bool) -> Result<Option<Tensor>> {
        let Some((w, b)) = self.folded(scale, shift)? else { return Ok(None) };
        ops::conv2d_bias_act(xs, &w, Some(&b), self.padding, self.stride, relu).map(Some)
    }

    /// [`Self::forward_folded`] and the 2x2 / stride-2 max pool after it in
    /// one pass (see [`Self::forward_pool2`]); `None` where either cannot be.
    pub fn forward_folded_pool2(&self, xs: &Tensor, scale: &Tensor, shift: &Tensor, relu: bool) -> Result<Option<Tensor>> {
        let Some((w, b)) = self.folded(scale, shift)? else { return Ok(None) };
        let op = ConvBiasAct::for_inference(self.padding, self.stride, relu);
        Ok(op.forward_pool2_tensors(xs, &w, Some(&b), false)?.map(|(pooled, _)| pooled))
    }

    /// The weights and bias with the affine map folded in; `None` when the
    /// conv has its own activation.
    fn folded(&self, scale: &Tensor, shift: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
        if self.activation != Activation::None {
            return Ok(None);
        }
        let w = value(&self.weight, false);
        let w = w.broadcast_mul(&scale.reshape(((), 1, 1, 1))?)?;
        let b = match &self.bias {
            Some(b) => (value(b, false) * scale)?.add(shift)?,
            None => shift.clone(),
        };
        Ok(Some((w, b)))
    }

    pub fn params(&self) -> Vec<Param<'_>> {
        let mut p = vec![Param { name: "weight", var: &self.weight, trainable: true }];
        if let Some(b) = &self.bias {
            p.push(Param { name: "bias", var: b, trainable: true });
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, input};
    use rand::SeedableRng;

    fn conv_case(c: usize, o: usize, k: usize, stride: usize, padding: [usize; 4], act: Activation) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let layer = conv2d(c, o, k, stride, padding, act, true, &mut rng).unwrap();
        // A non-zero bias so ReLU sees both signs.
        layer.bias.as_ref().unwrap().set(&Tensor::new(vec![0.1f32; o], &candle_core::Device::Cpu).unwrap()).unwrap();
        let x = input(&[2, c, 6, 5], 1);
        let vars = [x, layer.weight.clone(), layer.bias.clone().unwrap()];
        check(&vars, |v| layer.forward_t(v[0].as_tensor(), true), "conv2d");
    }

    #[test]
    fn gradient_valid() {
        conv_case(2, 3, 3, 1, [0; 4], Activation::None);
    }

    #[test]
    fn gradient_same_odd_kernel_with_relu() {
        conv_case(2, 3, 3, 1, [1, 1, 1, 1], Activation::Relu);
    }

    #[test]
    fn gradient_same_even_kernel_is_asymmetric() {
        conv_case(1, 2, 4, 1, [1, 2, 1, 2], Activation::None);
    }

    #[test]
    fn gradient_stride2() {
        conv_case(2, 2, 3, 2, [0, 1, 0, 1], Activation::None);
    }

    #[test]
    fn same_padding_keeps_the_size_and_params_are_glorot() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let layer = conv2d(1, 48, 4, 1, [1, 2, 1, 2], Activation::Relu, true, &mut rng).unwrap();
        let x = Tensor::zeros((3, 1, 48, 48), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        assert_eq!(layer.forward_t(&x, false).unwrap().dims(), [3, 48, 48, 48]);
        let limit = (6.0f32 / (16.0 + 48.0 * 16.0)).sqrt();
        let w: Vec<f32> = layer.weight.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        assert!(w.iter().all(|v| v.abs() <= limit));
        assert!(w.iter().any(|v| v.abs() > limit * 0.9));
    }
}
