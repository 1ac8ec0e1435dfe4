//! `C (+)= A @ B` on strided row-major views, through `gemm` (candle's own CPU matmul
//! backend: AVX-512/AVX2/portable kernels chosen at run time).

use super::float::Float;
use super::kernel::{Packed, PackedProduct};
use std::ops::Range;

/// A read-only matrix view: element (i, j) is `data[offset + i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a, T> {
    /// Backing storage.
    pub data: &'a [T],
    /// Offset of element (0, 0).
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a, T> View<'a, T> {
    /// A dense row-major (rows, cols) matrix starting at `offset`, rows `rs` apart.
    pub fn rows(data: &'a [T], offset: usize, rows: usize, cols: usize, rs: usize) -> Self {
        View {
            data,
            offset,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    fn last(&self) -> Option<usize> {
        if self.rows == 0 || self.cols == 0 {
            return Some(self.offset);
        }
        (self.rows - 1)
            .checked_mul(self.rs)?
            .checked_add((self.cols - 1).checked_mul(self.cs)?)?
            .checked_add(self.offset)
    }

    pub(crate) fn in_bounds(&self) -> bool {
        self.last()
            .is_some_and(|l| self.rows == 0 || self.cols == 0 || l < self.data.len())
    }
}

/// `dst[i, j] (+)= sum_k a[i, k] b[k, j]`; `dst` is row-major (m, n) with rows `dst_rs`
/// apart from `dst_offset`. Panics if a view reaches outside its slice (an internal
/// invariant, never user data).
pub fn gemm<T: Float>(
    dst: &mut [T],
    dst_offset: usize,
    dst_rs: usize,
    a: View<'_, T>,
    b: View<'_, T>,
    accumulate: bool,
    threads: usize,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions");
    let d = View {
        data: &*dst,
        offset: dst_offset,
        rows: m,
        cols: n,
        rs: dst_rs,
        cs: 1,
    };
    assert!(
        a.in_bounds() && b.in_bounds() && d.in_bounds(),
        "gemm view out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[dst_offset + i * dst_rs..dst_offset + i * dst_rs + n].fill(T::ZERO);
            }
        }
        return;
    }
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every element each view addresses lies inside its slice (checked above with
    // overflow-checked arithmetic); `dst` is a unique borrow that neither `a` nor `b` aliases
    // (they are shared borrows of other slices, which the borrow checker guarantees); T is
    // f32 or f64, both supported by gemm.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().add(dst_offset),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.offset),
            b.cs as isize,
            b.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}

/// A right-hand side of the per-step products (the recurrent weights, or their transpose):
/// the matrix as a view and, for f32 on a CPU with AVX-512F or AVX2+FMA, a copy packed once
/// for the whole call (see `kernel`).
pub(crate) struct Rhs<'a, T> {
    view: View<'a, T>,
    packed: Option<Packed<T>>,
}

impl<'a, T: Float> Rhs<'a, T> {
    /// `view` (k x n), packed for products of `rows` left-hand rows when they run on one
    /// thread.
    pub(crate) fn new(view: View<'a, T>, threads: usize, rows: usize) -> Self {
        let packed = if threads <= 1 {
            T::pack(view, rows)
        } else {
            None
        };
        Rhs { view, packed }
    }

    /// Whether the products read a packed copy.
    pub(crate) fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// `dst (+)= a @ B[k_rows, cols]`: from the packed copy when it serves, else by gemm
    /// on the view. Panics if a view reaches outside its slice (an internal invariant).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn product(
        &self,
        dst: &mut [T],
        dst_offset: usize,
        dst_rs: usize,
        a: View<'_, T>,
        k_rows: Range<usize>,
        cols: Range<usize>,
        accumulate: bool,
        threads: usize,
    ) {
        let d = View {
            data: &*dst,
            offset: dst_offset,
            rows: a.rows,
            cols: cols.len(),
            rs: dst_rs,
            cs: 1,
        };
        assert!(
            a.in_bounds() && d.in_bounds(),
            "step product view out of bounds"
        );
        if let Some(p) = &self.packed {
            let call = PackedProduct {
                a,
                k_rows: k_rows.clone(),
                cols: cols.clone(),
                accumulate,
            };
            if T::gemm_packed(dst, dst_offset, dst_rs, p, call) {
                return;
            }
        }
        let v = self.view;
        let b = View {
            offset: v.offset + k_rows.start * v.rs + cols.start * v.cs,
            rows: k_rows.len(),
            cols: cols.len(),
            ..v
        };
        gemm(dst, dst_offset, dst_rs, a, b, accumulate, threads);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_and_transposed_products() {
        // a (2, 3), b (3, 2) inside wider buffers.
        let a = [1.0, 2.0, 3.0, 9.0, 4.0, 5.0, 6.0, 9.0];
        let b = [1.0, 0.0, 7.0, 0.0, 1.0, 7.0, 1.0, 1.0, 7.0];
        let mut d = vec![0.0f64; 6];
        gemm(
            &mut d,
            0,
            3,
            View::rows(&a, 0, 2, 3, 4),
            View::rows(&b, 0, 3, 2, 3),
            false,
            1,
        );
        assert_eq!(d, vec![4.0, 5.0, 0.0, 10.0, 11.0, 0.0]);
        // Accumulating doubles it.
        gemm(
            &mut d,
            0,
            3,
            View::rows(&a, 0, 2, 3, 4),
            View::rows(&b, 0, 3, 2, 3),
            true,
            1,
        );
        assert_eq!(d, vec![8.0, 10.0, 0.0, 20.0, 22.0, 0.0]);
        // a @ a^T through a transposed view.
        let mut e = vec![0.0f64; 4];
        gemm(
            &mut e,
            0,
            2,
            View::rows(&a, 0, 2, 3, 4),
            View::rows(&a, 0, 2, 3, 4).t(),
            false,
            1,
        );
        assert_eq!(e, vec![14.0, 32.0, 32.0, 77.0]);
    }
}
