//! 2-D convolution over channels-last (NHWC) tensors with Keras' kernel layout
//! `(kh, kw, in / groups, out)`, as matrix products: each output pixel's window is copied
//! into a row (its `kh` rows of `kw * in` values are contiguous in NHWC), and a block of such
//! rows times the kernel, read in place as a `(kh * kw * in / groups, out)` matrix, is a
//! block of output pixels (`im2col`). The backward is two more products: the kernel's
//! gradient `rows^T @ dY`, the input's `dY @ kernel^T` added back window by window
//! (`col2im`). Strides, dilations and padding may differ per axis; padding is read as zeros,
//! never copied. With one group and no column dilation the forward copies no windows: the
//! input is padded once and each kernel row's product reads a window's `kw * in` values in
//! place, windows `stride * in` apart; in f32 on AVX-512 or AVX2 those products run on the
//! per-step product kernels (`seq::kernel`) over the kernel packed once per call, and kernel
//! rows that fall on padding rows are skipped. The input's gradient runs on the same kernels
//! over the kernel's transpose, packed once per call.
//!
//! Rows are split over the threads in contiguous parts (the input's gradient by samples,
//! whose windows never overlap), each part in blocks of at most about a million copied
//! values.

use crate::seq::kernel::PackedProduct;
use crate::seq::matmul::{gemm, View};
use crate::seq::parallel::{split, split_mut};
use crate::seq::team::run_each;
use crate::seq::{Float, Threads};
use std::ops::Range;

/// The sizes of one convolution call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Samples.
    pub batch: usize,
    /// Input rows, columns and channels.
    pub input: (usize, usize, usize),
    /// Kernel rows and columns.
    pub kernel: (usize, usize),
    /// Output channels.
    pub filters: usize,
    /// Channel groups (both channel counts divide by it).
    pub groups: usize,
    /// Strides (rows, columns).
    pub stride: (usize, usize),
    /// Dilations (rows, columns).
    pub dilation: (usize, usize),
    /// Zero rows before the input (top) and zero columns before it (left).
    pub pad: (usize, usize),
    /// Output rows and columns.
    pub output: (usize, usize),
}

/// Values per copied block of window rows (4 MiB of f32).
const BLOCK_VALUES: usize = 1 << 20;

impl Conv2dGeometry {
    /// Input channels of one group.
    fn group_in(&self) -> usize {
        self.input.2 / self.groups
    }

    /// Values of one window of one group: a row of the copied matrix.
    pub fn patch(&self) -> usize {
        self.kernel.0 * self.kernel.1 * self.group_in()
    }

    /// Output pixels over the batch: the rows of the products.
    pub fn rows(&self) -> usize {
        self.batch * self.output.0 * self.output.1
    }

    /// Elements of the input, kernel and output.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let (h, w, c) = self.input;
        (
            self.batch * h * w * c,
            self.patch() * self.filters,
            self.rows() * self.filters,
        )
    }

    /// Rows per block.
    fn block(&self) -> usize {
        (BLOCK_VALUES / self.patch().max(1)).max(1)
    }

    /// Calls `f(offset in the row, Some(input offset) or None for padding, length)` for the
    /// pieces of output pixel `r`'s window in group `group`: a kernel row's columns in one
    /// piece where they are contiguous in the input (no column dilation, one group), else a
    /// piece of `in / groups` values per tap.
    fn window(&self, r: usize, group: usize, mut f: impl FnMut(usize, Option<usize>, usize)) {
        let (h, w, c) = self.input;
        let (oh, ow) = self.output;
        let (b, oy, ox) = (r / (oh * ow), (r / ow) % oh, r % ow);
        let (kh, kw) = self.kernel;
        let cg = self.group_in();
        let x0 = ox * self.stride.1;
        for i in 0..kh {
            let row = i * kw * cg;
            let iy = (oy * self.stride.0 + i * self.dilation.0).checked_sub(self.pad.0);
            let Some(y) = iy.filter(|&y| y < h) else {
                f(row, None, kw * cg);
                continue;
            };
            let at = |x: usize| ((b * h + y) * w + x) * c + group * cg;
            if self.dilation.1 == 1 && self.groups == 1 {
                // Taps j in [first, end) fall inside the input: x0 + j - pad in [0, w).
                let first = self.pad.1.saturating_sub(x0).min(kw);
                let end = (w + self.pad.1).saturating_sub(x0).clamp(first, kw);
                if first > 0 {
                    f(row, None, first * cg);
                }
                if end > first {
                    f(
                        row + first * cg,
                        Some(at(x0 + first - self.pad.1)),
                        (end - first) * cg,
                    );
                }
                if end < kw {
                    f(row + end * cg, None, (kw - end) * cg);
                }
                continue;
            }
            for j in 0..kw {
                let ix = (x0 + j * self.dilation.1).checked_sub(self.pad.1);
                match ix.filter(|&x| x < w) {
                    Some(x) => f(row + j * cg, Some(at(x)), cg),
                    None => f(row + j * cg, None, cg),
                }
            }
        }
    }

    /// Copies the windows of output pixels `rows` (group `group`) into `cols`, one row each.
    fn im2col<T: Float>(&self, x: &[T], rows: Range<usize>, group: usize, cols: &mut [T]) {
        let patch = self.patch();
        for (k, r) in rows.enumerate() {
            let row = &mut cols[k * patch..(k + 1) * patch];
            self.window(r, group, |o, at, n| match at {
                Some(a) => row[o..o + n].copy_from_slice(&x[a..a + n]),
                None => row[o..o + n].fill(T::ZERO),
            });
        }
    }

    /// Adds the rows of `cols` (windows of output pixels `rows`, group `group`) back into
    /// the input's gradient `dx`, whose first element is input element `dx_start`.
    fn col2im_add<T: Float>(
        &self,
        cols: &[T],
        rows: Range<usize>,
        group: usize,
        dx: &mut [T],
        dx_start: usize,
    ) {
        let patch = self.patch();
        for (k, r) in rows.enumerate() {
            let row = &cols[k * patch..(k + 1) * patch];
            self.window(r, group, |o, at, n| {
                if let Some(a) = at {
                    let d = &mut dx[a - dx_start..a - dx_start + n];
                    for (d, v) in d.iter_mut().zip(&row[o..o + n]) {
                        *d += *v;
                    }
                }
            });
        }
    }

    /// The kernel of group `group` as a `(patch, filters / groups)` matrix.
    fn kernel_view<'a, T>(&self, k: &'a [T], group: usize) -> View<'a, T> {
        let per = self.filters / self.groups;
        View {
            data: k,
            offset: group * per,
            rows: self.patch(),
            cols: per,
            rs: self.filters,
            cs: 1,
        }
    }
}

/// `y = conv(x, k)`: `x` (batch, h, w, in), `k` (kh, kw, in / groups, filters), `y`
/// (batch, out_h, out_w, filters), all row-major.
pub fn conv2d_forward<T: Float>(
    g: &Conv2dGeometry,
    x: &[T],
    k: &[T],
    y: &mut [T],
    threads: Threads,
) {
    if g.groups == 1 && g.dilation.1 == 1 {
        return forward_in_place(g, x, k, y, threads);
    }
    let (n, f) = (g.rows(), g.filters);
    let per = f / g.groups;
    let parts = split(n, threads.at_once(threads.count));
    let outs = split_mut(&mut y[..n * f], &parts, f);
    run_each(
        threads.team,
        parts.iter().cloned().zip(outs),
        |(part, out)| {
            let mut cols = vec![T::ZERO; g.block().min(part.len()) * g.patch()];
            let mut start = part.start;
            while start < part.end {
                let end = (start + g.block()).min(part.end);
                for group in 0..g.groups {
                    g.im2col(x, start..end, group, &mut cols);
                    let a = View::rows(&cols, 0, end - start, g.patch(), g.patch());
                    let off = (start - part.start) * f + group * per;
                    gemm(out, off, f, a, g.kernel_view(k, group), false, Threads::ONE);
                }
                start = end;
            }
        },
    );
}

/// The forward without copied windows (one group, no column dilation): the input padded
/// once, then for each output row and kernel row a product of the input's rows read in place
/// (a window's `kw * in` values are contiguous, windows `stride * in` apart) and that kernel
/// row's `(kw * in, filters)` block.
fn forward_in_place<T: Float>(g: &Conv2dGeometry, x: &[T], k: &[T], y: &mut [T], threads: Threads) {
    let (h, w, c) = g.input;
    let (oh, ow) = g.output;
    let (kh, kw) = g.kernel;
    let f = g.filters;
    let hp = (h + g.pad.0).max((oh - 1) * g.stride.0 + (kh - 1) * g.dilation.0 + 1);
    let wp = (w + g.pad.1).max((ow - 1) * g.stride.1 + kw);
    let mut xp = vec![T::ZERO; g.batch * hp * wp * c];
    for b in 0..g.batch {
        for r in 0..h {
            let src = &x[(b * h + r) * w * c..][..w * c];
            let at = ((b * hp + r + g.pad.0) * wp + g.pad.1) * c;
            xp[at..at + w * c].copy_from_slice(src);
        }
    }
    let rows = g.batch * oh;
    let span = kw * c;
    // f32 on AVX-512/AVX2: the kernel packed once for the per-step product kernels, which
    // read the windows in place (gemm would pack both operands on every product).
    let packed = T::pack(View::rows(k, 0, kh * span, f, f), ow);
    let parts = split(rows, threads.at_once(threads.count));
    let outs = split_mut(&mut y[..rows * ow * f], &parts, ow * f);
    run_each(
        threads.team,
        parts.iter().cloned().zip(outs),
        |(part, out)| {
            for (n, r) in part.enumerate() {
                let (b, oy) = (r / oh, r % oh);
                // Kernel rows over padding rows add nothing.
                let real = |i: &usize| {
                    let iy = oy * g.stride.0 + i * g.dilation.0;
                    iy >= g.pad.0 && iy < g.pad.0 + h
                };
                let taps: Vec<usize> = (0..kh).filter(real).collect();
                if taps.is_empty() {
                    out[n * ow * f..(n + 1) * ow * f].fill(T::ZERO);
                }
                for (tap, &i) in taps.iter().enumerate() {
                    let iy = oy * g.stride.0 + i * g.dilation.0;
                    let a = View {
                        data: &xp,
                        offset: (b * hp + iy) * wp * c,
                        rows: ow,
                        cols: span,
                        rs: g.stride.1 * c,
                        cs: 1,
                    };
                    let call = || PackedProduct {
                        a,
                        k_rows: i * span..(i + 1) * span,
                        cols: 0..f,
                        accumulate: tap > 0,
                    };
                    let fast = a.in_bounds()
                        && packed
                            .as_ref()
                            .is_some_and(|p| T::gemm_packed(out, n * ow * f, f, p, call()));
                    if !fast {
                        let kr = View::rows(k, i * span * f, span, f, f);
                        gemm(out, n * ow * f, f, a, kr, tap > 0, Threads::ONE);
                    }
                }
            }
        },
    );
}

/// The kernel's gradient: `dk = sum over output pixels of window^T @ dy`, in Keras' layout.
pub fn conv2d_backward_kernel<T: Float>(
    g: &Conv2dGeometry,
    x: &[T],
    dy: &[T],
    dk: &mut [T],
    threads: Threads,
) {
    let (n, f, patch) = (g.rows(), g.filters, g.patch());
    let per = f / g.groups;
    let parts = split(n, threads.at_once(threads.count));
    let sums = run_each(threads.team, parts, |part| {
        let mut sum = vec![T::ZERO; patch * f];
        let mut cols = vec![T::ZERO; g.block().min(part.len()) * patch];
        let mut start = part.start;
        while start < part.end {
            let end = (start + g.block()).min(part.end);
            for group in 0..g.groups {
                g.im2col(x, start..end, group, &mut cols);
                let a = View::rows(&cols, 0, end - start, patch, patch).t();
                let b = View {
                    data: dy,
                    offset: start * f + group * per,
                    rows: end - start,
                    cols: per,
                    rs: f,
                    cs: 1,
                };
                gemm(&mut sum, group * per, f, a, b, true, Threads::ONE);
            }
            start = end;
        }
        sum
    });
    dk[..patch * f].fill(T::ZERO);
    for part in sums.unwrap_or_default() {
        for (d, v) in dk.iter_mut().zip(&part) {
            *d += *v;
        }
    }
}

/// The input's gradient: each output pixel's `dy @ kernel^T` added back over its window.
pub fn conv2d_backward_input<T: Float>(
    g: &Conv2dGeometry,
    dy: &[T],
    k: &[T],
    dx: &mut [T],
    threads: Threads,
) {
    let (f, patch) = (g.filters, g.patch());
    let per = f / g.groups;
    let (h, w, c) = g.input;
    let sample = h * w * c;
    let pixels = g.output.0 * g.output.1;
    // Samples' windows never overlap: a part owns whole samples of `dx`.
    let parts = split(g.batch, threads.at_once(threads.count));
    let outs = split_mut(&mut dx[..g.batch * sample], &parts, sample);
    // f32 on AVX-512/AVX2: each group's kernel^T packed once for the product kernels.
    let packed: Vec<_> = (0..g.groups)
        .map(|group| T::pack(g.kernel_view(k, group).t(), g.block()))
        .collect();
    run_each(
        threads.team,
        parts.iter().cloned().zip(outs),
        |(part, out)| {
            out.fill(T::ZERO);
            let rows = part.start * pixels..part.end * pixels;
            let mut cols = vec![T::ZERO; g.block().min(rows.len()) * patch];
            let mut start = rows.start;
            while start < rows.end {
                let end = (start + g.block()).min(rows.end);
                for (group, kt) in packed.iter().enumerate() {
                    let a = View {
                        data: dy,
                        offset: start * f + group * per,
                        rows: end - start,
                        cols: per,
                        rs: f,
                        cs: 1,
                    };
                    let call = PackedProduct {
                        a,
                        k_rows: 0..per,
                        cols: 0..patch,
                        accumulate: false,
                    };
                    let fast = a.in_bounds()
                        && kt
                            .as_ref()
                            .is_some_and(|p| T::gemm_packed(&mut cols, 0, patch, p, call));
                    if !fast {
                        let b = g.kernel_view(k, group).t();
                        gemm(&mut cols, 0, patch, a, b, false, Threads::ONE);
                    }
                    g.col2im_add(&cols, start..end, group, out, part.start * sample);
                }
                start = end;
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution by its definition.
    fn naive(g: &Conv2dGeometry, x: &[f64], k: &[f64]) -> Vec<f64> {
        let (h, w, c) = g.input;
        let (cg, per) = (c / g.groups, g.filters / g.groups);
        let mut y = vec![0.0; g.rows() * g.filters];
        for b in 0..g.batch {
            for oy in 0..g.output.0 {
                for ox in 0..g.output.1 {
                    for o in 0..g.filters {
                        let group = o / per;
                        let mut s = 0.0;
                        for i in 0..g.kernel.0 {
                            for j in 0..g.kernel.1 {
                                let iy = (oy * g.stride.0 + i * g.dilation.0) as isize
                                    - g.pad.0 as isize;
                                let ix = (ox * g.stride.1 + j * g.dilation.1) as isize
                                    - g.pad.1 as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                for ci in 0..cg {
                                    let xv = x[((b * h + iy as usize) * w + ix as usize) * c
                                        + group * cg
                                        + ci];
                                    let kv = k[((i * g.kernel.1 + j) * cg + ci) * g.filters + o];
                                    s += xv * kv;
                                }
                            }
                        }
                        y[((b * g.output.0 + oy) * g.output.1 + ox) * g.filters + o] = s;
                    }
                }
            }
        }
        y
    }

    fn values(n: usize, seed: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64) * 0.37 + seed).sin()).collect()
    }

    fn geometries() -> Vec<Conv2dGeometry> {
        let g = |input, kernel, filters, groups, stride, dilation, pad, output| Conv2dGeometry {
            batch: 3,
            input,
            kernel,
            filters,
            groups,
            stride,
            dilation,
            pad,
            output,
        };
        vec![
            g((7, 9, 4), (3, 2), 5, 1, (1, 1), (1, 1), (0, 0), (5, 8)),
            g((7, 9, 4), (3, 5), 6, 1, (2, 3), (1, 1), (1, 2), (4, 3)),
            g((8, 6, 4), (2, 3), 6, 2, (1, 2), (2, 1), (0, 1), (6, 3)),
            g((5, 5, 2), (5, 5), 3, 1, (1, 1), (1, 1), (2, 2), (5, 5)),
        ]
    }

    #[test]
    fn products_equal_the_definition() {
        for g in geometries() {
            let (nx, nk, ny) = g.sizes();
            let (x, k) = (values(nx, 0.1), values(nk, 0.7));
            let want = naive(&g, &x, &k);
            let mut y = vec![0.0; ny];
            conv2d_forward(&g, &x, &k, &mut y, Threads::ONE);
            let err = y
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-12, "{g:?}: {err}");
            // Gradients of sum(y * dy): dk and dx by the definition's linearity.
            let dy = values(ny, 1.3);
            let mut dk = vec![0.0; nk];
            conv2d_backward_kernel(&g, &x, &dy, &mut dk, Threads::ONE);
            let mut dx = vec![0.0; nx];
            conv2d_backward_input(&g, &dy, &k, &mut dx, Threads::ONE);
            for (which, probe) in [(0usize, 3usize), (1, nk / 2), (1, nk - 1), (0, nx - 2)] {
                let (mut xp, mut kp) = (x.clone(), k.clone());
                match which {
                    0 => xp[probe] += 1.0,
                    _ => kp[probe] += 1.0,
                }
                let moved: f64 = naive(&g, &xp, &kp)
                    .iter()
                    .zip(&want)
                    .zip(&dy)
                    .map(|((a, b), d)| (a - b) * d)
                    .sum();
                let ours = if which == 0 { dx[probe] } else { dk[probe] };
                assert!(
                    (moved - ours).abs() < 1e-9,
                    "{g:?} {which} {probe}: {moved} vs {ours}"
                );
            }
        }
    }

    /// f32 (on AVX-512 or AVX2 the packed kernel products) against the definition (the
    /// forward, over output rows whose kernel rows fall partly or wholly on padding) and
    /// against f64 (the input's gradient), on one and two threads.
    #[test]
    fn f32_forward_equals_the_definition() {
        let g = |input, kernel, filters, stride, pad, output| Conv2dGeometry {
            batch: 2,
            input,
            kernel,
            filters,
            groups: 1,
            stride,
            dilation: (1, 1),
            pad,
            output,
        };
        let mut all = geometries();
        all.push(g((3, 4, 2), (2, 2), 3, (1, 1), (3, 0), (5, 3)));
        all.push(g((9, 13, 3), (5, 7), 40, (2, 2), (2, 3), (5, 7)));
        for geo in all {
            let (nx, nk, ny) = geo.sizes();
            let (x, k) = (values(nx, 0.1), values(nk, 0.7));
            let want = naive(&geo, &x, &k);
            let (x32, k32): (Vec<f32>, Vec<f32>) = (
                x.iter().map(|&v| v as f32).collect(),
                k.iter().map(|&v| v as f32).collect(),
            );
            for threads in [Threads::ONE, Threads::new(2, &crate::seq::ScopedThreads)] {
                let mut y = vec![f32::NAN; ny];
                conv2d_forward(&geo, &x32, &k32, &mut y, threads);
                assert!(y.iter().all(|v| v.is_finite()), "{geo:?}: not written");
                let err = y
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (f64::from(*a) - b).abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-4, "{geo:?}: {err}");
                // The input's gradient (f32: the packed kernel^T) against f64's.
                let dy = values(ny, 1.3);
                let mut want_dx = vec![0.0; nx];
                conv2d_backward_input(&geo, &dy, &k, &mut want_dx, Threads::ONE);
                let dy32: Vec<f32> = dy.iter().map(|&v| v as f32).collect();
                let mut dx = vec![f32::NAN; nx];
                conv2d_backward_input(&geo, &dy32, &k32, &mut dx, threads);
                let err = dx
                    .iter()
                    .zip(&want_dx)
                    .map(|(a, b)| (f64::from(*a) - b).abs())
                    .fold(0.0, f64::max);
                assert!(dx.iter().all(|v| v.is_finite()), "{geo:?}: dx not written");
                assert!(err < 1e-4, "{geo:?}: dx {err}");
            }
        }
    }

    #[test]
    fn blocks_and_parts_give_the_same_sums() {
        // Many pixels and a wide window: several blocks per part.
        let g = Conv2dGeometry {
            batch: 2,
            input: (40, 33, 8),
            kernel: (11, 21),
            filters: 4,
            groups: 1,
            stride: (1, 2),
            dilation: (1, 1),
            pad: (5, 10),
            output: (40, 17),
        };
        assert!(g.block() < g.rows());
        let (nx, nk, ny) = g.sizes();
        let (x, k) = (values(nx, 0.2), values(nk, 0.9));
        let want = naive(&g, &x, &k);
        let mut y = vec![0.0; ny];
        conv2d_forward(
            &g,
            &x,
            &k,
            &mut y,
            Threads::new(3, &crate::seq::ScopedThreads),
        );
        let err = y
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-10, "{err}");
        let dy = values(ny, 0.4);
        let (mut dk1, mut dk3) = (vec![0.0; nk], vec![0.0; nk]);
        conv2d_backward_kernel(&g, &x, &dy, &mut dk1, Threads::ONE);
        conv2d_backward_kernel(
            &g,
            &x,
            &dy,
            &mut dk3,
            Threads::new(3, &crate::seq::ScopedThreads),
        );
        let err = dk1
            .iter()
            .zip(&dk3)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-9, "{err}");
    }
}
