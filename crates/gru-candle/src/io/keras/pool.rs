//! Windowed max and average pooling over the spatial axes of a channels_last tensor, as
//! TensorFlow computes them, values and gradients: every window `(size, stride)` along each
//! axis, `same` padding outside the input (a max never takes it, an average divides by the
//! positions it covers), the gradient of a max going to the first largest position of its
//! window (row-major), as TensorFlow's `MaxPoolGrad` routes it.
//!
//! Candle's own `max_pool2d` / `avg_pool2d` gradients are only right when the stride equals
//! the window and divides the length (and the max's is halved by two-wide windows), so they
//! are not used: on the CPU (f32, f64) custom ops over gru-core's loops run the pooling and
//! its gradient; elsewhere the windows are gathered with `index_select` and reduced with
//! differentiable ops. The two agree on values and gradients, ties included.

use crate::error::Result;
use candle_core::{DType, Tensor, D};

/// One spatial axis of a pooling: window `size` every `stride`, `pad` zeros (for the max:
/// positions it never takes) before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Window {
    /// Positions in a window.
    pub(super) size: usize,
    /// Positions between windows.
    pub(super) stride: usize,
    /// `(before, after)` padding.
    pub(super) pad: (usize, usize),
}

impl Window {
    /// The number of windows over `len` positions (the caller checked that one fits).
    pub(super) fn count(&self, len: usize) -> usize {
        (len + self.pad.0 + self.pad.1 - self.size) / self.stride + 1
    }

    /// Whether one window fits in `len` positions and the padding.
    pub(super) fn fits(&self, len: usize) -> bool {
        len + self.pad.0 + self.pad.1 >= self.size
    }

    /// The positions of the input that window `w` covers, as `start..end`.
    fn covered(&self, w: usize, len: usize) -> std::ops::Range<usize> {
        let start = (w * self.stride).saturating_sub(self.pad.0);
        let end = (w * self.stride + self.size)
            .saturating_sub(self.pad.0)
            .min(len);
        start..end.max(start)
    }
}

/// Pools `x` (batch, spatial..., channels) over its spatial axes (1..=`windows.len()`, one
/// or two): (batch, windows per axis..., channels). `max` picks the largest value of each
/// window, else the mean of the positions it covers. On the CPU in f32/f64 gru-core's
/// loops run it ([`host`]); elsewhere the windows are gathered with tensor ops.
pub(super) fn pool(x: &Tensor, windows: &[Window], max: bool) -> Result<Tensor> {
    match crate::paths::fused_cpu::host_float(x) {
        true => host::pool(x, windows, max),
        false => gathered(x, windows, max),
    }
}

/// [`pool`] in tensor ops: every window offset's positions gathered with `index_select`,
/// reduced with differentiable ops (a max through `argmax` and `gather`, so that its
/// gradient reaches the first largest position only).
fn gathered(x: &Tensor, windows: &[Window], max: bool) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let padded = pad(x, windows, max)?;
    // Every offset of the window, row-major: the first axis' offset varies slowest.
    let mut parts = vec![padded];
    for (k, w) in windows.iter().enumerate() {
        let axis = k + 1;
        let n = w.count(dims[axis]);
        let mut next = Vec::with_capacity(parts.len() * w.size);
        for part in &parts {
            for offset in 0..w.size {
                let idx: Vec<u32> = (0..n).map(|i| (offset + i * w.stride) as u32).collect();
                let idx = Tensor::new(idx.as_slice(), x.device())?;
                next.push(part.index_select(&idx, axis)?);
            }
        }
        parts = next;
    }
    let stacked = Tensor::stack(&parts, D::Minus1)?;
    if max {
        // The first largest of each window, so that its gradient reaches that one only.
        let first = stacked.argmax_keepdim(D::Minus1)?;
        return Ok(stacked.gather(&first, D::Minus1)?.squeeze(D::Minus1)?);
    }
    let sum = stacked.sum(D::Minus1)?;
    Ok(sum.broadcast_div(&covered_counts(&dims, windows, x)?)?)
}

/// The pooling on the CPU: Candle custom ops over [`gru_core::pool2d`].
mod host {
    use super::Window;
    use crate::error::{Error, Result};
    use crate::paths::fused_cpu::{run_host, HostBody, HostFloat};
    use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
    use gru_core::pool2d::Pool2dGeometry;

    /// [`super::pool`] on the CPU.
    pub(super) fn pool(x: &Tensor, windows: &[Window], max: bool) -> Result<Tensor> {
        let dims = x.dims();
        let (rows, cols) = match windows {
            [w] => (None, *w),
            [h, w] => (Some(*h), *w),
            _ => {
                return Err(Error::Candle(candle_core::Error::msg(
                    "pooling over 1 or 2 axes",
                )))
            }
        };
        let one = Window {
            size: 1,
            stride: 1,
            pad: (0, 0),
        };
        let rows_w = rows.unwrap_or(one);
        let (h, w, c) = match (rows.is_some(), dims) {
            (false, [_, t, c]) => (1, *t, *c),
            (true, [_, h, w, c]) => (*h, *w, *c),
            _ => return Err(Error::Candle(candle_core::Error::msg("pooling input rank"))),
        };
        let g = Pool2dGeometry {
            batch: dims[0],
            input: (h, w, c),
            size: (rows_w.size, cols.size),
            stride: (rows_w.stride, cols.stride),
            pad: (rows_w.pad.0, cols.pad.0),
            output: (rows_w.count(h), cols.count(w)),
        };
        Ok(x.contiguous()?.apply_op1(Pool { g, max })?)
    }

    #[derive(Clone, Copy)]
    struct Pool {
        g: Pool2dGeometry,
        max: bool,
    }

    impl Pool {
        fn out_shape(&self, rank: usize) -> Shape {
            let g = self.g;
            match rank {
                3 => Shape::from((g.batch, g.output.1, g.input.2)),
                _ => Shape::from((g.batch, g.output.0, g.output.1, g.input.2)),
            }
        }
    }

    impl HostBody for Pool {
        fn run<T: HostFloat>(&self, v: &[&[T]]) -> candle_core::Result<Vec<T>> {
            let mut y = vec![T::ZERO; self.g.sizes().1];
            match self.max {
                true => self.g.max_forward(v[0], &mut y),
                false => self.g.avg_forward(v[0], &mut y),
            }
            Ok(y)
        }
    }

    impl CustomOp1 for Pool {
        fn name(&self) -> &'static str {
            "keras-pooling"
        }

        fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            Ok((run_host(self, &[(s, l)])?, self.out_shape(l.dims().len())))
        }

        fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
            Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &Grad(*self))?))
        }
    }

    /// `(x, dy) -> dx`.
    struct Grad(Pool);

    impl HostBody for Grad {
        fn run<T: HostFloat>(&self, v: &[&[T]]) -> candle_core::Result<Vec<T>> {
            let (p, [x, dy]) = (&self.0, v) else {
                candle_core::bail!("pooling gradient: two operands");
            };
            let mut dx = vec![T::ZERO; p.g.sizes().0];
            match p.max {
                true => p.g.max_backward(x, dy, &mut dx),
                false => p.g.avg_backward(dy, &mut dx),
            }
            Ok(dx)
        }
    }

    impl CustomOp2 for Grad {
        fn name(&self) -> &'static str {
            "keras-pooling-grad"
        }

        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            let out = run_host(self, &[(s1, l1), (s2, l2)])?;
            Ok((out, l1.shape().clone()))
        }
    }
}

/// `x` with each axis' padding: zeros, or for a max the dtype's lowest value; contiguous
/// (Candle's `index_select` reads contiguous tensors only).
fn pad(x: &Tensor, windows: &[Window], max: bool) -> Result<Tensor> {
    let mut x = x.contiguous()?;
    for (k, w) in windows.iter().enumerate() {
        let axis = k + 1;
        if w.pad == (0, 0) {
            continue;
        }
        if !max {
            x = x.pad_with_zeros(axis, w.pad.0, w.pad.1)?;
            continue;
        }
        let side = |n: usize| -> Result<Tensor> {
            let mut shape = x.dims().to_vec();
            shape[axis] = n;
            Ok(Tensor::full(f32::NEG_INFINITY, shape, x.device())?.to_dtype(x.dtype())?)
        };
        let (before, after) = (side(w.pad.0)?, side(w.pad.1)?);
        x = Tensor::cat(&[&before, &x, &after], axis)?;
    }
    Ok(x)
}

/// The number of input positions each window covers, shaped (windows per axis..., 1) to
/// divide a (batch, windows..., channels) sum.
fn covered_counts(dims: &[usize], windows: &[Window], x: &Tensor) -> Result<Tensor> {
    let mut counts = vec![1f64];
    let mut shape = Vec::with_capacity(windows.len() + 1);
    for (k, w) in windows.iter().enumerate() {
        let len = dims[k + 1];
        let n = w.count(len);
        let along: Vec<f64> = (0..n).map(|i| w.covered(i, len).len() as f64).collect();
        counts = counts
            .iter()
            .flat_map(|c| along.iter().map(move |a| c * a))
            .collect();
        shape.push(n);
    }
    shape.push(1);
    let t = Tensor::from_vec(counts, shape, x.device())?;
    Ok(match x.dtype() {
        DType::F64 => t,
        d => t.to_dtype(d)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn grad_of(x: &Var, y: &Tensor) -> Vec<f32> {
        let g = y.sum_all().unwrap().backward().unwrap();
        g.get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn one_axis_values_and_gradients() {
        let x = Var::new(&[[[1f32], [5.], [3.], [5.], [2.]]], &Device::Cpu).unwrap();
        let valid = |size, stride| Window {
            size,
            stride,
            pad: (0, 0),
        };
        // Two-wide windows over five steps: the last step is in none.
        let y = pool(x.as_tensor(), &[valid(2, 2)], false).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [3., 4.]);
        assert_eq!(grad_of(&x, &y), [0.5, 0.5, 0.5, 0.5, 0.]);
        let y = pool(x.as_tensor(), &[valid(2, 2)], true).unwrap();
        assert_eq!(grad_of(&x, &y), [0., 1., 0., 1., 0.]);
        // Overlapping windows; a tie goes to the first largest.
        let y = pool(x.as_tensor(), &[valid(3, 1)], true).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [5., 5., 5.]
        );
        assert_eq!(grad_of(&x, &y), [0., 2., 0., 1., 0.]);
        // `same`: the average divides by the positions it covers.
        let same = Window {
            size: 3,
            stride: 2,
            pad: (1, 1),
        };
        let y = pool(x.as_tensor(), &[same], false).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [3., 13. / 3., 3.5]
        );
        let y = pool(x.as_tensor(), &[same], true).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [5., 5., 5.]
        );
    }

    /// The CPU's loops and the gathered tensor ops (the path off the CPU) agree, values and
    /// gradients, on every kind of window.
    #[test]
    fn host_and_gathered_agree() {
        let dev = Device::Cpu;
        let w = |size, stride, pad| Window { size, stride, pad };
        let cases: Vec<(Vec<usize>, Vec<Window>)> = vec![
            (vec![2, 11, 3], vec![w(3, 2, (1, 1))]),
            (vec![2, 11, 3], vec![w(2, 2, (0, 0))]),
            (vec![2, 7, 9, 3], vec![w(2, 2, (0, 0)), w(3, 2, (1, 1))]),
            (vec![2, 7, 9, 3], vec![w(3, 1, (1, 1)), w(2, 3, (0, 1))]),
        ];
        for (shape, windows) in cases {
            for max in [true, false] {
                // Rounded values: ties in the max windows.
                let v = Tensor::randn(0f32, 2.0, shape.as_slice(), &dev).unwrap();
                let x = Var::from_tensor(&v.round().unwrap()).unwrap();
                let a = pool(x.as_tensor(), &windows, max).unwrap();
                let b = gathered(x.as_tensor(), &windows, max).unwrap();
                let diff = |p: &Tensor, q: &Tensor| {
                    (p - q)
                        .unwrap()
                        .abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                };
                assert!(diff(&a, &b) < 1e-6, "{shape:?} {max}");
                let r = Tensor::randn(0f32, 1.0, a.dims(), &dev).unwrap();
                let ga = (&a * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let gb = (&b * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let (ga, gb) = (
                    ga.get(x.as_tensor()).unwrap(),
                    gb.get(x.as_tensor()).unwrap(),
                );
                assert!(diff(ga, gb) < 1e-5, "{shape:?} {max} gradient");
            }
        }
    }

    #[test]
    fn two_axes_row_major_windows() {
        // (1, 3, 3, 1): 0..9 row-major.
        let x = Var::from_tensor(
            &Tensor::arange(0f32, 9.0, &Device::Cpu)
                .unwrap()
                .reshape((1, 3, 3, 1))
                .unwrap(),
        )
        .unwrap();
        let w = Window {
            size: 2,
            stride: 1,
            pad: (0, 0),
        };
        let y = pool(x.as_tensor(), &[w, w], true).unwrap();
        assert_eq!(y.dims(), &[1, 2, 2, 1]);
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [4., 5., 7., 8.]
        );
        let y = pool(x.as_tensor(), &[w, w], false).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [2., 3., 5., 6.]
        );
        assert_eq!(
            grad_of(&x, &y),
            [0.25, 0.5, 0.25, 0.5, 1., 0.5, 0.25, 0.5, 0.25]
        );
    }
}
