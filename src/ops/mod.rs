//! Tensor operations the layers call. Every op takes NCHW float32 tensors.
//!
//! These first versions are the *reference path*: compositions of stock
//! candle ops (slow backward; max-pool backward only when kernel == stride).
//! Fast custom ops replace the bodies and are tested against these.

use candle_core::{DType, Result, Tensor};

pub mod alloc;
pub mod conv;
pub mod conv_bias_act;
pub mod dense;
pub mod direct;
pub mod gemm;
pub mod pool;
pub mod simd;
pub mod small_gemm;
pub mod winograd;
#[cfg(test)]
mod tests;

/// Explicit zero padding (top, bottom, left, right) followed by a valid
/// convolution, so Keras' asymmetric "same" padding for even kernels works.
/// `x`: (N, C, H, W), `w`: (O, C, KH, KW); no bias.
pub fn conv2d_reference(x: &Tensor, w: &Tensor, padding: [usize; 4], stride: usize) -> Result<Tensor> {
    let [t, b, l, r] = padding;
    let x = if t + b > 0 { x.pad_with_zeros(2, t, b)? } else { x.clone() };
    let x = if l + r > 0 { x.pad_with_zeros(3, l, r)? } else { x };
    x.conv2d(w, 0, stride, 1, 1)
}

/// Max pooling with -inf padding (top, bottom, left, right).
pub fn max_pool2d_reference(x: &Tensor, kernel: usize, stride: usize, padding: [usize; 4]) -> Result<Tensor> {
    let x = pad_with(x, padding, f32::NEG_INFINITY)?;
    x.max_pool2d_with_stride((kernel, kernel), (stride, stride))
}

fn pad_with(x: &Tensor, padding: [usize; 4], value: f32) -> Result<Tensor> {
    let [t, b, l, r] = padding;
    let mut x = x.clone();
    for (dim, before, after) in [(2usize, t, b), (3usize, l, r)] {
        if before + after == 0 {
            continue;
        }
        let mut shape = x.dims().to_vec();
        let mut parts = Vec::new();
        if before > 0 {
            shape[dim] = before;
            parts.push(Tensor::full(value, shape.as_slice(), x.device())?.to_dtype(DType::F32)?);
        }
        parts.push(x.clone());
        if after > 0 {
            shape[dim] = after;
            parts.push(Tensor::full(value, shape.as_slice(), x.device())?.to_dtype(DType::F32)?);
        }
        x = Tensor::cat(&parts, dim)?;
    }
    Ok(x)
}

/// The path the layers use: the fast custom op (`conv::Conv2dOp`), with an
/// im2col + GEMM forward and a GEMM + col2im / GEMM backward.
pub fn conv2d(x: &Tensor, w: &Tensor, padding: [usize; 4], stride: usize) -> Result<Tensor> {
    alloc::tune_allocator();
    conv::conv2d(x, w, padding, stride)
}

/// `act(conv(x, w) + b)` as one fast op (`conv_bias_act::ConvBiasAct`).
pub fn conv2d_bias_act(x: &Tensor, w: &Tensor, b: Option<&Tensor>, padding: [usize; 4], stride: usize, relu: bool) -> Result<Tensor> {
    alloc::tune_allocator();
    conv_bias_act::conv2d_bias_act(x, w, b, padding, stride, relu)
}

/// The path the layers use: the fast custom op (`pool::MaxPool2dOp`), which
/// also trains with kernel != stride (e.g. stride-1 "same" pooling).
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: [usize; 4]) -> Result<Tensor> {
    alloc::tune_allocator();
    pool::max_pool2d(x, kernel, stride, padding)
}

