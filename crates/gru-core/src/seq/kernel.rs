//! The recurrent weights packed once per call, and the f32 kernels of the per-step products
//! over them (AVX-512F, or AVX2 with FMA; chosen at run time).
//!
//! Every step multiplies by the same recurrent weights. gemm packs its operands on every
//! call; [`Packed`] lays the weights out once per call in column panels of `NR` (32 lanes
//! with AVX-512, 16 with AVX2), and every step's product reads them in place. A register
//! tile of `C` (12 x 32 or 6 x 16) accumulates over `k` from one vector load per panel row
//! and one broadcast per left-hand element. Products with fewer than four rows (B = 1)
//! take four panels (two with AVX2) at once, so that enough independent accumulators hide
//! the FMA latency; for them the panels are packed in groups of four (two), the group's rows
//! interleaved, so that each step reads the weights as one contiguous stream (one row of
//! the group after the other: 512 bytes per `k`) instead of four streams 32 kB apart. That
//! product is bound by reading the weights from L2; measured alone on one core at 1 x 256
//! x 768 (AVX-512, medians of six runs, ±15% from run to run), about 95 GFLOP/s grouped
//! against 72 in single panels. The panels start on a cache line. Loops: `k` in blocks of
//! 512, rows in blocks of ten tiles, panels, tiles.
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

    /// Panels per group for products of `rows` left-hand rows: the small-row tile's panel
    /// count (`product_avx512`, `product_avx2`) below four rows, else 1 (a power of two).
    fn group(self, rows: usize) -> usize {
        match (rows < SMALL_ROWS, self) {
            (false, _) => 1,
            (true, Isa::Avx512) => 4,
            (true, Isa::Avx2) => 2,
        }
    }
}

/// Products with fewer left-hand rows take the small-row tiles.
const SMALL_ROWS: usize = 4;

/// A `k x n` matrix in column panels of `nr`, in groups of `group` panels: panel `jb`'s row
/// `kk` at `(jb / group) * k * pitch + kk * pitch + (jb % group) * nr`, `pitch = nr *
/// group`; element (kk, j) in panel `j / nr` at lane `j % nr`. Panels past `n` are zeros.
#[derive(Debug, Clone)]
pub struct Packed<T> {
    /// The panels from `data[start]`, which is 64-byte aligned: a vector load never spans
    /// two cache lines.
    data: Vec<T>,
    start: usize,
    k: usize,
    n: usize,
    isa: Isa,
    group: usize,
}

impl Packed<f32> {
    /// `b` packed for products of `rows` left-hand rows, or `None` when the CPU has
    /// neither AVX-512F nor AVX2+FMA. Any product reads any layout; this one is the fast one
    /// for that many rows.
    pub(crate) fn pack(b: View<'_, f32>, rows: usize) -> Option<Packed<f32>> {
        let isa = Isa::detect()?;
        Some(Self::pack_for(b, isa, isa.group(rows)))
    }

    /// The row-major `k x n` matrix `b` packed as the per-step products of `rows`
    /// left-hand rows use it, or `None` when the CPU has neither AVX-512F nor AVX2+FMA or
    /// `b` is not `k x n`.
    pub fn from_rows(b: &[f32], k: usize, n: usize, rows: usize) -> Option<Packed<f32>> {
        if k.checked_mul(n) != Some(b.len()) {
            return None;
        }
        Self::pack(View::rows(b, 0, k, n, n), rows)
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

    /// `b` packed for `isa` (which the CPU must have) in groups of `group` panels.
    fn pack_for(b: View<'_, f32>, isa: Isa, group: usize) -> Packed<f32> {
        let (k, n, nr) = (b.rows, b.cols, isa.nr());
        let pitch = nr * group;
        let groups = n.div_ceil(pitch);
        let line = 64 / std::mem::size_of::<f32>();
        let mut data = vec![0f32; groups * k * pitch + line];
        let start = (line - (data.as_ptr() as usize / std::mem::size_of::<f32>()) % line) % line;
        let panels = &mut data[start..start + groups * k * pitch];
        for (g, block) in panels.chunks_exact_mut(k * pitch).enumerate() {
            for (kk, row) in block.chunks_exact_mut(pitch).enumerate() {
                let first = g * pitch;
                let cols = pitch.min(n.saturating_sub(first));
                let src = b.offset + kk * b.rs + first * b.cs;
                if b.cs == 1 {
                    // Row-major (the forward's weights): a copy of contiguous runs.
                    row[..cols].copy_from_slice(&b.data[src..src + cols]);
                } else {
                    for (c, v) in row[..cols].iter_mut().enumerate() {
                        *v = b.data[src + c * b.cs];
                    }
                }
            }
        }
        Packed {
            data,
            start,
            k,
            n,
            isa,
            group,
        }
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
/// of A at `a + i * ars + kk * acs`, of C at `c + i * ldc + j`; the product's panel `jb`
/// is the packed matrix's panel `jb0 + jb` (see [`Parts::panel`]), its row kk at
/// `+ kk * pitch`.
#[derive(Clone, Copy)]
struct Parts {
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    ars: usize,
    acs: usize,
    /// The packed data from row k0 of the first group.
    p: *const f32,
    /// The packed matrix's full depth.
    pk: usize,
    /// The packed matrix's first panel the product reads.
    jb0: usize,
    /// log2 of the panels per group (groups have 1, 2 or 4).
    group_shift: u32,
    pitch: usize,
    c: *mut f32,
    ldc: usize,
}

impl Parts {
    /// Where the product's panel `jb` starts (at row k0).
    ///
    /// # Safety
    /// The panel exists in the packed matrix.
    #[inline(always)]
    unsafe fn panel(&self, jb: usize, nr: usize) -> *const f32 {
        let abs = self.jb0 + jb;
        let (group, within) = (abs >> self.group_shift, abs & ((1 << self.group_shift) - 1));
        self.p.add(group * self.pk * self.pitch + within * nr)
    }
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
    (a, panels, c): (*const f32, [*const f32; NP], *mut f32),
    cols: usize,
    accumulate: bool,
) {
    let nr = NV * V::LANES;
    let mut acc = [[[V::zero(); NV]; NP]; MR];
    let mut ap = a;
    let mut row = 0;
    for _ in 0..k {
        let mut bv = [[V::zero(); NV]; NP];
        for (panel, &bp) in bv.iter_mut().zip(&panels) {
            for (v, slot) in panel.iter_mut().enumerate() {
                *slot = V::load(bp.add(row + v * V::LANES));
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
        row += pp.pitch;
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
    ptrs: (*const f32, [*const f32; 1], *mut f32),
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
    ptrs: (*const f32, [*const f32; NP], *mut f32),
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
                let k_off = k0 * pp.pitch;
                // The tile's panels (the last one repeated past the end: never read there).
                let bps: [*const f32; NP] =
                    std::array::from_fn(|q| pp.panel((jb + q).min(panels - 1), nr).add(k_off));
                for i0 in (i_blk..i_end).step_by(MR) {
                    let rows = MR.min(i_end - i0);
                    let (a, c) = (
                        pp.a.add(i0 * pp.ars + k0 * pp.acs),
                        pp.c.add(i0 * pp.ldc + jb * nr),
                    );
                    let cols = pp.n - jb * nr;
                    match (wide, rows == MR) {
                        (true, true) => tile::<V, MR, NP, NV>(pp, kb, (a, bps, c), cols, acc),
                        (true, false) if NP > 1 => {
                            short_wide::<V, NP, NV>(pp, kb, (a, bps, c), rows, cols, acc)
                        }
                        _ => short::<V, NV>(pp, kb, (a, [bps[0]], c), rows, cols, acc),
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
    match pp.m < SMALL_ROWS {
        true => blocked::<Z, 3, 4, 2>(pp, accumulate),
        false => blocked::<Z, 12, 1, 2>(pp, accumulate),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2(pp: &Parts, accumulate: bool) {
    match pp.m < SMALL_ROWS {
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
        // SAFETY (three offsets): where the checked views start; the row offset is inside
        // `data` (k_rows.start < k: row k_rows.start of the first group).
        a: unsafe { a.data.as_ptr().add(a.offset) },
        ars: a.rs,
        acs: a.cs,
        p: unsafe {
            packed.data[packed.start..]
                .as_ptr()
                .add(k_rows.start * nr * packed.group)
        },
        pk: packed.k,
        jb0: cols.start / nr,
        group_shift: packed.group.trailing_zeros(),
        pitch: nr * packed.group,
        c: unsafe { dst.as_mut_ptr().add(dst_offset) },
        ldc: dst_rs,
    };
    // SAFETY: `Packed::pack` chose this ISA after checking the CPU has it; the caller
    // checked `a` and `dst`; the panels cover rows `k_rows` and columns `cols` (padded to
    // whole panels, read but never stored past `cols`).
    unsafe { run(packed.isa, &pp, accumulate) }
}

/// Runs the product `pp` on the kernels of `isa`; false where this target has none.
///
/// # Safety
/// The CPU has `isa`, and `pp` describes buffers holding every element the product
/// addresses, its panels' padding to whole panels included.
unsafe fn run(isa: Isa, pp: &Parts, accumulate: bool) -> bool {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's promise.
        Isa::Avx512 => unsafe { product_avx512(pp, accumulate) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's promise.
        Isa::Avx2 => unsafe { product_avx2(pp, accumulate) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => return false,
    }
    true
}

/// `call` with the per-step kernels reading the row-major `b` in place (no packed copy):
/// each row of a tile's panels is a run of `b`'s row, rows `b.rs` apart. For products that
/// are too few to pay for packing (a one-step call reads the weights once). Returns false
/// (nothing written) when the CPU has neither AVX-512F nor AVX2+FMA, `b` is not row-major,
/// the ranges do not fit, or the last panel's padding would read past `b`'s slice; `a` and
/// `dst` must already be checked as for [`gemm_packed`].
pub(crate) fn gemm_direct(
    dst: &mut [f32],
    dst_offset: usize,
    dst_rs: usize,
    b: View<'_, f32>,
    call: PackedProduct<'_, f32>,
) -> bool {
    let Some(isa) = Isa::detect() else {
        return false;
    };
    let PackedProduct {
        a,
        k_rows,
        cols,
        accumulate,
    } = call;
    let fits = k_rows.start < k_rows.end
        && k_rows.end <= b.rows
        && cols.start < cols.end
        && cols.end <= b.cols
        && a.cols == k_rows.len()
        && a.rows > 0;
    if !fits || b.cs != 1 {
        return false;
    }
    let (m, n, k, nr) = (a.rows, cols.len(), k_rows.len(), isa.nr());
    // The kernels read whole panels: the last row's last panel ends here.
    let first = b.offset + k_rows.start * b.rs + cols.start;
    let read_end = first + (k - 1) * b.rs + n.div_ceil(nr) * nr;
    if read_end > b.data.len() {
        return false;
    }
    let pp = Parts {
        m,
        n,
        k,
        // SAFETY (three offsets): where the checked views start; `first` is inside
        // `b.data` (read_end is past it and within the slice).
        a: unsafe { a.data.as_ptr().add(a.offset) },
        ars: a.rs,
        acs: a.cs,
        p: unsafe { b.data.as_ptr().add(first) },
        pk: 0,
        jb0: 0,
        // One group holds every panel: panel jb at `jb * nr`, its rows `b.rs` apart.
        group_shift: usize::BITS - 1,
        pitch: b.rs,
        c: unsafe { dst.as_mut_ptr().add(dst_offset) },
        ldc: dst_rs,
    };
    // SAFETY: `Isa::detect` found the CPU has this ISA; the caller checked `a` and `dst`;
    // every panel row the kernels read (padding included) ends by `read_end`.
    unsafe { run(isa, &pp, accumulate) }
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
        // Every product on both layouts (single panels; groups of the small-row tile).
        let layouts = isas.iter().flat_map(|&isa| [(isa, 1), (isa, isa.group(1))]);
        for (isa, group) in layouts {
            let nr = isa.nr();
            for &(kt, n) in &[(7, 5), (256, 768), (600, 70), (33, 129), (1, 16), (9, 200)] {
                let b = values(kt * n, 0.5);
                let packed = Packed::pack_for(View::rows(&b, 0, kt, n, n), isa, group);
                for &m in &[1, 2, 3, 4, 5, 11, 12, 13, 25, 64] {
                    // Whole matrix, a k sub-range, a column range from a panel boundary
                    // (inside a group, where the matrix has more than one).
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
                                let what = format!("{isa:?} group {group} m={m}");
                                assert!(ok, "{what} k={k_rows:?} cols={cols:?}");
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
                                        "{what} k={k_rows:?} cols={cols:?} t={transposed} \
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
        assert!(runs > 1000, "{runs}");
    }

    #[test]
    fn a_column_range_off_a_panel_boundary_is_left_to_the_caller() {
        let Some(&isa) = isas().first() else { return };
        let b = values(8 * 40, 0.1);
        let packed = Packed::pack_for(View::rows(&b, 0, 8, 40, 40), isa, isa.group(1));
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

    #[test]
    fn direct_products_read_row_major_weights_in_place() {
        let Some(isa) = Isa::detect() else {
            println!("no AVX2/AVX-512 here: the direct kernels are not used");
            return;
        };
        let nr = isa.nr();
        let mut runs = 0;
        // (k, n, row stride): whole matrices and a wider matrix's sub-blocks.
        for &(kt, n, rs) in &[
            (7, 5, 5),
            (256, 768, 768),
            (33, 129, 160),
            (600, 70, 70),
            (9, 96, 300),
        ] {
            // `pad` values after the matrix: a last panel's padding reads into them.
            for pad in [0, nr] {
                let b = values(kt * rs + pad, 0.5);
                let bv = View::rows(&b, 0, kt, n, rs);
                for &m in &[1, 2, 3, 4, 12, 13] {
                    // Whole, a k sub-range, columns off any panel boundary.
                    let cases = [(0..kt, 0..n), (kt / 3..kt, 0..n), (0..kt, 3..n)];
                    for (k_rows, cols) in cases {
                        let k = k_rows.len();
                        let a_data = values(m * k, 1.5);
                        let a = View::rows(&a_data, 0, m, k, k);
                        for accumulate in [false, true] {
                            let ldc = cols.len() + 1;
                            let mut got = values(m * ldc, 2.5);
                            let before = got.clone();
                            let mut want = got.clone();
                            let call = PackedProduct {
                                a,
                                k_rows: k_rows.clone(),
                                cols: cols.clone(),
                                accumulate,
                            };
                            let ok = gemm_direct(&mut got, 0, ldc, bv, call);
                            let last_end =
                                (k_rows.end - 1) * rs + cols.start + cols.len().div_ceil(nr) * nr;
                            assert_eq!(
                                ok,
                                last_end <= b.len(),
                                "padding check {kt}x{n}/{rs} pad {pad}"
                            );
                            if !ok {
                                assert_eq!(got, before, "a refused product writes nothing");
                                continue;
                            }
                            reference(
                                &mut want,
                                ldc,
                                a,
                                &b,
                                rs,
                                k_rows.clone(),
                                cols.clone(),
                                accumulate,
                            );
                            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                                let tol = 1e-5 * (1.0 + k as f32);
                                assert!(
                                    (g - w).abs() <= tol,
                                    "{isa:?} {kt}x{n}/{rs} m={m} k={k_rows:?} cols={cols:?} \
                                     acc={accumulate}: element {i} {g} vs {w}"
                                );
                            }
                            runs += 1;
                        }
                    }
                }
            }
        }
        assert!(runs > 150, "{runs}");
        // A column-major right-hand side is left to gemm.
        let b = values(8 * 40, 0.1);
        let a = values(8, 0.2);
        let mut c = vec![0f32; 8];
        let call = PackedProduct {
            a: View::rows(&a, 0, 1, 8, 8),
            k_rows: 0..8,
            cols: 0..8,
            accumulate: false,
        };
        assert!(!gemm_direct(
            &mut c,
            0,
            8,
            View::rows(&b, 0, 40, 8, 8).t(),
            call
        ));
    }
}
