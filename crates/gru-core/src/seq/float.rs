//! The float types of the fused path (f32, f64) and their activations over slices.
//!
//! f64 uses the reference definitions (`Activation::apply`/`derivative`, std math). f32
//! sigmoid and tanh, the GRU's hot path, use a branch-free exp that the compiler vectorizes
//! (compiled for AVX-512, AVX2+FMA and baseline x86-64, chosen at run time); their error is
//! a few ulp, far inside Keras' float32 tolerance. Other f32 activations go through the f64
//! reference.

use super::kernel::{Packed, PackedProduct};
use super::matmul::View;
use crate::activation::Activation;
use std::fmt::Debug;
use std::ops::{Add, AddAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A float the fused path computes in.
pub trait Float:
    Copy
    + Send
    + Sync
    + Default
    + Debug
    + PartialOrd
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// From f64 (rounding).
    fn from_f64(v: f64) -> Self;
    /// To f64 (exact).
    fn to_f64(self) -> f64;
    /// `y[i] = act(a[i])`.
    fn activate(act: Activation, a: &[Self], y: &mut [Self]);
    /// `g[i] *= act'(a[i])`, where `y[i] = act(a[i])` (sigmoid and tanh use `y`).
    fn mul_derivative(act: Activation, a: &[Self], y: &[Self], g: &mut [Self]);
    /// `b` packed for the per-step product kernels with `rows` left-hand rows, when this
    /// type and the CPU have them (f32 with AVX-512F or AVX2+FMA).
    fn pack(_b: View<'_, Self>, _rows: usize) -> Option<Packed<Self>> {
        None
    }
    /// `call` with the packed kernels into `dst` (rows `dst_rs` apart from `dst_offset`);
    /// false when they cannot (the caller then computes it). `call.a` and `dst` are checked
    /// by the caller.
    fn gemm_packed(
        _dst: &mut [Self],
        _dst_offset: usize,
        _dst_rs: usize,
        _p: &Packed<Self>,
        _call: PackedProduct<'_, Self>,
    ) -> bool {
        false
    }
    /// `call` with the per-step kernels reading the row-major `b` in place, when this type
    /// and the CPU have them (see `kernel::gemm_direct`); false otherwise.
    fn gemm_direct(
        _dst: &mut [Self],
        _dst_offset: usize,
        _dst_rs: usize,
        _b: View<'_, Self>,
        _call: PackedProduct<'_, Self>,
    ) -> bool {
        false
    }
}

fn activate_ref<T: Float>(act: Activation, a: &[T], y: &mut [T]) {
    for (o, &x) in y.iter_mut().zip(a) {
        *o = T::from_f64(act.apply(x.to_f64()));
    }
}

fn mul_derivative_generic<T: Float>(act: Activation, a: &[T], y: &[T], g: &mut [T]) {
    match act {
        Activation::Sigmoid => {
            for (g, &s) in g.iter_mut().zip(y) {
                *g *= s * (T::ONE - s);
            }
        }
        Activation::Tanh => {
            for (g, &t) in g.iter_mut().zip(y) {
                *g *= T::ONE - t * t;
            }
        }
        Activation::Linear => {}
        _ => {
            for (g, &x) in g.iter_mut().zip(a) {
                *g *= T::from_f64(act.derivative(x.to_f64()));
            }
        }
    }
}

impl Float for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    fn from_f64(v: f64) -> f64 {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn activate(act: Activation, a: &[f64], y: &mut [f64]) {
        match act {
            Activation::Sigmoid => {
                for (o, &x) in y.iter_mut().zip(a) {
                    *o = 1.0 / (1.0 + (-x).exp());
                }
            }
            Activation::Tanh => {
                for (o, &x) in y.iter_mut().zip(a) {
                    *o = x.tanh();
                }
            }
            Activation::Linear => y.copy_from_slice(a),
            _ => activate_ref(act, a, y),
        }
    }
    fn mul_derivative(act: Activation, a: &[f64], y: &[f64], g: &mut [f64]) {
        mul_derivative_generic(act, a, y, g)
    }
}

impl Float for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    fn from_f64(v: f64) -> f32 {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn activate(act: Activation, a: &[f32], y: &mut [f32]) {
        match act {
            Activation::Sigmoid => simd::sigmoid(a, y),
            Activation::Tanh => simd::tanh(a, y),
            Activation::Linear => y.copy_from_slice(a),
            _ => activate_ref(act, a, y),
        }
    }
    fn mul_derivative(act: Activation, a: &[f32], y: &[f32], g: &mut [f32]) {
        mul_derivative_generic(act, a, y, g)
    }
    fn pack(b: View<'_, f32>, rows: usize) -> Option<Packed<f32>> {
        Packed::pack(b, rows)
    }
    fn gemm_packed(
        dst: &mut [f32],
        dst_offset: usize,
        dst_rs: usize,
        p: &Packed<f32>,
        call: PackedProduct<'_, f32>,
    ) -> bool {
        super::kernel::gemm_packed(dst, dst_offset, dst_rs, p, call)
    }
    fn gemm_direct(
        dst: &mut [f32],
        dst_offset: usize,
        dst_rs: usize,
        b: View<'_, f32>,
        call: PackedProduct<'_, f32>,
    ) -> bool {
        super::kernel::gemm_direct(dst, dst_offset, dst_rs, b, call)
    }
}

/// Vectorizable f32 sigmoid and tanh with run-time CPU dispatch.
pub mod simd {
    /// exp(x) for f32 without branches: 2^n * p(r), r = x - n ln 2 in [-ln2/2, ln2/2],
    /// p a degree-6 Taylor polynomial (relative error < 2e-7 on that interval). Inputs are
    /// clamped to [-87, 88], so the result stays a finite normal number.
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer.
        let x = x.clamp(-87.0, 88.0);
        let t = x * LOG2E + SHIFT;
        let n = t - SHIFT;
        let r = x - n * LN2_HI - n * LN2_LO;
        let p = 1.0
            + r * (1.0
                + r * (0.5
                    + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
        let bits = ((t.to_bits() as i32 - SHIFT.to_bits() as i32 + 127) << 23) as u32;
        p * f32::from_bits(bits)
    }

    #[inline(always)]
    fn sigmoid_body(a: &[f32], y: &mut [f32]) {
        for (o, &x) in y.iter_mut().zip(a) {
            *o = 1.0 / (1.0 + exp(-x));
        }
    }

    #[inline(always)]
    fn tanh_body(a: &[f32], y: &mut [f32]) {
        // tanh x = 1 - 2 / (1 + e^(2x)); absolute error a few 1e-8.
        for (o, &x) in y.iter_mut().zip(a) {
            *o = 1.0 - 2.0 / (1.0 + exp(2.0 * x));
        }
    }

    cpu_dispatch! {
        /// The logistic sigmoid of every element of `a`, into `y`.
        pub fn sigmoid(a: &[f32], y: &mut [f32]) => sigmoid_body
    }

    cpu_dispatch! {
        /// tanh of every element of `a`, into `y`.
        pub fn tanh(a: &[f32], y: &mut [f32]) => tanh_body
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn exp_sigmoid_tanh_are_accurate() {
            let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.01).collect();
            let mut s = vec![0.0; xs.len()];
            let mut t = vec![0.0; xs.len()];
            super::sigmoid(&xs, &mut s);
            super::tanh(&xs, &mut t);
            for (i, &x) in xs.iter().enumerate() {
                let e = super::exp(x) as f64;
                let want = (x as f64).exp();
                assert!((e - want).abs() <= 4e-7 * want, "exp({x})");
                let ws = 1.0 / (1.0 + (-(x as f64)).exp());
                assert!((s[i] as f64 - ws).abs() < 2e-7, "sigmoid({x}) = {}", s[i]);
                assert!(
                    (t[i] as f64 - (x as f64).tanh()).abs() < 3e-7,
                    "tanh({x}) = {}",
                    t[i]
                );
            }
            // Saturation stays finite and exact at the ends.
            let mut y = [0.0; 2];
            super::sigmoid(&[-1000.0, 1000.0], &mut y);
            assert!(y[0] >= 0.0 && y[0] < 1e-37 && y[1] == 1.0);
            super::tanh(&[-1000.0, 1000.0], &mut y);
            assert_eq!(y, [-1.0, 1.0]);
        }
    }
}
