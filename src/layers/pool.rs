use candle_core::{CustomOp1, Result, Tensor};

use crate::ops;
use crate::ops::pool::MaxPool2dOp;

/// Max pooling over square windows; padded cells never win (-inf padding).
pub struct MaxPool2d {
    kernel: usize,
    stride: usize,
    padding: [usize; 4],
}

pub fn max_pool2d(kernel: usize, stride: usize, padding: [usize; 4]) -> MaxPool2d {
    MaxPool2d { kernel, stride, padding }
}

impl MaxPool2d {
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        ops::max_pool2d(xs, self.kernel, self.stride, self.padding)
    }

    fn op(&self) -> MaxPool2dOp {
        MaxPool2dOp { kernel: self.kernel, stride: self.stride, pad: self.padding }
    }

    /// The forward with no autograd graph (for [`super::Saved`]).
    pub(super) fn forward_saved(&self, xs: &Tensor) -> Result<Tensor> {
        xs.contiguous()?.apply_op1_no_bwd(&self.op())
    }

    /// Whether this is the 2x2 / stride-2 unpadded pool that a Winograd
    /// convolution before it can run in its own forward and backward.
    pub fn is_unpool2(&self) -> bool {
        ops::pool::is_unpool2(self.kernel, self.stride, self.padding)
    }

    /// The input gradient of [`Self::forward_saved`].
    pub(super) fn backward_saved(&self, x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        self.op().bwd(&x.contiguous()?, y, grad)
    }
}

/// (N, C, H, W) -> (N, C): the mean of each feature map.
pub fn global_avg_pool(xs: &Tensor) -> Result<Tensor> {
    xs.mean((2, 3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, input};

    fn pool_case(kernel: usize, stride: usize, padding: [usize; 4]) {
        let layer = max_pool2d(kernel, stride, padding);
        let x = input(&[2, 2, 6, 5], 3);
        check(&[x], |v| layer.forward(v[0].as_tensor()), "max_pool2d");
    }

    #[test]
    fn gradient_2x2_stride2() {
        pool_case(2, 2, [0; 4]);
    }

    // Stock candle has no max-pool backward for kernel != stride; this passes
    // once the custom ops in `crate::ops` land.
    #[test]
    fn gradient_2x2_stride1_same() {
        pool_case(2, 1, [0, 1, 0, 1]);
    }

    // As above: needs the custom max-pool backward.
    #[test]
    fn gradient_3x3_stride2_padded() {
        pool_case(3, 2, [1, 1, 1, 1]);
    }

    #[test]
    fn same_pool_keeps_the_size_and_ignores_padding() {
        let x = Tensor::new(&[[[[-1f32, -2.], [-3., -4.]]]], &candle_core::Device::Cpu).unwrap();
        let y = max_pool2d(2, 1, [0, 1, 0, 1]).forward(&x).unwrap();
        assert_eq!(y.dims(), [1, 1, 2, 2]);
        let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(y, [-1., -2., -3., -4.]);
    }

    #[test]
    fn global_avg_pool_gradient() {
        let x = input(&[2, 3, 4, 4], 4);
        check(&[x], |v| global_avg_pool(v[0].as_tensor()), "global_avg_pool");
    }
}
