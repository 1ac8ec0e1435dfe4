//! The recurrent weights packed once per call, and the f32 kernels of the per-step products
//! over them (AVX-512F, or AVX2 with FMA; chosen at run time).
//!
//! Every step multiplies by the same recurrent weights. gemm packs its operands on every
//! call; [`Packed`] lays the weights out once per call in column panels of `NR` (32 lanes
//! with AVX-512, 16 with AVX2), each panel's rows contiguous, and every step's product
//! reads them in place. A register tile of `C` (12 x 32 or 6 x 16) accumulates over `k`
//! from one vector load per panel row and one broadcast per left-hand element. Products
//! with fewer than four rows (B = 1) take four panels at once, so that enough independent
//! accumulators hide the FMA latency. Loops: `k` in blocks of 512, rows in blocks of ten
//! tiles, panels, tiles.
//!
//! Measured alone on one core (AVX-512; the reference shape's step product, 60 x 256 x
//! 768): about 248 GFLOP/s, against 213-240 through gemm; at 60 x 1024 x 3072, 239 against
//! 164.

use super::matmul::View;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::ops::Range;

/// Depth of one pass over `k`.
const KC: usize = 512;

/// The instruction set a [`Packed`] matrix was laid out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    fn detect() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Some(Isa::Avx2);
            }
        }
        None
    }

    /// Columns per panel.
    fn nr(self) -> usize {
        match self {
            Isa::Avx512 => 32,
            Isa::Avx2 => 16,
        }
    }
}

/// A `k x n` matrix in column panels of `nr`: element (kk, j) at
/// `(j / nr) * k * nr + kk * nr + j % nr`; the last panel zero-padded.
#[derive(Debug, Clone)]
pub struct Packed<T> {
    data: Vec<T>,
    k: usize,
    n: usize,
    isa: Isa,
}

impl Packed<f32> {
    /// `b` packed, or `None` when the CPU has neither AVX-512F nor AVX2+FMA.
    pub(crate) fn pack(b: View<'_, f32>) -> Option<Packed<f32>> {
        Some(Self::pack_for(b, Isa::detect()?))
    }

    /// The row-major `k x n` matrix `b` packed (as the per-step products use it), or `None`
    /// when the CPU has neither AVX-512F nor AVX2+FMA or `b` is not `k x n`.
    pub fn from_rows(b: &[f32], k: usize, n: usize) -> Option<Packed<f32>> {
        if k.checked_mul(n) != Some(b.len()) {
            return None;
        }
        Self::pack(View::rows(b, 0, k, n, n))
    }

    /// `c = a @ self` for a row-major `m x k` matrix `a` into the row-major `m x n` `c`,
    /// with the per-step product kernels (for benchmarks: the same code the fused path's
    /// recurrent products run). False (nothing written) when the sizes do not match.
    pub fn product(&self, c: &mut [f32], a: &[f32], m: usize) -> bool {
        let (k, n) = (self.k, self.n);
        if m.checked_mul(k) != Some(a.len()) || m.checked_mul(n) != Some(c.len()) {
            return false;
        }
        let call = PackedProduct {
            a: View::rows(a, 0, m, k, k),
            k_rows: 0..k,
            cols: 0..n,
            accumulate: false,
        };
        gemm_packed(c, 0, n, self, call)
    }

    /// `b` packed for `isa` (which the CPU must have).
    fn pack_for(b: View<'_, f32>, isa: Isa) -> Packed<f32> {
        let (k, n, nr) = (b.rows, b.cols, isa.nr());
        let panels = n.div_ceil(nr);
        let mut data = vec![0f32; panels * k * nr];
        for (jb, panel) in data.chunks_exact_mut(k * nr).enumerate() {
            let cols = nr.min(n - jb * nr);
            for (kk, row) in panel.chunks_exact_mut(nr).enumerate() {
                for (c, v) in row[..cols].iter_mut().enumerate() {
                    *v = b.data[b.offset + kk * b.rs + (jb * nr + c) * b.cs];
                }
            }
        }
        Packed { data, k, n, isa }
    }
}

/// A SIMD vector of f32 and the operations the kernels use.
trait Vector: Copy {
    /// f32 lanes.
    const LANES: usize;
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(p: *mut f32, v: Self);
    unsafe fn splat(x: f32) -> Self;
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
}

macro_rules! vector {
    ($name:ident, $ty:ty, $lanes:expr, $zero:ident, $load:ident, $store:ident, $set1:ident,
     $fmadd:ident, $add:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[derive(Clone, Copy)]
        struct $name($ty);

        #[cfg(target_arch = "x86_64")]
        impl Vector for $name {
            const LANES: usize = $lanes;
            #[inline(always)]
            unsafe fn zero() -> Self {
                $name($zero())
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> Self {
                $name($load(p))
            }
            #[inline(always)]
            unsafe fn store(p: *mut f32, v: Self) {
                $store(p, v.0)
            }
            #[inline(always)]
            unsafe fn splat(x: f32) -> Self {
                $name($set1(x))
            }
            #[inline(always)]
            unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
                $name($fmadd(a.0, b.0, c.0))
            }
            #[inline(always)]
            unsafe fn add(a: Self, b: Self) -> Self {
                $name($add(a.0, b.0))
            }
        }
    };
}

vector!(
    Z,
    __m512,
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps
);
vector!(
    Y,
    __m256,
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps
);

/// One product as raw parts: `C[m x n] (+)= A[m x k] @ P[k0.., panel0..]`, element (i, kk)
/// of A at `a + i * ars + kk * acs`, of C at `c + i * ldc + j`; panel `jb` of P starts at
/// `p + jb * pk * NR` (`pk` the packed matrix's full depth), its row kk at `+ kk * NR`.
#[derive(Clone, Copy)]
struct Parts {
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    ars: usize,
    acs: usize,
    p: *const f32,
    pk: usize,
    c: *mut f32,
    ldc: usize,
}

/// Stores (or adds) `v` at `c`, only its first `valid` lanes.
///
/// # Safety
/// `c` holds `valid` (at most `LANES`) writable values.
#[inline(always)]
unsafe fn put<V: Vector>(c: *mut f32, v: V, valid: usize, accumulate: bool) {
    if valid >= V::LANES {
        let out = if accumulate { V::add(V::load(c), v) } else { v };
        V::store(c, out);
        return;
    }
    let mut tmp = [0f32; 16];
    V::store(tmp.as_mut_ptr(), v);
    for (l, &t) in tmp[..valid].iter().enumerate() {
        let cp = c.add(l);
        *cp = if accumulate { *cp + t } else { t };
    }
}

/// The register tile: `MR` rows and `NP` panels of `NV` vectors each, over `k` packed rows:
/// `C (+)= A @ P`. `cols` is how many of the tile's columns are inside `C`.
///
/// # Safety
/// Every element of the tile's A rows, panels and C block (its first `cols` columns) lies
/// inside its buffer.
#[inline(always)]
unsafe fn tile<V: Vector, const MR: usize, const NP: usize, const NV: usize>(
    pp: &Parts,
    k: usize,
    (a, p, c): (*const f32, *const f32, *mut f32),
    cols: usize,
    accumulate: bool,
) {
    let nr = NV * V::LANES;
    let stride = pp.pk * nr;
    let mut acc = [[[V::zero(); NV]; NP]; MR];
    let mut ap = a;
    let mut bp = p;
    for _ in 0..k {
        let mut bv = [[V::zero(); NV]; NP];
        for (q, panel) in bv.iter_mut().enumerate() {
            for (v, slot) in panel.iter_mut().enumerate() {
                *slot = V::load(bp.add(q * stride + v * V::LANES));
            }
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let av = V::splat(*ap.add(i * pp.ars));
            for (cells, panel) in row.iter_mut().zip(&bv) {
                for (cell, &b) in cells.iter_mut().zip(panel) {
                    *cell = V::fmadd(av, b, *cell);
                }
            }
        }
        ap = ap.add(pp.acs);
        bp = bp.add(nr);
    }
    for (i, row) in acc.iter().enumerate() {
        for (q, cells) in row.iter().enumerate() {
            for (v, &cell) in cells.iter().enumerate() {
                let col = q * nr + v * V::LANES;
                if col < cols {
                    put(c.add(i * pp.ldc + col), cell, cols - col, accumulate);
                }
            }
        }
    }
}

/// A tile of `rows` rows (1 to 11) and one panel.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn short<V: Vector, const NV: usize>(
    pp: &Parts,
    k: usize,
    ptrs: (*const f32, *const f32, *mut f32),
    rows: usize,
    cols: usize,
    acc: bool,
) {
    macro_rules! by_rows {
        ($($r:literal)*) => {
            match rows {
                $($r => tile::<V, $r, 1, NV>(pp, k, ptrs, cols, acc),)*
                _ => unreachable!("short tiles have 1 to 11 rows"),
            }
        };
    }
    by_rows!(1 2 3 4 5 6 7 8 9 10 11)
}

/// A tile of `rows` rows (1 or 2) and `NP` panels.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn short_wide<V: Vector, const NP: usize, const NV: usize>(
    pp: &Parts,
    k: usize,
    ptrs: (*const f32, *const f32, *mut f32),
    rows: usize,
    cols: usize,
    acc: bool,
) {
    match rows {
        1 => tile::<V, 1, NP, NV>(pp, k, ptrs, cols, acc),
        _ => tile::<V, 2, NP, NV>(pp, k, ptrs, cols, acc),
    }
}

/// `C (+)= A @ P` by tiles of `MR` rows and `NP` panels (one panel for the last ones, fewer
/// rows for a block's last rows).
///
/// # Safety
/// `pp` describes buffers holding every element the product addresses.
#[inline(always)]
unsafe fn blocked<V: Vector, const MR: usize, const NP: usize, const NV: usize>(
    pp: &Parts,
    accumulate: bool,
) {
    let (nr, mc) = (NV * V::LANES, 10 * MR);
    let panels = pp.n.div_ceil(nr);
    let mut k0 = 0;
    while k0 < pp.k {
        let kb = KC.min(pp.k - k0);
        let acc = accumulate || k0 > 0;
        for i_blk in (0..pp.m).step_by(mc) {
            let i_end = (i_blk + mc).min(pp.m);
            let mut jb = 0;
            while jb < panels {
                let wide = panels - jb >= NP;
                for i0 in (i_blk..i_end).step_by(MR) {
                    let rows = MR.min(i_end - i0);
                    let ptrs = (
                        pp.a.add(i0 * pp.ars + k0 * pp.acs),
                        pp.p.add(jb * pp.pk * nr + k0 * nr),
                        pp.c.add(i0 * pp.ldc + jb * nr),
                    );
                    let cols = pp.n - jb * nr;
                    match (wide, rows == MR) {
                        (true, true) => tile::<V, MR, NP, NV>(pp, kb, ptrs, cols, acc),
                        (true, false) if NP > 1 => {
                            short_wide::<V, NP, NV>(pp, kb, ptrs, rows, cols, acc)
                        }
                        _ => short::<V, NV>(pp, kb, ptrs, rows, cols, acc),
                    }
                }
                jb += if wide { NP } else { 1 };
            }
        }
        k0 += kb;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn product_avx512(pp: &Parts, accumulate: bool) {
    match pp.m < 4 {
        true => blocked::<Z, 3, 4, 2>(pp, accumulate),
        false => blocked::<Z, 12, 1, 2>(pp, accumulate),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2(pp: &Parts, accumulate: bool) {
    match pp.m < 4 {
        true => blocked::<Y, 3, 2, 2>(pp, accumulate),
        false => blocked::<Y, 6, 1, 2>(pp, accumulate),
    }
}

/// One product `dst (+)= a @ P[k_rows, cols]` over a packed right-hand side `P`.
#[derive(Clone)]
pub struct PackedProduct<'a, T> {
    /// The left side, (m, `k_rows.len()`).
    pub a: View<'a, T>,
    /// The packed rows the product reads.
    pub k_rows: Range<usize>,
    /// The packed columns it writes, into `dst`'s columns from 0.
    pub cols: Range<usize>,
    /// Add to `dst` instead of overwriting it.
    pub accumulate: bool,
}

/// `call` on this thread. Returns false (nothing written) when `cols` does not start at a
/// panel boundary or the ranges do not fit; `a` (m x `k_rows.len()`) and `dst` (m x
/// `cols.len()`, rows `dst_rs` apart from `dst_offset`) must already be checked to lie
/// inside their slices (`matmul::gemm` checks its views the same way; `Rhs::product` checks
/// them first).
pub(crate) fn gemm_packed(
    dst: &mut [f32],
    dst_offset: usize,
    dst_rs: usize,
    packed: &Packed<f32>,
    call: PackedProduct<'_, f32>,
) -> bool {
    let PackedProduct {
        a,
        k_rows,
        cols,
        accumulate,
    } = call;
    let nr = packed.isa.nr();
    let fits = k_rows.end <= packed.k && cols.end <= packed.n && k_rows.start <= k_rows.end;
    if !fits || !cols.start.is_multiple_of(nr) || cols.start > cols.end || a.cols != k_rows.len() {
        return false;
    }
    let (m, n, k) = (a.rows, cols.len(), k_rows.len());
    if m == 0 || n == 0 || k == 0 {
        return false;
    }
    let pp = Parts {
        m,
        n,
        k,
        // SAFETY (three offsets): where the checked views start; the panel offset is inside
        // `data` (cols.start < n_total, k_rows.start < k).
        a: unsafe { a.data.as_ptr().add(a.offset) },
        ars: a.rs,
        acs: a.cs,
        p: unsafe {
            packed
                .data
                .as_ptr()
                .add((cols.start / nr) * packed.k * nr + k_rows.start * nr)
        },
        pk: packed.k,
        c: unsafe { dst.as_mut_ptr().add(dst_offset) },
        ldc: dst_rs,
    };
    match packed.isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Packed::pack` chose this ISA after checking the CPU has it; the caller
        // checked `a` and `dst`; the panels cover rows `k_rows` and columns `cols` (padded
        // to whole panels, read but never stored past `cols`).
        Isa::Avx512 => unsafe { product_avx512(&pp, accumulate) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and FMA.
        Isa::Avx2 => unsafe { product_avx2(&pp, accumulate) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect()
    }

    /// `C (+)= A[:, k_rows] @ B[k_rows, cols]` in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        c: &mut [f32],
        ldc: usize,
        a: View<'_, f32>,
        b: &[f32],
        ldb: usize,
        k_rows: Range<usize>,
        cols: Range<usize>,
        accumulate: bool,
    ) {
        for i in 0..a.rows {
            for (jj, j) in cols.clone().enumerate() {
                let mut s = 0f64;
                for (kk, kr) in k_rows.clone().enumerate() {
                    let av = a.data[a.offset + i * a.rs + kk * a.cs] as f64;
                    s += av * b[kr * ldb + j] as f64;
                }
                let o = &mut c[i * ldc + jj];
                *o = if accumulate { *o + s as f32 } else { s as f32 };
            }
        }
    }

    fn isas() -> Vec<Isa> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Isa::Avx2);
            }
        }
        v
    }

    #[test]
    fn packed_products_equal_the_reference_on_every_tile_and_tail() {
        let isas = isas();
        if isas.is_empty() {
            println!("no AVX2/AVX-512 here: the packed kernels are not used");
            return;
        }
        let mut runs = 0;
        for &isa in &isas {
            let nr = isa.nr();
            for &(kt, n) in &[(7, 5), (256, 768), (600, 70), (33, 129), (1, 16)] {
                let b = values(kt * n, 0.5);
                let packed = Packed::pack_for(View::rows(&b, 0, kt, n, n), isa);
                for &m in &[1, 2, 3, 4, 5, 11, 12, 13, 25, 64] {
                    // Whole matrix, a k sub-range, a column range from a panel boundary.
                    let col_start = if n > nr { nr } else { 0 };
                    let cases = [(0..kt, 0..n), (kt / 3..kt, 0..n), (0..kt, col_start..n)];
                    for (k_rows, cols) in cases {
                        if k_rows.is_empty() {
                            continue;
                        }
                        let k = k_rows.len();
                        for transposed in [false, true] {
                            let a_data = values(m * k + 3, 1.5);
                            let a = match transposed {
                                false => View::rows(&a_data, 3, m, k, k),
                                true => View::rows(&a_data, 3, k, m, m).t(),
                            };
                            for accumulate in [false, true] {
                                let ldc = cols.len() + 2;
                                let mut got = values(m * ldc, 2.5);
                                let mut want = got.clone();
                                let call = PackedProduct {
                                    a,
                                    k_rows: k_rows.clone(),
                                    cols: cols.clone(),
                                    accumulate,
                                };
                                let ok = gemm_packed(&mut got, 0, ldc, &packed, call);
                                assert!(ok, "{isa:?} m={m} k={k_rows:?} cols={cols:?}");
                                reference(
                                    &mut want,
                                    ldc,
                                    a,
                                    &b,
                                    n,
                                    k_rows.clone(),
                                    cols.clone(),
                                    accumulate,
                                );
                                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                                    let tol = 1e-5 * (1.0 + k as f32);
                                    assert!(
                                        (g - w).abs() <= tol,
                                        "{isa:?} m={m} k={k_rows:?} cols={cols:?} t={transposed} \
                                         acc={accumulate}: element {i} {g} vs {w}"
                                    );
                                }
                                runs += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(runs > 500, "{runs}");
    }

    #[test]
    fn a_column_range_off_a_panel_boundary_is_left_to_the_caller() {
        let Some(&isa) = isas().first() else { return };
        let b = values(8 * 40, 0.1);
        let packed = Packed::pack_for(View::rows(&b, 0, 8, 40, 40), isa);
        let a = values(2 * 8, 0.2);
        let mut c = vec![0f32; 2 * 40];
        let a = View::rows(&a, 0, 2, 8, 8);
        let call = |k_rows, cols| PackedProduct {
            a,
            k_rows,
            cols,
            accumulate: false,
        };
        assert!(!gemm_packed(&mut c, 0, 40, &packed, call(0..8, 3..40)));
        assert!(!gemm_packed(&mut c, 0, 40, &packed, call(0..9, 0..40)));
        assert!(c.iter().all(|&v| v == 0.0), "nothing written");
    }
}
