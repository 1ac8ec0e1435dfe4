//! `C (+)= A @ B` on strided row-major views, through `gemm` (candle's own CPU matmul
//! backend: AVX-512/AVX2/portable kernels chosen at run time).

use super::float::Float;
use super::kernel::{Packed, PackedProduct};
use super::team::Threads;
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

    /// Rows `r` and columns `c` of this view (inside it).
    fn sub(self, r: Range<usize>, c: Range<usize>) -> Self {
        View {
            offset: self.offset + r.start * self.rs + c.start * self.cs,
            rows: r.len(),
            cols: c.len(),
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
    threads: Threads,
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
    let parts = split_parts(m, k, n, threads.count);
    if parts.is_empty() {
        // SAFETY: the views and `dst` were checked above (`raw` states the contract).
        unsafe {
            raw(
                dst.as_mut_ptr().add(dst_offset),
                dst_rs,
                a,
                b,
                (m, k, n),
                accumulate,
            )
        };
        return;
    }
    // Blocks of rows or of columns of `dst`, one per thread, each a one-thread product:
    // gemm's own threading was measured slower on two cores for the products over all steps
    // of small batches (256x100x768 with A transposed: 128-196 us on two threads against 160
    // on one; these blocks: 92).
    let dst_ptr = SyncPtr(dst.as_mut_ptr());
    threads.team.run(parts.len(), &|p| {
        let (a, b, c0) = match &parts[p] {
            Part::Rows(r) => (a.sub(r.clone(), 0..k), b, dst_offset + r.start * dst_rs),
            Part::Cols(c) => (a, b.sub(0..k, c.clone()), dst_offset + c.start),
        };
        let dst = &dst_ptr;
        // SAFETY: `a` and `b` are sub-views of the checked views; the blocks of `dst` are
        // disjoint (distinct rows, or distinct columns of every row) and inside the checked
        // destination, and `dst` stays borrowed mutably by this call while they run.
        unsafe { raw(dst.0.add(c0), dst_rs, a, b, (a.rows, k, b.cols), accumulate) };
    });
}

/// A raw pointer the threads of one product share (each writes its own block).
struct SyncPtr<T>(*mut T);
// SAFETY: used only by `gemm`, whose threads write disjoint blocks of one exclusively
// borrowed destination and finish before it returns.
unsafe impl<T> Sync for SyncPtr<T> {}

/// A block of a product's destination.
enum Part {
    Rows(Range<usize>),
    Cols(Range<usize>),
}

/// How a product of (m x k) @ (k x n) splits over `threads`: none (empty) for one thread or
/// a product too small to pay for threads (below 1M multiply-adds); else blocks of the
/// dimension whose operand is larger (each thread then reads only its part of it), of 16
/// rows or columns or more.
fn split_parts(m: usize, k: usize, n: usize, threads: usize) -> Vec<Part> {
    const MIN: usize = 16;
    let large = m.saturating_mul(k).saturating_mul(n) >= 1 << 20;
    if threads <= 1 || !large {
        return Vec::new();
    }
    let by_rows = m.saturating_mul(k) >= k.saturating_mul(n);
    let len = if by_rows { m } else { n };
    let parts = threads.min(len / MIN);
    if parts <= 1 {
        return Vec::new();
    }
    // Block edges on multiples of 16 (whole vectors of the gemm kernels' columns).
    let edge = |p: usize| ((p * len / parts) / MIN * MIN).min(len);
    (0..parts)
        .map(|p| {
            let r = edge(p)..if p + 1 == parts { len } else { edge(p + 1) };
            if by_rows {
                Part::Rows(r)
            } else {
                Part::Cols(r)
            }
        })
        .collect()
}

/// `C (+)= A @ B` on one thread for (m, k, n) = `dims`, `C` row-major from `c`, rows `c_rs`
/// apart.
///
/// # Safety
/// The views address only elements of their slices; `c` holds the (m, n) block with rows
/// `c_rs` apart, which neither view aliases and nothing else writes meanwhile; T is f32 or
/// f64.
unsafe fn raw<T: Float>(
    c: *mut T,
    c_rs: usize,
    a: View<'_, T>,
    b: View<'_, T>,
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
) {
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        c_rs as isize,
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
        gemm::Parallelism::None,
    )
}

/// The fewest products over one right-hand side that pay for packing it: packing reads and
/// writes the matrix once, about what one product over it costs, and below this many the
/// products read it in place (`kernel::gemm_direct`). Measured on one core (AVX-512; f32
/// inference calls over constant weights, microseconds per step, packed against in place):
/// B=1, 512 units: T=4 69.5 against 56.1, T=8 52.9 against 50.7, T=16 47.3 against 48.5;
/// B=8, 512 units: T=4 117.8 against 108.9, T=8 101.9 against 115.5.
pub(crate) const PACK_MIN_PRODUCTS: usize = 8;

/// A right-hand side of the per-step products (the recurrent weights, or their transpose):
/// the matrix as a view and, for f32 on a CPU with AVX-512F or AVX2+FMA, a copy packed once
/// for the whole call (see `kernel`).
pub(crate) struct Rhs<'a, T> {
    view: View<'a, T>,
    packed: Option<Packed<T>>,
}

impl<'a, T: Float> Rhs<'a, T> {
    /// `view` (k x n) for `products` products of `rows` left-hand rows: packed when they
    /// run on one thread and are enough to pay for the copy (see [`PACK_MIN_PRODUCTS`]).
    pub(crate) fn new(view: View<'a, T>, threads: Threads, rows: usize, products: usize) -> Self {
        let packed = if threads.count <= 1 && products >= PACK_MIN_PRODUCTS {
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
        threads: Threads,
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
        if threads.count <= 1 {
            let call = PackedProduct {
                a,
                k_rows: k_rows.clone(),
                cols: cols.clone(),
                accumulate,
            };
            if T::gemm_direct(dst, dst_offset, dst_rs, v, call) {
                return;
            }
        }
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
    use super::super::team::ScopedThreads;
    use super::*;

    #[test]
    fn threaded_products_split_rows_or_columns_and_equal_one_thread() {
        let vals = |n: usize, s: f64| (0..n).map(|i| (i as f64 * 0.37 + s).sin()).collect();
        // (m, k, n): rows split (A larger), columns split (B larger), too small to split,
        // and one dimension too short for two blocks.
        for (m, k, n) in [(700, 64, 48), (40, 100, 900), (8, 8, 8), (15, 5000, 12)] {
            let (a, b): (Vec<f64>, Vec<f64>) = (vals(m * k + 2, 0.1), vals(k * n, 0.2));
            for transposed in [false, true] {
                let av = match transposed {
                    false => View::rows(&a, 2, m, k, k),
                    true => View::rows(&a, 2, k, m, m).t(),
                };
                let bv = View::rows(&b, 0, k, n, n);
                let run = |threads, accumulate| {
                    let mut d: Vec<f64> = vals(m * (n + 1), 0.3);
                    gemm(
                        &mut d,
                        1,
                        n + 1,
                        av,
                        bv,
                        accumulate,
                        Threads::new(threads, &ScopedThreads),
                    );
                    d
                };
                for accumulate in [false, true] {
                    let one = run(1, accumulate);
                    for threads in [2, 3] {
                        let many = run(threads, accumulate);
                        let d = one.iter().zip(&many).map(|(x, y)| (x - y).abs());
                        let worst = d.fold(0.0, f64::max);
                        assert!(
                            worst < 1e-12,
                            "{m}x{k}x{n} t={transposed} threads {threads}"
                        );
                    }
                }
            }
        }
        let shape = |m, k, n| match split_parts(m, k, n, 2).as_slice() {
            [] => "none",
            [Part::Rows(_), ..] => "rows",
            [Part::Cols(_), ..] => "cols",
        };
        assert_eq!(shape(700, 64, 48), "rows");
        assert_eq!(shape(40, 100, 900), "cols");
        assert_eq!(shape(8, 8, 8), "none");
        assert_eq!(shape(15, 5000, 12), "none");
        let parts = split_parts(1000, 500, 40, 3);
        let Part::Rows(last) = &parts[2] else {
            panic!("rows")
        };
        assert_eq!((parts.len(), last.end), (3, 1000));
    }

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
            Threads::ONE,
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
            Threads::ONE,
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
            Threads::ONE,
        );
        assert_eq!(e, vec![14.0, 32.0, 32.0, 77.0]);
    }
}
