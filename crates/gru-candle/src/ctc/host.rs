//! The CTC loss on the CPU as Candle custom ops over gru-core's recursions
//! ([`gru_core::ctc`]): one pass per sample for the losses, alpha and beta for the gradient
//! (only when a backward asks for it), samples split over Candle's CPU workers.

use crate::error::Result;
use crate::paths::cpu_pool::CANDLE_POOL;
use crate::paths::fused_cpu::{run_host, HostBody, HostFloat};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use gru_core::ctc::CtcProblem;
use gru_core::seq::{Float, Team, Threads};

/// Each sample's loss from log-probabilities `logp` (batch, frames, classes), on the CPU.
pub(super) fn loss(
    logp: &Tensor,
    labels: Vec<Vec<u32>>,
    output_length: &[usize],
    blank: usize,
) -> Result<Tensor> {
    let op = Ctc {
        labels,
        frames: output_length.to_vec(),
        blank,
        dims: logp.dims3()?,
    };
    Ok(logp.contiguous()?.apply_op1(op)?)
}

/// Candle's CPU workers.
pub(super) fn threads() -> Threads {
    Threads::new(CANDLE_POOL.size(), &CANDLE_POOL)
}

/// The problem's targets and sizes (the log-probabilities come with each call).
#[derive(Clone)]
struct Ctc {
    labels: Vec<Vec<u32>>,
    frames: Vec<usize>,
    blank: usize,
    dims: (usize, usize, usize),
}

impl Ctc {
    fn problem<'a, T>(&'a self, logp: &'a [T]) -> CtcProblem<'a, T> {
        CtcProblem {
            logp,
            dims: self.dims,
            labels: &self.labels,
            frames: &self.frames,
            blank: self.blank,
        }
    }
}

impl HostBody for Ctc {
    fn run<T: HostFloat>(&self, v: &[&[T]]) -> candle_core::Result<Vec<T>> {
        let losses = self.problem(v[0]).losses(threads());
        Ok(losses.into_iter().map(<T as Float>::from_f64).collect())
    }
}

impl CustomOp1 for Ctc {
    fn name(&self) -> &'static str {
        "ctc-loss"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((run_host(self, &[(s, l)])?, Shape::from(self.dims.0)))
    }

    fn bwd(
        &self,
        logp: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let scale = grad.to_dtype(logp.dtype())?.contiguous()?;
        Ok(Some(
            logp.apply_op2_no_bwd(&scale, &Gradient(self.clone()))?,
        ))
    }
}

/// `(logp, dloss) -> dlogp`.
struct Gradient(Ctc);

impl HostBody for Gradient {
    fn run<T: HostFloat>(&self, v: &[&[T]]) -> candle_core::Result<Vec<T>> {
        let scale: Vec<f64> = v[1].iter().map(|g| Float::to_f64(*g)).collect();
        Ok(self.0.problem(v[0]).gradient(&scale, threads()))
    }
}

impl CustomOp2 for Gradient {
    fn name(&self) -> &'static str {
        "ctc-loss-gradient"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = run_host(self, &[(s1, l1), (s2, l2)])?;
        Ok((out, Shape::from(self.0.dims)))
    }
}
