//! A call of the layer: validation (typed errors), the dispatch decision, stateful state,
//! dropout masks, the path (see [`crate::paths`]), and the outputs Keras returns.

use crate::dropout;
use crate::dtype::float_type;
use crate::error::{Error, Result};
use crate::layer::{CpuPath, GpuPath, Gru};
use crate::paths::{self, PathSettings};
use crate::sequence::{CallContext, CellWeights, DropoutMasks, SequenceOutput};
use candle_core::{DType, Module, Tensor};
use gru_core::{
    decide, CallFacts, Dispatch, ExecPath, FloatType, GruError, Implementation, MaskFacts,
};

/// A call's mask, checked: the dispatcher's facts, and on a CUDA device (with the cuDNN path
/// built and not switched off) the device scan the cuDNN path reuses.
struct MaskInfo {
    facts: MaskFacts,
    #[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
    scan: Option<gru_cudnn::MaskScan>,
}

/// The optional arguments of a call (Keras' `mask`, `initial_state`, `training`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions<'a> {
    /// (batch, timesteps) u8 mask: 1 = use the step, 0 = skip it.
    pub mask: Option<&'a Tensor>,
    /// (batch, units) initial state.
    pub initial_state: Option<&'a Tensor>,
    /// Training mode: dropout acts only here.
    pub training: bool,
}

impl CallOptions<'_> {
    /// A training call with no mask and no initial state.
    ///
    /// ```
    /// assert!(gru_candle::CallOptions::training().training);
    /// ```
    pub fn training() -> Self {
        CallOptions {
            training: true,
            ..Default::default()
        }
    }
}

/// What a call returns.
#[derive(Debug, Clone)]
pub struct GruOutput {
    /// (batch, timesteps, units) with `return_sequences`, else the last output (batch, units).
    pub output: Tensor,
    /// The final state (batch, units), with `return_state`.
    pub state: Option<Tensor>,
    /// The activity regularization loss of this call (Keras: the regularizer of each returned
    /// tensor divided by the batch size, summed), when an `activity_regularizer` is set.
    pub activity_loss: Option<Tensor>,
    /// The path this call took and why.
    pub dispatch: Dispatch,
}

impl GruOutput {
    /// The tensors in the order Keras returns them: `[output]` or `[output, state]`.
    pub fn to_vec(&self) -> Vec<Tensor> {
        let mut v = vec![self.output.clone()];
        v.extend(self.state.clone());
        v
    }
}

fn shape_err(what: &str, expected: String, got: &Tensor) -> Error {
    Error::Gru(GruError::Shape {
        what: what.into(),
        expected,
        got: format!("{:?}", got.dims()),
    })
}

impl Gru {
    /// The tensor must have the layer's compute dtype, or under a mixed precision policy
    /// the weights' dtype too (Keras casts those to the compute dtype); nothing else is cast.
    pub(crate) fn check_dtype(&self, what: &str, t: &Tensor) -> Result<()> {
        let mixed = self.compute_dtype != self.dtype();
        if t.dtype() == self.compute_dtype || (mixed && t.dtype() == self.dtype()) {
            return Ok(());
        }
        let expected = match mixed {
            true => format!(
                "{:?} (the layer's compute dtype) or {:?} (its weights', cast to {:?})",
                self.compute_dtype,
                self.dtype(),
                self.compute_dtype
            ),
            false => format!("{:?} (the layer's weights)", self.dtype()),
        };
        Err(Error::Gru(GruError::DType {
            what: what.into(),
            expected,
            got: format!("{:?}", t.dtype()),
        }))
    }

    /// A checked input in the compute dtype (a mixed layer's cast; differentiable).
    fn to_compute(&self, t: &Tensor) -> Result<Tensor> {
        crate::dtype::autocast(t, self.compute_dtype)
    }

    /// The tensor must live on the weights' device.
    pub(crate) fn check_device(&self, what: &str, t: &Tensor) -> Result<()> {
        if !t.device().same_device(self.device()) {
            return Err(Error::Gru(GruError::Device {
                what: what.into(),
                expected: format!("{:?} (the layer's weights)", self.device()),
                got: format!("{:?}", t.device()),
            }));
        }
        Ok(())
    }

    /// Checks the call's tensors and returns (batch, timesteps, mask facts). `kept_batch` is
    /// the batch size a stateful layer keeps state for.
    fn validate(
        &self,
        inputs: &Tensor,
        opts: &CallOptions,
        kept_batch: Option<usize>,
    ) -> Result<(usize, usize, MaskInfo)> {
        let u = self.config.units;
        let (b, t, f) = match inputs.dims() {
            [b, t, f] => (*b, *t, *f),
            _ => {
                return Err(shape_err(
                    "inputs",
                    format!("rank 3 (batch, timesteps, {})", self.input_dim),
                    inputs,
                ))
            }
        };
        if f != self.input_dim {
            return Err(shape_err(
                "inputs",
                format!(
                    "(batch, timesteps, {}) to match the built kernel",
                    self.input_dim
                ),
                inputs,
            ));
        }
        if b == 0 || t == 0 {
            return Err(shape_err(
                "inputs",
                "at least one sample and one timestep".into(),
                inputs,
            ));
        }
        self.check_dtype("inputs", inputs)?;
        self.check_device("inputs", inputs)?;
        let mut mask = MaskInfo {
            facts: MaskFacts::None,
            scan: None,
        };
        if let Some(m) = opts.mask {
            if m.dims() != [b, t] {
                return Err(shape_err(
                    "mask",
                    format!("(batch, timesteps) = [{b}, {t}]"),
                    m,
                ));
            }
            self.check_device("mask", m)?;
            if m.dtype() != DType::U8 {
                return Err(Error::Gru(GruError::DType {
                    what: "mask".into(),
                    expected: "U8 (booleans: 1 = use the step)".into(),
                    got: format!("{:?}", m.dtype()),
                }));
            }
            mask = self.scan_mask(m, b, t)?;
        }
        if let Some(h0) = opts.initial_state {
            if h0.dims() != [b, u] {
                return Err(shape_err(
                    "initial_state",
                    format!("(batch, units) = [{b}, {u}]"),
                    h0,
                ));
            }
            self.check_dtype("initial_state", h0)?;
            self.check_device("initial_state", h0)?;
        }
        if let Some(kb) = kept_batch.filter(|&kb| kb != b) {
            return Err(Error::Gru(GruError::StatefulBatch {
                expected: kb,
                got: b,
            }));
        }
        Ok((b, t, mask))
    }

    /// The mask's facts: on a CUDA device with the cuDNN path, from the device scan (only
    /// 2 x batch ints come back); otherwise from the mask copied to the host.
    fn scan_mask(&self, m: &Tensor, b: usize, t: usize) -> Result<MaskInfo> {
        #[cfg(feature = "cudnn")]
        if m.device().is_cuda() && self.config.use_cudnn != gru_core::UseCudnn::Never {
            let scan = gru_cudnn::MaskScan::on_device(
                m,
                self.config.go_backwards,
                self.config.zero_output_for_mask,
            )?;
            return Ok(MaskInfo {
                facts: scan.facts(),
                scan: Some(scan),
            });
        }
        let rows: Vec<Vec<u8>> = m.to_vec2()?;
        let flat: Vec<bool> = rows.iter().flatten().map(|&v| v != 0).collect();
        Ok(MaskInfo {
            facts: MaskFacts::of(&flat, b, t),
            scan: None,
        })
    }

    fn facts(&self, inputs: &Tensor, mask: MaskFacts, training: bool) -> CallFacts {
        let dtype = float_type(self.compute_dtype);
        let dev = inputs.device();
        let host_float = matches!(dtype, FloatType::F32 | FloatType::F64);
        CallFacts {
            training,
            mask,
            device_is_cuda: dev.is_cuda(),
            cudnn_built: gru_cudnn::AVAILABLE,
            dtype,
            fused_available: self.cpu_path == CpuPath::Fused
                && dev.is_cpu()
                && dtype != FloatType::Other,
            step_kernels_available: match (dev.is_cpu(), dev.is_cuda()) {
                (true, _) => self.cpu_path == CpuPath::KernelsOnHost && host_float,
                (_, true) => {
                    self.gpu_path == GpuPath::StepKernels
                        && gru_cudnn::AVAILABLE
                        && dtype != FloatType::Other
                }
                _ => false,
            },
        }
    }

    /// The path a call with these arguments would take, with every condition's verdict,
    /// without running it. Errors like the call would (bad shapes, `Force` with a failed
    /// condition).
    pub fn explain_dispatch(&self, inputs: &Tensor, opts: CallOptions) -> Result<Dispatch> {
        let kept_batch = self.kept.lock().map_err(|_| poisoned())?.batch;
        let (_, _, mask) = self.validate(inputs, &opts, kept_batch)?;
        Ok(decide(
            &self.config,
            &self.facts(inputs, mask.facts, opts.training),
        )?)
    }

    /// Runs the layer: Keras' `layer(inputs, mask=..., training=..., initial_state=[...])`.
    ///
    /// A stateful layer's call is atomic: it holds the kept state from reading it to storing
    /// the new one, so concurrent calls on one layer run one after the other and no update
    /// is lost.
    pub fn call(&self, inputs: &Tensor, opts: CallOptions) -> Result<GruOutput> {
        self.call_with_masks(inputs, opts, None)
    }

    /// [`Gru::call`] with the given dropout masks instead of masks drawn for this call
    /// (a cell's masks, kept from call to call as Keras' `GRUCell` keeps them).
    pub(crate) fn call_with_masks(
        &self,
        inputs: &Tensor,
        opts: CallOptions,
        masks: Option<DropoutMasks>,
    ) -> Result<GruOutput> {
        let cfg = &self.config;
        let mut kept = match cfg.stateful {
            true => Some(self.kept.lock().map_err(|_| poisoned())?),
            false => None,
        };
        let kept_batch = kept.as_ref().and_then(|k| k.batch);
        let (b, _t, mask_info) = self.validate(inputs, &opts, kept_batch)?;
        let dispatch = decide(cfg, &self.facts(inputs, mask_info.facts, opts.training))?;
        let inputs = &self.to_compute(inputs)?;
        let h0 = match (opts.initial_state, kept.as_ref().and_then(|k| k.h.clone())) {
            (Some(h), _) => self.to_compute(h)?,
            (None, Some(h)) => h,
            (None, None) => Tensor::zeros((b, cfg.units), self.compute_dtype, self.device())?,
        };
        // Keras' cuDNN path draws one input-dropout mask, shared over time and gates.
        let dropout = match masks {
            Some(m) => m,
            None => self.dropout_masks(b, opts.training, dispatch.path == ExecPath::Cudnn)?,
        };
        let (kernel, recurrent_kernel, bias) = self.call_weights()?;
        let weights = self.cell_weights(&kernel, &recurrent_kernel, bias.as_ref())?;
        let ctx = CallContext {
            config: cfg,
            x: inputs,
            h0: &h0,
            mask: opts.mask,
            dropout: &dropout,
            training: opts.training,
        };
        let settings = PathSettings {
            fused: &self.fused,
            #[cfg(feature = "cudnn")]
            cudnn: paths::cudnn::CudnnSettings {
                scan: mask_info.scan.as_ref(),
                tf32: self.cudnn_tf32,
            },
        };
        let out = paths::run(dispatch.path, &ctx, &weights, &settings)?;
        if let Some(k) = kept.as_mut() {
            k.batch = Some(b);
            k.h = Some(out.state.detach());
        }
        drop(kept);
        if let Ok(mut d) = self.last_dispatch.lock() {
            *d = Some(dispatch.clone());
        }
        self.outputs(out, b, dispatch)
    }

    /// The weights as this call uses them: in the compute dtype (a mixed layer's cast, through
    /// which gradients reach the weights), and with `trainable = false` (Keras) as constants
    /// that no gradient reaches.
    fn call_weights(&self) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let prepare = |t: &Tensor| -> Result<Tensor> {
            let t = self.to_compute(t)?;
            Ok(match self.config.trainable {
                true => t,
                false => t.detach(),
            })
        };
        Ok((
            prepare(&self.kernel)?,
            prepare(&self.recurrent_kernel)?,
            self.bias.as_ref().map(prepare).transpose()?,
        ))
    }

    /// The weights split the way the cell uses them.
    fn cell_weights<'a>(
        &self,
        kernel: &'a Tensor,
        recurrent_kernel: &'a Tensor,
        bias: Option<&Tensor>,
    ) -> Result<CellWeights<'a>> {
        let (input_bias, recurrent_bias) = match (bias, self.config.reset_after) {
            (Some(bias), true) => (Some(bias.get(0)?), Some(bias.get(1)?)),
            (Some(bias), false) => (Some(bias.clone()), None),
            (None, _) => (None, None),
        };
        Ok(CellWeights {
            kernel,
            recurrent_kernel,
            input_bias,
            recurrent_bias,
        })
    }

    /// What Keras returns from a path's output: the sequence or the last output, the
    /// state with `return_state`, and the activity regularization loss.
    fn outputs(&self, out: SequenceOutput, batch: usize, dispatch: Dispatch) -> Result<GruOutput> {
        let cfg = &self.config;
        let output = if cfg.return_sequences {
            out.sequence
        } else {
            out.last_output
        };
        let state = cfg.return_state.then_some(out.state);
        let activity_loss = match &cfg.activity_regularizer {
            Some(reg) => {
                let mut total = Tensor::zeros((), output.dtype(), self.device())?;
                for t in std::iter::once(&output).chain(state.as_ref()) {
                    let l = (crate::regularizer::loss(reg, t)? / batch as f64)?;
                    total = (total + l)?;
                }
                Some(total)
            }
            None => None,
        };
        Ok(GruOutput {
            output,
            state,
            activity_loss,
            dispatch,
        })
    }

    /// Draws this call's dropout masks (training only; Keras' counts per implementation, or
    /// one input mask for the cuDNN path, as Keras' cuDNN branch does).
    fn dropout_masks(&self, batch: usize, training: bool, cudnn: bool) -> Result<DropoutMasks> {
        let cfg = &self.config;
        let count = match (cudnn, cfg.effective_implementation()) {
            (true, _) => 1,
            (false, Implementation::One) => 3,
            (false, Implementation::Two) => 1,
        };
        let mut masks = DropoutMasks::default();
        if dropout::active(cfg.dropout, training) {
            masks.input = self.draw_masks(count, batch, self.input_dim, cfg.dropout)?;
        }
        if dropout::active(cfg.recurrent_dropout, training) {
            masks.recurrent = self.draw_masks(3, batch, cfg.units, cfg.recurrent_dropout)?;
        }
        Ok(masks)
    }
}

impl Gru {
    /// `count` dropout masks of shape (batch, width) at `rate`, in the compute dtype, from
    /// the layer's seeded generator.
    pub(crate) fn draw_masks(
        &self,
        count: usize,
        batch: usize,
        width: usize,
        rate: f64,
    ) -> Result<Vec<Tensor>> {
        let mut rng = self.rng.lock().map_err(|_| poisoned())?;
        let (dt, dev) = (self.compute_dtype, self.device());
        Ok(dropout::masks(
            &mut rng, count, batch, width, rate, dt, dev,
        )?)
    }
}

/// The sum of the losses that are present, `None` when none is. Losses of different
/// dtypes (a mixed precision layer's beside a float32 one's) are summed in f32, or f64 when
/// one is f64.
pub(crate) fn sum_losses(
    losses: impl IntoIterator<Item = Option<Tensor>>,
) -> Result<Option<Tensor>> {
    let losses: Vec<Tensor> = losses.into_iter().flatten().collect();
    let Some(first) = losses.first() else {
        return Ok(None);
    };
    let dtype = match losses.iter().all(|l| l.dtype() == first.dtype()) {
        true => first.dtype(),
        false if losses.iter().any(|l| l.dtype() == DType::F64) => DType::F64,
        false => DType::F32,
    };
    let mut total = first.to_dtype(dtype)?;
    for l in &losses[1..] {
        total = (total + l.to_dtype(dtype)?)?;
    }
    Ok(Some(total))
}

fn poisoned() -> Error {
    Error::Candle(candle_core::Error::Msg(
        "GRU state lock poisoned by a panic in another thread".into(),
    ))
}

impl Module for Gru {
    /// `layer(inputs)`: no mask, `training=false`; returns the output (the state is dropped;
    /// use [`Gru::call`] with `return_state`).
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.call(xs, CallOptions::default())?.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::{VarBuilder, VarMap};
    use gru_core::GruConfig;

    fn layer(dropout: f64, recurrent: f64, implementation: Implementation) -> Gru {
        let mut c = GruConfig::new(6);
        c.dropout = dropout;
        c.recurrent_dropout = recurrent;
        c.implementation = implementation;
        c.seed = Some(1);
        let vm = VarMap::new();
        Gru::new(c, 5, VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu)).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn mask_counts_follow_keras_implementations() {
        let m = layer(0.3, 0.0, Implementation::Two)
            .dropout_masks(4, true, false)
            .unwrap();
        assert_eq!((m.input.len(), m.recurrent.len()), (1, 0));
        // recurrent_dropout switches Keras to implementation 1: three masks of each kind.
        let m = layer(0.3, 0.2, Implementation::Two)
            .dropout_masks(4, true, false)
            .unwrap();
        assert_eq!((m.input.len(), m.recurrent.len()), (3, 3));
        assert_eq!(m.input[0].dims(), &[4, 5]);
        assert_eq!(m.recurrent[0].dims(), &[4, 6]);
        assert_ne!(values(&m.recurrent[0]), values(&m.recurrent[1]));
        let m = layer(0.3, 0.0, Implementation::One)
            .dropout_masks(4, true, false)
            .unwrap();
        assert_eq!((m.input.len(), m.recurrent.len()), (3, 0));
        // Nothing outside training, and nothing at rate 1 (Keras applies 0 < rate < 1 only).
        let m = layer(0.3, 0.2, Implementation::Two)
            .dropout_masks(4, false, false)
            .unwrap();
        assert!(m.input.is_empty() && m.recurrent.is_empty());
        let m = layer(1.0, 0.0, Implementation::Two)
            .dropout_masks(4, true, false)
            .unwrap();
        assert!(m.input.is_empty());
    }

    #[test]
    fn masks_are_inverted_dropout() {
        let rate = 0.25;
        let m = layer(rate, 0.0, Implementation::Two)
            .dropout_masks(2000, true, false)
            .unwrap();
        let v = values(&m.input[0]);
        let keep = 1.0 / (1.0 - rate);
        assert!(v.iter().all(|&x| x == 0.0 || x == keep));
        let dropped = v.iter().filter(|&&x| x == 0.0).count() as f64 / v.len() as f64;
        // 10,000 draws: standard error 0.0043.
        assert!((dropped - rate).abs() < 0.02, "dropped fraction {dropped}");
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
    }
}
