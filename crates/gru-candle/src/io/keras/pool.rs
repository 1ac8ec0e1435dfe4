//! Windowed max and average pooling over the spatial axes of a channels_last tensor, as
//! TensorFlow computes them, values and gradients: every window `(size, stride)` along each
//! axis, `same` padding outside the input (a max never takes it, an average divides by the
//! positions it covers), the gradient of a max going to the first largest position of its
//! window (row-major), as TensorFlow's `MaxPoolGrad` routes it.
//!
//! Candle's own `max_pool2d` / `avg_pool2d` gradients are only right when the stride equals
//! the window and divides the length (and the max's is halved by two-wide windows), so the
//! windows here are gathered with `index_select` and reduced with differentiable ops.

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

/// Pools `x` (batch, spatial..., channels) over its spatial axes (1..=`windows.len()`):
/// (batch, windows per axis..., channels). `max` picks the largest value of each window,
/// else the mean of the positions it covers.
pub(super) fn pool(x: &Tensor, windows: &[Window], max: bool) -> Result<Tensor> {
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
