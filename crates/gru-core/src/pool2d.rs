//! Max and average pooling over channels-last (NHWC) tensors, as TensorFlow computes them:
//! windows of `size` every `stride` with `pad` positions before the input that no window
//! takes (a max ignores them, an average divides by the positions it covers); the gradient
//! of a max goes to the first largest position of its window (row-major), as TensorFlow's
//! `MaxPoolGrad` routes it.

use crate::seq::Float;

/// The sizes of one pooling call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dGeometry {
    /// Samples.
    pub batch: usize,
    /// Input rows, columns and channels.
    pub input: (usize, usize, usize),
    /// Window rows and columns.
    pub size: (usize, usize),
    /// Strides (rows, columns).
    pub stride: (usize, usize),
    /// Positions before the input (top, left) that windows start in.
    pub pad: (usize, usize),
    /// Output rows and columns.
    pub output: (usize, usize),
}

impl Pool2dGeometry {
    /// Elements of the input and of the output.
    pub fn sizes(&self) -> (usize, usize) {
        let (h, w, c) = self.input;
        (
            self.batch * h * w * c,
            self.batch * self.output.0 * self.output.1 * c,
        )
    }

    /// The input rows (or columns) window `o` covers along one axis.
    fn covered(o: usize, stride: usize, size: usize, pad: usize, len: usize) -> (usize, usize) {
        let start = (o * stride).saturating_sub(pad).min(len);
        let end = (o * stride + size).saturating_sub(pad).min(len);
        (start, end.max(start))
    }

    /// Calls `f(output pixel, input pixels of its window)` for every output pixel (a pixel
    /// holds the channels), the window's pixels row-major.
    fn windows(&self, mut f: impl FnMut(usize, &[usize])) {
        let (h, w, _) = self.input;
        let (oh, ow) = self.output;
        let mut cells = Vec::with_capacity(self.size.0 * self.size.1);
        for b in 0..self.batch {
            for oy in 0..oh {
                let (y0, y1) = Self::covered(oy, self.stride.0, self.size.0, self.pad.0, h);
                for ox in 0..ow {
                    let (x0, x1) = Self::covered(ox, self.stride.1, self.size.1, self.pad.1, w);
                    cells.clear();
                    for y in y0..y1 {
                        cells.extend((x0..x1).map(|x| (b * h + y) * w + x));
                    }
                    f((b * oh + oy) * ow + ox, &cells);
                }
            }
        }
    }

    /// Each channel's first largest pixel of the window `cells`, into `best`.
    fn first_max<T: Float>(&self, x: &[T], cells: &[usize], best: &mut [usize]) {
        let c = self.input.2;
        best.fill(cells.first().copied().unwrap_or(0));
        for &cell in cells.iter().skip(1) {
            let v = &x[cell * c..(cell + 1) * c];
            for (ch, b) in best.iter_mut().enumerate() {
                if v[ch] > x[*b * c + ch] {
                    *b = cell;
                }
            }
        }
    }

    /// `y`: each window's largest value.
    pub fn max_forward<T: Float>(&self, x: &[T], y: &mut [T]) {
        let c = self.input.2;
        self.windows(|o, cells| {
            let out = &mut y[o * c..(o + 1) * c];
            let Some((&first, rest)) = cells.split_first() else {
                out.fill(T::ZERO);
                return;
            };
            out.copy_from_slice(&x[first * c..(first + 1) * c]);
            for &cell in rest {
                for (d, v) in out.iter_mut().zip(&x[cell * c..(cell + 1) * c]) {
                    if *v > *d {
                        *d = *v;
                    }
                }
            }
        });
    }

    /// `dx`: each window's gradient on its first largest position.
    pub fn max_backward<T: Float>(&self, x: &[T], dy: &[T], dx: &mut [T]) {
        let c = self.input.2;
        dx.fill(T::ZERO);
        let mut best = vec![0usize; c];
        self.windows(|o, cells| {
            if cells.is_empty() {
                return;
            }
            self.first_max(x, cells, &mut best);
            for (ch, &b) in best.iter().enumerate() {
                dx[b * c + ch] += dy[o * c + ch];
            }
        });
    }

    /// `y`: each window's mean over the positions it covers.
    pub fn avg_forward<T: Float>(&self, x: &[T], y: &mut [T]) {
        let c = self.input.2;
        self.windows(|o, cells| {
            let out = &mut y[o * c..(o + 1) * c];
            out.fill(T::ZERO);
            for &cell in cells {
                for (d, v) in out.iter_mut().zip(&x[cell * c..(cell + 1) * c]) {
                    *d += *v;
                }
            }
            let scale = T::from_f64(1.0 / cells.len().max(1) as f64);
            out.iter_mut().for_each(|d| *d *= scale);
        });
    }

    /// `dx`: each window's gradient shared over the positions it covers.
    pub fn avg_backward<T: Float>(&self, dy: &[T], dx: &mut [T]) {
        let c = self.input.2;
        dx.fill(T::ZERO);
        self.windows(|o, cells| {
            let scale = T::from_f64(1.0 / cells.len().max(1) as f64);
            let g = &dy[o * c..(o + 1) * c];
            for &cell in cells {
                for (d, v) in dx[cell * c..(cell + 1) * c].iter_mut().zip(g) {
                    *d += *v * scale;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(
        size: (usize, usize),
        stride: (usize, usize),
        pad: (usize, usize),
        output: (usize, usize),
    ) -> Pool2dGeometry {
        Pool2dGeometry {
            batch: 1,
            input: (3, 3, 1),
            size,
            stride,
            pad,
            output,
        }
    }

    #[test]
    fn windows_values_and_gradients() {
        let x: Vec<f64> = vec![1., 5., 3., 5., 2., 0., 4., 4., 4.];
        // 2x2 windows every 1: first largest of each.
        let g = geometry((2, 2), (1, 1), (0, 0), (2, 2));
        let mut y = vec![0.0; 4];
        g.max_forward(&x, &mut y);
        assert_eq!(y, [5., 5., 5., 4.]);
        let mut dx = vec![0.0; 9];
        g.max_backward(&x, &[1., 1., 1., 1.], &mut dx);
        // Position 1 (two windows' first 5), 3, and 7 (of the tie 4, 4, the first).
        assert_eq!(dx, [0., 2., 0., 1., 0., 0., 0., 1., 0.]);
        // `same` 2x2 windows every 2 with nothing before: the last row and column alone.
        let g = geometry((2, 2), (2, 2), (0, 0), (2, 2));
        g.avg_forward(&x, &mut y);
        assert_eq!(y, [13. / 4., 1.5, 4., 4.]);
        g.avg_backward(&[4., 2., 2., 1.], &mut dx);
        assert_eq!(dx, [1., 1., 1., 1., 1., 1., 1., 1., 1.]);
    }
}
