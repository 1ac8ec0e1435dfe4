//! Keras' `Conv1D`, `MaxPooling1D` and `AveragePooling1D` (channels_last): the front end of
//! convolutional-recurrent models. TensorFlow's padding rules: `valid` none, `same` the total
//! `max((ceil(T/s) - 1) s + span - T, 0)` split with the extra step on the right, `causal`
//! `(k - 1) d` on the left.

use super::layers::LayerActivation;
use super::pool::{pool, Window};
use crate::dtype::autocast;
use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use gru_core::GruError;

/// A layer's `padding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding1D {
    /// No padding.
    Valid,
    /// Output length `ceil(T / strides)`.
    Same,
    /// Left padding only (`Conv1D`): `output[t]` sees no input after `t`.
    Causal,
}

impl Padding1D {
    /// `(left, right)` padding for length `t`, a window spanning `span` steps, stride `s`.
    pub fn amounts(self, t: usize, span: usize, s: usize) -> (usize, usize) {
        match self {
            Padding1D::Valid => (0, 0),
            Padding1D::Causal => (span - 1, 0),
            Padding1D::Same => {
                let out = t.div_ceil(s);
                let total = ((out.max(1) - 1) * s + span).saturating_sub(t);
                (total / 2, total - total / 2)
            }
        }
    }
}

/// Keras `Conv1D`: (batch, T, in) -> (batch, T', filters).
#[derive(Debug)]
pub struct Conv1D {
    /// (kernel_size, in / groups, filters), as Keras stores it.
    pub kernel: Tensor,
    /// (filters,), if `use_bias`.
    pub bias: Option<Tensor>,
    /// `strides`.
    pub stride: usize,
    /// `dilation_rate`.
    pub dilation: usize,
    /// `groups`.
    pub groups: usize,
    /// `padding`.
    pub padding: Padding1D,
    /// `activation`.
    pub activation: LayerActivation,
    /// The dtype it computes in (the weights', or a mixed policy's half type).
    pub compute_dtype: DType,
    /// `kernel` and `bias` with their regularizers and constraints.
    pub rules: Vec<super::train::WeightRule>,
}

impl Conv1D {
    /// Convolves over time.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [_, t, _] = *x.dims() else {
            return Err(Error::Gru(GruError::Shape {
                what: "Conv1D input".into(),
                expected: "(batch, steps, channels)".into(),
                got: format!("{:?}", x.dims()),
            }));
        };
        let x = autocast(x, self.compute_dtype)?;
        let k = self.kernel.dim(0)?;
        let span = (k - 1) * self.dilation + 1;
        let (left, right) = self.padding.amounts(t, span, self.stride);
        if t + left + right < span {
            return Err(Error::Gru(GruError::Shape {
                what: "Conv1D input".into(),
                expected: format!("at least {span} steps (the kernel's span)"),
                got: format!("{:?}", x.dims()),
            }));
        }
        let channels = self.kernel.dim(1)? * self.groups;
        if x.dim(2)? != channels {
            return Err(Error::Gru(GruError::Shape {
                what: "Conv1D input".into(),
                expected: format!("(batch, steps, {channels})"),
                got: format!("{:?}", x.dims()),
            }));
        }
        let kernel = autocast(&self.kernel, self.compute_dtype)?;
        let mut y = match crate::paths::fused_cpu::host_float(&x) {
            true => {
                let g = gru_core::conv2d::Conv2dGeometry {
                    batch: x.dim(0)?,
                    input: (1, t, channels),
                    kernel: (1, k),
                    filters: kernel.dim(2)?,
                    groups: self.groups,
                    stride: (1, self.stride),
                    dilation: (1, self.dilation),
                    pad: (0, left),
                    output: (1, (t + left + right - span) / self.stride + 1),
                };
                super::conv_op::conv2d(&x.unsqueeze(1)?, &kernel.unsqueeze(0)?, g)?.squeeze(1)?
            }
            false => self.candle_conv(&x, &kernel, (left, right), span)?,
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&autocast(b, self.compute_dtype)?)?;
        }
        self.activation.apply(&y)
    }
}

impl Conv1D {
    /// Off the CPU or in half types: Candle's conv2d over a one-row image (its conv1d gives
    /// wrong kernel gradients: its backward hands it a transposed kernel, which its conv1d
    /// misreads; huggingface/candle#3836). The steps no window reaches are cut off first:
    /// Candle's backward assumes the windows cover the input to its end.
    fn candle_conv(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        (left, right): (usize, usize),
        span: usize,
    ) -> Result<Tensor> {
        let t = x.dim(1)?;
        let used = (t + left + right - span) / self.stride * self.stride + span;
        let x = x
            .pad_with_zeros(1, left, right)?
            .narrow(1, 0, used)?
            .transpose(1, 2)?
            .unsqueeze(2)?
            .contiguous()?;
        // Keras' (k, in, out) is Candle's (out, in, 1, k).
        let kernel = kernel.permute((2, 1, 0))?.unsqueeze(2)?.contiguous()?;
        Ok(
            x.conv2d(&kernel, 0, self.stride, self.dilation, self.groups)?
                .squeeze(2)?
                .transpose(1, 2)?,
        )
    }
}

/// Keras `MaxPooling1D` / `AveragePooling1D`: windows of `pool_size` steps every `stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pooling1D {
    /// Max or average.
    pub max: bool,
    /// `pool_size`.
    pub size: usize,
    /// `strides` (Keras' default: the pool size).
    pub stride: usize,
    /// `padding` (`valid` or `same`; a `same` window averages only the steps it covers,
    /// and a max ignores the padding, as TensorFlow's pooling does).
    pub padding: Padding1D,
}

impl Pooling1D {
    /// Pools (batch, T, f) over time.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [_, t, _] = *x.dims() else {
            return Err(Error::Gru(GruError::Shape {
                what: "pooling input".into(),
                expected: "(batch, steps, channels)".into(),
                got: format!("{:?}", x.dims()),
            }));
        };
        let (left, right) = self.padding.amounts(t, self.size, self.stride);
        if t + left + right < self.size {
            return Err(Error::Gru(GruError::Shape {
                what: "pooling input".into(),
                expected: format!("at least pool_size = {} steps", self.size),
                got: format!("{:?}", x.dims()),
            }));
        }
        let window = Window {
            size: self.size,
            stride: self.stride,
            pad: (left, right),
        };
        pool(x, &[window], self.max)
    }
}
