//! Keras' `Conv2D`, `MaxPooling2D` and `AveragePooling2D` (channels_last): the
//! convolutional front ends of speech (DeepSpeech2: convolutions over a spectrogram's time
//! and frequency axes) and text-recognition (CRNN: over an image's width and height) models
//! whose features a recurrent layer then reads along the first spatial axis. TensorFlow's
//! `valid` and `same` padding on each axis (`same`'s odd padding on the bottom and right).

use super::conv::Padding1D;
use super::layers::LayerActivation;
use super::pool::{pool, Window};
use crate::dtype::autocast;
use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
use gru_core::GruError;

/// Keras `Conv2D`: (batch, H, W, in) -> (batch, H', W', filters).
#[derive(Debug)]
pub struct Conv2D {
    /// (kernel height, kernel width, in / groups, filters), as Keras stores it.
    pub kernel: Tensor,
    /// (filters,), if `use_bias`.
    pub bias: Option<Tensor>,
    /// `strides` (rows, columns).
    pub strides: (usize, usize),
    /// `dilation_rate` (rows, columns).
    pub dilation: (usize, usize),
    /// `groups`.
    pub groups: usize,
    /// `padding` (`valid` or `same`).
    pub padding: Padding1D,
    /// `activation`.
    pub activation: LayerActivation,
    /// The dtype it computes in (the weights', or a mixed policy's half type).
    pub compute_dtype: DType,
    /// `kernel` and `bias` with their regularizers and constraints.
    pub rules: Vec<super::train::WeightRule>,
}

/// The (batch, rows, columns, channels) dims of a 2-D layer's input, or a shape error.
fn dims4(x: &Tensor, what: &str) -> Result<(usize, usize, usize, usize)> {
    match *x.dims() {
        [b, h, w, c] => Ok((b, h, w, c)),
        _ => Err(Error::Gru(GruError::Shape {
            what: what.into(),
            expected: "(batch, rows, columns, channels)".into(),
            got: format!("{:?}", x.dims()),
        })),
    }
}

fn too_small(what: &str, span: (usize, usize), x: &Tensor) -> Error {
    Error::Gru(GruError::Shape {
        what: what.into(),
        expected: format!(
            "(batch, rows, columns, channels) of at least {} x {} (the window)",
            span.0, span.1
        ),
        got: format!("{:?}", x.dims()),
    })
}

impl Conv2D {
    /// The rows and columns a kernel covers, dilation included.
    pub fn span(&self) -> (usize, usize) {
        let (kh, kw) = (self.kernel.dims()[0], self.kernel.dims()[1]);
        (
            (kh - 1) * self.dilation.0 + 1,
            (kw - 1) * self.dilation.1 + 1,
        )
    }

    /// The output's (rows, columns) for an input of `(rows, columns)`; `None` when the
    /// kernel does not fit.
    pub fn out_size(&self, (h, w): (usize, usize)) -> Option<(usize, usize)> {
        let (sh, sw) = self.span();
        let along = |len: usize, span: usize, stride: usize| {
            let (a, b) = self.padding.amounts(len, span, stride);
            (len + a + b).checked_sub(span).map(|n| n / stride + 1)
        };
        Some((along(h, sh, self.strides.0)?, along(w, sw, self.strides.1)?))
    }

    /// Convolves over both spatial axes.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, h, w, _) = dims4(x, "Conv2D input")?;
        let x = autocast(x, self.compute_dtype)?;
        let span = self.span();
        let (top, bottom) = self.padding.amounts(h, span.0, self.strides.0);
        let (left, right) = self.padding.amounts(w, span.1, self.strides.1);
        if h + top + bottom < span.0 || w + left + right < span.1 {
            return Err(too_small("Conv2D input", span, &x));
        }
        let channels = self.kernel.dims()[2] * self.groups;
        if x.dim(3)? != channels {
            return Err(Error::Gru(GruError::Shape {
                what: "Conv2D input".into(),
                expected: format!("(batch, rows, columns, {channels})"),
                got: format!("{:?}", x.dims()),
            }));
        }
        let mut y = match crate::paths::fused_cpu::host_float(&x) {
            true => self.products(&x, (h, w), (top, left))?,
            false => self.candle_conv(&x, (top, bottom), (left, right))?,
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&autocast(b, self.compute_dtype)?)?;
        }
        self.activation.apply(&y)
    }

    /// On the CPU in f32/f64: gru-core's channels-last products, every stride and dilation
    /// as given.
    fn products(&self, x: &Tensor, (h, w): (usize, usize), pad: (usize, usize)) -> Result<Tensor> {
        let kernel = autocast(&self.kernel, self.compute_dtype)?;
        let dims = kernel.dims();
        let output = self
            .out_size((h, w))
            .ok_or_else(|| too_small("Conv2D input", self.span(), x))?;
        let g = gru_core::conv2d::Conv2dGeometry {
            batch: x.dim(0)?,
            input: (h, w, x.dim(3)?),
            kernel: (dims[0], dims[1]),
            filters: dims[3],
            groups: self.groups,
            stride: self.strides,
            dilation: self.dilation,
            pad,
            output,
        };
        super::conv_op::conv2d(x, &kernel, g)
    }

    /// Elsewhere: Candle's `conv2d` (NCHW).
    fn candle_conv(
        &self,
        x: &Tensor,
        (top, bottom): (usize, usize),
        (left, right): (usize, usize),
    ) -> Result<Tensor> {
        let (h, w) = (x.dim(1)?, x.dim(2)?);
        let span = self.span();
        // The rows and columns no window reaches are cut off: Candle's conv2d backward
        // assumes the windows cover the input to its end (and sizes both axes' leftover by
        // the rows').
        let used = |len: usize, span: usize, stride: usize| (len - span) / stride * stride + span;
        let x = x
            .pad_with_zeros(1, top, bottom)?
            .pad_with_zeros(2, left, right)?;
        let x = x
            .narrow(1, 0, used(h + top + bottom, span.0, self.strides.0))?
            .narrow(2, 0, used(w + left + right, span.1, self.strides.1))?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        // Keras' (kh, kw, in, out) is Candle's (out, in, kh, kw).
        let mut kernel = autocast(&self.kernel, self.compute_dtype)?
            .permute((3, 2, 0, 1))?
            .contiguous()?;
        // Candle takes one dilation and one stride for both axes: different dilations are
        // written into the kernel (zeros between its taps), different strides run at their
        // common divisor and keep every k-th row or column.
        let mut dilation = self.dilation.0;
        if self.dilation.0 != self.dilation.1 {
            kernel = dilate(&dilate(&kernel, 2, self.dilation.0)?, 3, self.dilation.1)?;
            dilation = 1;
        }
        let step = gcd(self.strides.0, self.strides.1);
        let mut y = x.conv2d(&kernel, 0, step, dilation, self.groups)?;
        y = every(&y, 2, self.strides.0 / step)?;
        y = every(&y, 3, self.strides.1 / step)?;
        Ok(y.permute((0, 2, 3, 1))?)
    }
}

fn gcd(a: usize, b: usize) -> usize {
    match b {
        0 => a,
        b => gcd(b, a % b),
    }
}

/// `k` with `d - 1` zeros between its taps along `axis` (differentiable).
fn dilate(k: &Tensor, axis: usize, d: usize) -> Result<Tensor> {
    if d == 1 {
        return Ok(k.clone());
    }
    let taps = k.dim(axis)?;
    let mut shape = k.dims().to_vec();
    shape[axis] = taps * d;
    Ok(k.unsqueeze(axis + 1)?
        .pad_with_zeros(axis + 1, 0, d - 1)?
        .reshape(shape)?
        .narrow(axis, 0, (taps - 1) * d + 1)?)
}

/// Every `k`-th entry of `x` along `axis`, from the first.
fn every(x: &Tensor, axis: usize, k: usize) -> Result<Tensor> {
    if k == 1 {
        return Ok(x.clone());
    }
    let n = x.dim(axis)?.div_ceil(k);
    let idx: Vec<u32> = (0..n).map(|i| (i * k) as u32).collect();
    Ok(x.index_select(&Tensor::new(idx.as_slice(), x.device())?, axis)?)
}

/// Keras `MaxPooling2D` / `AveragePooling2D`: windows of `size` every `strides`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pooling2D {
    /// Max or average.
    pub max: bool,
    /// `pool_size` (rows, columns).
    pub size: (usize, usize),
    /// `strides` (Keras' default: the pool size).
    pub strides: (usize, usize),
    /// `padding` (`valid` or `same`; a `same` window averages only the positions it
    /// covers, and a max ignores the padding, as TensorFlow's pooling does).
    pub padding: Padding1D,
}

impl Pooling2D {
    fn windows(&self, (h, w): (usize, usize)) -> [Window; 2] {
        let axis = |len, size, stride| Window {
            size,
            stride,
            pad: self.padding.amounts(len, size, stride),
        };
        [
            axis(h, self.size.0, self.strides.0),
            axis(w, self.size.1, self.strides.1),
        ]
    }

    /// The output's (rows, columns) for an input of `(rows, columns)`; `None` when the
    /// window does not fit.
    pub fn out_size(&self, (h, w): (usize, usize)) -> Option<(usize, usize)> {
        let [wh, ww] = self.windows((h, w));
        (wh.fits(h) && ww.fits(w)).then(|| (wh.count(h), ww.count(w)))
    }

    /// Pools (batch, H, W, channels) over both spatial axes.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, h, w, _) = dims4(x, "2-D pooling input")?;
        let windows = self.windows((h, w));
        if !windows[0].fits(h) || !windows[1].fits(w) {
            return Err(too_small("2-D pooling input", self.size, x));
        }
        pool(x, &windows, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn dilating_and_striding_by_hand() {
        let k = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu).unwrap();
        let d = dilate(&dilate(&k, 2, 2).unwrap(), 3, 3).unwrap();
        assert_eq!(
            d.squeeze(0)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
            [[1., 0., 0., 2.], [0., 0., 0., 0.], [3., 0., 0., 4.]]
        );
        let x = Tensor::arange(0f32, 7.0, &Device::Cpu).unwrap();
        let y = every(&x, 0, 3).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), [0., 3., 6.]);
        assert_eq!(gcd(4, 6), 2);
        assert_eq!(gcd(1, 2), 1);
    }

    /// The CPU's products and Candle's conv2d (the path of GPUs and half types) agree,
    /// values and gradients, on every setting.
    #[test]
    fn products_and_candle_conv_agree() {
        use candle_core::Var;
        let dev = Device::Cpu;
        let settings = [
            ((3, 2), (2, 3), (1, 1), 1, Padding1D::Same),
            ((3, 3), (2, 2), (1, 1), 1, Padding1D::Valid),
            ((2, 3), (1, 1), (2, 1), 2, Padding1D::Valid),
            ((3, 3), (1, 1), (2, 2), 1, Padding1D::Same),
            ((5, 7), (1, 2), (1, 1), 1, Padding1D::Same),
        ];
        for (k, strides, dilation, groups, padding) in settings {
            let kernel = Var::randn(0f32, 1.0, (k.0, k.1, 4 / groups, 6), &dev).unwrap();
            let conv = Conv2D {
                kernel: kernel.as_tensor().clone(),
                bias: None,
                strides,
                dilation,
                groups,
                padding,
                activation: LayerActivation::Elementwise(gru_core::Activation::Linear),
                compute_dtype: DType::F32,
                rules: Vec::new(),
            };
            let x = Var::randn(0f32, 1.0, (2, 11, 13, 4), &dev).unwrap();
            let ours = conv.forward(x.as_tensor()).unwrap();
            let span = conv.span();
            let pads = (
                padding.amounts(11, span.0, strides.0),
                padding.amounts(13, span.1, strides.1),
            );
            let theirs = conv.candle_conv(x.as_tensor(), pads.0, pads.1).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let w = Tensor::randn(0f32, 1.0, ours.dims(), &dev).unwrap();
            let g1 = (&ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&theirs * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let diff = |a: &Tensor, b: &Tensor| {
                (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            let label = format!("{k:?} {strides:?} {dilation:?} {groups} {padding:?}");
            assert!(diff(&ours, &theirs) < 1e-4, "{label}");
            for v in [x.as_tensor(), kernel.as_tensor()] {
                let (a, b) = (g1.get(v).unwrap(), g2.get(v).unwrap());
                assert!(diff(a, b) < 1e-3, "{label}: {}", diff(a, b));
            }
        }
    }

    #[test]
    fn a_window_too_large_is_a_shape_error() {
        let x = Tensor::zeros((1, 2, 5, 1), DType::F32, &Device::Cpu).unwrap();
        let p = Pooling2D {
            max: true,
            size: (3, 2),
            strides: (3, 2),
            padding: Padding1D::Valid,
        };
        assert!(matches!(
            p.forward(&x),
            Err(Error::Gru(GruError::Shape { .. }))
        ));
        assert_eq!(p.out_size((3, 5)), Some((1, 2)));
    }
}
