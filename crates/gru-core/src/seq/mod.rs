//! The GRU over a whole sequence on host slices: forward and backward (BPTT), for every
//! semantic the loop supports (both reset_after forms, every activation, masks,
//! go_backwards, initial state, zero_output_for_mask, dropout masks given as inputs), f32
//! and f64.
//!
//! The input projection of all timesteps is one matrix product; each step does one
//! recurrent product (three with recurrent dropout masks, two for reset_before) and one
//! gate pass over the batch. The gate equations are Keras' `GRUCell` (see the golden
//! README); `gru-candle`'s loop computes the same and the tests compare the two on every
//! golden case.

/// Defines `fn NAME(args) -> ret` that runs `BODY(args)` compiled for AVX-512F, AVX2+FMA or
/// baseline x86-64, whichever the CPU has (checked at run time). `BODY` should be
/// `#[inline(always)]` so that its loops are compiled with the wider vectors.
macro_rules! cpu_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident $(<$T:ident: $bound:path>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $(#[$m])*
        $vis fn $name $(<$T: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512 $(<$T: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2 $(<$T: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

mod all_steps;
pub mod backward;
pub mod backward_units;
pub mod float;
pub mod forward;
pub mod kernel;
pub mod matmul;
pub mod parallel;
pub mod team;
pub mod units;

pub use backward::{backward, backward_with, SeqGrads};
pub use float::Float;
pub use forward::{forward, forward_into, Saved, SeqOutput, Workspace};
pub use team::{ScopedThreads, Team, Threads};

use crate::activation::Activation;
use crate::config::GruConfig;
use crate::error::{GruError, Result};

/// ONNX's cell clip, forward: clamps the pre-activations `a` to `[-clip, clip]`.
#[inline(always)]
pub(crate) fn clip_pre<T: Float>(clip: Option<f64>, a: &mut [T]) {
    if let Some(c) = clip {
        let (lo, hi) = (T::from_f64(-c), T::from_f64(c));
        for v in a.iter_mut() {
            if *v > hi {
                *v = hi;
            } else if *v < lo {
                *v = lo;
            }
        }
    }
}

/// ONNX's cell clip, backward: no gradient reaches a pre-activation the clip held at a
/// bound (`a` is the clamped value the forward saved).
#[inline(always)]
pub(crate) fn clip_grad<T: Float>(clip: Option<f64>, a: &[T], g: &mut [T]) {
    if let Some(c) = clip {
        let (lo, hi) = (T::from_f64(-c), T::from_f64(c));
        for (gv, &v) in g.iter_mut().zip(a) {
            if !(v > lo && v < hi) {
                *gv = T::ZERO;
            }
        }
    }
}

/// Shapes and flags of one sequence computation.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqSpec {
    /// Batch size.
    pub batch: usize,
    /// Timesteps.
    pub time: usize,
    /// Input features.
    pub input: usize,
    /// Units.
    pub units: usize,
    /// Candidate activation.
    pub activation: Activation,
    /// Gate activation.
    pub recurrent_activation: Activation,
    /// Reset gate after the recurrent product (bias (2, 3u)) or before (bias (3u,)).
    pub reset_after: bool,
    /// Whether there is a bias.
    pub use_bias: bool,
    /// Process t = T-1..0 (outputs stay in processing order).
    pub go_backwards: bool,
    /// Masked steps output zeros instead of the previous output.
    pub zero_output_for_mask: bool,
    /// Threads for the matrix products (count 1: none), and the team every parallel
    /// section of the call runs on.
    pub threads: Threads,
    /// ONNX's cell clip: gate pre-activations are clamped to `[-clip, clip]`.
    pub clip: Option<f64>,
    /// The gradients a backward computes; the others come back empty.
    pub wanted: WantedGrads,
}

/// Which gradients a backward computes. The state's gradient is always computed (it is the
/// carried `dh`). Leaving out the input's saves the product `dX = dXP @ W^T` (a third of the
/// backward's input-side flops), e.g. when the input is data, not a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WantedGrads {
    /// d(loss)/dx.
    pub input: bool,
    /// d(loss)/d(kernel, recurrent kernel, bias).
    pub weights: bool,
}

impl Default for WantedGrads {
    fn default() -> Self {
        WantedGrads {
            input: true,
            weights: true,
        }
    }
}

impl SeqSpec {
    /// The spec of a layer's call.
    pub fn new(config: &GruConfig, batch: usize, time: usize, input: usize) -> SeqSpec {
        SeqSpec {
            batch,
            time,
            input,
            units: config.units,
            activation: config.activation,
            recurrent_activation: config.recurrent_activation,
            reset_after: config.reset_after,
            use_bias: config.use_bias,
            go_backwards: config.go_backwards,
            zero_output_for_mask: config.zero_output_for_mask,
            threads: Threads::ONE,
            clip: config.cell_clip,
            wanted: WantedGrads::default(),
        }
    }

    /// Whether the backward reads the pre-activations `a_z`, `a_r`, `a_h`: with a clip, or
    /// an activation whose derivative is not a function of its output (sigmoid, tanh and
    /// linear are; the others are taken at the pre-activation). Otherwise the forward
    /// keeps none (three fewer (time, batch, units) arrays written per training call).
    pub fn keeps_pre_activations(&self) -> bool {
        let from_output = |a: Activation| {
            matches!(
                a,
                Activation::Sigmoid | Activation::Tanh | Activation::Linear
            )
        };
        self.clip.is_some()
            || !from_output(self.activation)
            || !from_output(self.recurrent_activation)
    }

    /// Rows of the bias: 2 (reset_after), 1, or 0 without bias.
    pub fn bias_rows(&self) -> usize {
        match (self.use_bias, self.reset_after) {
            (false, _) => 0,
            (true, true) => 2,
            (true, false) => 1,
        }
    }

    /// The input index processed at step `k`.
    pub fn t_of(&self, k: usize) -> usize {
        if self.go_backwards {
            self.time - 1 - k
        } else {
            k
        }
    }
}

/// The weights, row-major, Keras layout and gate order (z, r, h).
#[derive(Debug, Clone, Copy)]
pub struct SeqWeights<'a, T> {
    /// (input, 3u).
    pub kernel: &'a [T],
    /// (u, 3u).
    pub recurrent: &'a [T],
    /// (bias_rows, 3u), empty without bias.
    pub bias: &'a [T],
}

/// The data of one call.
#[derive(Debug, Clone, Copy)]
pub struct SeqInputs<'a, T> {
    /// (batch, time, input).
    pub x: &'a [T],
    /// (batch, units).
    pub h0: &'a [T],
    /// (batch, time), nonzero = use the step.
    pub mask: Option<&'a [u8]>,
    /// Input dropout masks (batch, input): none, one for all gates, or one per gate z, r, h.
    pub input_masks: &'a [Vec<T>],
    /// Recurrent dropout masks (batch, units): none or one per gate z, r, h.
    pub recurrent_masks: &'a [Vec<T>],
}

fn check(what: &str, got: usize, want: usize, shape: String) -> Result<()> {
    crate::error::check_len(what, got, want, &shape)
}

/// Checks every slice length against the spec.
pub fn validate<T>(spec: &SeqSpec, w: &SeqWeights<T>, inp: &SeqInputs<T>) -> Result<()> {
    let (b, t, i, u) = (spec.batch, spec.time, spec.input, spec.units);
    check(
        "kernel",
        w.kernel.len(),
        i * 3 * u,
        format!("({i}, {})", 3 * u),
    )?;
    check(
        "recurrent_kernel",
        w.recurrent.len(),
        u * 3 * u,
        format!("({u}, {})", 3 * u),
    )?;
    check(
        "bias",
        w.bias.len(),
        spec.bias_rows() * 3 * u,
        format!("({}, {})", spec.bias_rows(), 3 * u),
    )?;
    check("inputs", inp.x.len(), b * t * i, format!("({b}, {t}, {i})"))?;
    check("initial_state", inp.h0.len(), b * u, format!("({b}, {u})"))?;
    if let Some(m) = inp.mask {
        check("mask", m.len(), b * t, format!("({b}, {t})"))?;
    }
    if !matches!(inp.input_masks.len(), 0 | 1 | 3) {
        return Err(GruError::Shape {
            what: "input dropout masks".into(),
            expected: "0, 1 or 3 masks".into(),
            got: format!("{} masks", inp.input_masks.len()),
        });
    }
    for m in inp.input_masks {
        check("input dropout mask", m.len(), b * i, format!("({b}, {i})"))?;
    }
    if !matches!(inp.recurrent_masks.len(), 0 | 3) {
        return Err(GruError::Shape {
            what: "recurrent dropout masks".into(),
            expected: "0 or 3 masks".into(),
            got: format!("{} masks", inp.recurrent_masks.len()),
        });
    }
    for m in inp.recurrent_masks {
        check(
            "recurrent dropout mask",
            m.len(),
            b * u,
            format!("({b}, {u})"),
        )?;
    }
    if b == 0 || t == 0 || u == 0 || i == 0 {
        return Err(GruError::Shape {
            what: "sequence".into(),
            expected: "non-empty batch, time, input and units".into(),
            got: format!("({b}, {t}, {i}) with {u} units"),
        });
    }
    Ok(())
}

/// `x` with per-(batch, feature) mask `m` applied at every timestep: (batch, time, input).
fn masked_inputs<T: Float>(spec: &SeqSpec, x: &[T], m: &[T]) -> Vec<T> {
    let (t, i) = (spec.time, spec.input);
    let mut out = x.to_vec();
    for (row, chunk) in out.chunks_mut(i).enumerate() {
        let b = row / t;
        for (v, &mm) in chunk.iter_mut().zip(&m[b * i..(b + 1) * i]) {
            *v *= mm;
        }
    }
    out
}

#[cfg(test)]
mod tests;
