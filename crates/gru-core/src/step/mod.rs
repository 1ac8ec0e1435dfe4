//! The fused GPU path's step sequence, written once over a [`StepBackend`]: the CUDA
//! backend (gru-cudnn: cuBLAS products and the PTX of `kernels/gru_step_*.cu`) and the host
//! backend ([`host`]: gemm and the same CUDA C sources compiled as C++), so every CI run
//! executes the GPU path's exact sequence and kernel code.
//!
//! The path's op works on the input projection `xp` (B, T, 3u), computed outside it as one
//! matrix product of every timestep (with the input bias), the initial state and the
//! parameters `[U; b_rec]`; it returns the sequence and state, and its backward returns
//! their gradients (the input side's weight gradients follow from `dxp` by one product).
//! Per step: the recurrent product(s), then one gate kernel (two for the reset-before form,
//! whose candidate needs a product of the reset gate's output).

mod backward;
mod forward;
pub mod host;

pub use backward::{backward, Gradients};
pub use forward::{forward, Forward, Saved};

use crate::activation::Activation;
use crate::error::{GruError, Result};
use crate::seq::SeqSpec;

/// The arguments of every step kernel: `GruStepArgs` of `kernels/gru_step_args.h`, field
/// for field (the C struct is passed by value). Addresses are 0 where absent.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[allow(missing_docs)]
pub struct StepArgs {
    pub batch: i32,
    pub time: i32,
    pub units: i32,
    pub step: i32,
    pub t: i32,
    pub zero_output_for_mask: i32,
    pub act: i32,
    pub rec_act: i32,
    pub act_alpha: f32,
    pub act_beta: f32,
    pub rec_alpha: f32,
    pub rec_beta: f32,
    pub clip: f64,
    pub rows: i32,
    pub xp: u64,
    pub hp: u64,
    pub rbias: u64,
    pub h: u64,
    pub out_prev: u64,
    pub mask: u64,
    pub seq: u64,
    pub hmask: u64,
    pub hq: u64,
    pub s_hprev: u64,
    pub s_z: u64,
    pub s_az: u64,
    pub s_r: u64,
    pub s_ar: u64,
    pub s_hh: u64,
    pub s_ah: u64,
    pub s_extra: u64,
    pub dseq: u64,
    pub dh: u64,
    pub dcarry: u64,
    pub dxp: u64,
    pub dhp: u64,
    pub dq: u64,
    pub src: u64,
    pub dst: u64,
    pub rmask: u64,
}

/// A buffer slot of [`StepArgs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Field {
    Xp,
    Hp,
    Rbias,
    H,
    OutPrev,
    Mask,
    Seq,
    Hmask,
    Hq,
    SHprev,
    SZ,
    SAz,
    SR,
    SAr,
    SHh,
    SAh,
    SExtra,
    Dseq,
    Dh,
    Dcarry,
    Dxp,
    Dhp,
    Dq,
    Src,
    Dst,
    Rmask,
}

impl StepArgs {
    /// The arguments common to every step kernel of `spec`.
    pub fn new(spec: &SeqSpec) -> Result<StepArgs> {
        let int = |what: &str, v: usize| {
            i32::try_from(v).map_err(|_| GruError::TooLarge {
                what: format!("the step kernels' {what}"),
                limit: "i32::MAX".into(),
                needed: v.to_string(),
            })
        };
        if spec
            .batch
            .checked_mul(spec.time)
            .and_then(|n| n.checked_mul(3 * spec.units))
            .is_none_or(|n| n > i64::MAX as usize)
        {
            return Err(GruError::TooLarge {
                what: "the step kernels' buffers".into(),
                limit: "2^63 elements".into(),
                needed: "more".into(),
            });
        }
        let (act, act_alpha, act_beta) = activation_code(spec.activation);
        let (rec_act, rec_alpha, rec_beta) = activation_code(spec.recurrent_activation);
        Ok(StepArgs {
            batch: int("batch", spec.batch)?,
            time: int("time", spec.time)?,
            units: int("units", spec.units)?,
            zero_output_for_mask: spec.zero_output_for_mask as i32,
            act,
            rec_act,
            act_alpha,
            act_beta,
            rec_alpha,
            rec_beta,
            clip: spec.clip.unwrap_or(0.0),
            ..Default::default()
        })
    }

    /// Sets the address of a buffer slot.
    pub fn set(&mut self, f: Field, addr: u64) {
        let slot = match f {
            Field::Xp => &mut self.xp,
            Field::Hp => &mut self.hp,
            Field::Rbias => &mut self.rbias,
            Field::H => &mut self.h,
            Field::OutPrev => &mut self.out_prev,
            Field::Mask => &mut self.mask,
            Field::Seq => &mut self.seq,
            Field::Hmask => &mut self.hmask,
            Field::Hq => &mut self.hq,
            Field::SHprev => &mut self.s_hprev,
            Field::SZ => &mut self.s_z,
            Field::SAz => &mut self.s_az,
            Field::SR => &mut self.s_r,
            Field::SAr => &mut self.s_ar,
            Field::SHh => &mut self.s_hh,
            Field::SAh => &mut self.s_ah,
            Field::SExtra => &mut self.s_extra,
            Field::Dseq => &mut self.dseq,
            Field::Dh => &mut self.dh,
            Field::Dcarry => &mut self.dcarry,
            Field::Dxp => &mut self.dxp,
            Field::Dhp => &mut self.dhp,
            Field::Dq => &mut self.dq,
            Field::Src => &mut self.src,
            Field::Dst => &mut self.dst,
            Field::Rmask => &mut self.rmask,
        };
        *slot = addr;
    }
}

/// The activation code of `kernels/gru_activations.cuh` and its alpha and beta.
pub fn activation_code(act: Activation) -> (i32, f32, f32) {
    use Activation::*;
    let p = |a: crate::activation::OnnxParam| a.value();
    match act {
        Tanh => (0, 0.0, 0.0),
        Sigmoid => (1, 0.0, 0.0),
        HardSigmoid => (2, 0.0, 0.0),
        Relu => (3, 0.0, 0.0),
        Linear => (4, 0.0, 0.0),
        Elu => (5, 0.0, 0.0),
        Selu => (6, 0.0, 0.0),
        Softplus => (7, 0.0, 0.0),
        Softsign => (8, 0.0, 0.0),
        Silu => (9, 0.0, 0.0),
        Gelu => (10, 0.0, 0.0),
        Exponential => (11, 0.0, 0.0),
        Relu6 => (12, 0.0, 0.0),
        LeakyRelu => (13, 0.0, 0.0),
        HardTanh => (14, 0.0, 0.0),
        LogSigmoid => (15, 0.0, 0.0),
        Mish => (16, 0.0, 0.0),
        HardSilu => (17, 0.0, 0.0),
        Celu => (18, 0.0, 0.0),
        TanhShrink => (19, 0.0, 0.0),
        Squareplus => (20, 0.0, 0.0),
        SparsePlus => (21, 0.0, 0.0),
        HardShrink => (22, 0.0, 0.0),
        SoftShrink => (23, 0.0, 0.0),
        OnnxAffine { alpha, beta } => (24, p(alpha), p(beta)),
        OnnxLeakyRelu { alpha } => (25, p(alpha), 0.0),
        OnnxThresholdedRelu { alpha } => (26, p(alpha), 0.0),
        OnnxScaledTanh { alpha, beta } => (27, p(alpha), p(beta)),
        OnnxHardSigmoid { alpha, beta } => (28, p(alpha), p(beta)),
        OnnxElu { alpha } => (29, p(alpha), 0.0),
    }
}

/// The step kernels (`kernels/gru_step_*.cu`; each has `_f32`, `_f64` and on the device
/// `_f16`, `_bf16` variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Kernel {
    FwdAfter,
    FwdBeforeGates,
    FwdBeforeOut,
    BwdAfter,
    BwdBeforeA,
    BwdBeforeB,
    MaskRows,
    MaskAccumulate,
}

impl Kernel {
    /// The kernel's base name (the CUDA function is `NAME_f32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::FwdAfter => "gru_fwd_after",
            Kernel::FwdBeforeGates => "gru_fwd_before_gates",
            Kernel::FwdBeforeOut => "gru_fwd_before_out",
            Kernel::BwdAfter => "gru_bwd_after",
            Kernel::BwdBeforeA => "gru_bwd_before_a",
            Kernel::BwdBeforeB => "gru_bwd_before_b",
            Kernel::MaskRows => "gru_mask_rows",
            Kernel::MaskAccumulate => "gru_mask_accumulate",
        }
    }

    /// The threads a launch with `args` needs (one per element of the state, or of `rows`
    /// rows).
    pub fn threads(self, args: &StepArgs) -> u64 {
        let rows = match self {
            Kernel::MaskRows | Kernel::MaskAccumulate => args.rows,
            _ => args.batch,
        };
        rows.max(0) as u64 * args.units.max(0) as u64
    }
}

/// `C[m x n] (+)= op(A)[m x k] @ op(B)[k x n]` on row-major buffers: element (i, j) of A is
/// `a[a_off + i * lda + j]` (or, transposed, `a[a_off + j * lda + i]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_off: usize,
    pub lda: usize,
    pub a_trans: bool,
    pub b_off: usize,
    pub ldb: usize,
    pub b_trans: bool,
    pub c_off: usize,
    pub ldc: usize,
    pub accumulate: bool,
}

impl Gemm {
    /// The elements each operand spans from its offset: A, B, C (0 for an empty product).
    pub fn extents(&self) -> Option<(usize, usize, usize)> {
        let span = |rows: usize, cols: usize, ld: usize| -> Option<usize> {
            if rows == 0 || cols == 0 {
                return Some(0);
            }
            (rows - 1).checked_mul(ld)?.checked_add(cols)
        };
        let (ar, ac) = if self.a_trans {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        let (br, bc) = if self.b_trans {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        Some((
            span(ar, ac, self.lda)?,
            span(br, bc, self.ldb)?,
            span(self.m, self.n, self.ldc)?,
        ))
    }

    /// Each operand fits its buffer (of `len` elements).
    pub fn check(&self, a_len: usize, b_len: usize, c_len: usize) -> Result<()> {
        let fits =
            |off: usize, ext: usize, len: usize| off.checked_add(ext).is_some_and(|e| e <= len);
        match self.extents() {
            Some((ea, eb, ec))
                if fits(self.a_off, ea, a_len)
                    && fits(self.b_off, eb, b_len)
                    && fits(self.c_off, ec, c_len) =>
            {
                Ok(())
            }
            _ => Err(GruError::Internal {
                what: format!("a step product reaches outside its buffers: {self:?}"),
            }),
        }
    }
}

/// Both ranges of a copy of `n` elements lie inside their buffers.
pub fn check_copy(
    src_len: usize,
    src_off: usize,
    dst_len: usize,
    dst_off: usize,
    n: usize,
) -> Result<()> {
    let fits = |off: usize, len: usize| off.checked_add(n).is_some_and(|e| e <= len);
    if fits(src_off, src_len) && fits(dst_off, dst_len) {
        return Ok(());
    }
    Err(GruError::Internal {
        what: format!(
            "a step copy of {n} reaches outside its buffers ({src_off} of {src_len} to \
             {dst_off} of {dst_len})"
        ),
    })
}

/// A buffer of a backend.
pub trait StepMem {
    /// Its element count.
    fn len(&self) -> usize;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One kernel launch: the kernel, its scalar arguments, and each buffer slot's buffer with
/// the offset and the element count the kernel may touch from it.
pub struct Launch<'a, M, K> {
    /// The kernel.
    pub kernel: Kernel,
    /// The scalar arguments (the addresses are filled in by the backend).
    pub args: StepArgs,
    /// Buffers the kernel only reads.
    pub reads: Vec<(Field, &'a M, usize, usize)>,
    /// Buffers the kernel writes (and may read).
    pub writes: Vec<(Field, &'a mut M, usize, usize)>,
    /// The (B, T) u8 mask, if any.
    pub mask: Option<&'a K>,
}

impl<M: StepMem, K: StepMem> Launch<'_, M, K> {
    /// Every buffer holds what the kernel may touch.
    pub fn check(&self) -> Result<()> {
        let n = |f: Field, len: usize, off: usize, ext: usize| match off.checked_add(ext) {
            Some(e) if e <= len => Ok(()),
            _ => Err(GruError::Internal {
                what: format!(
                    "{}: buffer {f:?} too short ({len} < {off} + {ext})",
                    self.kernel.name()
                ),
            }),
        };
        for (f, m, off, ext) in &self.reads {
            n(*f, m.len(), *off, *ext)?;
        }
        for (f, m, off, ext) in &self.writes {
            n(*f, m.len(), *off, *ext)?;
        }
        if let Some(m) = self.mask {
            n(
                Field::Mask,
                m.len(),
                0,
                (self.args.batch as usize) * (self.args.time as usize),
            )?;
        }
        Ok(())
    }
}

/// Where the step sequence runs.
pub trait StepBackend {
    /// A buffer of the element type.
    type Mem: StepMem;
    /// A buffer of mask bytes.
    type Mask: StepMem;
    /// `n` zeros.
    fn zeros(&self, n: usize) -> Result<Self::Mem>;
    /// `n` copies of `v`.
    fn filled(&self, n: usize, v: f64) -> Result<Self::Mem>;
    /// A copy of `src`.
    fn duplicate(&self, src: &Self::Mem) -> Result<Self::Mem>;
    /// Copies `n` elements from `src[src_off..]` to `dst[dst_off..]` (checked first, with
    /// [`check_copy`]).
    fn copy_into(
        &self,
        src: &Self::Mem,
        src_off: usize,
        dst: &mut Self::Mem,
        dst_off: usize,
        n: usize,
    ) -> Result<()>;
    /// `C (+)= op(A) @ op(B)` (checked against the buffers first).
    fn gemm(&self, g: &Gemm, a: &Self::Mem, b: &Self::Mem, c: &mut Self::Mem) -> Result<()>;
    /// Runs a kernel (checked against the buffers first).
    fn launch(&self, l: Launch<'_, Self::Mem, Self::Mask>) -> Result<()>;
}

/// The inputs of a sequence: the input projection (B, T, 3u) with the input bias, the
/// initial state (B, u), the parameters `[U (u, 3u); b_rec (3u), if reset_after with a
/// bias]`, the mask (B, T) and the recurrent dropout masks (3, B, u).
pub struct StepInputs<'a, B: StepBackend> {
    /// (B, T, 3u).
    pub xp: &'a B::Mem,
    /// (B, u).
    pub h0: &'a B::Mem,
    /// `U` then `b_rec`.
    pub params: &'a B::Mem,
    /// Whether `params` holds `b_rec`.
    pub rec_bias: bool,
    /// (B, T) u8.
    pub mask: Option<&'a B::Mask>,
    /// (3, B, u): z, r, h.
    pub rec_masks: Option<&'a B::Mem>,
}

#[cfg(test)]
mod tests;
