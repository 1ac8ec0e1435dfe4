//! The fused CPU call as two Candle custom ops, so that autograd reaches every weight
//! without a copy of any (Candle's custom ops take at most three tensors; a call has five:
//! the inputs, the initial state, the kernel, the recurrent kernel and the bias).
//!
//! - [`Forward`] `(x, kernel, recurrent_kernel) -> token` runs the whole forward (reading
//!   the initial state and the bias where they are) and keeps its outputs; its own output
//!   is a one-element token.
//! - [`Outputs`] `(token, h0, bias) -> outputs` hands those outputs over.
//!
//! Backward runs [`Outputs`] first (autograd goes from the outputs back): it computes every
//! gradient at once and returns those of `h0` and the bias, keeping those of `x` and the
//! two kernels for [`Forward`]'s backward, which autograd runs next. Weights are read in
//! place throughout: an op input stacked from them (a copy of every weight per call, kept
//! alive with the graph until a backward) took half of a one-step call at 512 units, and a
//! decoder stepping 100 times kept 100 copies.

use super::fused_cpu::{host_values, values, FusedGru, HostFloat};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use gru_core::seq::SeqWeights;
use std::sync::{Arc, Mutex};

/// One call's tensors and the state its two ops share.
pub(super) struct Call<T: HostFloat> {
    pub(super) op: FusedGru<T>,
    pub(super) x: Tensor,
    pub(super) kernel: Tensor,
    pub(super) recurrent: Tensor,
    pub(super) h0: Tensor,
    /// The input bias then the recurrent bias (reset_after), flat; empty without bias.
    pub(super) bias: Tensor,
    /// The forward's live outputs, until [`Outputs`] hands them over.
    outputs: Mutex<Option<Vec<T>>>,
    /// The gradients of `x`, the kernel and the recurrent kernel, from [`Outputs`]'
    /// backward to [`Forward`]'s.
    forward_grads: Mutex<Option<ForwardGrads>>,
}

type ForwardGrads = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

fn poisoned(what: &str) -> candle_core::Error {
    candle_core::Error::msg(format!(
        "gru-fused {what} poisoned by a panic in another thread"
    ))
}

impl<T: HostFloat> Call<T> {
    /// The call of `op` on these tensors (all contiguous, on the CPU, of type `T`).
    pub(super) fn new(op: FusedGru<T>, x: Tensor, weights: [Tensor; 3], h0: Tensor) -> Self {
        let [kernel, recurrent, bias] = weights;
        Call {
            op,
            x,
            kernel,
            recurrent,
            h0,
            bias,
            outputs: Mutex::new(None),
            forward_grads: Mutex::new(None),
        }
    }

    /// Runs the call: the live outputs, with the backward of every tracked input.
    pub(super) fn run(self) -> Result<Tensor> {
        let call = Arc::new(self);
        let token = call
            .x
            .apply_op3(&call.kernel, &call.recurrent, Forward(call.clone()))?;
        token.apply_op3(&call.h0, &call.bias, Outputs(call.clone()))
    }

    /// Runs `f` over the weights as the kernels read them (their own storage).
    fn with_weights<R>(&self, f: impl FnOnce(SeqWeights<T>) -> Result<R>) -> Result<R> {
        let (k, r, b) = (
            host_values::<T>(&self.kernel)?,
            host_values::<T>(&self.recurrent)?,
            host_values::<T>(&self.bias)?,
        );
        f(SeqWeights {
            kernel: k.get(),
            recurrent: r.get(),
            bias: b.get(),
        })
    }
}

/// The first op: the forward, `(x, kernel, recurrent_kernel) -> token`.
pub(super) struct Forward<T: HostFloat>(Arc<Call<T>>);

impl<T: HostFloat> CustomOp3 for Forward<T> {
    fn name(&self) -> &'static str {
        "gru-fused"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let call = &self.0;
        let (x, kernel, recurrent) = (
            values::<T>(s1, l1, "x")?,
            values::<T>(s2, l2, "kernel")?,
            values::<T>(s3, l3, "recurrent kernel")?,
        );
        let (h0, bias) = (host_values::<T>(&call.h0)?, host_values::<T>(&call.bias)?);
        let w = SeqWeights {
            kernel,
            recurrent,
            bias: bias.get(),
        };
        let live = call.op.op_forward(x, w, h0.get())?;
        *call.outputs.lock().map_err(|_| poisoned("outputs"))? = Some(live);
        Ok((T::storage(vec![T::ZERO]), Shape::from(1)))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _kernel: &Tensor,
        _recurrent: &Tensor,
        _token: &Tensor,
        _grad: &Tensor,
    ) -> Result<ForwardGrads> {
        let kept = self
            .0
            .forward_grads
            .lock()
            .map_err(|_| poisoned("gradients"))?
            .take();
        kept.ok_or_else(|| candle_core::Error::msg("gru-fused: the outputs' backward did not run"))
    }
}

/// The second op: the outputs, `(token, h0, bias) -> outputs`.
pub(super) struct Outputs<T: HostFloat>(Arc<Call<T>>);

impl<T: HostFloat> CustomOp3 for Outputs<T> {
    fn name(&self) -> &'static str {
        "gru-fused-outputs"
    }

    fn cpu_fwd(
        &self,
        _s1: &CpuStorage,
        _l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
        _s3: &CpuStorage,
        _l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let call = &self.0;
        let live = call.outputs.lock().map_err(|_| poisoned("outputs"))?.take();
        let live =
            live.ok_or_else(|| candle_core::Error::msg("gru-fused: the forward did not run"))?;
        Ok((T::storage(live), call.op.live_shape()))
    }

    fn bwd(
        &self,
        token: &Tensor,
        h0: &Tensor,
        _bias: &Tensor,
        _outputs: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = &self.0;
        let weights_tracked = [&c.kernel, &c.recurrent, &c.bias]
            .iter()
            .any(|t| t.track_op());
        let (dx, dw, dh) = c.with_weights(|w| c.op.grads((&c.x, h0, grad), w, weights_tracked))?;
        let (mut dk, mut dr, mut db) = (None, None, None);
        if let Some([k, r, b]) = dw {
            // Each weight's gradient moves into its tensor (no copy), where autograd wants it.
            let part = |t: &Tensor, v: Vec<T>| -> Result<Option<Tensor>> {
                match t.track_op() {
                    true => Ok(Some(Tensor::from_vec(v, t.shape(), t.device())?)),
                    false => Ok(None),
                }
            };
            (dk, dr, db) = (
                part(&c.kernel, k)?,
                part(&c.recurrent, r)?,
                part(&c.bias, b)?,
            );
        }
        *c.forward_grads.lock().map_err(|_| poisoned("gradients"))? = Some((dx, dk, dr));
        // Forward's backward runs when any of its inputs is tracked (it hands their
        // gradients over); the token's own gradient carries nothing.
        let d_token = token.track_op().then(|| token.zeros_like()).transpose()?;
        Ok((d_token, dh, db))
    }
}
